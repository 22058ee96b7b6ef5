/* vdisk_check(): layers' own checks (a file resized, deleted or replaced under
 * an open disk), the read pass narrowing unreadable ranges to the sector, the
 * report's shape, and refused arguments. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

static json_t *check_json(struct vdisk *d, unsigned flags, int expect_problems)
{
	char *s = NULL;
	int n = vdisk_check(d, flags, &s);
	if (n < 0)
		fail_msg("vdisk_check: %s", vdisk_errmsg());
	assert_int_equal(n, expect_problems);
	assert_non_null(s);
	json_t *o = json_loads(s, 0, NULL);
	free(s);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "problems_total")), n);
	return o;
}

static const char *message(json_t *o, size_t i)
{
	return json_string_value(
	    json_object_get(json_array_get(json_object_get(o, "problems"), i), "message"));
}

static char *make_file(const char *name, size_t len)
{
	char *p;
	if (asprintf(&p, "%s/%s", tu_tmpdir(), name) < 0)
		abort();
	int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert_true(fd >= 0);
	unsigned char *buf = tu_alloc(len);
	tu_pattern(buf, len, 0, 512, 7);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	free(buf);
	close(fd);
	return p;
}

static struct vdisk *open_file(const char *path)
{
	char spec[1024];
	snprintf(spec, sizeof spec, "file:path=%s", path);
	return tu_open(spec, 0);
}

static void test_clean_file(void **state)
{
	(void)state;
	char *p = make_file("clean.img", 1 << 20);
	struct vdisk *d = open_file(p);
	json_t *o = check_json(d, VDISK_CHECK_READ, 0);
	assert_int_equal(json_integer_value(json_object_get(o, "layers")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "layers_checked")), 1);
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_read")), 1 << 20);
	json_decref(o);
	/* without a report */
	assert_int_equal(vdisk_check(d, 0, NULL), 0);
	vdisk_unref(d);
	free(p);
}

static void test_file_resized_under_the_disk(void **state)
{
	(void)state;
	char *p = make_file("resized.img", 1 << 20);
	struct vdisk *d = open_file(p);
	assert_int_equal(truncate(p, 512 << 10), 0);
	json_t *o = check_json(d, 0, 1);
	assert_non_null(strstr(message(o, 0), "changed size"));
	assert_non_null(strstr(message(o, 0), "1048576 bytes then, 524288 now"));
	json_decref(o);
	/* the read pass reads what is left (the file's extents end at its end) */
	o = check_json(d, VDISK_CHECK_READ, 1);
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_read")), 512 << 10);
	json_decref(o);
	vdisk_unref(d);
	free(p);
}

static void test_file_replaced_or_deleted(void **state)
{
	(void)state;
	char *p = make_file("replaced.img", 64 << 10);
	char *q = make_file("other.img", 64 << 10);
	struct vdisk *d = open_file(p);
	assert_int_equal(rename(q, p), 0);
	json_t *o = check_json(d, 0, 1);
	assert_non_null(strstr(message(o, 0), "names another file"));
	json_decref(o);
	assert_int_equal(unlink(p), 0);
	vdisk_unref(d);
	free(p);

	d = open_file(p = make_file("deleted.img", 64 << 10));
	assert_int_equal(unlink(p), 0);
	o = check_json(d, 0, 1);
	assert_non_null(strstr(message(o, 0), "deleted"));
	json_decref(o);
	vdisk_unref(d);
	free(p);
	free(q);
}

/* Unreadable sectors from fault rules at known byte ranges, inside 1 MiB read
 * chunks and across a chunk boundary; zero extents of the disk are not read. */
static void test_read_pass_narrows_to_sectors(void **state)
{
	(void)state;
	char *p = make_file("faulty.img", 4 << 20);
	char spec[2048];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"fault\",\"inner\":\"file:path=%s\",\"rules\":["
	         "{\"op\":\"read\",\"offset\":4096,\"length\":1024,\"sticky\":true,"
	         "\"error\":\"medium\",\"medium\":\"unrecovered-read\"},"
	         "{\"op\":\"read\",\"offset\":1048064,\"length\":1024,\"sticky\":true,"
	         "\"error\":\"io\"}]}",
	         p);
	struct vdisk *d = tu_open(spec, 0);
	json_t *o = check_json(d, VDISK_CHECK_READ, 3);
	static const struct {
		int64_t off, len;
		const char *why;
	} want[] = {
	    {4096, 1024, "unrecovered read"},
	    {1048064, 512, "I/O error"}, /* the last sector of the first chunk */
	    {1048576, 512, "I/O error"}, /* and the first of the second */
	};
	json_t *probs = json_object_get(o, "problems");
	for (size_t i = 0; i < 3; i++) {
		json_t *pr = json_array_get(probs, i);
		assert_int_equal(json_integer_value(json_object_get(pr, "offset")), want[i].off);
		assert_int_equal(json_integer_value(json_object_get(pr, "length")), want[i].len);
		assert_non_null(strstr(message(o, i), want[i].why));
		assert_string_equal(json_string_value(json_object_get(pr, "layer")), "");
		assert_string_equal(json_string_value(json_object_get(pr, "type")), "fault");
	}
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_read")), (4 << 20) - 2048);
	assert_int_equal(json_integer_value(json_object_get(o, "layers")), 2);
	json_decref(o);
	vdisk_unref(d);
	free(p);

	/* a sparse RAM disk: only what was written is read */
	d = tu_open("ram:size=64M", 0);
	unsigned char buf[8192];
	memset(buf, 0xab, sizeof buf);
	assert_true(vdisk_ok(vdisk_pwrite(d, buf, sizeof buf, 40 << 20, 0)));
	o = check_json(d, VDISK_CHECK_READ, 0);
	int64_t read = json_integer_value(json_object_get(o, "bytes_read"));
	assert_true(read >= 8192 && read < (1 << 20));
	json_decref(o);
	vdisk_unref(d);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	char *s = (char *)"x";
	assert_int_equal(vdisk_check(NULL, 0, &s), -1);
	assert_null(s);
	assert_non_null(strstr(vdisk_errmsg(), "NULL"));
	struct vdisk *d = tu_open("null:size=1M", 0);
	assert_int_equal(vdisk_check(d, 0x80, NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "unknown flags"));
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clean_file),
	    cmocka_unit_test(test_file_resized_under_the_disk),
	    cmocka_unit_test(test_file_replaced_or_deleted),
	    cmocka_unit_test(test_read_pass_narrows_to_sectors),
	    cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
