/* Malformed calls are refused by the submit function itself, before any driver
 * sees them; requests out of range are refused before they change anything. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

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
		struct tu_flag f = {0};
		assert_int_equal(vdisk_readv(q, 0, iov, 2, tu_flag_cb, &f), -EINVAL);
		assert_int_equal(vdisk_writev(q, 0, iov, 2, 0, tu_flag_cb, &f), -EINVAL);
		assert_int_equal(vdisk_queue_poll(q), 0);
		assert_int_equal(f.calls, 0);
		assert_int_equal(vdisk_queue_inflight(q), 0);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(buf);
	}
}

/* vdisk_pwrite across the end of the disk: illegal-block, and the part that
 * was inside the disk is not written either */
static void test_pwrite_across_the_end_changes_nothing(void **state)
{
	(void)state;
	static const char *const specs[] = {"ram:size=64k", "ram:size=64k,sector-size=4096"};
	for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
		struct vdisk *d = tu_open(specs[s], 0);
		uint64_t size = vdisk_sector_count(d) * vdisk_sector_size(d);
		unsigned char ones[1000], back[1000];
		memset(ones, 0xEE, sizeof ones);
		static const uint64_t offs[] = {500, 512, 999}; /* bytes inside the disk */
		for (size_t i = 0; i < sizeof offs / sizeof *offs; i++)
			assert_int_equal(vdisk_pwrite(d, ones, sizeof ones, size - offs[i], 0).kind,
			                 VDISK_ERR_ILLEGAL_BLOCK);
		memset(back, 0x11, sizeof back);
		assert_int_equal(vdisk_pread(d, back, 400, size - 400).kind, VDISK_OK);
		for (size_t i = 0; i < 400; i++)
			if (back[i] == 0xEE)
				fail_msg("%s: a pwrite that failed wrote byte %zu before the end",
				         specs[s], 400 - i);
		/* and a pread across the end leaves the buffer alone */
		memset(back, 0x11, sizeof back);
		assert_int_equal(vdisk_pread(d, back, sizeof back, size - 500).kind,
		                 VDISK_ERR_ILLEGAL_BLOCK);
		for (size_t i = 0; i < sizeof back; i++)
			if (back[i] != 0x11)
				fail_msg("%s: a pread that failed wrote byte %zu of the buffer",
				         specs[s], i);
		vdisk_unref(d);
	}
}

static void test_null_disk_refused(void **state)
{
	(void)state;
	char buf[16];
	assert_int_equal(vdisk_pread(NULL, buf, 1, 0).kind, VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pwrite(NULL, buf, 1, 0, 0).kind, VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_flush_sync(NULL).kind, VDISK_ERR_INVALID_INPUT);
	assert_null(vdisk_inspect(NULL, 0));
	assert_non_null(strstr(vdisk_errmsg(), "NULL"));
	assert_null(vdisk_find(NULL, "x"));
	assert_int_equal(vdisk_resize(NULL, 1), -1);
	assert_int_equal(vdisk_ctl(NULL, "x", NULL, NULL), -1);
	assert_null(vdisk_ref(NULL));
	vdisk_unref(NULL);
	assert_null(vdisk_queue_create(NULL, NULL));
}

static void test_duplicate_ids_refused(void **state)
{
	(void)state;
	assert_null(vdisk_open("{\"type\":\"striped\",\"chunk-size\":\"4k\",\"id\":\"a\",\"disks\":"
	                       "[{\"type\":\"ram\",\"size\":\"1M\",\"id\":\"m\"},"
	                       "{\"type\":\"ram\",\"size\":\"1M\",\"id\":\"m\"}]}",
	                       0));
	assert_non_null(strstr(vdisk_errmsg(), "id 'm' is given to two layers"));
}

static void test_inspect_non_utf8_path(void **state)
{
	(void)state;
	char dir[] = "/tmp/vdisk-utf8.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char spec[128];
	snprintf(spec, sizeof spec, "file:path=%s/caf\xe9.img,create=1M", dir);
	struct vdisk *d = vdisk_open(spec, 0);
	assert_non_null(d);
	char *s = vdisk_inspect(d, 0);
	if (!s)
		fail_msg("inspect failed: %s", vdisk_errmsg());
	assert_non_null(strstr(s, "caf\\\\xe9.img"));
	free(s);
	vdisk_unref(d);
	char path[128];
	snprintf(path, sizeof path, "%s/caf\xe9.img", dir);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_iov_length_overflow),
	    cmocka_unit_test(test_pwrite_across_the_end_changes_nothing),
	    cmocka_unit_test(test_null_disk_refused),
	    cmocka_unit_test(test_duplicate_ids_refused),
	    cmocka_unit_test(test_inspect_non_utf8_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
