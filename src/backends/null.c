/* null: reads return zeros, writes are discarded.  It exists to measure the
 * core's own overhead, and as a bottom layer in tests. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "vdisk/backend.h"

static int null_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"size", "sector-size", NULL};
	uint64_t size = 1ull << 30, ss = 512;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_size(cfg, "size", &size) < 0 ||
	    vdisk_cfg_size(cfg, "sector-size", &ss) < 0)
		return -1;
	if (ss < 512 || ss > 65536 || (ss & (ss - 1)))
		return vdisk_set_error("sector-size: %" PRIu64 " is not a power of two in 512..64k",
		                       ss);
	if (size % ss)
		return vdisk_set_error(
		    "size: %" PRIu64 " is not a multiple of the sector size %" PRIu64, size, ss);
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = (uint32_t)ss;
	m->physical_sector_size = (uint32_t)ss;
	m->sector_count = size / ss;
	m->fua = true;
	m->unmap = VDISK_UNMAP_ZEROES;
	m->caps = VDISK_CAP_SHARED_FLUSH | VDISK_CAP_FAST_ZERO;
	return 0;
}

static int null_read(struct vdisk_req *r)
{
	for (int i = 0; i < r->iovcnt; i++)
		memset(r->iov[i].iov_base, 0, r->iov[i].iov_len);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int null_ok(struct vdisk_req *r)
{
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int null_extents(struct vdisk_req *r)
{
	*r->ext_n = 0;
	if (r->count && r->ext_max) {
		r->ext[0] = (struct vdisk_extent){r->sector, r->count,
		                                  VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO, 0};
		*r->ext_n = 1;
	}
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

const struct vdisk_driver vdisk_driver_null = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "null",
    .description = "reads zeros, discards writes (size, sector-size)",
    .open = null_open,
    .read = null_read,
    .write = null_ok,
    .flush = null_ok,
    .unmap = null_ok,
    .write_zeroes = null_ok,
    .extents = null_extents,
};
