/* The core's emulation of write-zeroes keeps the promises of the flags it was
 * given: FUA makes the zeros durable even when they come from an unmap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

/* ---- "volatile": a disk in memory whose unmaps and plain writes are lost
 * until a flush; FUA writes are durable at once. --------------------------- */

struct vol {
	unsigned char data[64 * 512];
	unsigned dirty; /* operations not yet durable */
	unsigned unmaps, flushes;
};

static int vol_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vol *v = calloc(1, sizeof *v);
	if (!v)
		return -1;
	vdisk_set_priv(d, v);
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->sector_count = 64;
	m->fua = true;
	m->unmap = VDISK_UNMAP_ZEROES;
	return 0;
}

static void vol_close(struct vdisk *d)
{
	free(vdisk_priv(d));
}

static int vol_read(struct vdisk_req *r)
{
	struct vol *v = vdisk_priv(r->disk);
	vdisk_iov_from_buf(r->iov, r->iovcnt, 0, v->data + r->sector * 512, r->len);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int vol_write(struct vdisk_req *r)
{
	struct vol *v = vdisk_priv(r->disk);
	vdisk_iov_to_buf(r->iov, r->iovcnt, 0, v->data + r->sector * 512, r->len);
	if (!(r->flags & VDISK_IO_FUA))
		v->dirty++;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int vol_unmap(struct vdisk_req *r)
{
	struct vol *v = vdisk_priv(r->disk);
	memset(v->data + r->sector * 512, 0, r->count * 512);
	v->dirty++;
	v->unmaps++;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int vol_flush(struct vdisk_req *r)
{
	struct vol *v = vdisk_priv(r->disk);
	v->dirty = 0;
	v->flushes++;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static const struct vdisk_driver vol_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "volatile",
    .open = vol_open,
    .close = vol_close,
    .read = vol_read,
    .write = vol_write,
    .flush = vol_flush,
    .unmap = vol_unmap,
};

static void test_fua_write_zeroes_through_unmap_is_durable(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("volatile:", 0);
	struct vol *v = vdisk_priv(d);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	memset(v->data, 0x77, sizeof v->data);
	/* may-unmap on a disk whose unmap zeroes: the core unmaps */
	assert_int_equal(tu_write_zeroes(q, 4, 8, VDISK_ZERO_MAY_UNMAP | VDISK_IO_FUA).kind,
	                 VDISK_OK);
	assert_int_equal(v->unmaps, 1);
	assert_int_equal(v->data[4 * 512], 0);
	if (v->dirty)
		fail_msg("a FUA write-zeroes completed before its unmap was durable");
	/* without FUA, no flush is added */
	unsigned flushes = v->flushes;
	assert_int_equal(tu_write_zeroes(q, 20, 8, VDISK_ZERO_MAY_UNMAP).kind, VDISK_OK);
	assert_int_equal(v->flushes, flushes);
	/* zeros written by the core carry FUA themselves */
	v->dirty = 0;
	assert_int_equal(tu_write_zeroes(q, 40, 8, VDISK_IO_FUA).kind, VDISK_OK);
	assert_int_equal(v->dirty, 0);
	assert_int_equal(v->data[40 * 512], 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	if (vdisk_register_driver(&vol_driver) < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fua_write_zeroes_through_unmap_is_durable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
