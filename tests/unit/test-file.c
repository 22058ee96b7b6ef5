/* The file backend: creation rules, errors at open, short transfers, punch
 * hole, extents from SEEK_DATA/SEEK_HOLE, O_DIRECT bouncing, write-zeroes. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

static char *path_of(const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", tu_tmpdir(), name) < 0)
		abort();
	return p;
}

static struct vdisk *open_fmt(unsigned flags, const char *fmt, const char *path)
{
	char spec[1024];
	snprintf(spec, sizeof spec, fmt, path);
	return vdisk_open(spec, flags);
}

static void test_create_rules(void **state)
{
	(void)state;
	char *p = path_of("c.img");
	struct vdisk *d = open_fmt(0, "file:path=%s,create=64M", p);
	assert_non_null(d);
	assert_int_equal(vdisk_sector_count(d), 131072);
	vdisk_unref(d);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 64 << 20);
	assert_true(st.st_blocks < 64); /* sparse */
	/* the same create= again opens it */
	d = open_fmt(0, "file:path=%s,create=64M", p);
	assert_non_null(d);
	vdisk_unref(d);
	/* another size is refused and the file is left alone */
	assert_null(open_fmt(0, "file:path=%s,create=32M", p));
	assert_non_null(strstr(vdisk_errmsg(), "refusing to change it"));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 64 << 20);
	/* create= with a size that is not whole sectors */
	char *q = path_of("odd.img");
	assert_null(open_fmt(0, "file:path=%s,create=1000", q));
	assert_non_null(strstr(vdisk_errmsg(), "create"));
	assert_int_not_equal(access(q, F_OK), 0);
	free(p);
	free(q);
}

static void test_open_errors(void **state)
{
	(void)state;
	char *p = path_of("missing.img");
	assert_null(open_fmt(0, "file:path=%s", p));
	assert_non_null(strstr(vdisk_errmsg(), p));
	assert_non_null(strstr(vdisk_errmsg(), "No such file"));
	/* writes asked of a file that cannot be written (immutable: even root
	 * cannot): an error at open, not at the first write */
	char *im = path_of("immutable.img");
	int fd = open(im, O_CREAT | O_RDWR, 0644);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	int fl = 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &fl) == 0 &&
	    (fl |= FS_IMMUTABLE_FL, ioctl(fd, FS_IOC_SETFLAGS, &fl) == 0)) {
		assert_null(open_fmt(0, "file:path=%s", im));
		assert_non_null(strstr(vdisk_errmsg(), "cannot open for reading and writing"));
		assert_non_null(strstr(vdisk_errmsg(), im));
		struct vdisk *d = open_fmt(0, "file:path=%s,read-only=on", im);
		assert_non_null(d);
		vdisk_unref(d);
		fl &= ~FS_IMMUTABLE_FL;
		ioctl(fd, FS_IOC_SETFLAGS, &fl);
	} else {
		print_message("immutable files not supported here; that case is not checked\n");
	}
	close(fd);
	free(im);
	/* a file smaller than a sector */
	char *s = path_of("tiny.img");
	FILE *f = fopen(s, "w");
	fputs("abc", f);
	fclose(f);
	assert_null(open_fmt(0, "file:path=%s", s));
	assert_non_null(strstr(vdisk_errmsg(), "smaller than one"));
	free(p);
	free(s);
}

static void test_trailing_partial_sector_ignored(void **state)
{
	(void)state;
	char *p = path_of("partial.img");
	int fd = open(p, O_CREAT | O_RDWR, 0644);
	assert_int_equal(ftruncate(fd, 4096 + 100), 0);
	close(fd);
	struct vdisk *d = open_fmt(0, "file:path=%s", p);
	assert_non_null(d);
	assert_int_equal(vdisk_sector_count(d), 8);
	vdisk_unref(d);
	d = open_fmt(0, "file:path=%s,sector-size=4096", p);
	assert_int_equal(vdisk_sector_count(d), 1);
	vdisk_unref(d);
	free(p);
}

static void test_short_read_is_an_error(void **state)
{
	(void)state;
	char *p = path_of("shrink.img");
	static const char *const modes[] = {"file:path=%s", "file:path=%s,direct=on"};
	for (int m = 0; m < 2; m++) {
		unlink(p);
		struct vdisk *d = open_fmt(
		    0, m ? "file:path=%s,create=1M,direct=on" : "file:path=%s,create=1M", p);
		assert_non_null(d);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *buf = tu_alloc(8192);
		/* someone else truncates the file under the disk */
		assert_int_equal(truncate(p, 512 * 1024 + 4096), 0);
		vdisk_status st = tu_read(q, 1024 + 4, buf, 8192); /* straddles the new end */
		assert_int_equal(st.kind, VDISK_ERR_IO);
		st = tu_read(q, 1800, buf, 4096); /* wholly past it */
		assert_int_equal(st.kind, VDISK_ERR_IO);
		assert_int_equal(st.errnum, ENODATA);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(buf);
		(void)modes;
	}
	free(p);
}

static void test_punch_and_extents(void **state)
{
	(void)state;
	char *p = path_of("holes.img");
	struct vdisk *d = open_fmt(0, "file:path=%s,create=4M", p);
	if (vdisk_unmap_behavior(d) != VDISK_UNMAP_ZEROES) {
		vdisk_unref(d);
		skip(); /* the file system cannot punch holes */
	}
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(1 << 20);
	memset(buf, 0x5C, 1 << 20);
	assert_int_equal(tu_write(q, 2048, buf, 1 << 20, 0).kind, VDISK_OK); /* [1M, 2M) */
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	struct vdisk_extent e[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 8192, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	assert_int_equal(e[0].count, 2048);
	assert_int_equal(e[1].flags, 0);
	assert_int_equal(e[1].sector, 2048);
	assert_int_equal(e[1].count, 2048);
	assert_int_equal(e[2].sector, 4096);
	/* punch the middle 512 KiB */
	assert_int_equal(tu_unmap(q, 2560, 1024).kind, VDISK_OK);
	assert_int_equal(tu_extents(q, 2048, 2048, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 3);
	assert_int_equal(e[1].sector, 2560);
	assert_int_equal(e[1].count, 1024);
	assert_int_equal(e[1].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	assert_int_equal(tu_read(q, 2048, buf, 1 << 20).kind, VDISK_OK);
	for (size_t i = 0; i < (1 << 20); i++) {
		unsigned char want = i >= 256 * 1024 && i < 768 * 1024 ? 0 : 0x5C;
		if (buf[i] != want)
			fail_msg("byte %zu is %#x", i, buf[i]);
	}
	/* write-zeroes that may unmap punches too */
	assert_int_equal(tu_write_zeroes(q, 2048, 512, VDISK_ZERO_MAY_UNMAP).kind, VDISK_OK);
	assert_int_equal(tu_extents(q, 2048, 512, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(e[0].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(p);
}

static void test_direct_bounces_unaligned(void **state)
{
	(void)state;
	char *p = path_of("direct.img");
	struct vdisk *d = open_fmt(0, "file:path=%s,create=1M,direct=on", p);
	assert_non_null(d);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *raw = tu_alloc(3 * 4096), *chk = tu_alloc(3 * 4096);
	unsigned char *odd = raw + 3; /* not even 4-byte aligned */
	tu_pattern(odd, 2 * 4096, 10, 512, 1);
	assert_int_equal(tu_write(q, 10, odd, 2 * 4096, VDISK_IO_FUA).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 10, chk, 2 * 4096).kind, VDISK_OK);
	assert_memory_equal(chk, odd, 2 * 4096);
	memset(odd, 0, 2 * 4096);
	assert_int_equal(tu_read(q, 10, odd, 2 * 4096).kind, VDISK_OK);
	assert_memory_equal(chk, odd, 2 * 4096);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	/* the bytes really are in the file */
	int fd = open(p, O_RDONLY);
	assert_int_equal(pread(fd, raw, 2 * 4096, 10 * 512), 2 * 4096);
	close(fd);
	assert_memory_equal(raw, chk, 2 * 4096);
	free(raw);
	free(chk);
	free(p);
}

static void test_read_only_file(void **state)
{
	(void)state;
	char *p = path_of("ro.img");
	struct vdisk *d = open_fmt(0, "file:path=%s,create=1M", p);
	vdisk_unref(d);
	d = open_fmt(0, "file:path=%s,read-only=on", p);
	assert_non_null(d);
	assert_true(vdisk_read_only(d));
	/* a read-only file cannot punch: unmap is ignored */
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_IGNORED);
	vdisk_unref(d);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_rules),
	    cmocka_unit_test(test_open_errors),
	    cmocka_unit_test(test_trailing_partial_sector_ignored),
	    cmocka_unit_test(test_short_read_is_an_error),
	    cmocka_unit_test(test_punch_and_extents),
	    cmocka_unit_test(test_direct_bounces_unaligned),
	    cmocka_unit_test(test_read_only_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
