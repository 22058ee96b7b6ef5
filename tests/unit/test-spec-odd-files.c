/* Specs that name odd files: a FIFO given as @file, as a bare path or as a
 * read-only file path must be refused at once (never wait for a writer), a
 * path that is not UTF-8 is still a path, and a spec file is JSON to its last
 * byte. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

static char *path_of(const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", tu_tmpdir(), name) < 0)
		abort();
	return p;
}

/* Opening a FIFO for reading waits for a writer: a spec naming one must be
 * refused without that wait.  The alarm only turns a hang into a failure. */
static void expect_refused(const char *fmt, const char *path, const char *frag)
{
	char spec[1024];
	snprintf(spec, sizeof spec, fmt, path);
	alarm(20);
	struct vdisk *d = vdisk_open(spec, 0);
	alarm(0);
	if (d)
		fail_msg("'%s' opened", spec);
	if (!strstr(vdisk_errmsg(), frag))
		fail_msg("error for '%s' is '%s'; expected '%s'", spec, vdisk_errmsg(), frag);
}

static void test_fifo_is_refused(void **state)
{
	(void)state;
	char *p = path_of("fifo");
	assert_int_equal(mkfifo(p, 0600), 0);
	expect_refused("@%s", p, "not a regular file");
	expect_refused("%s", p, "not a regular file");
	expect_refused("file:path=%s,read-only=on", p, "not a regular file");
	unlink(p);
	free(p);
}

static void test_non_utf8_path(void **state)
{
	(void)state;
	char *p = path_of("\xff\xfe.img");
	int fd = open(p, O_CREAT | O_RDWR, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	/* a bare path, probed */
	struct vdisk *d = vdisk_open(p, 0);
	if (!d)
		fail_msg("bare path: %s", vdisk_errmsg());
	assert_string_equal(vdisk_type(d), "file");
	assert_int_equal(vdisk_sector_count(d), 2048);
	vdisk_unref(d);
	/* the shorthand */
	char spec[1024];
	snprintf(spec, sizeof spec, "file:path=%s", p);
	d = vdisk_open(spec, 0);
	if (!d)
		fail_msg("shorthand: %s", vdisk_errmsg());
	assert_int_equal(vdisk_sector_count(d), 2048);
	vdisk_unref(d);
	unlink(p);
	free(p);
}

static void test_spec_file_with_nul(void **state)
{
	(void)state;
	char *p = path_of("nul.json");
	static const char text[] = "{\"type\":\"null\",\"size\":\"1M\"}\0{{{ not JSON";
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
	fclose(f);
	char spec[600];
	snprintf(spec, sizeof spec, "@%s", p);
	struct vdisk *d = vdisk_open(spec, 0);
	if (d) {
		vdisk_unref(d);
		fail_msg("a spec file with a NUL and garbage after the JSON opened");
	}
	assert_non_null(strstr(vdisk_errmsg(), "invalid JSON"));
	unlink(p);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fifo_is_refused),
	    cmocka_unit_test(test_non_utf8_path),
	    cmocka_unit_test(test_spec_file_with_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
