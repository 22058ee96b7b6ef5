/* nbd: an NBD export as a disk, through libnbd's asynchronous API.
 *
 * Each queue has its own connection (its own libnbd handle), whose socket the
 * queue watches: commands are issued from the submitting thread and their
 * replies are read from the queue's poll, so completions arrive on the queue
 * that submitted them without a thread hop.  The connection made by open to
 * read the export's metadata becomes the first queue's.
 *
 * libnbd runs completion callbacks with the handle's lock held, where no nbd_*
 * call on the same handle is allowed; a request's completion may submit the
 * next request.  So libnbd's callbacks only record the result and put the
 * request on the queue's done list, which is delivered once libnbd has
 * returned.
 *
 * A connection that fails (the server closes it, breaks the protocol, or
 * leaves a command unanswered past the timeout) fails every request in flight
 * on it and every later one with an I/O error whose errno names the cause
 * (ECONNRESET, EPROTO, ETIMEDOUT, ...).  It is never reconnected: replaying
 * writes whose fate is unknown could undo newer data.
 */
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

#define NBDC_DEFAULT_TIMEOUT (60ull * 1000000000ull)
/* The largest read or write sent in one command when the server names no
 * maximum: what the NBD protocol says a client may assume. */
#define NBDC_DEFAULT_MAX_PAYLOAD (32u << 20)
/* Trim, write-zeroes and block status carry a 32-bit length. */
#define NBDC_MAX_RANGE (1u << 30)
#define NBDC_CAUSE_MAX 256

struct nbdc {
	char *uri;
	char *export; /* NULL: the URI's */
	uint64_t timeout_ns;
	uint64_t size;
	uint32_t ss;
	uint32_t min_block, pref_block, max_block; /* as the server said (0: not said) */
	uint32_t max_payload;                      /* bytes per read/write command */
	bool can_flush, can_fua, can_trim, can_zero, can_fast_zero, can_multi_conn, can_cache;
	bool can_df, base_allocation, structured, server_ro, tls;

	pthread_mutex_t lock;
	struct nbd_handle *spare; /* open's connection, for the first queue */
	unsigned connections, failed;
	char last_failure[NBDC_CAUSE_MAX];
};

struct nbdc_req;

struct nbdc_queue {
	struct nbdc *c;
	struct vdisk_queue *q;
	struct nbd_handle *h; /* NULL once the connection failed */
	struct vdisk_watch w;
	struct vdisk_timer timer;
	bool timer_on;
	bool draining;
	struct nbdc_req *fl_head, *fl_tail; /* in flight, oldest first */
	struct nbdc_req *done_head, *done_tail;
	int dead_errno;
	char cause[NBDC_CAUSE_MAX];
};

struct nbdc_req {
	struct nbdc_queue *s;
	struct nbdc_req *prev, *next; /* in flight */
	struct nbdc_req *dnext;       /* done */
	uint64_t t_sub;
	unsigned pending; /* commands not answered, plus one while submitting */
	int err;
	bool in_flight;
	void *bounce;
	/* extents: the byte position reached, and a partly described sector */
	uint64_t ext_pos;
	uint32_t part_flags;
	bool part_open, ext_full, ext_seen;
};

/* ------------------------------------------------------------------------- */
/* Connecting                                                                  */
/* ------------------------------------------------------------------------- */

static int nbdc_fail_conn(const struct nbdc *c, struct nbd_handle *h, const char *what)
{
	int e = nbd_get_errno();
	const char *msg = nbd_get_error();
	vdisk_set_error_errno(e ? e : EIO, "uri %s: %s: %s", c->uri, what, msg ? msg : "failed");
	nbd_close(h);
	return -1;
}

/* Run the handle's state machine until it leaves the connecting states or the
 * deadline passes. */
static int nbdc_run_until(struct nbdc *c, struct nbd_handle *h, uint64_t deadline, const char *what)
{
	while (nbd_aio_is_connecting(h)) {
		uint64_t now = vdisk_now_ns();
		if (now >= deadline) {
			vdisk_set_error_errno(ETIMEDOUT, "uri %s: %s: no answer from the server",
			                      c->uri, what);
			nbd_close(h);
			return -1;
		}
		int dir = nbd_aio_get_direction(h);
		struct pollfd p = {.fd = nbd_aio_get_fd(h), .events = 0};
		if (p.fd < 0)
			return nbdc_fail_conn(c, h, what);
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			p.events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			p.events |= POLLOUT;
		uint64_t left_ms = (deadline - now + 999999) / 1000000;
		int rc = poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms);
		if (rc < 0 && errno != EINTR) {
			vdisk_set_error_errno(errno, "uri %s: %s: poll", c->uri, what);
			nbd_close(h);
			return -1;
		}
		if (rc <= 0)
			continue;
		if ((p.revents & (POLLIN | POLLERR | POLLHUP)) && nbd_aio_notify_read(h) < 0)
			return nbdc_fail_conn(c, h, what);
		if ((p.revents & POLLOUT) && nbd_aio_notify_write(h) < 0)
			return nbdc_fail_conn(c, h, what);
	}
	return 0;
}

static int nbdc_go_done(void *user_data, int *error)
{
	*(int *)user_data = *error;
	return 1;
}

/* A connection ready for transmission, or NULL after vdisk_set_error(). */
static struct nbd_handle *nbdc_connect(struct nbdc *c)
{
	uint64_t deadline = vdisk_now_ns() + (c->timeout_ns ? c->timeout_ns : NBDC_DEFAULT_TIMEOUT);
	struct nbd_handle *h = nbd_create();
	if (!h) {
		vdisk_set_error_errno(nbd_get_errno(), "uri %s: %s", c->uri, nbd_get_error());
		return NULL;
	}
	/* TLS keys and certificates are named by the URI's query */
	if (nbd_set_uri_allow_local_file(h, true) < 0 ||
	    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    (c->export && nbd_set_opt_mode(h, true) < 0))
		return nbdc_fail_conn(c, h, "libnbd"), NULL;
	if (nbd_aio_connect_uri(h, c->uri) < 0)
		return nbdc_fail_conn(c, h, "connect"), NULL;
	if (nbdc_run_until(c, h, deadline, "connect") < 0)
		return NULL;
	if (c->export && nbd_aio_is_negotiating(h)) {
		int goerr = 0;
		nbd_completion_callback cb = {.callback = nbdc_go_done, .user_data = &goerr};
		if (nbd_set_export_name(h, c->export) < 0 || nbd_aio_opt_go(h, cb) < 0)
			return nbdc_fail_conn(c, h, "export"), NULL;
		if (nbdc_run_until(c, h, deadline, "export") < 0)
			return NULL;
		if (!nbd_aio_is_ready(h)) {
			vdisk_set_error_errno(goerr ? goerr : ENOENT,
			                      "uri %s: export '%s': the server refused it", c->uri,
			                      c->export);
			nbd_close(h);
			return NULL;
		}
	}
	if (!nbd_aio_is_ready(h)) {
		const char *msg = nbd_get_error();
		vdisk_set_error_errno(nbd_get_errno() ? nbd_get_errno() : ECONNRESET,
		                      "uri %s: connect: %s", c->uri,
		                      msg ? msg : "the server closed the connection");
		nbd_close(h);
		return NULL;
	}
	return h;
}

/* Disconnect politely but never wait past the timeout for it. */
static void nbdc_disconnect(struct nbdc *c, struct nbd_handle *h)
{
	if (nbd_aio_is_ready(h) && nbd_aio_disconnect(h, 0) == 0) {
		uint64_t deadline = vdisk_now_ns() + 1000000000ull;
		while (!nbd_aio_is_closed(h) && !nbd_aio_is_dead(h) && vdisk_now_ns() < deadline) {
			int dir = nbd_aio_get_direction(h);
			struct pollfd p = {.fd = nbd_aio_get_fd(h), .events = 0};
			if (p.fd < 0)
				break;
			if (dir & LIBNBD_AIO_DIRECTION_READ)
				p.events |= POLLIN;
			if (dir & LIBNBD_AIO_DIRECTION_WRITE)
				p.events |= POLLOUT;
			if (poll(&p, 1, 100) <= 0)
				continue;
			if ((p.revents & (POLLIN | POLLERR | POLLHUP)) &&
			    nbd_aio_notify_read(h) < 0)
				break;
			if ((p.revents & POLLOUT) && nbd_aio_notify_write(h) < 0)
				break;
		}
	}
	nbd_close(h);
}

/* ------------------------------------------------------------------------- */
/* Open                                                                        */
/* ------------------------------------------------------------------------- */

static int nbdc_flag(struct nbdc *c, struct nbd_handle *h, int (*fn)(struct nbd_handle *),
                     bool *out, const char *what)
{
	int v = fn(h);
	if (v < 0)
		return vdisk_set_error("uri %s: %s: %s", c->uri, what, nbd_get_error());
	*out = v > 0;
	return 0;
}

static void nbdc_free(struct nbdc *c)
{
	if (!c)
		return;
	if (c->spare)
		nbdc_disconnect(c, c->spare);
	pthread_mutex_destroy(&c->lock);
	free(c->uri);
	free(c->export);
	free(c);
}

static int nbdc_block_size(struct nbdc *c, struct nbd_handle *h, int which, uint32_t *out)
{
	int64_t v = nbd_get_block_size(h, which);
	if (v < 0)
		return vdisk_set_error("uri %s: block size: %s", c->uri, nbd_get_error());
	*out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	return 0;
}

static int nbdc_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"uri", "export", "timeout", NULL};
	const char *uri = NULL, *export = NULL;
	uint64_t timeout = NBDC_DEFAULT_TIMEOUT;
	struct nbd_handle *h = NULL;
	struct nbdc *c = NULL;

	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "uri", &uri) < 0 ||
	    vdisk_cfg_string(cfg, "export", &export) < 0 ||
	    vdisk_cfg_duration(cfg, "timeout", &timeout) < 0)
		return -1;
	if (!uri)
		return vdisk_set_error(
		    "uri: missing (an NBD URI such as nbd+unix:///?socket=PATH)");
	c = calloc(1, sizeof *c);
	if (!c)
		return vdisk_set_error_errno(ENOMEM, "nbd");
	pthread_mutex_init(&c->lock, NULL);
	c->uri = strdup(uri);
	c->export = export ? strdup(export) : NULL;
	c->timeout_ns = timeout;
	if (!c->uri || (export && !c->export)) {
		vdisk_set_error_errno(ENOMEM, "nbd");
		goto fail;
	}
	h = nbdc_connect(c);
	if (!h)
		goto fail;
	int64_t size = nbd_get_size(h);
	if (size < 0) {
		vdisk_set_error("uri %s: export size: %s", c->uri, nbd_get_error());
		goto fail;
	}
	c->size = (uint64_t)size;
	if (nbdc_flag(c, h, nbd_can_flush, &c->can_flush, "flush") < 0 ||
	    nbdc_flag(c, h, nbd_can_fua, &c->can_fua, "fua") < 0 ||
	    nbdc_flag(c, h, nbd_can_trim, &c->can_trim, "trim") < 0 ||
	    nbdc_flag(c, h, nbd_can_zero, &c->can_zero, "write-zeroes") < 0 ||
	    nbdc_flag(c, h, nbd_can_fast_zero, &c->can_fast_zero, "fast-zero") < 0 ||
	    nbdc_flag(c, h, nbd_can_multi_conn, &c->can_multi_conn, "multi-conn") < 0 ||
	    nbdc_flag(c, h, nbd_can_cache, &c->can_cache, "cache") < 0 ||
	    nbdc_flag(c, h, nbd_can_df, &c->can_df, "df") < 0 ||
	    nbdc_flag(c, h, nbd_is_read_only, &c->server_ro, "read-only") < 0 ||
	    nbdc_block_size(c, h, LIBNBD_SIZE_MINIMUM, &c->min_block) < 0 ||
	    nbdc_block_size(c, h, LIBNBD_SIZE_PREFERRED, &c->pref_block) < 0 ||
	    nbdc_block_size(c, h, LIBNBD_SIZE_MAXIMUM, &c->max_block) < 0)
		goto fail;
	c->base_allocation = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) > 0;
	c->structured = nbd_get_structured_replies_negotiated(h) > 0;
	c->tls = nbd_get_tls_negotiated(h) > 0;

	/* The logical sector is 512 bytes, or the server's minimum block if
	 * larger; the physical one its preferred block (at most 64 KiB). */
	uint32_t ss = 512;
	if (c->min_block > ss)
		ss = c->min_block;
	if (ss > 65536 || (ss & (ss - 1))) {
		vdisk_set_error("uri %s: minimum block size %" PRIu32
		                " is not a power of two of at most 64 KiB",
		                c->uri, c->min_block);
		goto fail;
	}
	if (c->size % ss) {
		vdisk_set_error("uri %s: export size %" PRIu64 " is not a multiple of the %" PRIu32
		                "-byte sector (its tail could be neither read nor written)",
		                c->uri, c->size, ss);
		goto fail;
	}
	c->ss = ss;
	uint32_t pss = ss;
	if (c->pref_block > pss && !(c->pref_block & (c->pref_block - 1)))
		pss = c->pref_block > 65536 ? 65536 : c->pref_block;
	uint32_t maxp = NBDC_DEFAULT_MAX_PAYLOAD;
	if (c->max_block && c->max_block < maxp)
		maxp = c->max_block;
	maxp -= maxp % ss;
	if (maxp == 0) {
		vdisk_set_error("uri %s: maximum block size %" PRIu32
		                " is smaller than the %" PRIu32 "-byte sector",
		                c->uri, c->max_block, ss);
		goto fail;
	}
	c->max_payload = maxp;

	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = ss;
	m->physical_sector_size = pss;
	m->sector_count = c->size / ss;
	m->read_only = c->server_ro || vdisk_read_only_requested(d);
	m->fua = c->can_fua;
	m->unmap = c->can_trim ? VDISK_UNMAP_UNSPECIFIED : VDISK_UNMAP_IGNORED;
	m->optimal_unmap_sectors = pss / ss;
	m->caps = 0;
	if (c->can_fast_zero)
		m->caps |= VDISK_CAP_FAST_ZERO;
	/* with multi-conn, a flush on one connection covers the writes of all */
	if (c->can_multi_conn)
		m->caps |= VDISK_CAP_SHARED_FLUSH;
	m->req_ctx_size = sizeof(struct nbdc_req);
	c->spare = h;
	c->connections = 1;
	vdisk_set_priv(d, c);
	return 0;
fail:
	if (h)
		nbd_close(h);
	nbdc_free(c);
	return -1;
}

static void nbdc_close(struct vdisk *d)
{
	nbdc_free(vdisk_priv(d));
}

/* ------------------------------------------------------------------------- */
/* Per-queue connection                                                        */
/* ------------------------------------------------------------------------- */

static void nbdc_ready(struct vdisk_watch *w, unsigned revents);
static void nbdc_timeout(struct vdisk_timer *t);

static struct nbdc_queue *nbdc_from_watch(struct vdisk_watch *w)
{
	return (struct nbdc_queue *)((char *)w - offsetof(struct nbdc_queue, w));
}

static void nbdc_fl_remove(struct nbdc_queue *s, struct nbdc_req *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		s->fl_head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		s->fl_tail = n->prev;
	n->prev = n->next = NULL;
	n->in_flight = false;
}

static void nbdc_done_push(struct nbdc_queue *s, struct nbdc_req *n)
{
	if (n->in_flight)
		nbdc_fl_remove(s, n);
	n->dnext = NULL;
	if (s->done_tail)
		s->done_tail->dnext = n;
	else
		s->done_head = n;
	s->done_tail = n;
}

/* The connection is lost: nothing more will be sent or read on it. */
static void nbdc_kill(struct nbdc_queue *s, int err, const char *cause)
{
	if (!s->h)
		return;
	s->dead_errno = err ? err : EIO;
	snprintf(s->cause, sizeof s->cause, "%s",
	         cause && *cause ? cause : strerror(s->dead_errno));
	vdisk_watch_stop(s->q, &s->w);
	if (s->timer_on)
		vdisk_timer_cancel(s->q, &s->timer);
	s->timer_on = false;
	/* no callback of libnbd runs after this */
	nbd_close(s->h);
	s->h = NULL;
	while (s->fl_head) {
		struct nbdc_req *n = s->fl_head;
		n->pending = 0;
		n->err = s->dead_errno;
		nbdc_done_push(s, n);
	}
	pthread_mutex_lock(&s->c->lock);
	s->c->failed++;
	snprintf(s->c->last_failure, sizeof s->c->last_failure, "%s", s->cause);
	pthread_mutex_unlock(&s->c->lock);
	fprintf(stderr, "vdisk: nbd: %s: connection failed (%s); its requests fail with: %s\n",
	        s->c->uri, s->cause, strerror(s->dead_errno));
}

/* Why libnbd gave up on the handle, as an errno and a message. */
static void nbdc_kill_from_libnbd(struct nbdc_queue *s)
{
	int e = nbd_get_errno();
	const char *msg = nbd_get_error();
	char cause[NBDC_CAUSE_MAX];
	if (nbd_aio_is_closed(s->h) && (!msg || !*msg)) {
		e = ECONNRESET;
		msg = "the server closed the connection";
	}
	if (!e || e == ENOTCONN)
		e = msg && strstr(msg, "disconnected") ? ECONNRESET : EPROTO;
	snprintf(cause, sizeof cause, "%s", msg && *msg ? msg : strerror(e));
	nbdc_kill(s, e, cause);
}

static vdisk_status nbdc_status(struct vdisk_req *r, int err)
{
	if (!err)
		return vdisk_status_ok();
	if (r->op == VDISK_OP_WRITE_ZEROES && (err == ENOTSUP || err == EOPNOTSUPP))
		return vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, err);
	return vdisk_status_io(err);
}

static void nbdc_finish(struct nbdc_req *n)
{
	struct vdisk_req *r = vdisk_req_from_ctx(n);
	struct nbdc_queue *s = n->s;
	int err = n->err;
	/* libnbd fails the commands of a dead connection with ENOTCONN: say why */
	if (err && s->dead_errno && err == ENOTCONN)
		err = s->dead_errno;
	if (r->op == VDISK_OP_EXTENTS && !err && *r->ext_n == 0 && r->ext_max) {
		/* less than a sector described: call that sector data */
		r->ext[0] = (struct vdisk_extent){r->sector, 1, 0, 0};
		*r->ext_n = 1;
	}
	if (n->bounce) {
		if (r->op == VDISK_OP_READ && !err)
			vdisk_iov_from_buf(r->iov, r->iovcnt, 0, n->bounce, r->len);
		vdisk_bounce_put(r->q, n->bounce, r->len);
		n->bounce = NULL;
	}
	vdisk_req_complete(r, nbdc_status(r, err));
}

static void nbdc_drain(struct nbdc_queue *s)
{
	if (s->draining)
		return;
	s->draining = true;
	while (s->done_head) {
		struct nbdc_req *n = s->done_head;
		s->done_head = n->dnext;
		if (!s->done_head)
			s->done_tail = NULL;
		nbdc_finish(n);
	}
	s->draining = false;
}

/* Watch the socket in the direction libnbd needs now. */
static void nbdc_arm(struct nbdc_queue *s)
{
	if (!s->h)
		return;
	if (nbd_aio_is_dead(s->h) || nbd_aio_is_closed(s->h)) {
		nbdc_kill_from_libnbd(s);
		return;
	}
	int dir = nbd_aio_get_direction(s->h);
	unsigned ev = 0;
	if (dir & LIBNBD_AIO_DIRECTION_READ)
		ev |= POLLIN;
	if (dir & LIBNBD_AIO_DIRECTION_WRITE)
		ev |= POLLOUT;
	if (ev != s->w.events) {
		int rc = vdisk_watch_modify(s->q, &s->w, ev);
		if (rc < 0)
			nbdc_kill(s, -rc, "cannot watch the socket");
	}
	if (s->c->timeout_ns && !s->timer_on && s->fl_head) {
		s->timer_on = true;
		vdisk_timer_start(s->q, &s->timer, s->fl_head->t_sub + s->c->timeout_ns,
		                  nbdc_timeout);
	}
}

static void nbdc_ready(struct vdisk_watch *w, unsigned revents)
{
	struct nbdc_queue *s = nbdc_from_watch(w);
	int rc = 0;
	if (revents & (POLLIN | POLLERR | POLLHUP))
		rc = nbd_aio_notify_read(s->h);
	/* a hang-up while libnbd is sending must end in a dead handle, not a
	 * busy loop: let the send fail */
	if (rc == 0 &&
	    ((revents & POLLOUT) || ((revents & (POLLERR | POLLHUP)) &&
	                             (nbd_aio_get_direction(s->h) & LIBNBD_AIO_DIRECTION_WRITE))))
		rc = nbd_aio_notify_write(s->h);
	if (rc < 0)
		nbdc_kill_from_libnbd(s);
	else
		nbdc_arm(s);
	nbdc_drain(s);
}

static void nbdc_timeout(struct vdisk_timer *t)
{
	struct nbdc_queue *s =
	    (struct nbdc_queue *)((char *)t - offsetof(struct nbdc_queue, timer));
	s->timer_on = false;
	if (!s->h || !s->fl_head)
		return;
	uint64_t due = s->fl_head->t_sub + s->c->timeout_ns;
	if (vdisk_now_ns() >= due) {
		char cause[NBDC_CAUSE_MAX];
		snprintf(cause, sizeof cause, "no reply from the server in %" PRIu64 " ms",
		         s->c->timeout_ns / 1000000);
		nbdc_kill(s, ETIMEDOUT, cause);
		nbdc_drain(s);
		return;
	}
	s->timer_on = true;
	vdisk_timer_start(s->q, &s->timer, due, nbdc_timeout);
}

static int nbdc_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	struct nbdc *c = vdisk_priv(d);
	struct nbdc_queue *s = calloc(1, sizeof *s);
	if (!s)
		return vdisk_set_error_errno(ENOMEM, "nbd: queue");
	s->c = c;
	s->q = q;
	pthread_mutex_lock(&c->lock);
	s->h = c->spare;
	c->spare = NULL;
	pthread_mutex_unlock(&c->lock);
	if (!s->h) {
		s->h = nbdc_connect(c);
		if (!s->h)
			goto fail;
		/* every connection must see the export open saw */
		int64_t size = nbd_get_size(s->h);
		if (size < 0 || (uint64_t)size != c->size ||
		    nbd_is_read_only(s->h) != (int)c->server_ro ||
		    nbd_can_fua(s->h) != (int)c->can_fua ||
		    nbd_can_trim(s->h) != (int)c->can_trim ||
		    nbd_can_zero(s->h) != (int)c->can_zero) {
			vdisk_set_error(
			    "uri %s: a new connection sees another export (size %" PRId64
			    " instead of %" PRIu64 ", or other flags)",
			    c->uri, size, c->size);
			nbdc_disconnect(c, s->h);
			goto fail;
		}
		pthread_mutex_lock(&c->lock);
		c->connections++;
		pthread_mutex_unlock(&c->lock);
	}
	int rc = vdisk_watch_start(q, &s->w, nbd_aio_get_fd(s->h), POLLIN, nbdc_ready);
	if (rc < 0) {
		vdisk_set_error_errno(-rc, "uri %s: cannot watch the socket", c->uri);
		nbdc_disconnect(c, s->h);
		goto fail;
	}
	*qstate = s;
	return 0;
fail:
	free(s);
	return -1;
}

static void nbdc_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	struct nbdc_queue *s = qstate;
	if (s->h) {
		vdisk_watch_stop(q, &s->w);
		if (s->timer_on)
			vdisk_timer_cancel(q, &s->timer);
		nbdc_disconnect(s->c, s->h);
	}
	free(s);
}

/* ------------------------------------------------------------------------- */
/* Data path                                                                   */
/* ------------------------------------------------------------------------- */

static int nbdc_cmd_done(void *user_data, int *error)
{
	struct nbdc_req *n = user_data;
	if (*error && !n->err)
		n->err = *error;
	if (--n->pending == 0)
		nbdc_done_push(n->s, n);
	return 1;
}

/* Start a request: it is in flight, with one reference held by the submitter. */
static struct nbdc_req *nbdc_begin(struct vdisk_req *r)
{
	struct nbdc_queue *s = vdisk_req_qstate(r);
	struct nbdc_req *n = vdisk_req_ctx(r);
	n->s = s;
	n->err = 0;
	n->pending = 1;
	n->bounce = NULL;
	n->dnext = NULL;
	n->t_sub = vdisk_now_ns();
	n->next = NULL;
	n->prev = s->fl_tail;
	if (s->fl_tail)
		s->fl_tail->next = n;
	else
		s->fl_head = n;
	s->fl_tail = n;
	n->in_flight = true;
	return n;
}

/* A command was not queued: remember why; a dead handle fails the queue. */
static void nbdc_issue_failed(struct nbdc_req *n)
{
	int e = nbd_get_errno();
	struct nbd_handle *h = n->s->h;
	if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
		e = ENOTCONN; /* reported as the connection's failure */
	if (!n->err)
		n->err = e ? e : EIO;
}

/* Drop the submitter's reference, deliver what is done, watch the socket. */
static int nbdc_end(struct nbdc_req *n)
{
	struct nbdc_queue *s = n->s;
	if (--n->pending == 0)
		nbdc_done_push(s, n);
	if (s->h)
		nbdc_arm(s);
	nbdc_drain(s);
	return 0;
}

static nbd_completion_callback nbdc_cb(struct nbdc_req *n)
{
	return (nbd_completion_callback){.callback = nbdc_cmd_done, .user_data = n};
}

/* A queue whose connection failed: the request fails with its cause. */
static int nbdc_dead(struct vdisk_req *r)
{
	struct nbdc_queue *s = vdisk_req_qstate(r);
	if (s->h)
		return 0;
	if (r->op == VDISK_OP_EXTENTS)
		*r->ext_n = 0;
	vdisk_req_complete(r, vdisk_status_io(s->dead_errno));
	return 1;
}

static int nbdc_rw(struct vdisk_req *r)
{
	if (nbdc_dead(r))
		return 0;
	struct nbdc_queue *s = vdisk_req_qstate(r);
	struct nbdc *c = s->c;
	bool write = r->op == VDISK_OP_WRITE;
	char *buf;
	void *bounce = NULL;
	if (r->iovcnt == 1) {
		buf = r->iov[0].iov_base;
	} else {
		bounce = vdisk_bounce_get(r->q, r->len);
		if (!bounce)
			return -errno;
		if (write)
			vdisk_iov_to_buf(r->iov, r->iovcnt, 0, bounce, r->len);
		buf = bounce;
	}
	struct nbdc_req *n = nbdc_begin(r);
	n->bounce = bounce;
	uint32_t flags = write && (r->flags & VDISK_IO_FUA) && c->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
	uint64_t off = r->sector * c->ss;
	for (size_t done = 0; done < r->len && s->h;) {
		size_t len = r->len - done;
		if (len > c->max_payload)
			len = c->max_payload;
		n->pending++;
		int64_t ck =
		    write ? nbd_aio_pwrite(s->h, buf + done, len, off + done, nbdc_cb(n), flags)
		          : nbd_aio_pread(s->h, buf + done, len, off + done, nbdc_cb(n), 0);
		if (ck < 0) {
			n->pending--;
			nbdc_issue_failed(n);
			break;
		}
		done += len;
	}
	return nbdc_end(n);
}

static int nbdc_flush(struct vdisk_req *r)
{
	if (nbdc_dead(r))
		return 0;
	struct nbdc_queue *s = vdisk_req_qstate(r);
	if (!s->c->can_flush) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	struct nbdc_req *n = nbdc_begin(r);
	n->pending++;
	if (nbd_aio_flush(s->h, nbdc_cb(n), 0) < 0) {
		n->pending--;
		nbdc_issue_failed(n);
	}
	return nbdc_end(n);
}

/* Trim and write-zeroes over a range, in commands of at most NBDC_MAX_RANGE. */
static int nbdc_range(struct vdisk_req *r, bool zero, uint32_t flags)
{
	struct nbdc_queue *s = vdisk_req_qstate(r);
	struct nbdc *c = s->c;
	struct nbdc_req *n = nbdc_begin(r);
	uint64_t off = r->sector * c->ss, end = off + r->count * c->ss;
	uint64_t step = NBDC_MAX_RANGE - NBDC_MAX_RANGE % c->ss;
	while (off < end && s->h) {
		uint64_t len = end - off < step ? end - off : step;
		n->pending++;
		int64_t ck = zero ? nbd_aio_zero(s->h, len, off, nbdc_cb(n), flags)
		                  : nbd_aio_trim(s->h, len, off, nbdc_cb(n), flags);
		if (ck < 0) {
			n->pending--;
			nbdc_issue_failed(n);
			break;
		}
		off += len;
	}
	return nbdc_end(n);
}

static int nbdc_unmap(struct vdisk_req *r)
{
	if (nbdc_dead(r))
		return 0;
	return nbdc_range(r, false, 0);
}

static int nbdc_write_zeroes(struct vdisk_req *r)
{
	if (nbdc_dead(r))
		return 0;
	struct nbdc *c = ((struct nbdc_queue *)vdisk_req_qstate(r))->c;
	uint32_t flags = 0;
	if (!c->can_zero || ((r->flags & VDISK_ZERO_FAST_ONLY) && !c->can_fast_zero)) {
		vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
		return 0;
	}
	if (r->flags & VDISK_ZERO_FAST_ONLY)
		flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
	if (!(r->flags & VDISK_ZERO_MAY_UNMAP))
		flags |= LIBNBD_CMD_FLAG_NO_HOLE;
	if ((r->flags & VDISK_IO_FUA) && c->can_fua)
		flags |= LIBNBD_CMD_FLAG_FUA;
	return nbdc_range(r, true, flags);
}

/* Append sectors with flags to the request's extents, merging with the last. */
static void nbdc_ext_add(struct vdisk_req *r, struct nbdc_req *n, uint64_t count, uint32_t flags)
{
	struct vdisk_extent *last = *r->ext_n ? &r->ext[*r->ext_n - 1] : NULL;
	uint64_t next = last ? last->sector + last->count : r->sector;
	uint64_t end = r->sector + r->count;
	if (n->ext_full || next >= end || !count)
		return;
	if (count > end - next)
		count = end - next;
	if (last && last->flags == flags) {
		last->count += count;
		return;
	}
	if (*r->ext_n == r->ext_max) {
		n->ext_full = true;
		return;
	}
	r->ext[(*r->ext_n)++] = (struct vdisk_extent){next, count, flags, 0};
}

static uint32_t nbdc_ext_flags(uint32_t nbd_flags)
{
	uint32_t f = 0;
	if (nbd_flags & LIBNBD_STATE_HOLE)
		f |= VDISK_EXTENT_HOLE;
	if (nbd_flags & LIBNBD_STATE_ZERO)
		f |= VDISK_EXTENT_ZERO;
	return f;
}

/* base:allocation extents in bytes, to extents in whole sectors: a sector that
 * two extents share is a hole or zero only if both say so. */
static int nbdc_extent_cb(void *user_data, const char *metacontext, uint64_t offset,
                          uint32_t *entries, size_t nr_entries, int *error)
{
	struct nbdc_req *n = user_data;
	struct vdisk_req *r = vdisk_req_from_ctx(n);
	uint32_t ss = n->s->c->ss;
	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || n->ext_seen)
		return 0;
	n->ext_seen = true;
	for (size_t i = 0; i + 1 < nr_entries && !n->ext_full; i += 2) {
		uint64_t len = entries[i];
		uint32_t f = nbdc_ext_flags(entries[i + 1]);
		uint64_t pos = n->ext_pos;
		n->ext_pos += len;
		if (n->part_open) {
			uint64_t to_edge = ss - pos % ss;
			n->part_flags &= f;
			if (len < to_edge)
				continue;
			nbdc_ext_add(r, n, 1, n->part_flags);
			n->part_open = false;
			len -= to_edge;
		}
		nbdc_ext_add(r, n, len / ss, f);
		if (len % ss) {
			n->part_open = true;
			n->part_flags = f;
		}
	}
	return 0;
}

static int nbdc_extents(struct vdisk_req *r)
{
	*r->ext_n = 0;
	if (nbdc_dead(r))
		return 0;
	struct nbdc_queue *s = vdisk_req_qstate(r);
	struct nbdc *c = s->c;
	if (r->count == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (!c->base_allocation) {
		r->ext[0] = (struct vdisk_extent){r->sector, r->count, 0, 0};
		*r->ext_n = 1;
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	struct nbdc_req *n = nbdc_begin(r);
	n->ext_pos = r->sector * c->ss;
	n->part_open = n->ext_full = n->ext_seen = false;
	uint64_t len = r->count * c->ss;
	uint64_t step = NBDC_MAX_RANGE - NBDC_MAX_RANGE % c->ss;
	if (len > step)
		len = step;
	nbd_extent_callback ecb = {.callback = nbdc_extent_cb, .user_data = n};
	n->pending++;
	if (nbd_aio_block_status(s->h, len, r->sector * c->ss, ecb, nbdc_cb(n), 0) < 0) {
		n->pending--;
		nbdc_issue_failed(n);
	}
	return nbdc_end(n);
}

/* ------------------------------------------------------------------------- */
/* Control path                                                                */
/* ------------------------------------------------------------------------- */

static int nbdc_inspect(struct vdisk *d, json_t *obj)
{
	struct nbdc *c = vdisk_priv(d);
	json_object_set_new(obj, "uri", json_string(c->uri));
	if (c->export)
		json_object_set_new(obj, "export", json_string(c->export));
	json_object_set_new(obj, "export_size", json_integer((json_int_t)c->size));
	json_t *bs = json_object();
	json_object_set_new(bs, "minimum", json_integer(c->min_block));
	json_object_set_new(bs, "preferred", json_integer(c->pref_block));
	json_object_set_new(bs, "maximum", json_integer(c->max_block));
	json_object_set_new(obj, "block_size", bs);
	json_t *can = json_object();
	json_object_set_new(can, "flush", json_boolean(c->can_flush));
	json_object_set_new(can, "fua", json_boolean(c->can_fua));
	json_object_set_new(can, "trim", json_boolean(c->can_trim));
	json_object_set_new(can, "zero", json_boolean(c->can_zero));
	json_object_set_new(can, "fast_zero", json_boolean(c->can_fast_zero));
	json_object_set_new(can, "multi_conn", json_boolean(c->can_multi_conn));
	json_object_set_new(can, "cache", json_boolean(c->can_cache));
	json_object_set_new(can, "df", json_boolean(c->can_df));
	json_object_set_new(can, "base_allocation", json_boolean(c->base_allocation));
	json_object_set_new(obj, "server", can);
	json_object_set_new(obj, "server_read_only", json_boolean(c->server_ro));
	json_object_set_new(obj, "structured_replies", json_boolean(c->structured));
	json_object_set_new(obj, "tls", json_boolean(c->tls));
	json_object_set_new(obj, "timeout_ms", json_integer((json_int_t)(c->timeout_ns / 1000000)));
	pthread_mutex_lock(&c->lock);
	json_object_set_new(obj, "connections", json_integer(c->connections));
	json_object_set_new(obj, "failed_connections", json_integer(c->failed));
	if (c->failed)
		json_object_set_new(obj, "last_failure", json_string(c->last_failure));
	pthread_mutex_unlock(&c->lock);
	return 0;
}

const struct vdisk_driver vdisk_driver_nbd = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "nbd",
    .description = "an NBD export through libnbd (uri, export, timeout)",
    .open = nbdc_open,
    .close = nbdc_close,
    .queue_init = nbdc_queue_init,
    .queue_fini = nbdc_queue_fini,
    .read = nbdc_rw,
    .write = nbdc_rw,
    .flush = nbdc_flush,
    .unmap = nbdc_unmap,
    .write_zeroes = nbdc_write_zeroes,
    .extents = nbdc_extents,
    .inspect = nbdc_inspect,
};
