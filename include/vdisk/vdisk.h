/* vdisk — composable virtual-disk backends.
 *
 * This header is for users of disks: virtual machine monitors, servers and tools.
 * Backend authors also include <vdisk/backend.h>.
 *
 * The model, in one paragraph.  A disk is opened from a spec string (JSON, a
 * `type:key=value,...` shorthand, or a bare path) and is a stack of layers: a top
 * disk, decorators, and the backends at the bottom.  A disk is reference-counted
 * and thread-safe.  Data I/O is issued through a queue: one per thread that issues
 * I/O.  A submit call either returns 0 and later calls its completion callback
 * exactly once, on the queue's thread, from vdisk_queue_poll() or
 * vdisk_queue_wait() (never from inside the submit call itself); or it returns a
 * negative errno and never calls the callback.  Disk errors (a sector out of range,
 * a read-only disk, an I/O error...) are always reported through the callback's
 * status; a negative return only means the call itself was malformed (-EINVAL) or
 * memory ran out (-ENOMEM).
 *
 * Control-path functions (open, resize, inspect, ctl) return NULL or -1 on failure
 * and set a thread-local message, read with vdisk_errmsg(), that names the
 * function, the file and the field at fault.
 */
#ifndef VDISK_VDISK_H
#define VDISK_VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VDISK_VERSION_MAJOR 0
#define VDISK_VERSION_MINOR 1
#define VDISK_VERSION_PATCH 0

/* "0.1.0" — the version of the library actually linked. */
const char *vdisk_version(void);

struct vdisk;
struct vdisk_queue;

/* ------------------------------------------------------------------------- */
/* Errors                                                                      */
/* ------------------------------------------------------------------------- */

/* The kind of a failed disk operation.  The values match OpenVMM's DiskError
 * taxonomy, plus VDISK_ERR_NOT_SUPPORTED for the optional operations that exist
 * only here (write-zeroes with fast-only set). */
enum vdisk_error {
	VDISK_OK = 0,
	VDISK_ERR_ILLEGAL_BLOCK,        /* a sector outside the disk or not representable */
	VDISK_ERR_INVALID_INPUT,        /* malformed request: partial sector, bad PR type */
	VDISK_ERR_IO,                   /* host I/O failure; errnum says which */
	VDISK_ERR_MEDIUM,               /* reportable medium error; medium + errnum */
	VDISK_ERR_MEMORY_ACCESS,        /* the guest buffers could not be accessed */
	VDISK_ERR_READ_ONLY,            /* write, write-zeroes or unmap on a read-only disk */
	VDISK_ERR_RESERVATION_CONFLICT, /* persistent-reservation conflict */
	VDISK_ERR_ABORTED_PREEMPT,      /* aborted by a PREEMPT AND ABORT */
	VDISK_ERR_UNSUPPORTED_EJECT,    /* the disk cannot eject */
	VDISK_ERR_NOT_SUPPORTED,        /* optional operation not possible as asked */
	VDISK_ERR__COUNT
};

/* Detail of VDISK_ERR_MEDIUM, mapped by frontends to NVMe / SCSI sense codes. */
enum vdisk_medium {
	VDISK_MEDIUM_NONE = 0,
	VDISK_MEDIUM_APP_TAG_CHECK,
	VDISK_MEDIUM_GUARD_CHECK,
	VDISK_MEDIUM_REF_TAG_CHECK,
	VDISK_MEDIUM_UNRECOVERED_READ,
	VDISK_MEDIUM_WRITE_FAULT,
};

/* The outcome of one operation, passed by value (8 bytes). */
typedef struct vdisk_status {
	uint8_t kind;   /* enum vdisk_error */
	uint8_t medium; /* enum vdisk_medium, for VDISK_ERR_MEDIUM */
	uint16_t reserved;
	int32_t errnum; /* positive errno for IO / MEDIUM errors, else 0 */
} vdisk_status;

static inline bool vdisk_ok(vdisk_status st)
{
	return st.kind == VDISK_OK;
}

/* Short stable name of an error kind: "ok", "illegal-block", "read-only", ... */
const char *vdisk_error_name(enum vdisk_error kind);

/* Human-readable description of a status, e.g. "I/O error: No space left on
 * device (ENOSPC)".  Writes into buf (always NUL-terminated) and returns buf. */
char *vdisk_status_str(vdisk_status st, char *buf, size_t len);

/* The errno closest to a status (0 for success): ILLEGAL_BLOCK -> ERANGE,
 * INVALID_INPUT -> EINVAL, IO/MEDIUM -> errnum or EIO, MEMORY_ACCESS -> EFAULT,
 * READ_ONLY -> EROFS, RESERVATION_CONFLICT -> EBADE, ABORTED_PREEMPT -> ECANCELED,
 * UNSUPPORTED_EJECT and NOT_SUPPORTED -> EOPNOTSUPP. */
int vdisk_status_errno(vdisk_status st);

/* The message of the last failed control-path call on this thread ("" if none).
 * Valid until the next vdisk call on this thread. */
const char *vdisk_errmsg(void);

/* The errno of that failure when there was one, else 0. */
int vdisk_errno(void);

/* ------------------------------------------------------------------------- */
/* Opening disks                                                               */
/* ------------------------------------------------------------------------- */

enum {
	VDISK_OPEN_READ_ONLY = 1u << 0, /* open every layer for reading only */
};

/* Open a disk stack from a spec:
 *   JSON        {"type":"file","path":"d.img","read-only":true}
 *   @file.json  the same, read from a file
 *   shorthand   ram:size=1G  or  file:path=d.img,read-only=on
 *   bare path   d.img — the format is probed; a writable image that probes as a
 *               format other than raw is refused unless its type is given.
 * Returns a disk holding one reference, or NULL with vdisk_errmsg() set. */
struct vdisk *vdisk_open(const char *spec, unsigned flags);

/* Take / drop a reference.  The disk is closed when the last reference goes; by
 * then every queue created on it must have been destroyed. */
struct vdisk *vdisk_ref(struct vdisk *d);
void vdisk_unref(struct vdisk *d);

/* ------------------------------------------------------------------------- */
/* Metadata.  Everything but the sector count is fixed for the life of a disk.  */
/* ------------------------------------------------------------------------- */

enum vdisk_unmap_behavior {
	VDISK_UNMAP_UNSPECIFIED = 0, /* unmapped sectors may keep or lose their content */
	VDISK_UNMAP_IGNORED,         /* unmap never changes content */
	VDISK_UNMAP_ZEROES,          /* unmapped sectors read as zeros afterwards */
};

const char *vdisk_unmap_behavior_name(enum vdisk_unmap_behavior b);

const char *vdisk_type(const struct vdisk *d);              /* "file", "ram", "crypt"... */
uint64_t vdisk_sector_count(const struct vdisk *d);         /* current; may change */
uint32_t vdisk_sector_size(const struct vdisk *d);          /* logical, power of two >= 512 */
uint32_t vdisk_physical_sector_size(const struct vdisk *d); /* >= logical */
bool vdisk_disk_id(const struct vdisk *d, uint8_t id[16]);  /* false if none */
bool vdisk_fua_respected(const struct vdisk *d);
bool vdisk_read_only(const struct vdisk *d);
enum vdisk_unmap_behavior vdisk_unmap_behavior(const struct vdisk *d);
uint32_t vdisk_optimal_unmap_sectors(const struct vdisk *d); /* >= 1 */
bool vdisk_has_persistent_reservations(const struct vdisk *d);

/* Capabilities beyond the metadata, asked once when the stack is built. */
enum {
	VDISK_CAP_WRITE_ZEROES = 1u << 0, /* native write-zeroes (else emulated by writes) */
	VDISK_CAP_FAST_ZERO = 1u << 1,    /* write-zeroes with FAST_ONLY can succeed */
	VDISK_CAP_EXTENTS = 1u << 2,      /* native extents (else "all data") */
	VDISK_CAP_RESIZE = 1u << 3,       /* vdisk_resize() works */
	VDISK_CAP_SHARED_FLUSH = 1u << 4, /* a flush on one queue makes every completed
	                                     write of every queue durable */
	VDISK_CAP_EJECT = 1u << 5,
};
unsigned vdisk_caps(const struct vdisk *d);

/* ------------------------------------------------------------------------- */
/* Queues                                                                      */
/* ------------------------------------------------------------------------- */

struct vdisk_queue_opts {
	size_t struct_size; /* sizeof(struct vdisk_queue_opts) */
	/* Requests expected in flight at once (at most 65536): the queue reserves
	 * that many on every layer when it is created (up to 16 MiB of requests
	 * per queue), so reaching that depth allocates nothing.  0: the pools grow
	 * on first use. */
	unsigned depth;
};

/* Create a queue for issuing I/O to d from the calling thread.  A queue must be
 * used by one thread at a time; its callbacks run on that thread.  d is the top
 * disk of a stack, or any layer of it found with vdisk_find(): a queue on a
 * layer does I/O on that layer and those below it, bypassing the ones above.
 * opts may be NULL.  Returns NULL with vdisk_errmsg() set on failure. */
struct vdisk_queue *vdisk_queue_create(struct vdisk *d, const struct vdisk_queue_opts *opts);

/* Destroy a queue.  No request may be in flight, except vdisk_wait_resize()
 * requests, which are dropped without their callback being called. */
void vdisk_queue_destroy(struct vdisk_queue *q);

/* Run completions that are ready, without blocking: calls their callbacks and
 * returns how many ran (>= 0).  Also pushes out requests batched by earlier
 * submit calls.  Callbacks may submit more I/O on this queue. */
int vdisk_queue_poll(struct vdisk_queue *q);

/* Like vdisk_queue_poll(), but blocks until at least one completion has run or
 * timeout_ns passes (-1: no limit).  Returns the number of completions that ran,
 * 0 on timeout or when nothing is in flight, or a negative errno. */
int vdisk_queue_wait(struct vdisk_queue *q, int64_t timeout_ns);

/* A file descriptor for an event loop: it becomes readable when
 * vdisk_queue_poll() has work, including completions that happened during a
 * submit call.  Level-triggered; call vdisk_queue_poll() when it is readable.  Do
 * not read from or close it. */
int vdisk_queue_fd(struct vdisk_queue *q);

/* Requests submitted on this queue and not yet completed. */
unsigned vdisk_queue_inflight(const struct vdisk_queue *q);

/* Batch submissions made outside a callback: between plug and unplug, requests
 * that go to the kernel are collected and pushed out together by unplug (or by
 * the next poll).  Inside callbacks batching is automatic. */
void vdisk_queue_plug(struct vdisk_queue *q);
void vdisk_queue_unplug(struct vdisk_queue *q);

/* ------------------------------------------------------------------------- */
/* Asynchronous I/O.  For every function here: returns 0 and calls done exactly  */
/* once, later, from vdisk_queue_poll()/vdisk_queue_wait() on this queue's       */
/* thread; or returns a negative errno and never calls it.                      */
/* ------------------------------------------------------------------------- */

typedef void vdisk_done_fn(void *opaque, vdisk_status st);

/* Flags for writes and write-zeroes. */
enum {
	VDISK_IO_FUA = 1u << 0, /* durable on completion (when vdisk_fua_respected()) */
};

/* Read iov (total length a whole number of sectors) starting at sector.  The iov
 * array and the buffers must stay valid until done is called.  Page-aligned
 * buffers are fastest. */
int vdisk_readv(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int iovcnt,
                vdisk_done_fn *done, void *opaque);

/* Write iov starting at sector; flags: VDISK_IO_FUA.  The buffers are never
 * modified. */
int vdisk_writev(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int iovcnt,
                 unsigned flags, vdisk_done_fn *done, void *opaque);

/* Make every completed write durable. */
int vdisk_flush(struct vdisk_queue *q, vdisk_done_fn *done, void *opaque);

enum {
	VDISK_UNMAP_BLOCK_LEVEL_ONLY = 1u << 0, /* passed through; no backend uses it */
};

/* Unmap (trim, discard) count sectors; what happens to their content is
 * vdisk_unmap_behavior().  A zero count succeeds at any sector <= the count. */
int vdisk_unmap(struct vdisk_queue *q, uint64_t sector, uint64_t count, unsigned flags,
                vdisk_done_fn *done, void *opaque);

/* Flags for write-zeroes. */
enum {
	VDISK_ZERO_MAY_UNMAP = 1u << 1, /* the range may be deallocated */
	VDISK_ZERO_FAST_ONLY = 1u << 2, /* fail with VDISK_ERR_NOT_SUPPORTED rather than
	                                   write zeros one block at a time */
};

/* Make count sectors read as zeros; flags: VDISK_IO_FUA | VDISK_ZERO_*.  Disks
 * without a native implementation get one from the core that writes zeros. */
int vdisk_write_zeroes(struct vdisk_queue *q, uint64_t sector, uint64_t count, unsigned flags,
                       vdisk_done_fn *done, void *opaque);

/* Extent flags (the values of NBD base:allocation). */
enum {
	VDISK_EXTENT_HOLE = 1u << 0, /* no storage allocated */
	VDISK_EXTENT_ZERO = 1u << 1, /* reads as zeros */
};

struct vdisk_extent {
	uint64_t sector;
	uint64_t count;
	uint32_t flags; /* VDISK_EXTENT_* ; 0 = allocated data */
	uint32_t reserved;
};

/* Describe the allocation of [sector, sector+count): fills ext[0..*n) with
 * contiguous extents starting at sector, covering a prefix of the range (at least
 * one extent when count > 0), at most max of them.  *n is set before done runs.
 * Disks without native extents report one extent of data. */
int vdisk_extents(struct vdisk_queue *q, uint64_t sector, uint64_t count, struct vdisk_extent *ext,
                  unsigned max, unsigned *n, vdisk_done_fn *done, void *opaque);

/* Eject the medium (VDISK_ERR_UNSUPPORTED_EJECT unless VDISK_CAP_EJECT). */
int vdisk_eject(struct vdisk_queue *q, vdisk_done_fn *done, void *opaque);

/* Complete once the sector count differs from old_count, storing the new count
 * in *new_count.  Completes at once if it already differs.  Disks that never
 * resize never complete it; vdisk_queue_destroy() drops it. */
int vdisk_wait_resize(struct vdisk_queue *q, uint64_t old_count, uint64_t *new_count,
                      vdisk_done_fn *done, void *opaque);

/* Guest-memory buffers: a VMM passes guest-physical ranges and a translator of
 * its own instead of iovecs.  translate maps a prefix of [gpa, gpa+len) to host
 * memory: it stores the host address in *host and returns how many bytes from
 * gpa are contiguous there (1..len), or a negative errno, which completes the
 * request with VDISK_ERR_MEMORY_ACCESS.  writable is true when the disk will
 * write into guest memory (a read).  Translation happens during the submit call;
 * the memory must stay mapped until done runs. */
struct vdisk_guest_range {
	uint64_t gpa;
	uint64_t len;
};

struct vdisk_guest_mem {
	int64_t (*translate)(void *ctx, uint64_t gpa, uint64_t len, bool writable, void **host);
	void *ctx;
};

int vdisk_read_guest(struct vdisk_queue *q, uint64_t sector, const struct vdisk_guest_mem *mem,
                     const struct vdisk_guest_range *ranges, int nranges, vdisk_done_fn *done,
                     void *opaque);
int vdisk_write_guest(struct vdisk_queue *q, uint64_t sector, const struct vdisk_guest_mem *mem,
                      const struct vdisk_guest_range *ranges, int nranges, unsigned flags,
                      vdisk_done_fn *done, void *opaque);

/* ------------------------------------------------------------------------- */
/* Synchronous I/O, built on queues.  Safe from any thread; each call borrows a  */
/* queue from a pool of the layer it is given.  Return the operation's status.  */
/* ------------------------------------------------------------------------- */

/* Byte-addressed read and write: offset and len need not be sector-aligned
 * (partial sectors are read-modify-written, which is not atomic against
 * concurrent writers of the same sector). */
vdisk_status vdisk_pread(struct vdisk *d, void *buf, size_t len, uint64_t offset);
vdisk_status vdisk_pwrite(struct vdisk *d, const void *buf, size_t len, uint64_t offset,
                          unsigned flags);
vdisk_status vdisk_flush_sync(struct vdisk *d);
vdisk_status vdisk_unmap_sync(struct vdisk *d, uint64_t sector, uint64_t count);
vdisk_status vdisk_write_zeroes_sync(struct vdisk *d, uint64_t sector, uint64_t count,
                                     unsigned flags);
vdisk_status vdisk_extents_sync(struct vdisk *d, uint64_t sector, uint64_t count,
                                struct vdisk_extent *ext, unsigned max, unsigned *n);

/* ------------------------------------------------------------------------- */
/* Control                                                                     */
/* ------------------------------------------------------------------------- */

/* Change the sector count (VDISK_CAP_RESIZE).  Waiters of vdisk_wait_resize()
 * complete.  Returns 0, or -1 with vdisk_errmsg() set. */
int vdisk_resize(struct vdisk *d, uint64_t new_sector_count);

/* Find a layer of the stack by the "id" its spec gave it.  Returns a new
 * reference, or NULL with vdisk_errmsg() set. */
struct vdisk *vdisk_find(struct vdisk *d, const char *id);

/* Ask a layer to do something specific to its type, with arguments and result as
 * JSON text: e.g. vdisk_ctl(delay, "set", "{\"read\":\"5ms\"}", NULL).  *result
 * (if result is not NULL) receives a malloc'd JSON string or NULL.  Returns 0, or
 * -1 with vdisk_errmsg() set. */
int vdisk_ctl(struct vdisk *d, const char *op, const char *json_args, char **result);

enum {
	VDISK_INSPECT_STATS = 1u << 0, /* include per-layer statistics */
	VDISK_INSPECT_PRETTY = 1u << 1,
};

/* The inspect tree of the stack as a malloc'd JSON string: every layer's type,
 * metadata, configuration (secrets redacted) and, with VDISK_INSPECT_STATS, its
 * statistics (operations, bytes, errors and a log2 latency histogram per
 * operation type).  NULL with vdisk_errmsg() set on failure. */
char *vdisk_inspect(struct vdisk *d, unsigned flags);

enum {
	VDISK_CHECK_READ = 1u << 0, /* also read every allocated sector of d */
};

/* Check a stack for damage.  Every layer that can check its own state does (a
 * file still has the size it had at open; a SQLite layer passes SQLite's
 * integrity check and every stored sector has the sector size; ...).  With
 * VDISK_CHECK_READ, every extent of d that is not reported as zero is read, and
 * unreadable ranges are problems (found to the sector).  Nothing is written.
 * Returns the number of problems (0: none), or -1 with vdisk_errmsg() set when
 * the check itself could not run.  *report (if report is not NULL) receives a
 * malloc'd JSON string: {"problems":[{"layer":PATH,"type":TYPE,"message":TEXT,
 * and for unreadable ranges "offset","length" in bytes}], "layers":N,
 * "layers_checked":N, "bytes_read":N}; at most 100 problems are listed,
 * "problems_total" counts them all.  PATH is the layer's place in the spec
 * ("" for the top, "inner", "disks[1]"). */
int vdisk_check(struct vdisk *d, unsigned flags, char **report);

/* Call fn for every backend type, built-in and registered. */
void vdisk_list_types(void (*fn)(const char *name, const char *description, void *arg), void *arg);

/* ------------------------------------------------------------------------- */
/* Utilities                                                                   */
/* ------------------------------------------------------------------------- */

/* A cheap monotonic time stamp (the invariant TSC where there is one, else
 * CLOCK_MONOTONIC ns) and its rate, for measuring latency on hot paths. */
uint64_t vdisk_ticks(void);
double vdisk_ticks_per_ns(void);

/* ------------------------------------------------------------------------- */
/* Persistent reservations                                                     */
/* ------------------------------------------------------------------------- */

/* The SCSI (SPC-4 PERSISTENT RESERVE IN/OUT) and NVMe reservation model, for the
 * disks where vdisk_has_persistent_reservations() is true (a "prwrap" layer
 * emulates it over any disk).  The disk handle is the initiator: a stack opened
 * once is one initiator, identified by the host id its PR layer was given.
 *
 * Each call is a synchronous control call, safe from any thread, that returns
 * the outcome as a status:
 *   VDISK_OK;
 *   VDISK_ERR_RESERVATION_CONFLICT  a key that does not match this initiator's
 *                                   registration, an unregistered initiator, a
 *                                   reservation held by another;
 *   VDISK_ERR_INVALID_INPUT         a type out of range, a release of a type
 *                                   other than the one held, a preempt key of 0
 *                                   where it means nothing, unknown flags;
 *   VDISK_ERR_NOT_SUPPORTED         no layer of the stack implements them;
 *   VDISK_ERR_IO                    the persistent state could not be saved
 *                                   (nothing changed).
 * Reads and writes of an initiator that the reservation excludes complete with
 * VDISK_ERR_RESERVATION_CONFLICT; I/O in flight when the initiator is preempted
 * with abort completes with VDISK_ERR_ABORTED_PREEMPT. */

/* Reservation types.  The values are the NVMe RTYPE codes and Linux PR_* values
 * (SCSI PR TYPE codes differ: 1, 3, 5, 6, 7, 8). */
enum vdisk_pr_type {
	VDISK_PR_NONE = 0, /* in a report: no reservation */
	VDISK_PR_WRITE_EXCLUSIVE = 1,
	VDISK_PR_EXCLUSIVE_ACCESS = 2,
	VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 3,
	VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 4,
	VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS = 5,
	VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 6,
};

/* "write-exclusive", "exclusive-access-registrants-only", ..., "none". */
const char *vdisk_pr_type_name(enum vdisk_pr_type type);

struct vdisk_pr_capabilities {
	uint32_t types;                  /* bit (1u << type) for each supported type */
	bool persist_through_power_loss; /* VDISK_PR_SET_PTPL is accepted */
};

struct vdisk_pr_registrant {
	uint64_t key;           /* the registered reservation key (never 0) */
	uint8_t host_id[16];    /* the initiator's host identifier */
	uint8_t host_id_len;    /* 8 or 16 */
	uint16_t controller_id; /* a number for the initiator, stable while it exists */
	bool holds_reservation; /* for the all-registrants types, every registrant */
};

struct vdisk_pr_report {
	uint32_t generation;             /* bumped by register, clear and preempt */
	uint8_t type;                    /* enum vdisk_pr_type; VDISK_PR_NONE if none */
	bool persist_through_power_loss; /* PTPL is active */
	unsigned nregistrants;           /* registrants that exist (may exceed max) */
};

/* Flags of vdisk_pr_register(). */
enum {
	VDISK_PR_IGNORE_EXISTING_KEY = 1u << 0, /* register whatever the current key */
	VDISK_PR_SET_PTPL = 1u << 1,            /* activate persist-through-power-loss */
	VDISK_PR_CLEAR_PTPL = 1u << 2,          /* deactivate it */
};

vdisk_status vdisk_pr_capabilities(struct vdisk *d, struct vdisk_pr_capabilities *caps);

/* Fill *rep and up to max registrants in regs (regs may be NULL if max is 0). */
vdisk_status vdisk_pr_report(struct vdisk *d, struct vdisk_pr_report *rep,
                             struct vdisk_pr_registrant *regs, unsigned max);

/* REGISTER (current_key must match this initiator's key, 0 when unregistered)
 * or, with VDISK_PR_IGNORE_EXISTING_KEY, REGISTER AND IGNORE EXISTING KEY.
 * new_key 0 unregisters. */
vdisk_status vdisk_pr_register(struct vdisk *d, uint64_t current_key, uint64_t new_key,
                               unsigned flags);

/* RESERVE / RELEASE with this initiator's key. */
vdisk_status vdisk_pr_reserve(struct vdisk *d, uint64_t key, enum vdisk_pr_type type);
vdisk_status vdisk_pr_release(struct vdisk *d, uint64_t key, enum vdisk_pr_type type);

/* CLEAR: drop the reservation and every registration. */
vdisk_status vdisk_pr_clear(struct vdisk *d, uint64_t key);

/* PREEMPT (abort false) or PREEMPT AND ABORT: remove the registrations holding
 * preempt_key and, when they hold the reservation, take it over with type. */
vdisk_status vdisk_pr_preempt(struct vdisk *d, uint64_t key, uint64_t preempt_key,
                              enum vdisk_pr_type type, bool abort);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_VDISK_H */
