/* The synchronous API, built on queues: each call borrows a queue from the
 * disk's pool, submits, and waits.  Byte-addressed reads and writes handle
 * partial sectors by read-modify-write. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SYNC_CHUNK (8u << 20)

struct sync_wait {
	bool done;
	vdisk_status st;
};

static void sync_done(void *opaque, vdisk_status st)
{
	struct sync_wait *w = opaque;
	w->st = st;
	w->done = true;
}

/* Wait for w; in-flight I/O is never abandoned, whatever the wait says. */
static vdisk_status sync_finish(struct vdisk_queue *q, struct sync_wait *w, int rc)
{
	if (rc < 0)
		return vdisk_status_io(-rc);
	while (!w->done)
		vdisk_queue_wait(q, -1);
	return w->st;
}

static vdisk_status sync_rw(struct vdisk_queue *q, bool write, uint64_t sector, void *buf,
                            size_t len, unsigned flags)
{
	struct sync_wait w = {0};
	struct iovec iov = {buf, len};
	int rc = write ? vdisk_writev(q, sector, &iov, 1, flags, sync_done, &w)
	               : vdisk_readv(q, sector, &iov, 1, sync_done, &w);
	return sync_finish(q, &w, rc);
}

static vdisk_status no_queue(void)
{
	return vdisk_status_io(ENOMEM);
}

/* Read or write [offset, offset+len): aligned middle straight from the caller's
 * buffer, partial head and tail sectors through a sector-sized bounce. */
static vdisk_status byte_io(struct vdisk *d, bool write, unsigned char *buf, size_t len,
                            uint64_t offset, unsigned flags)
{
	if (!d || (len && !buf))
		return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
	uint32_t ss = d->meta.sector_size;
	uint64_t end;
	if (__builtin_add_overflow(offset, (uint64_t)len, &end) || end > (uint64_t)INT64_MAX)
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	/* the pieces are separate requests: without this, the ones inside the disk
	 * would be written (or copied into buf) before the last one failed */
	if (len && end > vd_sector_count(d) << d->shift)
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	struct vdisk_queue *q = vd_sync_queue_get(d);
	if (!q)
		return no_queue();
	vdisk_status st = vdisk_status_ok();
	unsigned char *tmp = NULL;
	if (len == 0) {
		/* still a range check, as a zero-length read is */
		st = sync_rw(q, false, offset / ss, NULL, 0, 0);
		goto out;
	}
	while (len && vdisk_ok(st)) {
		uint64_t sector = offset / ss;
		size_t in = (size_t)(offset % ss);
		if (in || len < ss) {
			size_t n = ss - in < len ? ss - in : len;
			if (!tmp && !(tmp = aligned_alloc(4096, ss < 4096 ? 4096 : ss))) {
				st = vdisk_status_io(ENOMEM);
				break;
			}
			st = sync_rw(q, false, sector, tmp, ss, 0);
			if (!vdisk_ok(st))
				break;
			if (write) {
				memcpy(tmp + in, buf, n);
				st = sync_rw(q, true, sector, tmp, ss, flags);
			} else {
				memcpy(buf, tmp + in, n);
			}
			buf += n;
			offset += n;
			len -= n;
			continue;
		}
		size_t n = len - len % ss;
		if (n > SYNC_CHUNK)
			n = SYNC_CHUNK;
		st = sync_rw(q, write, sector, buf, n, flags);
		buf += n;
		offset += n;
		len -= n;
	}
out:
	free(tmp);
	vd_sync_queue_put(d, q);
	return st;
}

VD_EXPORT vdisk_status vdisk_pread(struct vdisk *d, void *buf, size_t len, uint64_t offset)
{
	return byte_io(d, false, buf, len, offset, 0);
}

VD_EXPORT vdisk_status vdisk_pwrite(struct vdisk *d, const void *buf, size_t len, uint64_t offset,
                                    unsigned flags)
{
	if (!d || (flags & ~VDISK_IO_FUA))
		return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
	if (d->meta.read_only)
		return vdisk_status_make(VDISK_ERR_READ_ONLY, 0);
	return byte_io(d, true, (unsigned char *)buf, len, offset, flags);
}

#define SYNC_CALL(d, call)                                                         \
	do {                                                                       \
		if (!d)                                                            \
			return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL); \
		struct vdisk_queue *q = vd_sync_queue_get(d);                      \
		if (!q)                                                            \
			return no_queue();                                         \
		struct sync_wait w = {0};                                          \
		int rc = (call);                                                   \
		vdisk_status st = sync_finish(q, &w, rc);                          \
		vd_sync_queue_put(d, q);                                           \
		return st;                                                         \
	} while (0)

VD_EXPORT vdisk_status vdisk_flush_sync(struct vdisk *d)
{
	SYNC_CALL(d, vdisk_flush(q, sync_done, &w));
}

VD_EXPORT vdisk_status vdisk_unmap_sync(struct vdisk *d, uint64_t sector, uint64_t count)
{
	SYNC_CALL(d, vdisk_unmap(q, sector, count, 0, sync_done, &w));
}

VD_EXPORT vdisk_status vdisk_write_zeroes_sync(struct vdisk *d, uint64_t sector, uint64_t count,
                                               unsigned flags)
{
	SYNC_CALL(d, vdisk_write_zeroes(q, sector, count, flags, sync_done, &w));
}

VD_EXPORT vdisk_status vdisk_extents_sync(struct vdisk *d, uint64_t sector, uint64_t count,
                                          struct vdisk_extent *ext, unsigned max, unsigned *n)
{
	SYNC_CALL(d, vdisk_extents(q, sector, count, ext, max, n, sync_done, &w));
}
