/* Queues: creation with every layer's per-queue state, poll, blocking wait, the
 * event-loop descriptor, timers, and the pool of queues behind the synchronous
 * API. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_BOUNCE_BUDGET (16u << 20)
#define POLL_ROUNDS 4
#define VD_QUEUE_MAX_DEPTH 65536u
#define VD_QUEUE_MAX_RESERVE (16u << 20) /* bytes of requests reserved up front */

VD_EXPORT struct vdisk_queue *vdisk_queue_create(struct vdisk *d,
                                                 const struct vdisk_queue_opts *opts)
{
	vd_clear_error();
	if (!d) {
		vdisk_set_error("vdisk_queue_create: disk is NULL");
		return NULL;
	}
	/* options from an older header end early: what it lacks is 0 */
	struct vdisk_queue_opts o = {0};
	if (opts)
		memcpy(&o, opts, opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
	if (o.depth > VD_QUEUE_MAX_DEPTH) {
		vdisk_set_error("vdisk_queue_create: depth %u is too large (at most %u)", o.depth,
		                VD_QUEUE_MAX_DEPTH);
		return NULL;
	}
	struct vdisk *tree = d->root;
	struct vdisk_queue *q = calloc(1, sizeof *q);
	unsigned n = tree->nnodes;
	int inited = -1;
	if (!q)
		goto nomem;
	q->top = d;
	q->tree = tree;
	q->first = d->index;
	q->last = d->index + d->subtree;
	q->nnodes = n;
	q->efd = q->epfd = q->tfd = q->wepfd = -1;
	q->done_tail = &q->done_head;
	q->retry_tail = &q->retry_head;
	q->bounce_budget = DEFAULT_BOUNCE_BUDGET;
	q->qstate = calloc(n, sizeof *q->qstate);
	q->pools = calloc(n, sizeof *q->pools);
	q->stats = aligned_alloc(64, ((n * sizeof *q->stats) + 63) & ~(size_t)63);
	if (!q->qstate || !q->pools || !q->stats)
		goto nomem;
	memset(q->stats, 0, n * sizeof *q->stats);
	for (unsigned i = 0; i < n; i++)
		q->pools[i].req_size =
		    (sizeof(struct vdisk_req) + tree->nodes[i]->meta.req_ctx_size + 63) &
		    ~(size_t)63;
	/* depth requests on every layer, within a bound per queue (a stack of
	 * thousands of layers grows its pools on demand beyond it) */
	size_t reserved = 0;
	for (unsigned i = q->first; i < q->last && reserved < VD_QUEUE_MAX_RESERVE; i++) {
		if (vd_pool_reserve(q, i, o.depth) < 0)
			goto nomem;
		reserved += (size_t)o.depth * q->pools[i].req_size;
	}
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		vdisk_set_error_errno(errno, "vdisk_queue_create: eventfd");
		goto fail;
	}
	/* children before parents: indices are pre-order */
	for (int i = (int)q->last - 1; i >= (int)q->first; i--) {
		struct vdisk *node = tree->nodes[i];
		if (node->drv->queue_init && node->drv->queue_init(node, q, &q->qstate[i]) < 0) {
			char where[128];
			snprintf(where, sizeof where, "vdisk_queue_create: %s%s%s", node->path,
			         *node->path ? " " : "", node->drv->name);
			vd_error_prefix(where);
			inited = i + 1;
			goto fail;
		}
	}
	pthread_mutex_lock(&tree->lock);
	q->next_live = tree->queues;
	tree->queues = q;
	pthread_mutex_unlock(&tree->lock);
	return q;

nomem:
	vdisk_set_error_errno(ENOMEM, "vdisk_queue_create");
fail:
	if (q) {
		for (int i = inited >= 0 ? inited : (int)q->last; i < (int)q->last; i++) {
			struct vdisk *node = tree->nodes[i];
			if (node->drv->queue_fini)
				node->drv->queue_fini(node, q, q->qstate[i]);
		}
		vd_uring_fini(q);
		if (q->efd >= 0)
			close(q->efd);
		if (q->pools)
			for (unsigned i = 0; i < n; i++)
				vd_pool_free_all(&q->pools[i]);
		free(q->qstate);
		free(q->pools);
		free(q->stats);
		free(q);
	}
	return NULL;
}

void vd_stats_add(struct vd_stats *dst, const struct vd_stats *src)
{
	for (unsigned op = 0; op < VD_NOPS; op++) {
		vd_stat_add(&dst->ops[op],
		            atomic_load_explicit(&src->ops[op], memory_order_relaxed));
		vd_stat_add(&dst->bytes[op],
		            atomic_load_explicit(&src->bytes[op], memory_order_relaxed));
		vd_stat_add(&dst->errors[op],
		            atomic_load_explicit(&src->errors[op], memory_order_relaxed));
		for (unsigned b = 0; b < VD_HIST_BUCKETS; b++)
			vd_stat_add(&dst->hist[op][b],
			            atomic_load_explicit(&src->hist[op][b], memory_order_relaxed));
	}
}

static void drop_waiters(struct vdisk_queue *q)
{
	struct vdisk *d = q->top;
	pthread_mutex_lock(&d->lock);
	struct vdisk_req **pp = &d->waiters;
	while (*pp) {
		struct vdisk_req *r = *pp;
		if (r->q == q) {
			*pp = r->internal.next;
			q->inflight--;
			vd_req_put(r);
		} else {
			pp = &r->internal.next;
		}
	}
	pthread_mutex_unlock(&d->lock);
	/* woken ones not yet delivered */
	struct vdisk_req *r = atomic_exchange(&q->remote, NULL);
	while (r) {
		struct vdisk_req *next = r->internal.next;
		if (r->op == VD_OP_WAIT_RESIZE && r->internal.origin == VD_ORIGIN_USER) {
			q->inflight--;
			vd_req_put(r);
		} else {
			vd_bug("vdisk_queue_destroy: a request completed but was never polled");
		}
		r = next;
	}
	for (struct vdisk_req **p = &q->done_head; *p;) {
		r = *p;
		if (r->op == VD_OP_WAIT_RESIZE && r->internal.origin == VD_ORIGIN_USER) {
			*p = r->internal.next;
			q->inflight--;
			vd_req_put(r);
		} else {
			p = &r->internal.next;
		}
	}
	q->done_tail = &q->done_head;
	while (*q->done_tail)
		q->done_tail = &(*q->done_tail)->internal.next;
}

VD_EXPORT void vdisk_queue_destroy(struct vdisk_queue *q)
{
	if (!q)
		return;
	struct vdisk *d = q->tree;
	drop_waiters(q);
	if (q->inflight)
		vd_bug("vdisk_queue_destroy: %u requests still in flight", q->inflight);
	for (unsigned i = q->first; i < q->last; i++) {
		struct vdisk *node = d->nodes[i];
		if (node->drv->queue_fini)
			node->drv->queue_fini(node, q, q->qstate[i]);
	}
	vd_uring_fini(q);
	vd_bounce_fini(q);
	while (q->iov_blocks) {
		void *next = *(void **)q->iov_blocks;
		free(q->iov_blocks);
		q->iov_blocks = next;
	}
	pthread_mutex_lock(&d->lock);
	for (struct vdisk_queue **pp = &d->queues; *pp; pp = &(*pp)->next_live)
		if (*pp == q) {
			*pp = q->next_live;
			break;
		}
	for (unsigned i = 0; i < q->nnodes; i++)
		vd_stats_add(&d->stats_done[i], &q->stats[i]);
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < q->nnodes; i++)
		vd_pool_free_all(&q->pools[i]);
	if (q->nwatch)
		vd_bug("vdisk_queue_destroy: %u descriptors still watched", q->nwatch);
	if (q->wepfd >= 0)
		close(q->wepfd);
	if (q->tfd >= 0)
		close(q->tfd);
	if (q->epfd >= 0)
		close(q->epfd);
	close(q->efd);
	free(q->theap);
	free(q->qstate);
	free(q->pools);
	free(q->stats);
	free(q);
}

VD_EXPORT unsigned vdisk_queue_inflight(const struct vdisk_queue *q)
{
	return q->inflight;
}

/* ------------------------------------------------------------------------- */
/* Wake-ups                                                                    */
/* ------------------------------------------------------------------------- */

/* The eventfd protocol: efd_pending is set by the one kicker that finds it
 * clear, which then writes the eventfd; it is cleared only by the queue's poll,
 * after a read that consumed that write.  So while it is set, the eventfd is
 * readable or about to be, and a kick that finds it set may skip the write: the
 * poll that clears it looks at the remote list afterwards, and as both sides
 * exchange the flag, that poll sees what the kicker pushed before. */
void vd_queue_kick(struct vdisk_queue *q)
{
	if (!atomic_exchange_explicit(&q->efd_pending, true, memory_order_acq_rel)) {
		uint64_t one = 1;
		ssize_t rc;
		do
			rc = write(q->efd, &one, sizeof one);
		while (rc < 0 && errno == EINTR);
	}
}

static void efd_reset(struct vdisk_queue *q)
{
	if (!atomic_load_explicit(&q->efd_pending, memory_order_acquire))
		return;
	uint64_t v;
	/* Clearing before the read would let a kick that lands in between be
	 * consumed by this read while its flag stays set: the eventfd empty, the
	 * flag set, and every later kick silent.  EAGAIN: the kicker that set the
	 * flag has not written yet; its write will come, so the flag stays. */
	if (read(q->efd, &v, sizeof v) < 0)
		return;
	atomic_exchange_explicit(&q->efd_pending, false, memory_order_acq_rel);
}

/* Take what other threads completed, in the order they completed it. */
static unsigned take_remote(struct vdisk_queue *q)
{
	struct vdisk_req *r = atomic_exchange_explicit(&q->remote, NULL, memory_order_acquire);
	struct vdisk_req *rev = NULL;
	unsigned n = 0;
	while (r) {
		struct vdisk_req *next = r->internal.next;
		r->internal.next = rev;
		rev = r;
		r = next;
		n++;
	}
	while (rev) {
		struct vdisk_req *next = rev->internal.next;
		rev->internal.next = NULL;
		*q->done_tail = rev;
		q->done_tail = &rev->internal.next;
		rev = next;
	}
	q->remote_expected -= n;
	return n;
}

static void tfd_update(struct vdisk_queue *q);

/* ------------------------------------------------------------------------- */
/* Watched descriptors                                                         */
/* ------------------------------------------------------------------------- */

static uint32_t watch_epoll_events(unsigned events)
{
	uint32_t ev = 0;
	if (events & POLLIN)
		ev |= EPOLLIN;
	if (events & POLLOUT)
		ev |= EPOLLOUT;
	if (events & POLLPRI)
		ev |= EPOLLPRI;
	return ev;
}

static unsigned watch_poll_events(uint32_t ev)
{
	unsigned r = 0;
	if (ev & EPOLLIN)
		r |= POLLIN;
	if (ev & EPOLLOUT)
		r |= POLLOUT;
	if (ev & EPOLLPRI)
		r |= POLLPRI;
	if (ev & EPOLLERR)
		r |= POLLERR;
	if (ev & EPOLLHUP)
		r |= POLLHUP;
	return r;
}

VD_EXPORT int vdisk_watch_start(struct vdisk_queue *q, struct vdisk_watch *w, int fd,
                                unsigned events,
                                void (*fn)(struct vdisk_watch *w, unsigned revents))
{
	if (q->wepfd < 0) {
		q->wepfd = epoll_create1(EPOLL_CLOEXEC);
		if (q->wepfd < 0)
			return -errno;
		if (q->epfd >= 0) {
			struct epoll_event ev = {.events = EPOLLIN};
			ev.data.fd = q->wepfd;
			if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->wepfd, &ev) < 0) {
				int e = errno;
				close(q->wepfd);
				q->wepfd = -1;
				return -e;
			}
		}
	}
	struct epoll_event ev = {.events = watch_epoll_events(events)};
	ev.data.ptr = w;
	if (epoll_ctl(q->wepfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	w->fn = fn;
	w->fd = fd;
	w->events = events;
	q->nwatch++;
	return 0;
}

VD_EXPORT int vdisk_watch_modify(struct vdisk_queue *q, struct vdisk_watch *w, unsigned events)
{
	if (events == w->events)
		return 0;
	struct epoll_event ev = {.events = watch_epoll_events(events)};
	ev.data.ptr = w;
	if (epoll_ctl(q->wepfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

VD_EXPORT void vdisk_watch_stop(struct vdisk_queue *q, struct vdisk_watch *w)
{
	if (w->fd < 0)
		return;
	epoll_ctl(q->wepfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->fd = -1;
	q->nwatch--;
	/* stopped from a callback: the events still to run must not name it, as
	 * its owner may free it as soon as this returns */
	for (int i = 0; i < q->wrun_n; i++)
		if (q->wrun_evs[i].data.ptr == w)
			q->wrun_evs[i].data.ptr = NULL;
}

/* Run the callbacks of the descriptors that are ready, without waiting.  A
 * callback may stop (and free) its own watch or another's. */
static unsigned watch_run(struct vdisk_queue *q)
{
	struct epoll_event evs[32];
	int n = epoll_wait(q->wepfd, evs, 32, 0);
	unsigned ran = 0;
	if (n <= 0)
		return 0;
	q->wrun_evs = evs;
	q->wrun_n = n;
	for (int i = 0; i < n; i++) {
		struct vdisk_watch *w = evs[i].data.ptr;
		if (!w)
			continue;
		w->fn(w, watch_poll_events(evs[i].events));
		ran++;
	}
	q->wrun_evs = NULL;
	q->wrun_n = 0;
	return ran;
}

VD_EXPORT int vdisk_queue_poll(struct vdisk_queue *q)
{
	uint64_t before = q->ncomplete;
	q->in_poll++;
	efd_reset(q);
	for (int round = 0; round < POLL_ROUNDS; round++) {
		unsigned progress = 0;
		if (q->ring_ready) {
			if (q->sq_pending)
				vd_uring_flush(q);
			if (q->ring_inflight)
				progress += (unsigned)vd_uring_reap(q);
		}
		if (atomic_load_explicit(&q->remote, memory_order_relaxed))
			progress += take_remote(q);
		if (q->ntimers)
			progress += (unsigned)vd_timer_run(q);
		if (q->nwatch)
			progress += watch_run(q);
		/* deliver one snapshot; what the callbacks complete waits for the next round */
		struct vdisk_req *r = q->done_head;
		q->done_head = NULL;
		q->done_tail = &q->done_head;
		while (r) {
			struct vdisk_req *next = r->internal.next;
			vd_deliver(r);
			progress++;
			r = next;
		}
		if (q->retry_head)
			vd_queue_retry(q);
		if (!progress)
			break;
	}
	/* Requests refused for back-pressure that nothing in flight will relieve:
	 * a child whose parent holds the bounce budget (crypt over crypt) would
	 * wait for ever for its parent's completion.  They go once over the
	 * budget. */
	if (q->retry_head && !q->done_head && !q->ring_inflight && !q->remote_expected &&
	    !q->ntimers && !q->nwatch) {
		q->bounce_waive = true;
		vd_queue_retry(q);
		q->bounce_waive = false;
	}
	if (q->ring_ready && q->sq_pending)
		vd_uring_flush(q);
	q->in_poll--;
	if (q->fd_used) {
		if (q->done_head)
			vd_queue_kick(q);
		if (q->ntimers || q->tfd >= 0)
			tfd_update(q);
	}
	return (int)(q->ncomplete - before);
}

VD_EXPORT int vdisk_queue_wait(struct vdisk_queue *q, int64_t timeout_ns)
{
	uint64_t start = vdisk_now_ns();
	for (;;) {
		int n = vdisk_queue_poll(q);
		if (n)
			return n;
		if (!q->inflight)
			return 0;
		uint64_t now = vdisk_now_ns();
		int64_t left = -1;
		if (timeout_ns >= 0) {
			if (now - start >= (uint64_t)timeout_ns)
				return 0;
			left = timeout_ns - (int64_t)(now - start);
		}
		if (q->done_head)
			continue;
		/* requests refused for back-pressure are retried after a completion:
		 * sleep until one comes, unless nothing is in flight that could
		 * complete (then only trying again can help) */
		if (q->retry_head && !q->ring_inflight && !q->remote_expected && !q->ntimers &&
		    !q->nwatch)
			continue;
		uint64_t tnext = vd_timer_next(q);
		if (tnext != UINT64_MAX) {
			int64_t t = tnext > now ? (int64_t)(tnext - now) : 0;
			if (left < 0 || t < left)
				left = t;
		}
		if (q->ring_ready && q->ring_inflight && !q->remote_expected && !q->ntimers &&
		    !q->nwatch && !atomic_load(&q->efd_pending)) {
			/* only the ring can complete anything: one syscall waits for it */
			struct io_uring_cqe *cqe;
			struct __kernel_timespec ts, *tsp = NULL;
			if (left >= 0) {
				ts.tv_sec = left / 1000000000;
				ts.tv_nsec = left % 1000000000;
				tsp = &ts;
			}
			int rc = io_uring_wait_cqe_timeout(&q->ring, &cqe, tsp);
			if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN)
				return rc;
			continue;
		}
		struct pollfd pfd[3] = {{.fd = q->efd, .events = POLLIN}, {.fd = -1}, {.fd = -1}};
		if (q->ring_ready && q->ring_inflight) {
			pfd[1].fd = q->ring.ring_fd;
			pfd[1].events = POLLIN;
		}
		if (q->nwatch) {
			pfd[2].fd = q->wepfd;
			pfd[2].events = POLLIN;
		}
		struct timespec ts, *tsp = NULL;
		if (left >= 0) {
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
			tsp = &ts;
		}
		if (ppoll(pfd, 3, tsp, NULL) < 0 && errno != EINTR)
			return -errno;
	}
}

VD_EXPORT int vdisk_queue_fd(struct vdisk_queue *q)
{
	if (q->epfd >= 0)
		return q->epfd;
	q->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (q->epfd < 0)
		return -errno;
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.fd = q->efd;
	if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->efd, &ev) < 0)
		goto fail;
	if (q->ring_ready) {
		ev.data.fd = q->ring.ring_fd;
		if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->ring.ring_fd, &ev) < 0)
			goto fail;
	}
	if (q->wepfd >= 0) {
		ev.data.fd = q->wepfd;
		if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->wepfd, &ev) < 0)
			goto fail;
	}
	q->fd_used = true;
	if (q->done_head || atomic_load(&q->remote))
		vd_queue_kick(q);
	tfd_update(q);
	return q->epfd;
fail:;
	int e = errno;
	close(q->epfd);
	q->epfd = -1;
	return -e;
}

VD_EXPORT void vdisk_queue_plug(struct vdisk_queue *q)
{
	q->plugged++;
}

VD_EXPORT void vdisk_queue_unplug(struct vdisk_queue *q)
{
	if (q->plugged && --q->plugged == 0 && q->sq_pending && !q->in_poll)
		vd_uring_flush(q);
}

/* ------------------------------------------------------------------------- */
/* Timers: a binary min-heap per queue                                         */
/* ------------------------------------------------------------------------- */

VD_EXPORT uint64_t vdisk_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void heap_swap(struct vdisk_timer **h, unsigned a, unsigned b)
{
	struct vdisk_timer *t = h[a];
	h[a] = h[b];
	h[b] = t;
	h[a]->heap_index = a;
	h[b]->heap_index = b;
}

static void heap_up(struct vdisk_timer **h, unsigned i)
{
	while (i > 0) {
		unsigned p = (i - 1) / 2;
		if (h[p]->deadline <= h[i]->deadline)
			break;
		heap_swap(h, i, p);
		i = p;
	}
}

static void heap_down(struct vdisk_timer **h, unsigned n, unsigned i)
{
	for (;;) {
		unsigned l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && h[l]->deadline < h[m]->deadline)
			m = l;
		if (r < n && h[r]->deadline < h[m]->deadline)
			m = r;
		if (m == i)
			break;
		heap_swap(h, i, m);
		i = m;
	}
}

VD_EXPORT void vdisk_timer_start(struct vdisk_queue *q, struct vdisk_timer *t, uint64_t deadline,
                                 void (*fn)(struct vdisk_timer *t))
{
	if (q->ntimers == q->theap_cap) {
		unsigned cap = q->theap_cap ? q->theap_cap * 2 : 64;
		struct vdisk_timer **h = realloc(q->theap, cap * sizeof *h);
		if (!h) {
			/* cannot wait without memory: fire at the next poll instead */
			fn(t);
			return;
		}
		q->theap = h;
		q->theap_cap = cap;
	}
	t->deadline = deadline;
	t->fn = fn;
	t->heap_index = q->ntimers;
	q->theap[q->ntimers++] = t;
	heap_up(q->theap, t->heap_index);
	if (q->fd_used && !q->in_poll)
		tfd_update(q);
}

VD_EXPORT void vdisk_timer_cancel(struct vdisk_queue *q, struct vdisk_timer *t)
{
	unsigned i = t->heap_index;
	if (i >= q->ntimers || q->theap[i] != t)
		return;
	q->ntimers--;
	if (i != q->ntimers) {
		q->theap[i] = q->theap[q->ntimers];
		q->theap[i]->heap_index = i;
		heap_down(q->theap, q->ntimers, i);
		heap_up(q->theap, i);
	}
	t->heap_index = UINT32_MAX;
}

uint64_t vd_timer_next(struct vdisk_queue *q)
{
	return q->ntimers ? q->theap[0]->deadline : UINT64_MAX;
}

int vd_timer_run(struct vdisk_queue *q)
{
	int n = 0;
	uint64_t now = vdisk_now_ns();
	/* at most as many runs as there were timers: one that re-arms itself for
	 * a time already past (a retry) waits for the next poll, not forever */
	unsigned budget = q->ntimers;
	while (budget-- && q->ntimers && q->theap[0]->deadline <= now) {
		struct vdisk_timer *t = q->theap[0];
		vdisk_timer_cancel(q, t);
		t->fn(t);
		n++;
	}
	return n;
}

/* For event-loop users: a timerfd in the epoll set, armed for the earliest
 * deadline. */
static void tfd_update(struct vdisk_queue *q)
{
	uint64_t next = vd_timer_next(q);
	if (q->tfd < 0) {
		if (next == UINT64_MAX || q->epfd < 0)
			return;
		q->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (q->tfd < 0)
			return;
		struct epoll_event ev = {.events = EPOLLIN};
		ev.data.fd = q->tfd;
		epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->tfd, &ev);
		q->tfd_armed_for = 0;
	}
	uint64_t v;
	(void)!read(q->tfd, &v, sizeof v); /* clear an expiry already seen */
	if (next == q->tfd_armed_for)
		return;
	struct itimerspec its = {0};
	if (next != UINT64_MAX) {
		if (next == 0)
			next = 1;
		its.it_value.tv_sec = (time_t)(next / 1000000000u);
		its.it_value.tv_nsec = (long)(next % 1000000000u);
	}
	timerfd_settime(q->tfd, TFD_TIMER_ABSTIME, &its, NULL);
	q->tfd_armed_for = next;
}

/* ------------------------------------------------------------------------- */
/* Queues for the synchronous API                                              */
/* ------------------------------------------------------------------------- */

struct vdisk_queue *vd_sync_queue_get(struct vdisk *d)
{
	pthread_mutex_lock(&d->lock);
	struct vdisk_queue *q = d->sync_idle;
	if (q)
		d->sync_idle = q->next_idle;
	pthread_mutex_unlock(&d->lock);
	if (!q)
		q = vdisk_queue_create(d, NULL);
	return q;
}

void vd_sync_queue_put(struct vdisk *d, struct vdisk_queue *q)
{
	pthread_mutex_lock(&d->lock);
	q->next_idle = d->sync_idle;
	d->sync_idle = q;
	pthread_mutex_unlock(&d->lock);
}
