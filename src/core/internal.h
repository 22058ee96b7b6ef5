/* Core internals shared by the files of src/core.  Not installed. */
#ifndef VDISK_CORE_INTERNAL_H
#define VDISK_CORE_INTERNAL_H

#include <pthread.h>
#include <sys/epoll.h>
#include <stdatomic.h>
#include <stdint.h>

#include <liburing.h>

#include "vdisk/backend.h"

#define VD_EXPORT __attribute__((visibility("default")))
#define VD_LIKELY(x) __builtin_expect(!!(x), 1)
#define VD_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define VD_HIST_BUCKETS 48 /* log2 buckets of TSC ticks */

/* Request states: a request's life on its queue.  Checked on every transition
 * so that a driver that completes twice, or completes after returning an
 * error, is caught at once. */
enum {
	VD_REQ_FREE = 0,
	VD_REQ_PREP,      /* allocated, not yet submitted */
	VD_REQ_SUBMITTED, /* owned by the driver */
	VD_REQ_RETRY,     /* driver said -EAGAIN; waits on the retry list */
	VD_REQ_DONE,      /* completed; waits on the done list for delivery */
	VD_REQ_WAITING,   /* a wait-resize request parked on a disk */
};

/* Where a completed request's status goes. */
enum {
	VD_ORIGIN_USER = 0, /* user_done(user_opaque, st) */
	VD_ORIGIN_CHILD,    /* done(r, st) */
};

/* An internal op number beyond the driver ops. */
#define VD_OP_WAIT_RESIZE VDISK_OP__COUNT
#define VD_NOPS (VDISK_OP__COUNT + 1)

struct vd_stats {
	_Atomic uint64_t ops[VD_NOPS];
	_Atomic uint64_t bytes[VD_NOPS];
	_Atomic uint64_t errors[VD_NOPS];
	_Atomic uint64_t hist[VD_NOPS][VD_HIST_BUCKETS];
};

struct vdisk {
	const struct vdisk_driver *drv;
	atomic_uint refcnt;
	void *priv;
	struct vdisk_meta meta;
	unsigned shift;
	uint64_t max_sector; /* INT64_MAX >> shift */
	_Atomic uint64_t sector_count;
	struct vdisk *size_src; /* the layer whose count this one follows, or NULL */
	/* the end of the size_src chain, fixed once open returns: the count is
	 * read there on every submission, in constant time at any depth */
	struct vdisk *size_root;
	bool ro_requested;
	bool open_done;

	/* the tree */
	struct vdisk *parent;
	struct vdisk **children;
	unsigned nchildren;
	unsigned index;   /* in the root's nodes[] */
	unsigned subtree; /* layers from this one down: nodes[index .. index+subtree) */
	struct vdisk *root;
	struct vdisk **nodes; /* root only: every layer, index order */
	unsigned nnodes;      /* root only */
	char *id;
	char *path;     /* place in the spec: "", "inner", "disks[1]" */
	json_t *config; /* redacted copy, for inspect */

	/* resize waiters and queues: guarded by lock */
	pthread_mutex_t lock;
	struct vdisk_req *waiters;
	struct vdisk_queue *queues;    /* root only: live queues (for stats) */
	struct vd_stats *stats_done;   /* root only: totals of destroyed queues, per node */
	struct vdisk_queue *sync_idle; /* queues on this layer for the synchronous API */
};

struct vd_pool {
	struct vdisk_req *free;
	size_t req_size;
	void *slabs;
};

struct vd_bounce_class {
	void *free;
};

struct vdisk_queue {
	struct vdisk *top;    /* the layer it was created on: user I/O goes there */
	struct vdisk *tree;   /* the root of the stack */
	unsigned first, last; /* the layers it has state for: nodes[first .. last) */
	unsigned nnodes;
	void **qstate;
	struct vd_pool *pools;
	struct vd_stats *stats; /* per node */

	/* completions to deliver, in order */
	struct vdisk_req *done_head, **done_tail;
	/* -EAGAIN requests to resubmit */
	struct vdisk_req *retry_head, **retry_tail;
	/* completions from other threads (worker pool, resize) */
	_Atomic(struct vdisk_req *) remote;

	unsigned inflight;        /* user requests */
	unsigned remote_expected; /* requests that will complete through `remote` */
	uint64_t ncomplete;       /* user completions delivered */
	unsigned in_poll;
	unsigned in_submit;
	unsigned plugged;
	bool fd_used;
	atomic_bool efd_pending;
	int efd;  /* eventfd: remote completions and kicks */
	int epfd; /* what vdisk_queue_fd() returns */
	int tfd;  /* timerfd for fd users */

	/* descriptors watched for backends (vdisk_watch_start) */
	int wepfd; /* an epoll set of them, or -1 */
	unsigned nwatch;
	struct epoll_event *wrun_evs; /* events being run by watch_run(), or NULL */
	int wrun_n;

	/* io_uring */
	bool ring_ready;
	bool ring_failed;
	unsigned sq_pending;
	unsigned ring_inflight;
	struct io_uring ring;
	unsigned char *fixed_files_used;
	unsigned nfixed;

	/* timers: binary min-heap */
	struct vdisk_timer **theap;
	unsigned ntimers, theap_cap;
	uint64_t tfd_armed_for;

	/* bounce pool */
	struct vd_bounce_class bounce[16];
	size_t bounce_out;
	size_t bounce_budget;
	unsigned bounce_count;
	bool bounce_waive; /* retrying what no completion can unblock */

	/* guest-mode iovec blocks */
	void *iov_blocks;

	/* root's list of live queues, and the sync pool */
	struct vdisk_queue *next_live;
	struct vdisk_queue *next_idle;
};

/* disk.c */
struct vdisk *vd_open_spec_json(json_t *spec, const char *path, struct vdisk *parent,
                                bool read_only);
uint64_t vd_sector_count(const struct vdisk *d);
void vd_wake_resize_waiters(struct vdisk *d);

/* spec.c */
json_t *vd_spec_parse(const char *spec, const char *path);
int vd_probe_path(const char *file, bool read_only, const char **type);

/* registry.c */
const struct vdisk_driver *vd_driver_find(const char *name);
void vd_driver_foreach(void (*fn)(const struct vdisk_driver *drv, void *arg), void *arg);

/* error.c */
void vd_error_prefix(const char *prefix);
void vd_clear_error(void);
_Noreturn void vd_bug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* io.c */
struct vdisk_req *vd_req_get(struct vdisk_queue *q, struct vdisk *d);
void vd_req_put(struct vdisk_req *r);
int vd_submit(struct vdisk_req *r);
void vd_deliver(struct vdisk_req *r);
void vd_pool_free_all(struct vd_pool *p);
int vd_pool_reserve(struct vdisk_queue *q, unsigned index, unsigned n);

/* lock.c */
void vd_unlock_image(int fd);
void vd_complete_remote(struct vdisk_req *r, vdisk_status st);

/* queue.c */
void vd_queue_kick(struct vdisk_queue *q);
void vd_queue_retry(struct vdisk_queue *q);
struct vdisk_queue *vd_sync_queue_get(struct vdisk *d);
void vd_sync_queue_put(struct vdisk *d, struct vdisk_queue *q);
void vd_stats_add(struct vd_stats *dst, const struct vd_stats *src);

/* uring.c */
int vd_uring_flush(struct vdisk_queue *q);
int vd_uring_reap(struct vdisk_queue *q);
void vd_uring_fini(struct vdisk_queue *q);

/* bounce.c */
void vd_bounce_fini(struct vdisk_queue *q);

/* timers (queue.c) */
uint64_t vd_timer_next(struct vdisk_queue *q);
int vd_timer_run(struct vdisk_queue *q);

/* clock.c */
static inline uint64_t vd_ticks(void)
{
#if defined(__x86_64__)
	extern bool vd_use_tsc;
	if (VD_LIKELY(vd_use_tsc)) {
		uint32_t lo, hi;
		__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
		return ((uint64_t)hi << 32) | lo;
	}
#endif
	return vdisk_now_ns();
}
double vd_ticks_per_ns(void);
void vd_clock_init(void);

/* A relaxed increment by the single writer of a statistics counter. */
static inline void vd_stat_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

#endif
