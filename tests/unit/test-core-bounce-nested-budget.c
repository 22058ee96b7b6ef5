/* The bounce-buffer budget of a queue when its users nest: a layer that holds a
 * bounce buffer while its child request asks for another must not wait for
 * ever for budget that only its own completion would give back. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

/* ---- "stage": a decorator that writes through a bounce buffer, as crypt does */

struct stage_ctx {
	void *buf;
	struct iovec iov;
};

static int stage_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", NULL};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	struct vdisk *inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!inner)
		return -1;
	vdisk_set_priv(d, inner);
	vdisk_meta_inherit(d, inner);
	vdisk_meta(d)->req_ctx_size = sizeof(struct stage_ctx);
	return 0;
}

static int stage_read(struct vdisk_req *r)
{
	return vdisk_req_forward(r, vdisk_priv(r->disk));
}

static void stage_done(struct vdisk_req *c, vdisk_status st)
{
	struct vdisk_req *r = c->opaque;
	struct stage_ctx *x = vdisk_req_ctx(r);
	vdisk_bounce_put(r->q, x->buf, r->len);
	x->buf = NULL;
	vdisk_req_complete(r, st);
}

static int stage_write(struct vdisk_req *r)
{
	struct stage_ctx *x = vdisk_req_ctx(r);
	x->buf = vdisk_bounce_get(r->q, r->len);
	if (!x->buf)
		return -EAGAIN;
	struct vdisk_req *c = vdisk_req_alloc(r, vdisk_priv(r->disk));
	if (!c) {
		vdisk_bounce_put(r->q, x->buf, r->len);
		return -ENOMEM;
	}
	vdisk_iov_to_buf(r->iov, r->iovcnt, 0, x->buf, r->len);
	x->iov = (struct iovec){x->buf, r->len};
	vdisk_req_prep_rw(c, VDISK_OP_WRITE, r->sector, &x->iov, 1, r->flags);
	c->done = stage_done;
	c->opaque = r;
	return vdisk_req_submit(c);
}

static const struct vdisk_driver stage_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "stage",
    .open = stage_open,
    .read = stage_read,
    .write = stage_write,
};

/* One write larger than half the budget (16 MiB): the outer layer's buffer
 * takes all of it, the inner one finds none left.  With event_loop, the queue
 * is driven as an event loop would: poll only when the descriptor says so. */
static void write_nested(const char *spec, bool event_loop)
{
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = event_loop ? vdisk_queue_fd(q) : -1;
	size_t len = 9u << 20;
	unsigned char *want = tu_alloc(len), *got = tu_alloc(len);
	tu_pattern(want, len, 8, 512, 1);
	struct iovec iov = {want, len};
	struct tu_flag f = {0};
	assert_int_equal(vdisk_writev(q, 8, &iov, 1, 0, tu_flag_cb, &f), 0);
	/* everything below completes inline: a few polls must finish it */
	for (int i = 0; i < 1000 && !f.calls; i++) {
		if (event_loop && !tu_fd_readable(fd))
			fail_msg("%s: the queue has work but its descriptor is not readable", spec);
		vdisk_queue_poll(q);
	}
	if (!f.calls)
		fail_msg("%s: the write never completed", spec);
	assert_int_equal(f.st.kind, VDISK_OK);
	assert_int_equal(tu_read(q, 8, got, len).kind, VDISK_OK);
	assert_memory_equal(got, want, len);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(want);
	free(got);
}

static void test_nested_bounce_users(void **state)
{
	(void)state;
	static const char *const spec =
	    "{\"type\":\"stage\",\"inner\":{\"type\":\"stage\",\"inner\":\"ram:size=32M\"}}";
	write_nested(spec, false);
	write_nested(spec, true);
}

static void test_crypt_over_crypt(void **state)
{
	(void)state;
	write_nested(
	    "{\"type\":\"crypt\",\"key-hex\":\"000102030405060708090a0b0c0d0e0f101112131415"
	    "161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3"
	    "e3f\",\"inner\":{\"type\":\"crypt\",\"key-hex\":\"404142434445464748494a4b4c4d4e4"
	    "f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f70717273747576777"
	    "8797a7b7c7d7e7f\",\"inner\":\"ram:size=32M\"}}",
	    false);
}

int main(void)
{
	if (vdisk_register_driver(&stage_driver) < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nested_bounce_users),
	    cmocka_unit_test(test_crypt_over_crypt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
