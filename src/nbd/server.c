/* The server: configuration, listeners, the acceptor, and the workers' event
 * loop.  See server.h for the threading model. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd/server.h"
#include "nbd/tls.h"
#include "vdisk/backend.h" /* vdisk_set_error: control-path messages for vdisk_errmsg() */

#define DEFAULT_MAX_CONNS 100
#define DEFAULT_HANDSHAKE_NS (10ull * 1000000000)
#define MAX_THREADS 256
#define EVENTS 64
#define CHECK_INTERVAL_NS 1000000000ull

uint64_t nbd_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void nbd_log(struct nbd_server *s, int level, const char *fmt, ...)
{
	if (level > s->log_level)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (s->log)
		s->log(s->log_opaque, level, msg);
	else
		fprintf(stderr, "vdisk nbd: %s\n", msg);
}

/* ------------------------------------------------------------------------- */
/* Creation                                                                    */
/* ------------------------------------------------------------------------- */

NBD_EXPORT struct vdisk_nbd_server *vdisk_nbd_server_new(struct vdisk *d,
                                                         const struct vdisk_nbd_config *cfg_in)
{
	struct vdisk_nbd_config cfg;
	memset(&cfg, 0, sizeof cfg);
	if (!d) {
		vdisk_set_error("vdisk_nbd_server_new: disk is NULL");
		return NULL;
	}
	if (cfg_in) {
		if (cfg_in->struct_size < offsetof(struct vdisk_nbd_config, log_level)) {
			vdisk_set_error("vdisk_nbd_server_new: config struct_size %zu is too small",
			                cfg_in->struct_size);
			return NULL;
		}
		memcpy(&cfg, cfg_in,
		       cfg_in->struct_size < sizeof cfg ? cfg_in->struct_size : sizeof cfg);
	}
	const char *name = cfg.export_name ? cfg.export_name : "";
	if (strlen(name) > NBD_MAX_STRING ||
	    (cfg.description && strlen(cfg.description) > NBD_MAX_STRING)) {
		vdisk_set_error(
		    "vdisk_nbd_server_new: export name and description are at most %u bytes",
		    NBD_MAX_STRING);
		return NULL;
	}
	struct nbd_server *s = calloc(1, sizeof *s);
	if (!s) {
		vdisk_set_error_errno(ENOMEM, "vdisk_nbd_server_new");
		return NULL;
	}
	s->stop_fd = -1;
	pthread_mutex_init(&s->rl_lock, NULL);
	s->disk = vdisk_ref(d);
	s->export_name = strdup(name);
	s->description = cfg.description ? strdup(cfg.description) : NULL;
	if (!s->export_name || (cfg.description && !s->description)) {
		vdisk_set_error_errno(ENOMEM, "vdisk_nbd_server_new");
		goto fail;
	}
	s->read_only = cfg.read_only || vdisk_read_only(d);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	s->nthreads = cfg.threads ? cfg.threads : cpus > 0 ? (unsigned)cpus : 1;
	if (s->nthreads > MAX_THREADS)
		s->nthreads = MAX_THREADS;
	s->max_conns = cfg.max_connections ? cfg.max_connections : DEFAULT_MAX_CONNS;
	s->handshake_timeout_ns = cfg.handshake_timeout_ms < 0 ? -1
	                          : cfg.handshake_timeout_ms == 0
	                              ? (int64_t)DEFAULT_HANDSHAKE_NS
	                              : (int64_t)cfg.handshake_timeout_ms * 1000000;
	s->tls = cfg.tls;
	s->log_level = cfg.log_level;
	s->log = cfg.log;
	s->log_opaque = cfg.log_opaque;

	uint32_t ss = vdisk_sector_size(d);
	s->shift = (unsigned)__builtin_ctz(ss);
	s->min_block = ss;
	s->pref_block = vdisk_physical_sector_size(d);
	if (ss > 65536) {
		vdisk_set_error(
		    "vdisk_nbd_server_new: NBD cannot export %u-byte sectors (at most 64 KiB)", ss);
		goto fail;
	}
	size_t mp = cfg.max_payload ? cfg.max_payload : NBD_DEFAULT_PAYLOAD;
	if (mp > NBD_PAYLOAD_LIMIT || mp < s->pref_block || mp % ss) {
		vdisk_set_error("vdisk_nbd_server_new: max_payload %zu is not a multiple of the "
		                "%u-byte sector from %u bytes to %u MiB",
		                mp, ss, s->pref_block, NBD_PAYLOAD_LIMIT >> 20);
		goto fail;
	}
	s->max_payload = (uint32_t)mp;
	s->max_inflight_bytes = mp > NBD_MAX_INFLIGHT_BYTES ? mp : NBD_MAX_INFLIGHT_BYTES;
	s->once = cfg.once;
	unsigned caps = vdisk_caps(d);
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
	if (s->read_only) {
		f |= NBD_FLAG_READ_ONLY;
	} else {
		f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES;
		if (vdisk_unmap_behavior(d) != VDISK_UNMAP_IGNORED)
			f |= NBD_FLAG_SEND_TRIM;
		if (caps & VDISK_CAP_FAST_ZERO)
			f |= NBD_FLAG_SEND_FAST_ZERO;
	}
	/* with nothing written there is nothing to make coherent */
	if (s->read_only || (caps & VDISK_CAP_SHARED_FLUSH))
		f |= NBD_FLAG_CAN_MULTI_CONN;
	s->eflags = f;
	s->emulate_fua = !vdisk_fua_respected(d);
	s->sparse_reads = caps & VDISK_CAP_EXTENTS;

	s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->stop_fd < 0) {
		vdisk_set_error_errno(errno, "vdisk_nbd_server_new: eventfd");
		goto fail;
	}
	if (nbd_tls_init(s, &cfg) < 0)
		goto fail;
	return (struct vdisk_nbd_server *)s;
fail:
	vdisk_nbd_server_free((struct vdisk_nbd_server *)s);
	return NULL;
}

NBD_EXPORT void vdisk_nbd_server_free(struct vdisk_nbd_server *srv)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	if (!s)
		return;
	for (unsigned i = 0; i < s->nlisteners; i++) {
		struct nbd_listener *l = &s->listeners[i];
		if (l->fd >= 0)
			close(l->fd);
		if (l->path)
			unlink(l->path);
		free(l->path);
		free(l->uri);
	}
	free(s->listeners);
	nbd_tls_fini(s);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	free(s->export_name);
	free(s->description);
	pthread_mutex_destroy(&s->rl_lock);
	vdisk_unref(s->disk);
	free(s);
}

NBD_EXPORT void vdisk_nbd_server_stop(struct vdisk_nbd_server *srv)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	uint64_t one = 1;
	atomic_store(&s->stopping, true);
	ssize_t rc = write(s->stop_fd, &one, sizeof one);
	(void)rc; /* the counter cannot overflow with a few writes */
}

/* ------------------------------------------------------------------------- */
/* Listeners                                                                   */
/* ------------------------------------------------------------------------- */

/* Percent-encode what a URI path or query value cannot hold as is. */
static void uri_escape(char *dst, size_t cap, const char *src, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)src; *p && n + 4 < cap; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p) || (keep_slash && *p == '/')) {
			dst[n++] = (char)*p;
		} else {
			dst[n++] = '%';
			dst[n++] = hex[*p >> 4];
			dst[n++] = hex[*p & 15];
		}
	}
	dst[n] = '\0';
}

static int add_listener(struct nbd_server *s, int fd, const char *path, const char *uri)
{
	struct nbd_listener *n = realloc(s->listeners, (s->nlisteners + 1) * sizeof *n);
	if (!n)
		return vdisk_set_error_errno(ENOMEM, "listen");
	s->listeners = n;
	struct nbd_listener *l = &s->listeners[s->nlisteners];
	l->fd = fd;
	l->is_unix = path != NULL;
	l->path = path ? strdup(path) : NULL;
	l->uri = strdup(uri);
	if (!l->uri || (path && !l->path)) {
		free(l->path);
		free(l->uri);
		return vdisk_set_error_errno(ENOMEM, "listen");
	}
	s->nlisteners++;
	return 0;
}

NBD_EXPORT int vdisk_nbd_server_listen_unix(struct vdisk_nbd_server *srv, const char *path)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path || !*path || strlen(path) >= sizeof sa.sun_path)
		return vdisk_set_error("unix socket path '%s': empty or longer than %zu bytes",
		                       path ? path : "", sizeof sa.sun_path - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vdisk_set_error_errno(errno, "unix socket '%s'", path);
	int b = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	if (b < 0 && errno == EADDRINUSE) {
		/* a socket file is there: replace it only if nobody listens on it */
		struct stat st;
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		bool stale = lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && probe >= 0 &&
		             connect(probe, (struct sockaddr *)&sa, sizeof sa) < 0 &&
		             errno == ECONNREFUSED;
		if (probe >= 0)
			close(probe);
		if (!stale) {
			close(fd);
			return vdisk_set_error("unix socket '%s': in use, or not a socket", path);
		}
		unlink(path);
		b = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	}
	if (b < 0 || listen(fd, SOMAXCONN) < 0) {
		int e = errno;
		close(fd);
		return vdisk_set_error_errno(e, "unix socket '%s'", path);
	}
	char epath[1024], ename[3 * NBD_MAX_STRING + 1], uri[4200];
	uri_escape(epath, sizeof epath, path, true);
	uri_escape(ename, sizeof ename, s->export_name, false);
	snprintf(uri, sizeof uri, "%s:///%s?socket=%s", s->tls_ctx ? "nbds+unix" : "nbd+unix",
	         ename, epath);
	if (add_listener(s, fd, path, uri) < 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

NBD_EXPORT int vdisk_nbd_server_listen_tcp(struct vdisk_nbd_server *srv, const char *host,
                                           const char *port, bool allow_remote)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	if (!host || !*host)
		host = "127.0.0.1";
	if (!port || !*port)
		port = "10809";
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc)
		return vdisk_set_error("tcp %s:%s: %s", host, port, gai_strerror(rc));
	int fd = -1, err = 0;
	struct addrinfo *ai;
	for (ai = res; ai; ai = ai->ai_next) {
		if (!allow_remote && !is_loopback(ai->ai_addr)) {
			err = -1;
			continue;
		}
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		            ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		freeaddrinfo(res);
		if (err == -1)
			return vdisk_set_error(
			    "tcp %s:%s: not a loopback address; serving other hosts "
			    "must be asked for",
			    host, port);
		return vdisk_set_error_errno(err, "tcp %s:%s", host, port);
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof bound;
	char addr[INET6_ADDRSTRLEN] = "?", uri[4200], ename[3 * NBD_MAX_STRING + 1];
	unsigned bport = 0;
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
		if (bound.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&bound;
			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
			bport = ntohs(in->sin_port);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&bound;
			inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
			bport = ntohs(in6->sin6_port);
		}
	}
	freeaddrinfo(res);
	uri_escape(ename, sizeof ename, s->export_name, false);
	bool v6 = strchr(addr, ':') != NULL;
	snprintf(uri, sizeof uri, "%s://%s%s%s:%u/%s", s->tls_ctx ? "nbds" : "nbd", v6 ? "[" : "",
	         addr, v6 ? "]" : "", bport, ename);
	if (add_listener(s, fd, NULL, uri) < 0) {
		close(fd);
		return -1;
	}
	return 0;
}

NBD_EXPORT int vdisk_nbd_server_listen_fd(struct vdisk_nbd_server *srv, int fd)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	struct sockaddr_storage sa;
	socklen_t sl = sizeof sa;
	int listening = 0;
	socklen_t ll = sizeof listening;
	if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0)
		return vdisk_set_error_errno(errno, "listen fd %d", fd);
	if (!listening)
		return vdisk_set_error("listen fd %d: not a listening socket", fd);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return vdisk_set_error_errno(errno, "listen fd %d", fd);
	char uri[4200], ename[3 * NBD_MAX_STRING + 1], epath[1024];
	uri_escape(ename, sizeof ename, s->export_name, false);
	const char *scheme = s->tls_ctx ? "nbds" : "nbd";
	if (sa.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&sa;
		uri_escape(epath, sizeof epath,
		           sl > offsetof(struct sockaddr_un, sun_path) ? un->sun_path : "", true);
		snprintf(uri, sizeof uri, "%s+unix:///%s?socket=%s", scheme, ename, epath);
	} else {
		snprintf(uri, sizeof uri, "%s://localhost/%s", scheme, ename);
	}
	if (add_listener(s, fd, NULL, uri) < 0)
		return -1;
	s->listeners[s->nlisteners - 1].is_unix = sa.ss_family == AF_UNIX;
	return 0;
}

NBD_EXPORT char *vdisk_nbd_server_uri(struct vdisk_nbd_server *srv)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	return s->nlisteners ? strdup(s->listeners[0].uri) : NULL;
}

/* ------------------------------------------------------------------------- */
/* Workers                                                                     */
/* ------------------------------------------------------------------------- */

static int worker_init(struct nbd_server *s, struct nbd_worker *w, unsigned index)
{
	memset(w, 0, sizeof *w);
	w->srv = s;
	w->index = index;
	w->epfd = w->wake_fd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->rl_lock, NULL);
	w->next_check = UINT64_MAX;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->epfd < 0 || w->wake_fd < 0)
		return vdisk_set_error_errno(errno, "nbd worker: epoll/eventfd");
	struct vdisk_queue_opts qo = {.struct_size = sizeof qo, .depth = NBD_MAX_INFLIGHT};
	w->q = vdisk_queue_create(s->disk, &qo);
	if (!w->q)
		return -1;
	w->qfd = vdisk_queue_fd(w->q);
	if (w->qfd < 0)
		return vdisk_set_error_errno(-w->qfd, "nbd worker: vdisk_queue_fd");
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.ptr = &w->qfd;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->qfd, &ev) < 0)
		return vdisk_set_error_errno(errno, "nbd worker: epoll_ctl");
	ev.data.ptr = &w->wake_fd;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
		return vdisk_set_error_errno(errno, "nbd worker: epoll_ctl");
	ev.data.ptr = &s->stop_fd;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->stop_fd, &ev) < 0)
		return vdisk_set_error_errno(errno, "nbd worker: epoll_ctl");
	return 0;
}

static void worker_fini(struct nbd_worker *w)
{
	if (w->q) {
		while (vdisk_queue_inflight(w->q))
			vdisk_queue_wait(w->q, -1);
		vdisk_queue_destroy(w->q);
	}
	nbd_bufpool_fini(&w->pool);
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	pthread_mutex_destroy(&w->lock);
	pthread_mutex_destroy(&w->rl_lock);
}

static void worker_wake(struct nbd_worker *w)
{
	uint64_t one = 1;
	ssize_t rc = write(w->wake_fd, &one, sizeof one);
	(void)rc; /* an eventfd that is already set is as good */
}

static void worker_drain(struct nbd_worker *w)
{
	if (w->draining)
		return;
	w->draining = true;
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->srv->stop_fd, NULL);
	for (struct nbd_conn *c = w->conns; c; c = c->next)
		nbd_conn_begin_drain(c);
	w->next_check = nbd_now_ns();
}

static void worker_take_incoming(struct nbd_worker *w)
{
	uint64_t v;
	ssize_t rc = read(w->wake_fd, &v, sizeof v);
	(void)rc; /* EAGAIN: a wake-up already consumed */
	pthread_mutex_lock(&w->lock);
	struct nbd_conn *list = w->incoming;
	w->incoming = NULL;
	pthread_mutex_unlock(&w->lock);
	while (list) {
		struct nbd_conn *c = list;
		list = c->next;
		c->next = c->prev = NULL;
		nbd_conn_attach(w, c);
		if (c->deadline_ns && c->deadline_ns < w->next_check)
			w->next_check = c->deadline_ns;
		if (w->draining)
			nbd_conn_begin_drain(c);
	}
	nbd_rlock_run_ready(w);
}

/* Deadlines (handshake, shutdown grace) and freeing finished connections. */
static void worker_check(struct nbd_worker *w, uint64_t now, bool timers)
{
	uint64_t next = UINT64_MAX;
	for (struct nbd_conn *c = w->conns, *next_c; c; c = next_c) {
		next_c = c->next;
		if (timers && c->deadline_ns) {
			if (now >= c->deadline_ns && c->state < CS_TRANSMISSION)
				nbd_conn_fail(c, "did not finish negotiating in time");
			else if (c->deadline_ns < next)
				next = c->deadline_ns;
		}
		if (c->state >= CS_CLOSING)
			nbd_conn_reap(c);
	}
	if (timers)
		w->next_check = next == UINT64_MAX               ? UINT64_MAX
		                : next > now + CHECK_INTERVAL_NS ? now + CHECK_INTERVAL_NS
		                                                 : next;
}

static void worker_flush_dirty(struct nbd_worker *w)
{
	while (w->dirty) {
		struct nbd_conn *c = w->dirty;
		w->dirty = c->dirty_next;
		c->dirty = false;
		nbd_conn_flush(c);
		if (c->resume_input) {
			c->resume_input = false;
			nbd_conn_on_input(c);
		}
		if (c->state >= CS_CLOSING)
			w->reap_pending = true;
	}
}

static int worker_timeout(struct nbd_worker *w, uint64_t now)
{
	if (w->dirty)
		return 0;
	if (w->nalways) {
		for (struct nbd_conn *c = w->conns; c; c = c->next)
			if (!c->in_poll && nbd_conn_wants_input(c))
				return 0;
	}
	if (w->next_check == UINT64_MAX)
		return -1;
	if (w->next_check <= now)
		return 0;
	uint64_t ms = (w->next_check - now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

static void worker_loop(struct nbd_worker *w)
{
	struct nbd_server *s = w->srv;
	struct epoll_event ev[EVENTS];
	for (;;) {
		uint64_t now = nbd_now_ns();
		int n = epoll_wait(w->epfd, ev, EVENTS, worker_timeout(w, now));
		if (n < 0) {
			if (errno != EINTR) {
				nbd_log(s, VDISK_NBD_LOG_ERROR, "epoll_wait: %s", strerror(errno));
				worker_drain(w);
			}
			n = 0;
		}
		vdisk_queue_plug(w->q);
		for (int i = 0; i < n; i++) {
			void *tag = ev[i].data.ptr;
			if (tag == &w->qfd)
				continue; /* polled below */
			if (tag == &w->wake_fd) {
				worker_take_incoming(w);
				continue;
			}
			if (tag == &s->stop_fd) {
				worker_drain(w);
				continue;
			}
			uintptr_t u = (uintptr_t)tag;
			struct nbd_conn *c = (struct nbd_conn *)(u & ~(uintptr_t)1);
			uint32_t e = ev[i].events;
			if (u & 1) {
				nbd_conn_on_output(c);
				continue;
			}
			if (e & (EPOLLIN | EPOLLHUP | EPOLLERR))
				nbd_conn_on_input(c);
			if (e & EPOLLOUT)
				nbd_conn_on_output(c);
		}
		if (w->nalways) {
			for (struct nbd_conn *c = w->conns; c; c = c->next)
				if (!c->in_poll && nbd_conn_wants_input(c))
					nbd_conn_on_input(c);
		}
		vdisk_queue_unplug(w->q);
		vdisk_queue_poll(w->q);
		worker_flush_dirty(w);
		if (atomic_load_explicit(&s->stopping, memory_order_relaxed) && !w->draining)
			worker_drain(w);
		now = nbd_now_ns();
		bool timers = now >= w->next_check;
		if (timers || w->reap_pending) {
			w->reap_pending = false;
			worker_check(w, now, timers);
		}
		if (!w->conns && (w->draining || w->exit_when_idle)) {
			pthread_mutex_lock(&w->lock);
			bool more = w->incoming != NULL;
			pthread_mutex_unlock(&w->lock);
			if (!more)
				break;
		}
	}
}

static void *worker_main(void *arg)
{
	worker_loop(arg);
	return NULL;
}

/* ------------------------------------------------------------------------- */
/* Running                                                                     */
/* ------------------------------------------------------------------------- */

static int flush_disk(struct nbd_server *s)
{
	if (s->read_only)
		return 0;
	vdisk_status st = vdisk_flush_sync(s->disk);
	if (vdisk_ok(st))
		return 0;
	char msg[128];
	return vdisk_set_error("flush at shutdown: %s", vdisk_status_str(st, msg, sizeof msg));
}

static void peer_name(int fd, char *buf, size_t len, unsigned long serial)
{
	struct sockaddr_storage sa;
	socklen_t sl = sizeof sa;
	char addr[INET6_ADDRSTRLEN];
	if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&sa;
		inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
		snprintf(buf, len, "client %lu (%s:%u)", serial, addr, ntohs(in->sin_port));
	} else if (sa.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
		snprintf(buf, len, "client %lu ([%s]:%u)", serial, addr, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "client %lu", serial);
	}
}

static void accept_ready(struct nbd_server *s, struct nbd_listener *l, unsigned long *serial)
{
	for (int burst = 0; burst < 64; burst++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			nbd_log(s, VDISK_NBD_LOG_ERROR, "accept: %s", strerror(errno));
			/* out of descriptors: give closing connections a moment */
			struct timespec ts = {0, 10 * 1000000};
			nanosleep(&ts, NULL);
			return;
		}
		unsigned long id = ++*serial;
		if (atomic_load(&s->nconns) >= s->max_conns) {
			nbd_log(s, VDISK_NBD_LOG_CLIENT,
			        "client %lu refused: %u connections already", id, s->max_conns);
			close(fd);
			continue;
		}
		if (!l->is_unix) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		char peer[80];
		peer_name(fd, peer, sizeof peer, id);
		struct nbd_worker *w = &s->workers[0];
		for (unsigned i = 1; i < s->nworkers; i++)
			if (atomic_load(&s->workers[i].load) < atomic_load(&w->load))
				w = &s->workers[i];
		struct nbd_conn *c = nbd_conn_new(w, fd, fd, peer);
		if (!c) {
			nbd_log(s, VDISK_NBD_LOG_ERROR, "%s refused: out of memory", peer);
			close(fd);
			continue;
		}
		nbd_log(s, VDISK_NBD_LOG_DEBUG, "%s connected", peer);
		atomic_fetch_add(&s->nconns, 1);
		atomic_fetch_add(&w->load, 1);
		pthread_mutex_lock(&w->lock);
		c->next = w->incoming;
		w->incoming = c;
		pthread_mutex_unlock(&w->lock);
		worker_wake(w);
	}
}

static void stop_workers(struct nbd_server *s)
{
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct nbd_worker *w = &s->workers[i];
		if (w->started)
			pthread_join(w->thread, NULL);
		worker_fini(w);
	}
	free(s->workers);
	s->workers = NULL;
	s->nworkers = 0;
}

static int start_workers(struct nbd_server *s, unsigned n, bool threads)
{
	s->workers = calloc(n, sizeof *s->workers);
	if (!s->workers)
		return vdisk_set_error_errno(ENOMEM, "nbd workers");
	for (unsigned i = 0; i < n; i++) {
		s->nworkers = i + 1;
		if (worker_init(s, &s->workers[i], i) < 0)
			goto fail;
		if (threads) {
			int rc = pthread_create(&s->workers[i].thread, NULL, worker_main,
			                        &s->workers[i]);
			if (rc) {
				vdisk_set_error_errno(rc, "nbd workers: pthread_create");
				goto fail;
			}
			s->workers[i].started = true;
		}
	}
	return 0;
fail:
	vdisk_nbd_server_stop((struct vdisk_nbd_server *)s);
	stop_workers(s);
	return -1;
}

NBD_EXPORT int vdisk_nbd_server_run(struct vdisk_nbd_server *srv)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	if (!s->nlisteners)
		return vdisk_set_error("vdisk_nbd_server_run: no listener");
	if (s->running)
		return vdisk_set_error("vdisk_nbd_server_run: already running");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return vdisk_set_error_errno(errno, "vdisk_nbd_server_run: epoll");
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.ptr = NULL;
	int rc = epoll_ctl(ep, EPOLL_CTL_ADD, s->stop_fd, &ev);
	for (unsigned i = 0; i < s->nlisteners && rc == 0; i++) {
		ev.data.ptr = &s->listeners[i];
		rc = epoll_ctl(ep, EPOLL_CTL_ADD, s->listeners[i].fd, &ev);
	}
	if (rc < 0) {
		vdisk_set_error_errno(errno, "vdisk_nbd_server_run: epoll_ctl");
		close(ep);
		return -1;
	}
	if (start_workers(s, s->nthreads, true) < 0) {
		close(ep);
		return -1;
	}
	s->running = true;
	unsigned long serial = 0;
	while (!atomic_load(&s->stopping)) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, -1);
		for (int i = 0; i < n; i++)
			if (evs[i].data.ptr)
				accept_ready(s, evs[i].data.ptr, &serial);
	}
	close(ep);
	for (unsigned i = 0; i < s->nlisteners; i++) {
		close(s->listeners[i].fd);
		s->listeners[i].fd = -1;
	}
	stop_workers(s);
	s->running = false;
	return flush_disk(s);
}

NBD_EXPORT int vdisk_nbd_server_serve_fds(struct vdisk_nbd_server *srv, int in_fd, int out_fd)
{
	struct nbd_server *s = (struct nbd_server *)srv;
	if (s->running)
		return vdisk_set_error("vdisk_nbd_server_serve_fds: already running");
	int in_flags = fcntl(in_fd, F_GETFL), out_flags = fcntl(out_fd, F_GETFL);
	if (in_flags < 0 || out_flags < 0)
		return vdisk_set_error_errno(errno, "vdisk_nbd_server_serve_fds: descriptors");
	if (start_workers(s, 1, false) < 0)
		return -1;
	s->running = true;
	struct nbd_worker *w = &s->workers[0];
	w->exit_when_idle = true;
	fcntl(in_fd, F_SETFL, in_flags | O_NONBLOCK);
	fcntl(out_fd, F_SETFL, out_flags | O_NONBLOCK);
	struct nbd_conn *c = nbd_conn_new(w, in_fd, out_fd, "client");
	int rc = 0;
	if (!c) {
		rc = vdisk_set_error_errno(ENOMEM, "vdisk_nbd_server_serve_fds");
	} else {
		atomic_fetch_add(&s->nconns, 1);
		atomic_fetch_add(&w->load, 1);
		nbd_conn_attach(w, c);
		w->next_check = c->deadline_ns ? c->deadline_ns : UINT64_MAX;
		worker_loop(w);
	}
	fcntl(in_fd, F_SETFL, in_flags);
	fcntl(out_fd, F_SETFL, out_flags);
	stop_workers(s);
	s->running = false;
	if (rc == 0)
		rc = flush_disk(s);
	return rc;
}
