/* disk layer: any disk stack as a layer in which every sector is present.
 *
 *   {"type":"disk","disk":SPEC}
 *
 * Requests become child requests on the disk, on the same queue.  Unlike the
 * reference, the layer reports the disk's optimal unmap granularity, and on
 * top of a stack its size follows the disk (resize and wait-for-resize).  It
 * cannot be a read cache: a disk has no "write only where absent". */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layered.h"

int layered_disk_preopen(struct layer *l, json_t *cfg)
{
	char what[48];
	json_t *spec = json_object_get(cfg, "disk");
	static const char *const keys[] = {"disk", NULL};
	if (vdisk_cfg_check(cfg, keys) < 0) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", vdisk_errmsg());
		return layered_layer_error(l, "%s", msg);
	}
	if (!spec)
		return layered_layer_error(
		    l, "disk: required (the spec of the disk to use as a layer)");
	snprintf(what, sizeof what, "layers[%u].disk", l->index);
	struct vdisk *inner = vdisk_open_child(l->disk, spec, what, l->open_read_only);
	if (!inner)
		return -1; /* the message already names layers[i].disk */
	l->priv = inner;
	return 0;
}

static int disk_open(struct layer *l, json_t *cfg, const struct layer_meta *below)
{
	(void)cfg;
	(void)below;
	struct vdisk *inner = l->priv;
	struct layer_meta *m = &l->meta;
	m->sector_count = vdisk_sector_count(inner);
	m->sector_size = vdisk_sector_size(inner);
	m->physical_sector_size = vdisk_physical_sector_size(inner);
	m->has_disk_id = vdisk_disk_id(inner, m->disk_id);
	m->fua = vdisk_fua_respected(inner);
	m->read_only = vdisk_read_only(inner);
	m->can_no_overwrite = false;
	m->fully_present = true;
	m->unmap = (uint8_t)vdisk_unmap_behavior(inner);
	m->optimal_unmap_sectors = vdisk_optimal_unmap_sectors(inner);
	m->shared_flush = vdisk_caps(inner) & VDISK_CAP_SHARED_FLUSH;
	return 0;
}

/* The disk belongs to the core, which closes it after the layered disk. */
static void disk_close(struct layer *l)
{
	l->priv = NULL;
}

static struct lio *io_of(struct vdisk_req *child)
{
	return child->opaque;
}

static void disk_child_done(struct vdisk_req *child, vdisk_status st)
{
	struct lio *io = io_of(child);
	struct layer *l = io->l;
	uint32_t ss = l->meta.sector_size;
	if (io->op == LIO_READ && vdisk_ok(st)) {
		uint64_t first = io->span_first, end = io->span_end;
		if (io->scratch) {
			/* copy back only what no layer above supplied */
			uint64_t x = first - io->bits_base, e = end - io->bits_base;
			while ((x = bits_find(io->bits, x, e, false)) < e) {
				uint64_t y = bits_find(io->bits, x, e, true);
				vdisk_iov_from_buf(
				    io->iov, io->iovcnt,
				    io->off + (size_t)((x + io->bits_base - io->sector) * ss),
				    (unsigned char *)io->scratch +
				        (size_t)((x + io->bits_base - first) * ss),
				    (size_t)((y - x) * ss));
				x = y;
			}
		}
		bits_set_range(io->bits, first - io->bits_base, end - io->bits_base);
	}
	if (io->op == LIO_EXTENT && vdisk_ok(st)) {
		if (io->ext_n == 0 || io->ext.count == 0) {
			st = vdisk_status_io(EIO);
		} else {
			io->ext_len = io->ext.count < io->count ? io->ext.count : io->count;
			io->ext_kind = (io->ext.flags & VDISK_EXTENT_HOLE)   ? LEXT_HOLE
			               : (io->ext.flags & VDISK_EXTENT_ZERO) ? LEXT_ZERO
			                                                     : LEXT_DATA;
		}
	}
	if (io->scratch) {
		free(io->scratch);
		io->scratch = NULL;
	}
	io->st = st;
	io->done(io);
}

/* A private buffer for the child when the caller's buffers cannot be used:
 * a read around sectors that came from above, or buffers in more pieces than
 * a slice holds.  Rare, so plain malloc. */
static bool use_scratch(struct lio *io, size_t len)
{
	io->scratch = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
	if (!io->scratch)
		return false;
	io->scratch_len = len;
	io->slice[0].iov_base = io->scratch;
	io->slice[0].iov_len = len;
	return true;
}

static int disk_submit(struct lio *io)
{
	struct layer *l = io->l;
	struct vdisk *inner = l->priv;
	uint32_t ss = l->meta.sector_size;
	int cnt = 0;
	io->scratch = NULL;
	if (io->op == LIO_READ) {
		/* the sectors no layer above supplied, first to last */
		uint64_t b0 = io->sector - io->bits_base, b1 = b0 + io->count;
		uint64_t a = bits_find(io->bits, b0, b1, false);
		if (a >= b1) {
			io->st = vdisk_status_ok();
			return 1;
		}
		uint64_t e = a + 1;
		for (uint64_t x = b1; x > a; x--)
			if (!bits_test(io->bits, x - 1)) {
				e = x;
				break;
			}
		io->span_first = a + io->bits_base;
		io->span_end = e + io->bits_base;
		size_t off = io->off + (size_t)((io->span_first - io->sector) * ss);
		size_t len = (size_t)((e - a) * ss);
		bool gaps = bits_find(io->bits, a, e, true) < e;
		if (!gaps)
			cnt = vdisk_iov_slice(io->iov, io->iovcnt, off, len, io->slice,
			                      (int)(sizeof io->slice / sizeof *io->slice));
		if (gaps || cnt < 0) {
			if (!use_scratch(io, len))
				goto nomem;
			cnt = 1;
		}
	} else if (io->op == LIO_WRITE) {
		size_t len = (size_t)(io->count * ss);
		cnt = vdisk_iov_slice(io->iov, io->iovcnt, io->off, len, io->slice,
		                      (int)(sizeof io->slice / sizeof *io->slice));
		if (cnt < 0) {
			if (!use_scratch(io, len))
				goto nomem;
			vdisk_iov_to_buf(io->iov, io->iovcnt, io->off, io->scratch, len);
			cnt = 1;
		}
	}
	struct vdisk_req *c = vdisk_req_alloc(io->r, inner);
	if (!c)
		goto nomem;
	switch (io->op) {
	case LIO_READ:
		vdisk_req_prep_rw(c, VDISK_OP_READ, io->span_first, io->slice, cnt, 0);
		break;
	case LIO_WRITE:
		vdisk_req_prep_rw(c, VDISK_OP_WRITE, io->sector, io->slice, cnt,
		                  io->fua ? VDISK_IO_FUA : 0);
		break;
	case LIO_UNMAP:
		/* a disk decides itself what unmap does; next_is_zero does not matter */
		vdisk_req_prep_range(c, VDISK_OP_UNMAP, io->sector, io->count, 0);
		break;
	case LIO_EXTENT:
		io->ext_n = 0;
		vdisk_req_prep_extents(c, io->sector, io->count, &io->ext, 1, &io->ext_n);
		break;
	default:
		/* LIO_FLUSH; LIO_WRITE_NO_OVERWRITE never comes (not a cache) */
		vdisk_req_prep_flush(c);
		break;
	}
	c->done = disk_child_done;
	c->opaque = io;
	vdisk_req_submit(c);
	return 0;
nomem:
	free(io->scratch);
	io->scratch = NULL;
	io->st = vdisk_status_io(ENOMEM);
	return 1;
}

static uint64_t disk_sector_count(struct layer *l)
{
	return vdisk_sector_count(l->priv);
}

static int disk_resize(struct layer *l, uint64_t count)
{
	if (vdisk_resize(l->priv, count) < 0) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", vdisk_errmsg());
		return layered_layer_error(l, "%s", msg);
	}
	return 0;
}

const struct layer_ops layered_disk_ops = {
    .name = "disk",
    .open = disk_open,
    .close = disk_close,
    .submit = disk_submit,
    .resize = disk_resize,
    .sector_count = disk_sector_count,
};
