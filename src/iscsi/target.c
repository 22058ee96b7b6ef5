/* The iSCSI target: configuration, listener, connection threads, the nexus
 * table shared by sessions. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "iscsi/target.h"
#include "vdisk/backend.h"

uint64_t isc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void isc_log(struct isc_target *t, int level, const char *fmt, ...)
{
	if (level > t->log_level)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (t->log)
		t->log(t->log_opaque, level, msg);
	else
		fprintf(stderr, "vdisk iscsi: %s\n", msg);
}

/* ------------------------------------------------------------------------- */
/* The nexus table                                                             */
/* ------------------------------------------------------------------------- */

/* A 128-bit host id for a nexus: two FNV-1a hashes of "name,isid". */
static void nexus_host_id(const char *iname, const uint8_t isid[6], uint8_t out[16])
{
	uint64_t h[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
	for (int k = 0; k < 2; k++) {
		for (const char *p = iname; *p; p++)
			h[k] = (h[k] ^ (uint8_t)*p) * (k ? 0x100000001b3ull : 0x100000001b5ull);
		for (int i = 0; i < 6; i++)
			h[k] = (h[k] ^ isid[i]) * (k ? 0x100000001b3ull : 0x100000001b5ull);
		h[k] ^= h[k] >> 29;
	}
	for (int i = 0; i < 8; i++) {
		out[i] = (uint8_t)(h[0] >> (56 - 8 * i));
		out[8 + i] = (uint8_t)(h[1] >> (56 - 8 * i));
	}
}

struct isc_nexus *isc_nexus_get(struct isc_target *t, const char *iname, const uint8_t isid[6])
{
	for (struct isc_nexus *n = t->nexus; n; n = n->next)
		if (strcmp(n->iname, iname) == 0 && memcmp(n->isid, isid, 6) == 0) {
			n->last_used = ++t->use_clock;
			return n;
		}
	if (t->nnexus >= ISC_MAX_NEXUS) {
		/* drop the least recently used nexus without a session */
		struct isc_nexus **victim = NULL;
		for (struct isc_nexus **pp = &t->nexus; *pp; pp = &(*pp)->next)
			if (!(*pp)->conn && *pp != t->spc2_holder &&
			    (!victim || (*pp)->last_used < (*victim)->last_used))
				victim = pp;
		if (!victim)
			return NULL;
		struct isc_nexus *v = *victim;
		*victim = v->next;
		free(v->iname);
		free(v);
		t->nnexus--;
	}
	struct isc_nexus *n = calloc(1, sizeof *n);
	if (!n || !(n->iname = strdup(iname))) {
		free(n);
		return NULL;
	}
	memcpy(n->isid, isid, 6);
	nexus_host_id(iname, isid, n->host_id);
	n->last_used = ++t->use_clock;
	n->next = t->nexus;
	t->nexus = n;
	t->nnexus++;
	return n;
}

void isc_ua_all(struct isc_target *t, struct isc_nexus *except, uint32_t ua)
{
	pthread_mutex_lock(&t->lock);
	for (struct isc_nexus *n = t->nexus; n; n = n->next)
		if (n != except)
			n->ua |= ua;
	pthread_mutex_unlock(&t->lock);
}

void isc_ua_host(struct isc_target *t, const uint8_t host_id[16], uint32_t ua)
{
	pthread_mutex_lock(&t->lock);
	for (struct isc_nexus *n = t->nexus; n; n = n->next)
		if (memcmp(n->host_id, host_id, 16) == 0)
			n->ua |= ua;
	pthread_mutex_unlock(&t->lock);
}

bool isc_nexus_by_host(struct isc_target *t, const uint8_t host_id[16], char *iname, size_t len,
                       uint8_t isid[6])
{
	bool found = false;
	pthread_mutex_lock(&t->lock);
	for (struct isc_nexus *n = t->nexus; n; n = n->next)
		if (memcmp(n->host_id, host_id, 16) == 0) {
			snprintf(iname, len, "%s", n->iname);
			memcpy(isid, n->isid, 6);
			found = true;
			break;
		}
	pthread_mutex_unlock(&t->lock);
	return found;
}

/* ------------------------------------------------------------------------- */
/* Configuration                                                               */
/* ------------------------------------------------------------------------- */

/* Lines "user:secret"; '#' comments and blank lines are skipped. */
static int load_chap(struct isc_target *t, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return vdisk_set_error_errno(errno, "chap-file '%s'", path);
	char line[1024];
	unsigned lineno = 0;
	int rc = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!n || line[0] == '#')
			continue;
		char *colon = strchr(line, ':');
		if (!colon || colon == line || !colon[1]) {
			rc = vdisk_set_error("chap-file '%s' line %u: expected 'user:secret'", path,
			                     lineno);
			break;
		}
		*colon = '\0';
		size_t slen = strlen(colon + 1);
		if (slen < 12 || slen > 255) {
			rc = vdisk_set_error(
			    "chap-file '%s' line %u: the secret must have 12 to 255 characters",
			    path, lineno);
			break;
		}
		struct isc_chap *a = realloc(t->chap, (t->nchap + 1) * sizeof *a);
		if (!a) {
			rc = vdisk_set_error_errno(ENOMEM, "chap-file '%s'", path);
			break;
		}
		t->chap = a;
		a[t->nchap].user = strdup(line);
		a[t->nchap].secret = (uint8_t *)strdup(colon + 1);
		a[t->nchap].len = slen;
		t->nchap++;
		if (!a[t->nchap - 1].user || !a[t->nchap - 1].secret) {
			rc = vdisk_set_error_errno(ENOMEM, "chap-file '%s'", path);
			break;
		}
	}
	if (!rc && ferror(f))
		rc = vdisk_set_error_errno(EIO, "chap-file '%s'", path);
	if (!rc && t->nchap == 0)
		rc = vdisk_set_error("chap-file '%s': no 'user:secret' line", path);
	explicit_bzero(line, sizeof line);
	fclose(f);
	return rc;
}

static bool valid_target_name(const char *n)
{
	size_t len = strlen(n);
	if (len < 4 || len > 223)
		return false;
	if (strncmp(n, "iqn.", 4) && strncmp(n, "eui.", 4) && strncmp(n, "naa.", 4))
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '-' || *p == ':'))
			return false;
	return true;
}

ISC_EXPORT struct vdisk_iscsi_target *vdisk_iscsi_target_new(struct vdisk *d,
                                                             const struct vdisk_iscsi_config *cfg)
{
	struct vdisk_iscsi_config def = {.struct_size = sizeof def};
	if (!cfg)
		cfg = &def;
	if (cfg->struct_size < sizeof(size_t) || cfg->struct_size > sizeof def) {
		vdisk_set_error("vdisk_iscsi_target_new: struct_size %zu is not known",
		                cfg->struct_size);
		return NULL;
	}
	memcpy(&def, cfg, cfg->struct_size);
	cfg = &def;
	const char *name =
	    cfg->target_name && *cfg->target_name ? cfg->target_name : ISC_DEFAULT_NAME;
	if (!valid_target_name(name)) {
		vdisk_set_error("target-name '%s': not an iSCSI name (iqn.YYYY-MM.domain:id, "
		                "lower case letters, digits, '.', '-', ':')",
		                name);
		return NULL;
	}
	struct isc_target *t = calloc(1, sizeof *t);
	if (!t) {
		vdisk_set_error_errno(ENOMEM, "vdisk_iscsi_target_new");
		return NULL;
	}
	t->lfd = -1;
	t->stop_fd = -1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	pthread_mutex_init(&t->caw_lock, NULL);
	t->disk = vdisk_ref(d);
	t->name = strdup(name);
	t->read_only = cfg->read_only || vdisk_read_only(d);
	t->max_conns = cfg->max_connections ? cfg->max_connections : 64;
	t->login_timeout_ns = cfg->login_timeout_ms < 0 ? -1
	                      : cfg->login_timeout_ms == 0
	                          ? 15000000000ll
	                          : (int64_t)cfg->login_timeout_ms * 1000000;
	t->log_level = cfg->log_level;
	t->log = cfg->log;
	t->log_opaque = cfg->log_opaque;
	t->bs = vdisk_sector_size(d);
	t->shift = (unsigned)__builtin_ctz(t->bs);
	t->pbs = vdisk_physical_sector_size(d);
	t->fua = vdisk_fua_respected(d);
	t->unmap = vdisk_unmap_behavior(d);
	t->opt_unmap = vdisk_optimal_unmap_sectors(d);
	t->caps = vdisk_caps(d);
	if (!vdisk_disk_id(d, t->id)) {
		/* no id: one from the target name, stable across runs */
		uint8_t zero[6] = {0};
		nexus_host_id(t->name, zero, t->id);
	}
	t->next_tsih = 1;
	t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!t->name || t->stop_fd < 0) {
		vdisk_set_error_errno(errno ? errno : ENOMEM, "vdisk_iscsi_target_new");
		goto fail;
	}
	if (cfg->chap_file && load_chap(t, cfg->chap_file) < 0)
		goto fail;
	if (cfg->pr_state_file && !(t->pr_state_file = strdup(cfg->pr_state_file))) {
		vdisk_set_error_errno(ENOMEM, "vdisk_iscsi_target_new");
		goto fail;
	}
	if (isc_pr_init(t) < 0)
		goto fail;
	return (struct vdisk_iscsi_target *)t;
fail:
	vdisk_iscsi_target_free((struct vdisk_iscsi_target *)t);
	return NULL;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

ISC_EXPORT int vdisk_iscsi_target_listen_tcp(struct vdisk_iscsi_target *tt, const char *host,
                                             const char *port, bool allow_remote)
{
	struct isc_target *t = (struct isc_target *)tt;
	if (t->lfd >= 0)
		return vdisk_set_error("iscsi: the target listens already");
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	if (!host || !*host)
		host = "127.0.0.1";
	if (!port || !*port)
		port = "3260";
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc)
		return vdisk_set_error("iscsi %s:%s: %s", host, port, gai_strerror(rc));
	int fd = -1, err = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
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
	freeaddrinfo(res);
	if (fd < 0) {
		if (err == -1)
			return vdisk_set_error("iscsi %s:%s: not a loopback address; serving other "
			                       "hosts must be asked for",
			                       host, port);
		return vdisk_set_error_errno(err, "iscsi %s:%s", host, port);
	}
	struct sockaddr_storage b;
	socklen_t blen = sizeof b;
	char addr[INET6_ADDRSTRLEN] = "?";
	unsigned bport = 0;
	if (getsockname(fd, (struct sockaddr *)&b, &blen) == 0) {
		if (b.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&b;
			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
			bport = ntohs(in->sin_port);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&b;
			inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
			bport = ntohs(in6->sin6_port);
		}
	}
	char uri[512];
	bool v6 = strchr(addr, ':') != NULL;
	snprintf(uri, sizeof uri, "iscsi://%s%s%s:%u/%s/0", v6 ? "[" : "", addr, v6 ? "]" : "",
	         bport, t->name);
	t->uri = strdup(uri);
	t->lfd = fd;
	if (!t->uri) {
		close(fd);
		t->lfd = -1;
		return vdisk_set_error_errno(ENOMEM, "iscsi");
	}
	return 0;
}

ISC_EXPORT char *vdisk_iscsi_target_uri(struct vdisk_iscsi_target *tt)
{
	struct isc_target *t = (struct isc_target *)tt;
	return t->uri ? strdup(t->uri) : NULL;
}

static void *conn_thread(void *arg)
{
	struct isc_conn *c = arg;
	struct isc_target *t = c->t;
	isc_conn_serve(c);
	close(c->in_fd);
	pthread_mutex_lock(&t->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	t->nconns--;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	isc_conn_free(c);
	return NULL;
}

static void accept_one(struct isc_target *t, unsigned long *serial)
{
	struct sockaddr_storage ss;
	socklen_t slen = sizeof ss;
	int fd = accept4(t->lfd, (struct sockaddr *)&ss, &slen, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			isc_log(t, VDISK_ISCSI_LOG_ERROR, "accept: %s", strerror(errno));
		return;
	}
	char peer[80], host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	snprintf(peer, sizeof peer, "%s:%u#%lu", host, port, ++*serial);
	pthread_mutex_lock(&t->lock);
	bool full = t->nconns >= t->max_conns;
	pthread_mutex_unlock(&t->lock);
	if (full) {
		isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: refused: %u connections already", peer,
		        t->max_conns);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct isc_conn *c = isc_conn_new(t, fd, fd, peer);
	if (!c) {
		isc_log(t, VDISK_ISCSI_LOG_ERROR, "%s: %s", peer, vdisk_errmsg());
		close(fd);
		return;
	}
	c->is_socket = true;
	pthread_mutex_lock(&t->lock);
	c->next = t->conns;
	if (t->conns)
		t->conns->prev = c;
	t->conns = c;
	t->nconns++;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&c->thread, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (rc) {
		t->conns = c->next;
		if (c->next)
			c->next->prev = NULL;
		t->nconns--;
		pthread_mutex_unlock(&t->lock);
		isc_log(t, VDISK_ISCSI_LOG_ERROR, "%s: thread: %s", peer, strerror(rc));
		close(fd);
		isc_conn_free(c);
		return;
	}
	pthread_mutex_unlock(&t->lock);
	isc_log(t, VDISK_ISCSI_LOG_DEBUG, "%s: connected", peer);
}

ISC_EXPORT int vdisk_iscsi_target_run(struct vdisk_iscsi_target *tt)
{
	struct isc_target *t = (struct isc_target *)tt;
	if (t->lfd < 0)
		return vdisk_set_error("iscsi: the target does not listen");
	t->running = true;
	unsigned long serial = 0;
	while (!atomic_load(&t->stopping)) {
		struct pollfd p[2] = {{.fd = t->lfd, .events = POLLIN},
		                      {.fd = t->stop_fd, .events = POLLIN}};
		int n = poll(p, 2, -1);
		if (n < 0 && errno != EINTR) {
			isc_log(t, VDISK_ISCSI_LOG_ERROR, "poll: %s", strerror(errno));
			break;
		}
		if (n > 0 && (p[0].revents & POLLIN))
			accept_one(t, &serial);
	}
	atomic_store(&t->stopping, true);
	/* every connection thread sees stop_fd and finishes */
	pthread_mutex_lock(&t->lock);
	while (t->nconns)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
	t->running = false;
	vdisk_status st = vdisk_flush_sync(t->disk);
	if (!vdisk_ok(st) && !t->read_only) {
		char b[128];
		return vdisk_set_error("iscsi: flush at stop: %s",
		                       vdisk_status_str(st, b, sizeof b));
	}
	return 0;
}

ISC_EXPORT int vdisk_iscsi_target_serve_fds(struct vdisk_iscsi_target *tt, int in_fd, int out_fd)
{
	struct isc_target *t = (struct isc_target *)tt;
	struct isc_conn *c = isc_conn_new(t, in_fd, out_fd, "fds");
	if (!c)
		return -1;
	pthread_mutex_lock(&t->lock);
	t->nconns++;
	pthread_mutex_unlock(&t->lock);
	isc_conn_serve(c);
	pthread_mutex_lock(&t->lock);
	t->nconns--;
	pthread_mutex_unlock(&t->lock);
	isc_conn_free(c);
	return 0;
}

ISC_EXPORT void vdisk_iscsi_target_stop(struct vdisk_iscsi_target *tt)
{
	struct isc_target *t = (struct isc_target *)tt;
	atomic_store(&t->stopping, true);
	uint64_t one = 1;
	if (t->stop_fd >= 0) {
		ssize_t r = write(t->stop_fd, &one, sizeof one);
		(void)r;
	}
}

ISC_EXPORT void vdisk_iscsi_target_free(struct vdisk_iscsi_target *tt)
{
	struct isc_target *t = (struct isc_target *)tt;
	if (!t)
		return;
	isc_pr_fini(t);
	if (t->lfd >= 0)
		close(t->lfd);
	if (t->stop_fd >= 0)
		close(t->stop_fd);
	while (t->nexus) {
		struct isc_nexus *n = t->nexus;
		t->nexus = n->next;
		free(n->iname);
		free(n);
	}
	for (unsigned i = 0; i < t->nchap; i++) {
		free(t->chap[i].user);
		if (t->chap[i].secret)
			explicit_bzero(t->chap[i].secret, t->chap[i].len);
		free(t->chap[i].secret);
	}
	free(t->chap);
	free(t->uri);
	free(t->name);
	free(t->pr_state_file);
	free(t->pr_domain);
	if (t->disk)
		vdisk_unref(t->disk);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->caw_lock);
	free(t);
}
