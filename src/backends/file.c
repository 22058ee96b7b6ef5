/* file: a regular file or a block device as a disk.
 *
 * Speed on these machines comes from not going through the kernel's async
 * machinery when the data is in the page cache: a buffered read first tries
 * preadv2(RWF_NOWAIT) on the queue's thread (482k 4K reads/s against 346k for
 * io_uring at depth 32) and completes inline; only what would block goes to the
 * queue's io_uring, batched, on a registered file.  Buffered writes: io_uring
 * punts them to a kernel worker on ext4 (97 us at depth 1 against 2.2 us for
 * pwrite), so they are written with pwrite on the queue's thread unless
 * write-mode=uring; FUA writes carry RWF_DSYNC and go to io_uring, as they
 * wait for the device.  O_DIRECT always goes through
 * io_uring, with unaligned buffers bounced.
 *
 * Block devices take the same path, O_DIRECT by default (direct=off for the
 * page cache).  What is particular to them lives in blockdev/: the geometry
 * from ioctls and sysfs, the resize listener, persistent reservations.  Unmap
 * is BLKDISCARD on the worker pool, write-zeroes a fallocate through io_uring
 * (the kernel's BLKZEROOUT path), eject the CD-ROM ioctls.
 *
 * A short transfer is never success: the rest is resubmitted, and no progress
 * at all is an error.  Writes never extend the file (the core checks the range
 * against the size read at open; for a device, against the size the resize
 * listener last published, and the kernel refuses what lies beyond). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/cdrom.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "backends/blockdev/blockdev.h"
#include "vdisk/backend.h"

#define SLICE_MAX 8

enum write_mode { WRITE_INLINE, WRITE_URING };

struct file {
	int fd;
	char *path;
	unsigned shift;
	bool blk; /* a block device */
	bool direct;
	bool read_only;
	bool nowait_reads;  /* preadv2(RWF_NOWAIT) supported */
	bool nowait_writes; /* pwritev2(RWF_NOWAIT) supported */
	bool can_punch;     /* files: punch-hole probe succeeded */
	bool can_discard;   /* devices: BLKDISCARD offered */
	bool watching;      /* devices: the resize listener follows this one */
	enum write_mode write_mode;
	uint32_t mem_align; /* O_DIRECT buffer alignment */
	uint32_t off_align; /* O_DIRECT offset/length alignment */
	uint64_t size;
	bool created;
	struct blk_info bi; /* devices only */
	struct blk_watch watch;
	struct blk_pr pr;
};

struct file_q {
	int fixed; /* index in the ring's file table, or -1 */
};

enum { K_RW, K_FSYNC, K_FALLOC, K_FALLOC_SYNC };

struct file_ctx {
	struct vdisk_uring_op op;
	struct vdisk_timer retry;
	uint8_t kind;
	size_t done;  /* bytes transferred so far */
	void *bounce; /* O_DIRECT bounce buffer, or NULL */
	struct iovec biov;
	struct iovec slice[SLICE_MAX];
};

/* What the spec asked for. */
struct file_opts {
	const char *path;
	const char *wmode;
	bool ro;
	bool direct;
	int have_direct;
	uint64_t ss;
	int have_ss;
	uint64_t create;
	int have_create;
	bool locking; /* qemu's image locks (off: the caller takes the risk) */
};

static struct file_ctx *ctx_of(struct vdisk_req *r)
{
	return vdisk_req_ctx(r);
}

struct blk_pr *file_blk_pr(struct vdisk *d)
{
	return &((struct file *)vdisk_priv(d))->pr;
}

/* ------------------------------------------------------------------------- */
/* Open, one step per function                                                 */
/* ------------------------------------------------------------------------- */

static int parse_opts(struct vdisk *d, json_t *cfg, struct file_opts *o)
{
	static const char *const keys[] = {"path",       "direct",  "sector-size", "create",
	                                   "write-mode", "locking", NULL};
	*o = (struct file_opts){.ro = vdisk_read_only_requested(d), .ss = 512, .locking = true};
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "path", &o->path) < 0 ||
	    (o->have_direct = vdisk_cfg_bool(cfg, "direct", &o->direct)) < 0 ||
	    (o->have_ss = vdisk_cfg_size(cfg, "sector-size", &o->ss)) < 0 ||
	    (o->have_create = vdisk_cfg_size(cfg, "create", &o->create)) < 0 ||
	    vdisk_cfg_string(cfg, "write-mode", &o->wmode) < 0 ||
	    vdisk_cfg_bool(cfg, "locking", &o->locking) < 0)
		return -1;
	if (!o->path || !*o->path)
		return vdisk_set_error("path: required");
	if (o->ss != 512 && o->ss != 4096)
		return vdisk_set_error("sector-size: %" PRIu64 " is not 512 or 4096", o->ss);
	if (o->wmode && strcmp(o->wmode, "inline") && strcmp(o->wmode, "uring"))
		return vdisk_set_error("write-mode: '%s' is not inline or uring", o->wmode);
	if (o->have_create && (o->create == 0 || o->create % o->ss))
		return vdisk_set_error("create: %" PRIu64 " is not a non-zero multiple of %" PRIu64,
		                       o->create, o->ss);
	return 0;
}

static struct file *file_new(const struct file_opts *o)
{
	struct file *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->fd = -1;
	f->path = strdup(o->path);
	f->read_only = o->ro;
	f->write_mode = o->wmode && strcmp(o->wmode, "uring") == 0 ? WRITE_URING : WRITE_INLINE;
	if (!f->path) {
		free(f);
		return NULL;
	}
	return f;
}

static void file_free(struct file *f)
{
	if (f->watching)
		blk_watch_del(&f->watch);
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	free(f);
}

/* Open the path (creating it if create= says so), without O_DIRECT yet. */
static int open_path(struct file *f, const struct file_opts *o)
{
	/* O_NONBLOCK until the file is known to be a regular one or a device:
	 * opening a FIFO for reading would wait for a writer, a CD-ROM drive
	 * without a disc would refuse */
	int flags = (o->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
	/* an image's access time means nothing, and keeping it costs every read a
	 * clock read and a check (about 3% of a page-cache read); O_NOATIME is only
	 * allowed to the owner, so fall back without it */
	f->fd = open(o->path, flags | O_NOATIME);
	if (f->fd < 0 && errno == EPERM)
		f->fd = open(o->path, flags);
	if (f->fd < 0 && errno == ENOENT && o->have_create && o->ro)
		return vdisk_set_error(
		    "path '%s': does not exist, and create= cannot make a read-only file", o->path);
	if (f->fd < 0 && errno == ENOENT && o->have_create) {
		f->fd = open(o->path, flags | O_CREAT | O_EXCL, 0666);
		if (f->fd >= 0) {
			f->created = true;
			if (ftruncate(f->fd, (off_t)o->create) < 0)
				return vdisk_set_error_errno(errno, "path '%s': setting size",
				                             o->path);
		}
	}
	if (f->fd < 0)
		return vdisk_set_error_errno(errno, "path '%s': cannot open %s", o->path,
		                             o->ro ? "for reading" : "for reading and writing");
	return 0;
}

/* A regular file or a block device; nothing else. */
static int identify(struct file *f, struct stat *st)
{
	if (fstat(f->fd, st) < 0)
		return vdisk_set_error_errno(errno, "path '%s': stat", f->path);
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode))
		return vdisk_set_error("path '%s': not a regular file or block device", f->path);
	f->blk = S_ISBLK(st->st_mode);
	return 0;
}

static int file_geometry(struct file *f, const struct file_opts *o, const struct stat *st)
{
	f->shift = o->ss == 512 ? 9 : 12;
	if (o->have_create && (uint64_t)st->st_size != o->create)
		return vdisk_set_error("path '%s': exists with size %" PRIu64 ", not the %" PRIu64
		                       " bytes of create= (refusing to change it)",
		                       f->path, (uint64_t)st->st_size, o->create);
	f->size = (uint64_t)st->st_size >> f->shift << f->shift;
	if (f->size == 0)
		return vdisk_set_error("path '%s': smaller than one %" PRIu64 "-byte sector",
		                       f->path, o->ss);
	return 0;
}

/* The device's own sector size unless sector-size asks for a larger one. */
static int device_geometry(struct file *f, const struct file_opts *o, const struct stat *st)
{
	if (o->have_create)
		return vdisk_set_error("create: '%s' is a block device, which has its own size",
		                       f->path);
	if (blk_query(f->fd, f->path, st->st_rdev, &f->bi) < 0)
		return -1;
	uint64_t ss = o->have_ss ? o->ss : f->bi.logical;
	if (ss != 512 && ss != 4096)
		return vdisk_set_error("path '%s': logical block size %" PRIu64
		                       " (only 512 and 4096 are supported)",
		                       f->path, ss);
	if (ss < f->bi.logical)
		return vdisk_set_error("sector-size: %" PRIu64 " is smaller than the %" PRIu32
		                       "-byte logical blocks of '%s'",
		                       ss, f->bi.logical, f->path);
	f->shift = ss == 512 ? 9 : 12;
	f->size = f->bi.size >> f->shift << f->shift;
	if (f->size == 0)
		return vdisk_set_error("path '%s': device smaller than one %" PRIu64
		                       "-byte sector (%" PRIu64 " bytes)",
		                       f->path, ss, f->bi.size);
	return 0;
}

/* Blocking mode, and O_DIRECT with the alignment it needs: by default on
 * devices (whose page cache only doubles the guest's), on request for files. */
static int set_direct(struct file *f, const struct file_opts *o)
{
	f->direct = o->have_direct ? o->direct : f->blk;
	/* io_uring would answer -EAGAIN rather than wait on a non-blocking file */
	int fl = fcntl(f->fd, F_GETFL);
	if (fl < 0 || fcntl(f->fd, F_SETFL, (fl & ~O_NONBLOCK) | (f->direct ? O_DIRECT : 0)) < 0)
		return vdisk_set_error_errno(errno, "path '%s': %s", f->path,
		                             f->direct ? "cannot open with O_DIRECT" : "fcntl");
	if (!f->direct)
		return 0;
	uint32_t ss = 1u << f->shift;
	struct statx sx;
	f->mem_align = f->blk ? f->bi.logical : 4096;
	f->off_align = f->blk ? f->bi.logical : 4096;
	if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
		f->mem_align = sx.stx_dio_mem_align ? sx.stx_dio_mem_align : 1;
		f->off_align = sx.stx_dio_offset_align;
	}
	if (f->off_align > ss)
		return vdisk_set_error("direct: '%s' needs %" PRIu32 "-byte aligned I/O; use "
		                       "sector-size=4096",
		                       f->path, f->off_align);
	return 0;
}

/* What the file or device can do beyond reads and writes.  Probes change no
 * data. */
static void probe_features(struct file *f, const struct stat *st)
{
	f->nowait_reads = !f->direct;
	f->nowait_writes = !f->direct;
	if (f->blk) {
		f->can_discard = !f->read_only && f->bi.discard_max > 0;
		return;
	}
	if (!f->read_only &&
	    fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st->st_size, 1) == 0)
		f->can_punch = true;
}

static uint32_t physical_size(const struct file *f, const struct stat *st)
{
	uint32_t ss = 1u << f->shift;
	uint64_t p = f->blk ? f->bi.physical : (uint64_t)st->st_blksize;
	if (p < ss || (p & (p - 1)) || p > 65536)
		return ss;
	return (uint32_t)p;
}

static void fill_meta(struct vdisk *d, struct file *f, const struct stat *st)
{
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 1u << f->shift;
	m->physical_sector_size = physical_size(f, st);
	m->sector_count = f->size >> f->shift;
	/* RWF_DSYNC is durable on completion on a device too: the block layer
	 * sends FUA, or a flush after the write where the device has no FUA */
	m->fua = true;
	m->read_only = f->read_only;
	m->caps = VDISK_CAP_SHARED_FLUSH;
	m->req_ctx_size = sizeof(struct file_ctx);
	if (!f->blk) {
		m->unmap = f->can_punch ? VDISK_UNMAP_ZEROES : VDISK_UNMAP_IGNORED;
		m->optimal_unmap_sectors = f->can_punch ? m->physical_sector_size >> f->shift : 1;
		m->caps |= f->can_punch ? VDISK_CAP_FAST_ZERO : 0;
		return;
	}
	/* a discarded block may read back as anything (§5.2): only write-zeroes
	 * promises zeros */
	m->unmap = f->can_discard ? VDISK_UNMAP_UNSPECIFIED : VDISK_UNMAP_IGNORED;
	m->optimal_unmap_sectors = f->can_discard && f->bi.discard_granularity >> f->shift
	                               ? f->bi.discard_granularity >> f->shift
	                               : 1;
	m->caps |= !f->read_only && f->bi.write_zeroes_max ? VDISK_CAP_FAST_ZERO : 0;
	m->caps |= f->bi.cdrom ? VDISK_CAP_EJECT : 0;
	m->has_pr = blk_pr_probe(f->fd, &f->bi, &f->pr);
}

/* Follow the device's size: the listener publishes resizes from now on. */
static void watch_device(struct vdisk *d, struct file *f)
{
	f->watch = (struct blk_watch){.d = d, .fd = f->fd, .rdev = f->bi.rdev, .shift = f->shift};
	f->watching = blk_watch_add(&f->watch);
}

static int file_open(struct vdisk *d, json_t *cfg)
{
	struct file_opts o;
	struct stat st;
	if (parse_opts(d, cfg, &o) < 0)
		return -1;
	struct file *f = file_new(&o);
	if (!f)
		return vdisk_set_error_errno(ENOMEM, "file");
	if (open_path(f, &o) < 0 || identify(f, &st) < 0 ||
	    (o.locking && vdisk_lock_image(f->fd, f->path, !o.ro) < 0) ||
	    (f->blk ? device_geometry(f, &o, &st) : file_geometry(f, &o, &st)) < 0 ||
	    set_direct(f, &o) < 0)
		goto fail;
	probe_features(f, &st);
	fill_meta(d, f, &st);
	vdisk_set_priv(d, f);
	if (f->blk)
		watch_device(d, f);
	return 0;

fail:
	/* what create= made is gone again if the disk could not be opened */
	if (f->created)
		unlink(o.path);
	file_free(f);
	return -1;
}

static void file_close(struct vdisk *d)
{
	file_free(vdisk_priv(d));
}

static int file_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	struct file *f = vdisk_priv(d);
	struct file_q *fq = malloc(sizeof *fq);
	if (!fq)
		return vdisk_set_error_errno(ENOMEM, "file queue");
	fq->fixed = -1;
	if (!vdisk_queue_uring(q)) {
		free(fq);
		return -1;
	}
	fq->fixed = vdisk_uring_register_fd(q, f->fd);
	/* a resize between the device's open and the core's taking the size
	 * from it was published too early: read it again */
	if (f->watching)
		blk_watch_refresh(&f->watch);
	*qstate = fq;
	return 0;
}

static void file_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	(void)d;
	struct file_q *fq = qstate;
	vdisk_uring_unregister_fd(q, fq->fixed);
	free(fq);
}

/* ------------------------------------------------------------------------- */
/* io_uring path                                                               */
/* ------------------------------------------------------------------------- */

static void file_uring_cb(struct vdisk_uring_op *op, int res);

/* Point an SQE at this request's file: the registered index when there is one. */
static void sqe_file(struct io_uring_sqe *sqe, struct vdisk_req *r)
{
	struct file_q *fq = vdisk_req_qstate(r);
	if (fq->fixed >= 0) {
		sqe->fd = fq->fixed;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

/* An SQE for r on the queue's ring, its completion routed to file_uring_cb
 * with `kind`; prep it, then point it at the file with sqe_file(). */
static struct io_uring_sqe *file_sqe(struct vdisk_req *r, uint8_t kind)
{
	struct file_ctx *c = ctx_of(r);
	struct io_uring_sqe *sqe = vdisk_uring_sqe(r->q, &c->op);
	if (sqe) {
		c->kind = kind;
		c->op.cb = file_uring_cb;
	}
	return sqe;
}

static void finish(struct vdisk_req *r, vdisk_status st)
{
	struct file_ctx *c = ctx_of(r);
	if (c->bounce) {
		if (r->op == VDISK_OP_READ && vdisk_ok(st))
			vdisk_iov_from_buf(r->iov, r->iovcnt, 0, c->bounce, r->len);
		vdisk_bounce_put(r->q, c->bounce, r->len);
		c->bounce = NULL;
	}
	vdisk_req_complete(r, st);
}

/* Queue the remaining part of a read or write.  -EAGAIN if the ring is full. */
static int submit_rw(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	struct file_ctx *c = ctx_of(r);
	const struct iovec *iov;
	int cnt;
	if (c->bounce) {
		c->biov.iov_base = (unsigned char *)c->bounce + c->done;
		c->biov.iov_len = r->len - c->done;
		iov = &c->biov;
		cnt = 1;
	} else if (c->done == 0 && r->iovcnt <= IOV_MAX) {
		iov = r->iov;
		cnt = r->iovcnt;
	} else {
		/* after a short transfer: a prefix of what is left is enough, the
		 * rest follows as another short transfer */
		cnt = vdisk_iov_slice(r->iov, r->iovcnt, c->done, r->len - c->done, c->slice,
		                      SLICE_MAX);
		if (cnt < 0)
			cnt = SLICE_MAX;
		iov = c->slice;
	}
	struct io_uring_sqe *sqe = file_sqe(r, K_RW);
	if (!sqe)
		return -EAGAIN;
	uint64_t off = (r->sector << f->shift) + c->done;
	if (r->op == VDISK_OP_READ)
		io_uring_prep_readv(sqe, f->fd, iov, (unsigned)cnt, off);
	else
		io_uring_prep_writev2(sqe, f->fd, iov, (unsigned)cnt, off,
		                      (r->flags & VDISK_IO_FUA) ? RWF_DSYNC : 0);
	sqe_file(sqe, r);
	return 0;
}

static void retry_timer(struct vdisk_timer *t)
{
	struct file_ctx *c = (struct file_ctx *)((char *)t - offsetof(struct file_ctx, retry));
	struct vdisk_req *r = vdisk_req_from_ctx(c);
	if (submit_rw(r) == -EAGAIN)
		vdisk_timer_start(r->q, &c->retry, 0, retry_timer);
}

/* A device answers a request beyond its end (it shrank after the core's range
 * check) with a short transfer or ENOSPC, and a reservation conflict with
 * EBADE; a file's errors are all I/O errors. */
static vdisk_status error_status(struct vdisk_req *r, int err)
{
	struct file *f = vdisk_priv(r->disk);
	if (f->blk && (err == ENOSPC || err == ENODATA))
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, err);
	if (f->blk && err == EBADE)
		return vdisk_status_make(VDISK_ERR_RESERVATION_CONFLICT, err);
	return vdisk_status_io(err);
}

static void file_uring_cb(struct vdisk_uring_op *op, int res)
{
	struct file_ctx *c = (struct file_ctx *)op;
	struct vdisk_req *r = vdisk_req_from_ctx(c);
	if (c->kind == K_FALLOC_SYNC && res >= 0) {
		/* fallocate done; FUA asked for it to be durable */
		struct file *f = vdisk_priv(r->disk);
		struct io_uring_sqe *sqe = vdisk_uring_sqe(r->q, &c->op);
		if (sqe) {
			io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
			sqe_file(sqe, r);
			c->kind = K_FSYNC;
			return;
		}
		res = fdatasync(f->fd) < 0 ? -errno : 0;
	}
	if (res < 0) {
		if (c->kind == K_FALLOC || c->kind == K_FALLOC_SYNC) {
			if (res == -EOPNOTSUPP && r->op == VDISK_OP_WRITE_ZEROES) {
				finish(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
				return;
			}
		}
		if ((res == -EAGAIN || res == -EINTR) && c->kind == K_RW) {
			if (submit_rw(r) == -EAGAIN)
				vdisk_timer_start(r->q, &c->retry, 0, retry_timer);
			return;
		}
		finish(r, error_status(r, -res));
		return;
	}
	if (c->kind != K_RW) {
		finish(r, vdisk_status_ok());
		return;
	}
	if (res == 0 && c->done < r->len) {
		/* no progress: the file shrank under us, or the disk is full */
		finish(r, error_status(r, r->op == VDISK_OP_READ ? ENODATA : ENOSPC));
		return;
	}
	c->done += (size_t)res;
	if (c->done >= r->len) {
		finish(r, vdisk_status_ok());
		return;
	}
	if (submit_rw(r) == -EAGAIN)
		vdisk_timer_start(r->q, &c->retry, 0, retry_timer);
}

/* ------------------------------------------------------------------------- */
/* Reads and writes                                                            */
/* ------------------------------------------------------------------------- */

/* O_DIRECT wants every buffer address aligned to the memory alignment and every
 * segment length to the offset alignment (the logical block of the device). */
static bool direct_ok(const struct file *f, const struct vdisk_req *r)
{
	if (r->iovcnt > IOV_MAX)
		return false;
	for (int i = 0; i < r->iovcnt; i++)
		if (((uintptr_t)r->iov[i].iov_base & (f->mem_align - 1)) ||
		    (r->iov[i].iov_len & (f->off_align - 1)))
			return false;
	return true;
}

/* Bounce what O_DIRECT cannot take as it is. */
static int need_bounce(struct file *f, struct vdisk_req *r)
{
	struct file_ctx *c = ctx_of(r);
	if (!f->direct || direct_ok(f, r))
		return 0;
	c->bounce = vdisk_bounce_get(r->q, r->len);
	if (!c->bounce)
		return -errno;
	if (r->op == VDISK_OP_WRITE)
		vdisk_iov_to_buf(r->iov, r->iovcnt, 0, c->bounce, r->len);
	return 0;
}

static int start_uring(struct file *f, struct vdisk_req *r)
{
	struct file_ctx *c = ctx_of(r);
	int rc = need_bounce(f, r);
	if (rc == 0)
		rc = submit_rw(r);
	if (rc < 0 && c->bounce) {
		vdisk_bounce_put(r->q, c->bounce, r->len);
		c->bounce = NULL;
	}
	return rc;
}

/* The outcome of an RWF_NOWAIT attempt that transferred n bytes: 0 when it did
 * the whole request (completed), a negative errno for a real error, 1 when the
 * rest must go through io_uring (from ctx->done on).  A file system without
 * RWF_NOWAIT clears *supported so that later requests do not try. */
static int nowait_result(struct vdisk_req *r, ssize_t n, bool *supported)
{
	if (n == (ssize_t)r->len) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (n > 0)
		ctx_of(r)->done = (size_t)n;
	else if (n < 0 && errno == EOPNOTSUPP)
		*supported = false;
	else if (n < 0 && errno != EAGAIN && errno != EINTR)
		return -errno;
	return 1;
}

static int file_read(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	struct file_ctx *c = ctx_of(r);
	c->done = 0;
	c->bounce = NULL;
	if (r->len == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (f->nowait_reads && r->iovcnt <= IOV_MAX) {
		ssize_t n =
		    preadv2(f->fd, r->iov, r->iovcnt, (off_t)(r->sector << f->shift), RWF_NOWAIT);
		int rc = nowait_result(r, n, &f->nowait_reads);
		if (rc <= 0)
			return rc;
	}
	return start_uring(f, r);
}

static int file_write(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	struct file_ctx *c = ctx_of(r);
	c->done = 0;
	c->bounce = NULL;
	if (r->len == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (!f->direct && r->iovcnt <= IOV_MAX) {
		off_t off = (off_t)(r->sector << f->shift);
		int fl = (r->flags & VDISK_IO_FUA) ? RWF_DSYNC : 0;
		ssize_t n = -1;
		/* a FUA write waits for the device: never on the queue's thread */
		if (f->write_mode == WRITE_INLINE && !fl) {
			/* buffered: the page cache makes this a copy, as pwrite does */
			size_t done = 0;
			while (done < r->len) {
				struct iovec sl[SLICE_MAX];
				const struct iovec *iov = r->iov;
				int cnt = r->iovcnt;
				if (done) {
					cnt = vdisk_iov_slice(r->iov, r->iovcnt, done,
					                      r->len - done, sl, SLICE_MAX);
					if (cnt < 0)
						cnt = SLICE_MAX;
					iov = sl;
				}
				/* one buffer and no flag: pwrite skips the iovec import */
				if (cnt == 1 && !fl)
					n = pwrite(f->fd, iov[0].iov_base, iov[0].iov_len,
					           off + (off_t)done);
				else
					n = pwritev2(f->fd, iov, cnt, off + (off_t)done, fl);
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					return -errno;
				if (n == 0)
					return -ENOSPC;
				done += (size_t)n;
			}
			vdisk_req_complete(r, vdisk_status_ok());
			return 0;
		}
		if (f->nowait_writes) {
			n = pwritev2(f->fd, r->iov, r->iovcnt, off, fl | RWF_NOWAIT);
			int rc = nowait_result(r, n, &f->nowait_writes);
			if (rc <= 0)
				return rc;
		}
	}
	return start_uring(f, r);
}

static int file_flush(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	ctx_of(r)->bounce = NULL;
	struct io_uring_sqe *sqe = file_sqe(r, K_FSYNC);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
	sqe_file(sqe, r);
	return 0;
}

static int submit_falloc(struct vdisk_req *r, int mode)
{
	struct file *f = vdisk_priv(r->disk);
	ctx_of(r)->bounce = NULL;
	struct io_uring_sqe *sqe =
	    file_sqe(r, (r->flags & VDISK_IO_FUA) ? K_FALLOC_SYNC : K_FALLOC);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_fallocate(sqe, f->fd, mode | FALLOC_FL_KEEP_SIZE,
	                        (off_t)(r->sector << f->shift), (off_t)(r->count << f->shift));
	sqe_file(sqe, r);
	return 0;
}

/* BLKDISCARD, on the worker pool: io_uring has no discard before Linux 6.12. */
static vdisk_status discard_work(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	uint64_t range[2] = {r->sector << f->shift, r->count << f->shift};
	if (ioctl(f->fd, BLKDISCARD, range) == 0)
		return vdisk_status_ok();
	/* a device that turns discard down has done all unspecified asks */
	if (errno == ENOTTY || errno == EOPNOTSUPP || errno == ENOSYS)
		return vdisk_status_ok();
	return error_status(r, errno);
}

static int file_unmap(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	ctx_of(r)->bounce = NULL;
	if (f->blk && r->count == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (f->blk)
		return vdisk_offload(r, discard_work);
	/* only reached when the punch-hole probe succeeded (behaviour zeroes) */
	return submit_falloc(r, FALLOC_FL_PUNCH_HOLE);
}

/* On a device, fallocate is the kernel's zero-out: PUNCH_HOLE asks the device
 * to write zeroes and lets it deallocate (failing rather than writing zeros
 * itself where the device cannot), ZERO_RANGE writes zeroes, by the device's
 * command where it has one, else by the kernel writing zero pages. */
static int device_write_zeroes(struct file *f, struct vdisk_req *r)
{
	if (r->count == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (!f->bi.write_zeroes_max) {
		if (r->flags & VDISK_ZERO_FAST_ONLY) {
			vdisk_req_complete(r,
			                   vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
			return 0;
		}
		return submit_falloc(r, FALLOC_FL_ZERO_RANGE);
	}
	return submit_falloc(r, (r->flags & VDISK_ZERO_MAY_UNMAP) ? FALLOC_FL_PUNCH_HOLE
	                                                          : FALLOC_FL_ZERO_RANGE);
}

static int file_write_zeroes(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	if (f->blk)
		return device_write_zeroes(f, r);
	if ((r->flags & VDISK_ZERO_MAY_UNMAP) && f->can_punch)
		return submit_falloc(r, FALLOC_FL_PUNCH_HOLE);
	if (f->read_only) {
		vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
		return 0;
	}
	return submit_falloc(r, FALLOC_FL_ZERO_RANGE);
}

/* Unlock the tray and open it (only offered for CD-ROM drives). */
static vdisk_status eject_work(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	if (ioctl(f->fd, CDROM_LOCKDOOR, 0) < 0 && errno != ENOTTY && errno != EINVAL)
		return vdisk_status_io(errno);
	if (ioctl(f->fd, CDROMEJECT, 0) < 0)
		return vdisk_status_io(errno);
	return vdisk_status_ok();
}

static int file_eject(struct vdisk_req *r)
{
	return vdisk_offload(r, eject_work);
}

/* SEEK_DATA / SEEK_HOLE answer in file-system blocks, which are whole sectors
 * here; a boundary inside a sector is counted as data. */
static int file_extents(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	uint64_t ss = 1ull << f->shift;
	uint64_t pos = r->sector << f->shift, end = (r->sector + r->count) << f->shift;
	unsigned n = 0;
	while (pos < end && n < r->ext_max) {
		uint64_t next;
		bool hole;
		off_t dpos = lseek(f->fd, (off_t)pos, SEEK_DATA);
		if (dpos < 0 && errno == ENXIO) {
			hole = true;
			next = end;
		} else if (dpos < 0) {
			hole = false; /* the file system cannot tell: all data */
			next = end;
		} else if ((uint64_t)dpos > pos) {
			hole = true;
			next = (uint64_t)dpos / ss * ss;
			if (next <= pos) {
				hole = false;
				next = ((uint64_t)dpos + ss - 1) / ss * ss;
			}
		} else {
			hole = false;
			off_t h = lseek(f->fd, (off_t)pos, SEEK_HOLE);
			next = h < 0 ? end : ((uint64_t)h + ss - 1) / ss * ss;
			if (next <= pos)
				next = pos + ss;
		}
		if (next > end)
			next = end;
		if (n && (r->ext[n - 1].flags != 0) == hole) {
			r->ext[n - 1].count += (next - pos) >> f->shift;
		} else {
			r->ext[n].sector = pos >> f->shift;
			r->ext[n].count = (next - pos) >> f->shift;
			r->ext[n].flags = hole ? VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO : 0;
			r->ext[n].reserved = 0;
			n++;
		}
		pos = next;
	}
	*r->ext_n = n;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int file_inspect(struct vdisk *d, json_t *obj)
{
	struct file *f = vdisk_priv(d);
	json_object_set_new(obj, "direct", json_boolean(f->direct));
	json_object_set_new(obj, "punch_hole", json_boolean(f->can_punch));
	json_object_set_new(obj, "nowait_reads", json_boolean(f->nowait_reads));
	json_object_set_new(obj, "write_mode",
	                    json_string(f->write_mode == WRITE_INLINE ? "inline" : "uring"));
	if (f->direct) {
		json_object_set_new(obj, "dio_mem_align", json_integer(f->mem_align));
		json_object_set_new(obj, "dio_offset_align", json_integer(f->off_align));
	}
	if (!f->blk)
		return 0;
	const struct blk_info *b = &f->bi;
	json_t *dev = json_object();
	char mm[32];
	snprintf(mm, sizeof mm, "%u:%u", major(b->rdev), minor(b->rdev));
	json_object_set_new(dev, "device", json_string(mm));
	json_object_set_new(dev, "logical_block_size", json_integer(b->logical));
	json_object_set_new(dev, "physical_block_size", json_integer(b->physical));
	json_object_set_new(dev, "discard", json_boolean(f->can_discard));
	json_object_set_new(dev, "discard_granularity", json_integer(b->discard_granularity));
	json_object_set_new(dev, "write_zeroes", json_boolean(b->write_zeroes_max != 0));
	json_object_set_new(dev, "native_fua", json_boolean(b->fua));
	json_object_set_new(dev, "write_cache",
	                    json_string(b->write_cache ? "write back" : "write through"));
	json_object_set_new(dev, "rotational", json_boolean(b->rotational));
	json_object_set_new(dev, "cdrom", json_boolean(b->cdrom));
	json_object_set_new(dev, "nvme_nsid", json_integer(b->nsid));
	json_object_set_new(dev, "resize_events", json_boolean(f->watching));
	json_object_set_new(obj, "block_device", dev);
	return 0;
}

/* A device may change size (the listener follows it) but must still be the
 * device the path names, with the size last published. */
static int device_check(struct vdisk *d, struct file *f, struct vdisk_check *chk)
{
	struct stat pst;
	uint64_t bytes;
	if (blk_size(f->fd, &bytes) < 0)
		vdisk_check_problem(chk, "%s: the device does not answer BLKGETSIZE64 (%s)",
		                    f->path, strerror(errno));
	else if (bytes >> f->shift != vdisk_sector_count(d))
		vdisk_check_problem(chk,
		                    "%s: the device has %" PRIu64 " bytes, the disk %" PRIu64
		                    " sectors of %u%s",
		                    f->path, bytes, vdisk_sector_count(d), 1u << f->shift,
		                    f->watching ? "" : " (no resize events on this system)");
	if (stat(f->path, &pst) < 0)
		vdisk_check_problem(chk, "%s: the device node is gone (%s)", f->path,
		                    strerror(errno));
	else if (!S_ISBLK(pst.st_mode) || pst.st_rdev != f->bi.rdev)
		vdisk_check_problem(chk, "%s: the path now names another device than the one open",
		                    f->path);
	return 0;
}

/* The file is still the one opened, with the size it had: someone else
 * truncating, growing or replacing it is not noticed by the data path. */
static int file_check(struct vdisk *d, struct vdisk_check *chk)
{
	struct file *f = vdisk_priv(d);
	struct stat st, pst;
	if (f->blk)
		return device_check(d, f, chk);
	if (fstat(f->fd, &st) < 0)
		return vdisk_set_error_errno(errno, "%s: fstat", f->path);
	uint64_t now = (uint64_t)st.st_size >> f->shift << f->shift;
	if (now != f->size)
		vdisk_check_problem(chk,
		                    "%s: the file changed size since it was opened: %" PRIu64
		                    " bytes then, %" PRIu64 " now",
		                    f->path, f->size, (uint64_t)st.st_size);
	if (stat(f->path, &pst) < 0)
		vdisk_check_problem(chk, "%s: the open file has been %s (%s)", f->path,
		                    st.st_nlink ? "moved" : "deleted", strerror(errno));
	else if (pst.st_dev != st.st_dev || pst.st_ino != st.st_ino)
		vdisk_check_problem(chk, "%s: the path now names another file than the one open%s",
		                    f->path, st.st_nlink ? "" : " (which was deleted)");
	return 0;
}

const struct vdisk_driver vdisk_driver_file = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "file",
    .description = "regular file or block device through io_uring (path, direct, sector-size, "
                   "create, write-mode)",
    .open = file_open,
    .close = file_close,
    .queue_init = file_queue_init,
    .queue_fini = file_queue_fini,
    .read = file_read,
    .write = file_write,
    .flush = file_flush,
    .unmap = file_unmap,
    .write_zeroes = file_write_zeroes,
    .extents = file_extents,
    .eject = file_eject,
    .inspect = file_inspect,
    .check = file_check,
    .pr = &blk_pr_ops,
};
