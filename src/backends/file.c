/* file: a regular file as a disk.
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
 * A short transfer is never success: the rest is resubmitted, and no progress
 * at all is an error.  Writes never extend the file (the core checks the range
 * against the size read at open). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "vdisk/backend.h"

#define SLICE_MAX 8

enum write_mode { WRITE_INLINE, WRITE_URING };

struct file {
	int fd;
	char *path;
	unsigned shift;
	bool direct;
	bool read_only;
	bool nowait_reads;  /* preadv2(RWF_NOWAIT) supported */
	bool nowait_writes; /* pwritev2(RWF_NOWAIT) supported */
	bool can_punch;
	enum write_mode write_mode;
	uint32_t mem_align; /* O_DIRECT buffer alignment */
	uint32_t off_align; /* O_DIRECT offset/length alignment */
	uint64_t size;
	bool created;
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

static struct file_ctx *ctx_of(struct vdisk_req *r)
{
	return vdisk_req_ctx(r);
}

/* ------------------------------------------------------------------------- */
/* Open                                                                        */
/* ------------------------------------------------------------------------- */

static int file_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"path",       "direct",  "sector-size", "create",
	                                   "write-mode", "locking", NULL};
	const char *path = NULL, *wmode = NULL;
	bool direct = false, ro = vdisk_read_only_requested(d), locking = true;
	uint64_t ss = 512, create = 0;
	int have_create;
	struct stat st;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "path", &path) < 0 ||
	    vdisk_cfg_bool(cfg, "direct", &direct) < 0 ||
	    vdisk_cfg_size(cfg, "sector-size", &ss) < 0 ||
	    (have_create = vdisk_cfg_size(cfg, "create", &create)) < 0 ||
	    vdisk_cfg_string(cfg, "write-mode", &wmode) < 0 ||
	    vdisk_cfg_bool(cfg, "locking", &locking) < 0)
		return -1;
	if (!path || !*path)
		return vdisk_set_error("path: required");
	if (ss != 512 && ss != 4096)
		return vdisk_set_error("sector-size: %" PRIu64 " is not 512 or 4096", ss);
	if (wmode && strcmp(wmode, "inline") && strcmp(wmode, "uring"))
		return vdisk_set_error("write-mode: '%s' is not inline or uring", wmode);
	if (have_create && (create == 0 || create % ss))
		return vdisk_set_error("create: %" PRIu64 " is not a non-zero multiple of %" PRIu64,
		                       create, ss);

	struct file *f = calloc(1, sizeof *f);
	if (!f)
		return vdisk_set_error_errno(ENOMEM, "file");
	f->fd = -1;
	f->path = strdup(path);
	f->shift = ss == 512 ? 9 : 12;
	f->direct = direct;
	f->read_only = ro;
	f->write_mode = wmode && strcmp(wmode, "uring") == 0 ? WRITE_URING : WRITE_INLINE;
	if (!f->path)
		goto nomem;

	/* O_NONBLOCK until the file is known to be a regular one: opening a FIFO
	 * for reading would wait for a writer */
	int flags = (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | (direct ? O_DIRECT : 0);
	/* an image's access time means nothing, and keeping it costs every read a
	 * clock read and a check (about 3% of a page-cache read); O_NOATIME is only
	 * allowed to the owner, so fall back without it */
	f->fd = open(path, flags | O_NOATIME);
	if (f->fd < 0 && errno == EPERM)
		f->fd = open(path, flags);
	if (f->fd < 0 && errno == ENOENT && have_create && ro) {
		vdisk_set_error(
		    "path '%s': does not exist, and create= cannot make a read-only file", path);
		goto fail;
	}
	if (f->fd < 0 && errno == ENOENT && have_create) {
		/* without O_DIRECT, set below: an open that creates the file and then
		 * fails on O_DIRECT would leave the file behind */
		f->fd = open(path, (flags & ~O_DIRECT) | O_CREAT | O_EXCL, 0666);
		if (f->fd >= 0) {
			f->created = true;
			if (ftruncate(f->fd, (off_t)create) < 0) {
				vdisk_set_error_errno(errno, "path '%s': setting size", path);
				goto fail;
			}
		}
	}
	if (f->fd < 0) {
		vdisk_set_error_errno(errno, "path '%s': cannot open %s", path,
		                      ro ? "for reading" : "for reading and writing");
		goto fail;
	}
	if (fstat(f->fd, &st) < 0) {
		vdisk_set_error_errno(errno, "path '%s': stat", path);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		vdisk_set_error("path '%s': not a regular file", path);
		goto fail;
	}
	if (locking && vdisk_lock_image(f->fd, path, !ro) < 0)
		goto fail;
	/* io_uring would answer -EAGAIN rather than wait on a non-blocking file */
	if (fcntl(f->fd, F_SETFL, (fcntl(f->fd, F_GETFL) & ~O_NONBLOCK) | (direct ? O_DIRECT : 0)) <
	    0) {
		vdisk_set_error_errno(errno, "path '%s': %s", path,
		                      direct ? "cannot open with O_DIRECT" : "fcntl");
		goto fail;
	}
	if (have_create && (uint64_t)st.st_size != create) {
		vdisk_set_error("path '%s': exists with size %" PRIu64 ", not the %" PRIu64
		                " bytes of create= (refusing to change it)",
		                path, (uint64_t)st.st_size, create);
		goto fail;
	}
	f->size = (uint64_t)st.st_size >> f->shift << f->shift;
	if (f->size == 0) {
		vdisk_set_error("path '%s': smaller than one %" PRIu64 "-byte sector", path, ss);
		goto fail;
	}

	if (direct) {
		struct statx sx;
		f->mem_align = 4096;
		f->off_align = 4096;
		if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
		    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
			f->mem_align = sx.stx_dio_mem_align ? sx.stx_dio_mem_align : 1;
			f->off_align = sx.stx_dio_offset_align;
		}
		if (f->off_align > ss) {
			vdisk_set_error("direct: the file system needs %" PRIu32
			                "-byte aligned I/O; use sector-size=4096",
			                f->off_align);
			goto fail;
		}
	}

	/* probes: read-only, no data changes */
	f->nowait_reads = !direct;
	f->nowait_writes = !direct;
	if (!ro && fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, 1) == 0)
		f->can_punch = true;

	vdisk_set_priv(d, f);
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = (uint32_t)ss;
	m->physical_sector_size = st.st_blksize >= (blksize_t)ss &&
	                                  !(st.st_blksize & (st.st_blksize - 1)) &&
	                                  st.st_blksize <= 65536
	                              ? (uint32_t)st.st_blksize
	                              : (uint32_t)ss;
	m->sector_count = f->size >> f->shift;
	m->fua = true;
	m->read_only = ro;
	m->unmap = f->can_punch ? VDISK_UNMAP_ZEROES : VDISK_UNMAP_IGNORED;
	m->optimal_unmap_sectors = f->can_punch ? m->physical_sector_size >> f->shift : 1;
	m->caps = VDISK_CAP_SHARED_FLUSH | (f->can_punch ? VDISK_CAP_FAST_ZERO : 0);
	m->req_ctx_size = sizeof(struct file_ctx);
	return 0;

nomem:
	vdisk_set_error_errno(ENOMEM, "file");
fail:
	if (f->fd >= 0)
		close(f->fd);
	/* what create= made is gone again if the disk could not be opened */
	if (f->created)
		unlink(path);
	free(f->path);
	free(f);
	return -1;
}

static void file_close(struct vdisk *d)
{
	struct file *f = vdisk_priv(d);
	close(f->fd);
	free(f->path);
	free(f);
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
		finish(r, vdisk_status_io(-res));
		return;
	}
	if (c->kind != K_RW) {
		finish(r, vdisk_status_ok());
		return;
	}
	if (res == 0 && c->done < r->len) {
		/* no progress: the file shrank under us, or the disk is full */
		finish(r, vdisk_status_io(r->op == VDISK_OP_READ ? ENODATA : ENOSPC));
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

static int file_unmap(struct vdisk_req *r)
{
	/* only reached when the punch-hole probe succeeded (behaviour zeroes) */
	return submit_falloc(r, FALLOC_FL_PUNCH_HOLE);
}

static int file_write_zeroes(struct vdisk_req *r)
{
	struct file *f = vdisk_priv(r->disk);
	if ((r->flags & VDISK_ZERO_MAY_UNMAP) && f->can_punch)
		return submit_falloc(r, FALLOC_FL_PUNCH_HOLE);
	if (f->read_only) {
		vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
		return 0;
	}
	return submit_falloc(r, FALLOC_FL_ZERO_RANGE);
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
	return 0;
}

/* The file is still the one opened, with the size it had: someone else
 * truncating, growing or replacing it is not noticed by the data path. */
static int file_check(struct vdisk *d, struct vdisk_check *chk)
{
	struct file *f = vdisk_priv(d);
	struct stat st, pst;
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
    .description = "regular file through io_uring (path, direct, sector-size, create, write-mode)",
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
    .inspect = file_inspect,
    .check = file_check,
};
