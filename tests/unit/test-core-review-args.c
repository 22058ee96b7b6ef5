/* Malformed calls are refused by the submit function itself, before any driver
 * sees them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

struct flag {
	int calls;
	vdisk_status st;
};

static void flag_cb(void *o, vdisk_status st)
{
	struct flag *f = o;
	f->calls++;
	f->st = st;
}

/* iovec lengths whose sum wraps around to a small number of bytes: taken for
 * that small length, a driver would copy the real lengths */
static void test_iov_length_overflow(void **state)
{
	(void)state;
	static const char *const specs[] = {"null:size=1M", "ram:size=1M"};
	for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
		struct vdisk *d = tu_open(specs[s], 0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *buf = tu_alloc(4096);
		struct iovec iov[2] = {{buf, SIZE_MAX - 511}, {buf, 1024}}; /* sum: 512 */
		struct flag f = {0};
		assert_int_equal(vdisk_readv(q, 0, iov, 2, flag_cb, &f), -EINVAL);
		assert_int_equal(vdisk_writev(q, 0, iov, 2, 0, flag_cb, &f), -EINVAL);
		assert_int_equal(vdisk_queue_poll(q), 0);
		assert_int_equal(f.calls, 0);
		assert_int_equal(vdisk_queue_inflight(q), 0);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(buf);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iov_length_overflow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
