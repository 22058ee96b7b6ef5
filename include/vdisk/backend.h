/* vdisk — the interface for backend authors.
 *
 * A backend (a driver) is one const table of function pointers, struct
 * vdisk_driver, registered under a type name.  Few members are required (open and
 * read); the rest may be NULL and the core supplies the default or an emulation.
 *
 * Contracts the core keeps, so drivers need not check them again:
 *  - metadata is validated once after open (sector sizes power of two, logical
 *    >= 512, physical >= logical) and cached; drivers must not change it later,
 *    except the sector count through vdisk_set_sector_count();
 *  - before a request reaches a driver, the core has checked that
 *    (sector + count) * sector_size <= INT64_MAX, that the request lies inside
 *    the sector count read at submission, that read/write lengths are whole
 *    sectors, and that writes, write-zeroes and unmaps do not target a read-only
 *    disk.  A driver whose size can change concurrently (resize) must re-check
 *    the range atomically with the operation and answer VDISK_ERR_ILLEGAL_BLOCK;
 *  - unmap never reaches a driver whose behaviour is VDISK_UNMAP_IGNORED.
 *
 * Contracts drivers keep:
 *  - an operation returns 0 and calls vdisk_req_complete() exactly once, possibly
 *    before returning; or returns a negative errno and never completes it.
 *    -EAGAIN means "no resource right now" (ring full, bounce budget spent): the
 *    core queues the request and submits it again after a completion.  Any other
 *    negative return completes the request with VDISK_ERR_IO and that errno.  The
 *    core aborts the process on a double completion or a completion after an
 *    error return: both are bugs that would corrupt a guest;
 *  - a short transfer is never success;
 *  - requests of one queue are submitted and completed on that queue's thread;
 *    per-queue state (vdisk_req_qstate()) therefore needs no lock.
 *
 * Decorators open their inner disks with vdisk_open_child() and issue child
 * requests on the same queue with vdisk_req_alloc() + vdisk_req_submit().
 */
#ifndef VDISK_BACKEND_H
#define VDISK_BACKEND_H

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vdisk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Requests                                                                    */
/* ------------------------------------------------------------------------- */

enum vdisk_op {
	VDISK_OP_READ = 0,
	VDISK_OP_WRITE,
	VDISK_OP_FLUSH,
	VDISK_OP_UNMAP,
	VDISK_OP_WRITE_ZEROES,
	VDISK_OP_EXTENTS,
	VDISK_OP_EJECT,
	VDISK_OP__COUNT
};

const char *vdisk_op_name(enum vdisk_op op);

struct vdisk_req;
typedef void vdisk_req_done_fn(struct vdisk_req *r, vdisk_status st);

/* One request on one layer.  Drivers read the public fields; a decorator sets
 * done and opaque on the child requests it allocates.  `internal` belongs to the
 * core: a driver must neither read nor write it, and its layout changes between
 * releases without notice.  The driver's private context (of the size it set in
 * vdisk_meta.req_ctx_size) follows, reached with vdisk_req_ctx(). */
struct vdisk_req_internal {
	uint8_t state;
	uint8_t origin;
	uint8_t emul;
	uint16_t pool;
	vdisk_status status;
	vdisk_done_fn *user_done;
	void *user_opaque;
	struct vdisk_req *next;
	uint64_t t_start;
	void *scratch;
	struct iovec iov;
	uint64_t *resize_out; /* vdisk_wait_resize: where the new count goes */
	uint64_t resize_old;  /* vdisk_wait_resize: the count the caller knew */
	uint64_t zero_next;   /* emulated write-zeroes: the next sector to write */
	vdisk_status (*work)(struct vdisk_req *r);
};

struct vdisk_req {
	struct vdisk *disk;      /* the layer this request is for */
	struct vdisk_queue *q;   /* the queue it was issued on */
	void *qstate;            /* the driver's state for q (from queue_init) */
	uint64_t sector;         /* first sector */
	uint64_t count;          /* sectors (read/write: len / sector size) */
	size_t len;              /* bytes (read/write) */
	const struct iovec *iov; /* read/write buffers */
	int iovcnt;
	uint32_t flags; /* VDISK_IO_FUA, VDISK_ZERO_*, VDISK_UNMAP_* */
	uint8_t op;     /* enum vdisk_op */
	/* extents: */
	struct vdisk_extent *ext;
	unsigned ext_max;
	unsigned *ext_n;
	/* child requests (set by the parent's driver before vdisk_req_submit()): */
	vdisk_req_done_fn *done; /* the parent's completion hook */
	void *opaque;            /* free for the parent's use */

	struct vdisk_req_internal internal; /* the core's: do not touch */

	_Alignas(64) unsigned char ctx[];
};

/* The public layout is part of the driver ABI: fields are only ever appended
 * before `internal`, never moved. */
_Static_assert(offsetof(struct vdisk_req, disk) == 0, "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, q) == sizeof(void *), "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, qstate) == 2 * sizeof(void *), "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, sector) == 3 * sizeof(void *), "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, count) == 3 * sizeof(void *) + 8, "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, len) == 3 * sizeof(void *) + 16, "vdisk_req layout");
_Static_assert(offsetof(struct vdisk_req, iov) > offsetof(struct vdisk_req, len) &&
                   offsetof(struct vdisk_req, iovcnt) > offsetof(struct vdisk_req, iov) &&
                   offsetof(struct vdisk_req, flags) > offsetof(struct vdisk_req, iovcnt) &&
                   offsetof(struct vdisk_req, op) > offsetof(struct vdisk_req, flags) &&
                   offsetof(struct vdisk_req, ext) > offsetof(struct vdisk_req, op) &&
                   offsetof(struct vdisk_req, done) > offsetof(struct vdisk_req, ext_n) &&
                   offsetof(struct vdisk_req, internal) > offsetof(struct vdisk_req, opaque),
               "vdisk_req: public fields keep their order, internal comes after them");
_Static_assert(offsetof(struct vdisk_req, ctx) % 64 == 0, "vdisk_req: ctx is cache-aligned");

/* The driver's private context of a request. */
static inline void *vdisk_req_ctx(struct vdisk_req *r)
{
	return r->ctx;
}
static inline struct vdisk_req *vdisk_req_from_ctx(void *ctx)
{
	return (struct vdisk_req *)((unsigned char *)ctx - offsetof(struct vdisk_req, ctx));
}
static inline void *vdisk_req_qstate(struct vdisk_req *r)
{
	return r->qstate;
}

/* Complete a request.  Exactly once per request that was accepted (returned 0). */
void vdisk_req_complete(struct vdisk_req *r, vdisk_status st);

static inline vdisk_status vdisk_status_make(enum vdisk_error kind, int errnum)
{
	vdisk_status st = {(uint8_t)kind, 0, 0, errnum};
	return st;
}
static inline vdisk_status vdisk_status_ok(void)
{
	return vdisk_status_make(VDISK_OK, 0);
}
static inline vdisk_status vdisk_status_io(int errnum)
{
	return vdisk_status_make(VDISK_ERR_IO, errnum);
}
static inline vdisk_status vdisk_status_medium(enum vdisk_medium m, int errnum)
{
	vdisk_status st = {VDISK_ERR_MEDIUM, (uint8_t)m, 0, errnum};
	return st;
}

/* Child requests: allocate a request for `inner` on the same queue as parent
 * (from a per-queue pool sized when the stack was built: no malloc once warm),
 * fill it with one of the prep helpers, set r->done (and r->opaque), submit.
 * done runs once with the child's status on the queue's thread; the core frees
 * the child after done returns.  vdisk_req_alloc() returns NULL only when memory
 * runs out (return -ENOMEM then).  vdisk_req_submit() always returns 0: a child
 * that fails validation (out of range, read-only) completes with that status. */
struct vdisk_req *vdisk_req_alloc(struct vdisk_req *parent, struct vdisk *inner);
void vdisk_req_prep_rw(struct vdisk_req *r, enum vdisk_op op, uint64_t sector,
                       const struct iovec *iov, int iovcnt, uint32_t flags);
void vdisk_req_prep_range(struct vdisk_req *r, enum vdisk_op op, uint64_t sector, uint64_t count,
                          uint32_t flags);
void vdisk_req_prep_flush(struct vdisk_req *r);
void vdisk_req_prep_extents(struct vdisk_req *r, uint64_t sector, uint64_t count,
                            struct vdisk_extent *ext, unsigned max, unsigned *n);
int vdisk_req_submit(struct vdisk_req *r);

/* Forward r unchanged to inner and complete r with the child's status. */
int vdisk_req_forward(struct vdisk_req *r, struct vdisk *inner);

/* ------------------------------------------------------------------------- */
/* Metadata                                                                    */
/* ------------------------------------------------------------------------- */

struct vdisk_meta {
	uint64_t sector_count;
	uint32_t sector_size;
	uint32_t physical_sector_size;
	bool has_disk_id;
	uint8_t disk_id[16];
	bool fua;
	bool read_only;
	uint8_t unmap;                  /* enum vdisk_unmap_behavior */
	uint32_t optimal_unmap_sectors; /* 0 is taken as 1 */
	unsigned caps;                  /* VDISK_CAP_* */
	bool has_pr;
	size_t req_ctx_size; /* bytes of private context per request */
};

/* The metadata a driver's open fills in.  Zeroed before open. */
struct vdisk_meta *vdisk_meta(struct vdisk *d);

/* Copy inner's metadata (for decorators) and make the sector count follow it
 * (VDISK_CAP_RESIZE and VDISK_CAP_EJECT come along; the core drops them where
 * the decorator's table lacks the hook):
 * vdisk_sector_count(d) then reads inner's count, and a resize of inner wakes
 * d's vdisk_wait_resize() waiters.  Keeps req_ctx_size. */
void vdisk_meta_inherit(struct vdisk *d, struct vdisk *inner);

/* Set the live sector count after the driver has applied a resize (or noticed
 * one), and complete every vdisk_wait_resize() waiter of d and of the layers
 * whose size follows d. */
void vdisk_set_sector_count(struct vdisk *d, uint64_t count);

/* Whether a read-only open was asked for this layer (by its "read-only" key, by
 * VDISK_OPEN_READ_ONLY, or by the layer above).  Drivers open their files so. */
bool vdisk_read_only_requested(const struct vdisk *d);

void *vdisk_priv(const struct vdisk *d);
void vdisk_set_priv(struct vdisk *d, void *priv);

/* ------------------------------------------------------------------------- */
/* The driver table                                                            */
/* ------------------------------------------------------------------------- */

struct vdisk_check; /* a check in progress (vdisk_check()) */

struct vdisk_driver {
	/* sizeof(struct vdisk_driver) as the driver was compiled: new members are only
	 * ever appended, and the registry treats those past struct_size as NULL. */
	size_t struct_size;
	const char *name;        /* type name in specs: [a-z0-9]+ */
	const char *description; /* one line for `vdisk --help` */

	/* Parse cfg (a JSON object; "type" and "id" already removed; reject unknown
	 * keys with vdisk_cfg_check()), open resources, fill vdisk_meta(d).  Return 0,
	 * or -1 after vdisk_set_error().  On failure close is not called: free what
	 * open allocated. */
	int (*open)(struct vdisk *d, json_t *cfg);
	void (*close)(struct vdisk *d);

	/* Per-queue state, created when a queue is created on the stack and
	 * destroyed with it (children before parents, parents first on destroy). */
	int (*queue_init)(struct vdisk *d, struct vdisk_queue *q, void **qstate);
	void (*queue_fini)(struct vdisk *d, struct vdisk_queue *q, void *qstate);

	/* Data path; see the contract at the top.  NULL means: read is required;
	 * write -> VDISK_ERR_READ_ONLY; flush -> success; unmap -> success
	 * (only reached if the driver declared an unmap behaviour other than
	 * ignored); write_zeroes and extents -> the core's emulation; eject ->
	 * VDISK_ERR_UNSUPPORTED_EJECT.  A driver's write_zeroes may complete with
	 * VDISK_ERR_NOT_SUPPORTED and the core falls back to writing zeros unless
	 * the caller asked for FAST_ONLY. */
	int (*read)(struct vdisk_req *r);
	int (*write)(struct vdisk_req *r);
	int (*flush)(struct vdisk_req *r);
	int (*unmap)(struct vdisk_req *r);
	int (*write_zeroes)(struct vdisk_req *r);
	int (*extents)(struct vdisk_req *r);
	/* Called only when the driver put VDISK_CAP_EJECT in its metadata
	 * (vdisk_meta_inherit() copies it from the disk below). */
	int (*eject)(struct vdisk_req *r);

	/* Control path (any thread).  resize is called only when the driver put
	 * VDISK_CAP_RESIZE in its metadata (it may know only at open whether it
	 * can). */
	int (*resize)(struct vdisk *d, uint64_t new_count); /* -1 + vdisk_set_error */
	int (*inspect)(struct vdisk *d, json_t *obj);       /* add "config" etc. */
	int (*ctl)(struct vdisk *d, const char *op, json_t *args, json_t **result);

	/* NULL-terminated keys of cfg whose values are secrets: inspect shows them
	 * as "***" and no message of the core repeats them. */
	const char *const *secret_keys;

	/* Persistent reservations, when this layer implements them (and sets
	 * vdisk_meta.has_pr).  A layer without them whose has_pr is inherited
	 * from its only child passes the calls down to it.  The calls follow the
	 * public vdisk_pr_* functions, which have already checked the type and
	 * flags; d is the layer. */
	const struct vdisk_pr_ops *pr;

	/* Check this layer's own state for damage (vdisk_check(); control path,
	 * nothing may be written).  Report each problem with vdisk_check_problem();
	 * return 0, or -1 after vdisk_set_error() if the check could not run. */
	int (*check)(struct vdisk *d, struct vdisk_check *chk);
};

/* A problem found by a driver's check, as a printf-style message. */
void vdisk_check_problem(struct vdisk_check *chk, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct vdisk_pr_ops {
	vdisk_status (*capabilities)(struct vdisk *d, struct vdisk_pr_capabilities *caps);
	vdisk_status (*report)(struct vdisk *d, struct vdisk_pr_report *rep,
	                       struct vdisk_pr_registrant *regs, unsigned max);
	vdisk_status (*register_key)(struct vdisk *d, uint64_t current_key, uint64_t new_key,
	                             unsigned flags);
	vdisk_status (*reserve)(struct vdisk *d, uint64_t key, enum vdisk_pr_type type);
	vdisk_status (*release)(struct vdisk *d, uint64_t key, enum vdisk_pr_type type);
	vdisk_status (*clear)(struct vdisk *d, uint64_t key);
	vdisk_status (*preempt)(struct vdisk *d, uint64_t key, uint64_t preempt_key,
	                        enum vdisk_pr_type type, bool abort);
};

/* Register a driver at run time (out-of-tree backends, tests).  The registry
 * copies the table up to drv->struct_size into a zeroed table of the library's
 * size, so a driver built against an older header gets NULL for every member
 * its header lacked (members of a newer header than the library's are
 * ignored).  The table itself need not outlive the call; the strings and
 * objects it points to must outlive every disk using it.  Returns 0, or -1 if
 * the name is taken or the table lacks name, open or read. */
int vdisk_register_driver(const struct vdisk_driver *drv);

/* Open a child layer from a spec value (a JSON string spec or an object) as part
 * of d's stack; `what` names the field for error messages ("inner",
 * "disks[2]").  The child belongs to the core, which closes it after d's close
 * returns (so d may still do I/O on it while closing, through the synchronous
 * API or a queue of its own made with vdisk_queue_create(child)); do not unref
 * it.  d's open, ctl and close may use the synchronous API on its children. */
struct vdisk *vdisk_open_child(struct vdisk *d, json_t *spec, const char *what, bool read_only);

/* Image locking, for every driver that opens an image file it may write: take
 * the lock on the image's descriptor right after opening it (a reader with
 * writable false), unless the layer's "locking" key (vdisk_cfg_bool, default
 * true) turned it off.  The lock is open-file-description locks on the bytes
 * qemu uses, so a second writer of the file -- another vdisk, a qemu or
 * qemu-img without force-share -- is refused at once; readers share it with
 * one writer.  Returns 0, or -1 after setting an error naming the
 * file and the holder's mode.  Closing the descriptor releases the lock. */
int vdisk_lock_image(int fd, const char *path, bool writable);

/* ------------------------------------------------------------------------- */
/* Configuration helpers.  Each returns 1 if the key was present and valid, 0 if */
/* absent (out untouched), -1 after setting an error naming the key.           */
/* ------------------------------------------------------------------------- */

/* Fail naming the first key of cfg not in the NULL-terminated list. */
int vdisk_cfg_check(json_t *cfg, const char *const *allowed);
/* Sizes: a number, or a string "512", "4k", "1M", "2G", "1T" (powers of 1024). */
int vdisk_cfg_size(json_t *cfg, const char *key, uint64_t *out);
/* Durations: "0", "100ns", "250us", "2ms", "1s" (a unit is required but for 0,
 * which may also be the JSON number 0). */
int vdisk_cfg_duration(json_t *cfg, const char *key, uint64_t *ns);
/* Booleans: true/false, "true"/"false"/"on"/"off"/"yes"/"no"/"1"/"0". */
int vdisk_cfg_bool(json_t *cfg, const char *key, bool *out);
int vdisk_cfg_string(json_t *cfg, const char *key, const char **out);
int vdisk_cfg_uint(json_t *cfg, const char *key, uint64_t *out);

/* The same parsers on strings (for ctl arguments and tools).  They return 0,
 * or -1 without setting an error; vdisk_parse_size() leaves errno ERANGE when
 * s is a size too large for 64 bits (say "too large"), EINVAL when it is not a
 * size.  vdisk_cfg_size() also refuses sizes beyond INT64_MAX as too large. */
int vdisk_parse_size(const char *s, uint64_t *out);
int vdisk_parse_duration(const char *s, uint64_t *ns);
int vdisk_parse_bool(const char *s, bool *out);
/* Exactly 2*len hexadecimal digits (either case) into len bytes.  Returns 0, or
 * -1 without setting an error, so that a caller decoding a secret can word its
 * own message (out may then hold part of the value: clear it). */
int vdisk_parse_hex(const char *s, void *out, size_t len);

/* Set the thread-local control-path error; returns -1.  The stack builder
 * prefixes it with the layer's place in the spec. */
int vdisk_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vdisk_set_error_errno(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------- */
/* Services of the queue for drivers                                           */
/* ------------------------------------------------------------------------- */

/* io_uring: one ring per queue, shared by every layer that needs one, created
 * on first use.  Put an SQE's user_data = a struct vdisk_uring_op embedded in
 * the request's context; its cb runs with the CQE's result from the queue's
 * poll.  vdisk_uring_sqe() returns NULL when the ring is full even after pushing
 * out what was queued: return -EAGAIN then.  SQEs are submitted in batches by
 * the core. */
struct io_uring;
struct io_uring_sqe;
struct vdisk_uring_op {
	void (*cb)(struct vdisk_uring_op *op, int res);
};
struct io_uring *vdisk_queue_uring(struct vdisk_queue *q);
struct io_uring_sqe *vdisk_uring_sqe(struct vdisk_queue *q, struct vdisk_uring_op *op);
/* Register fd in the queue ring's file table: returns its index for
 * IOSQE_FIXED_FILE, or -1 (use the plain fd). */
int vdisk_uring_register_fd(struct vdisk_queue *q, int fd);
void vdisk_uring_unregister_fd(struct vdisk_queue *q, int index);

/* Run work on the shared worker pool (for blocking work: SQLite, HTTP, fsync on
 * a busy file system) and complete r with its result back on r's queue. */
int vdisk_offload(struct vdisk_req *r, vdisk_status (*work)(struct vdisk_req *r));

/* Completing from another thread (a library's callback thread, a thread of the
 * driver's own): on the queue's thread, while the request is in flight, call
 * vdisk_req_remote_begin(r) before another thread may complete it (so the
 * queue's wait knows a completion can come that way); then that thread calls
 * vdisk_req_complete_remote(r, st) exactly once instead of
 * vdisk_req_complete().  The completion is delivered from the queue's poll; many
 * completions handed over together cost one wake-up. */
void vdisk_req_remote_begin(struct vdisk_req *r);
void vdisk_req_complete_remote(struct vdisk_req *r, vdisk_status st);

/* Watching a descriptor from the queue, for drivers that talk over a socket or
 * are told of completions through one (an NBD client's socket, librbd's event
 * fd, libcurl's sockets).  Once started, fn runs on the queue's thread from its
 * poll whenever fd is ready for the events asked (POLLIN, POLLOUT, POLLPRI; it
 * gets those that are ready, plus POLLERR / POLLHUP), and vdisk_queue_wait()
 * and the descriptor of vdisk_queue_fd() wake for it.  Level-triggered: ask for
 * POLLOUT only while there is something to send, or the queue never sleeps.
 * The queue's thread only (queue_init, a request's submission or completion, a
 * watch or timer callback); stop every watch before the queue is destroyed
 * (queue_fini).  A callback may stop and free its own watch or another's.
 * start returns 0 or a negative errno; modify likewise. */
struct vdisk_watch {
	void (*fn)(struct vdisk_watch *w, unsigned revents);
	int fd;          /* -1 once stopped */
	unsigned events; /* what is asked now */
};
int vdisk_watch_start(struct vdisk_queue *q, struct vdisk_watch *w, int fd, unsigned events,
                      void (*fn)(struct vdisk_watch *w, unsigned revents));
int vdisk_watch_modify(struct vdisk_queue *q, struct vdisk_watch *w, unsigned events);
void vdisk_watch_stop(struct vdisk_queue *q, struct vdisk_watch *w);

/* Timers on the queue: fn runs from the queue's poll once now >= deadline
 * (CLOCK_MONOTONIC ns).  No thread sleeps. */
struct vdisk_timer {
	uint64_t deadline;
	void (*fn)(struct vdisk_timer *t);
	unsigned heap_index;
};
uint64_t vdisk_now_ns(void);
void vdisk_timer_start(struct vdisk_queue *q, struct vdisk_timer *t, uint64_t deadline,
                       void (*fn)(struct vdisk_timer *t));
void vdisk_timer_cancel(struct vdisk_queue *q, struct vdisk_timer *t);

/* Bounce buffers: page-aligned, from a per-queue pool with a bounded budget.
 * Returns NULL with errno EAGAIN when the budget is spent (return -EAGAIN: the
 * core retries after a completion); never so when the queue holds no bounce
 * buffer, so a request larger than the whole budget still proceeds, nor when
 * the queue has nothing else in flight, so a child request whose parent holds
 * the budget does too.  NULL with errno ENOMEM when memory ran out: return
 * -ENOMEM (waiting would not help). */
void *vdisk_bounce_get(struct vdisk_queue *q, size_t len);
void vdisk_bounce_put(struct vdisk_queue *q, void *buf, size_t len);

/* CRC-32C (Castagnoli, the polynomial of iSCSI digests and VHDX checksums):
 * crc is the value a previous call returned (0 to start); returns the digest
 * of everything so far.  Uses the CPU's instruction where it has one. */
uint32_t vdisk_crc32c(uint32_t crc, const void *buf, size_t len);

/* iovec helpers. */
size_t vdisk_iov_length(const struct iovec *iov, int iovcnt);
/* Copy len bytes between a flat buffer and iov starting at byte offset off. */
void vdisk_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off, void *buf, size_t len);
void vdisk_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off, const void *buf,
                        size_t len);
void vdisk_iov_memset(const struct iovec *iov, int iovcnt, size_t off, int c, size_t len);
/* Describe bytes [off, off+len) of iov in out (at most max entries); returns the
 * number of entries, or -1 if max is too small. */
int vdisk_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len, struct iovec *out,
                    int max);
/* True if every base and length is a multiple of align. */
bool vdisk_iov_aligned(const struct iovec *iov, int iovcnt, size_t align);
/* True if every byte is zero. */
bool vdisk_iov_is_zero(const struct iovec *iov, int iovcnt);
bool vdisk_buf_is_zero(const void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_BACKEND_H */
