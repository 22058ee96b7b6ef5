/* Spec syntax and its errors: every bad spec names what was wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

static void test_sizes(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {{"0", 0},           {"512", 512},     {"4k", 4096},       {"4K", 4096},
	          {"4KiB", 4096},     {"1M", 1 << 20},  {"1m", 1 << 20},    {"2G", 2ull << 30},
	          {"1T", 1ull << 40}, {"3MB", 3 << 20}, {"1P", 1ull << 50}, {"16E", 0}};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		uint64_t v = 1;
		if (strcmp(ok[i].s, "16E") == 0) {
			assert_int_equal(vdisk_parse_size(ok[i].s, &v), -1); /* 2^64: overflow */
			continue;
		}
		assert_int_equal(vdisk_parse_size(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].v);
	}
	static const char *const bad[] = {"",
	                                  "k",
	                                  "1X",
	                                  "-1",
	                                  "1.5G",
	                                  " 1",
	                                  "1 G",
	                                  "0x10",
	                                  "18446744073709551616",
	                                  "17179869184G",
	                                  "1Gx",
	                                  "1KiBB"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		uint64_t v = 7;
		if (vdisk_parse_size(bad[i], &v) != -1)
			fail_msg("'%s' parsed as a size", bad[i]);
		assert_int_equal(v, 7);
	}
}

static void test_durations(void **state)
{
	(void)state;
	uint64_t ns;
	assert_int_equal(vdisk_parse_duration("0", &ns), 0);
	assert_int_equal(ns, 0);
	assert_int_equal(vdisk_parse_duration("250us", &ns), 0);
	assert_int_equal(ns, 250000);
	assert_int_equal(vdisk_parse_duration("2ms", &ns), 0);
	assert_int_equal(ns, 2000000);
	assert_int_equal(vdisk_parse_duration("1s", &ns), 0);
	assert_int_equal(ns, 1000000000);
	assert_int_equal(vdisk_parse_duration("100ns", &ns), 0);
	assert_int_equal(ns, 100);
	static const char *const bad[] = {
	    "5", "1m", "ms", "", "1 s", "-1ms", "99999999999999999999s"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (vdisk_parse_duration(bad[i], &ns) != -1)
			fail_msg("'%s' parsed as a duration", bad[i]);
}

static void test_bools(void **state)
{
	(void)state;
	bool b;
	static const char *const t[] = {"true", "on", "yes", "1", "ON", "True"};
	static const char *const f[] = {"false", "off", "no", "0", "OFF"};
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(vdisk_parse_bool(t[i], &b), 0);
		assert_true(b);
	}
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(vdisk_parse_bool(f[i], &b), 0);
		assert_false(b);
	}
	assert_int_equal(vdisk_parse_bool("maybe", &b), -1);
	assert_int_equal(vdisk_parse_bool("", &b), -1);
}

/* vdisk_open(spec) must fail with a message containing every given fragment */
static void expect_open_error(const char *spec, const char *frag1, const char *frag2)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, 0);
	if (d)
		fail_msg("'%s' opened", s);
	const char *msg = vdisk_errmsg();
	if (!strstr(msg, frag1) || (frag2 && !strstr(msg, frag2)))
		fail_msg("error for '%s' is '%s'; expected '%s'%s%s", s, msg, frag1,
		         frag2 ? " and " : "", frag2 ? frag2 : "");
	free(s);
}

static void test_open_errors(void **state)
{
	(void)state;
	expect_open_error("", "empty spec", NULL);
	expect_open_error("zzz:x=1", "unknown type 'zzz'", NULL);
	expect_open_error("ram:size=1M,bogus=1", "unknown key 'bogus'", "known: size");
	expect_open_error("ram:size=12Q", "size", "'12Q' is not a size");
	expect_open_error("ram:", "size: required", NULL);
	expect_open_error("ram:size=1M,sector-size=1000", "sector-size", "1000");
	expect_open_error("ram:size=1M,sector-size=256", "sector-size", "256");
	expect_open_error("ram:size=5000,sector-size=4096", "size", "5000");
	expect_open_error("ram:size=1M,huge-pages=perhaps", "huge-pages", "'perhaps'");
	expect_open_error("ram:size", "not key=value", NULL);
	expect_open_error("ram:size=1M,size=2M", "given twice", NULL);
	expect_open_error("{\"type\":\"ram\",\"size\":-5}", "size", "negative");
	expect_open_error("{\"type\":\"ram\",\"size\":true}", "size", "expected a size");
	expect_open_error("{\"type\":\"ram\"", "invalid JSON", "line 1");
	expect_open_error("{\"size\":\"1M\"}", "missing \"type\"", NULL);
	expect_open_error("{\"type\":7}", "missing \"type\"", NULL);
	expect_open_error("{\"type\":\"ram\",\"size\":\"1M\",\"size\":\"2M\"}", "invalid JSON",
	                  NULL);
	expect_open_error("@/nonexistent/stack.json", "/nonexistent/stack.json", "No such file");
	expect_open_error("/nonexistent/disk.img", "/nonexistent/disk.img", "No such file");
	expect_open_error("file:path=/nonexistent/disk.img", "file", "/nonexistent/disk.img");
	expect_open_error("file:path=a\\,b.img", "'a,b.img'", NULL);
	expect_open_error("file:sector-size=512", "path: required", NULL);
	expect_open_error("file:path=@TMP@/x.img,sector-size=1024", "sector-size", "1024");
	expect_open_error("file:path=@TMP@,create=1M", "Is a directory", NULL);
	expect_open_error("null:size=1000", "size", "multiple");
	expect_open_error("{\"type\":\"ram\",\"size\":\"1M\",\"id\":5}", "id", "string");
	expect_open_error("{\"type\":\"ram\",\"size\":\"1M\",\"read-only\":\"sometimes\"}",
	                  "read-only", "'sometimes'");
}

static void test_forms_agree(void **state)
{
	(void)state;
	/* JSON numbers and strings, shorthand strings: the same disk */
	static const char *const specs[] = {
	    "ram:size=2M,sector-size=4k",
	    "{\"type\":\"ram\",\"size\":\"2M\",\"sector-size\":4096}",
	    "{\"type\":\"ram\",\"size\":2097152,\"sector-size\":\"4096\"}",
	    "  {\"type\":\"ram\",\"size\":\"2MiB\",\"sector-size\":\"4KiB\"}",
	};
	for (size_t i = 0; i < 4; i++) {
		struct vdisk *d = vdisk_open(specs[i], 0);
		if (!d)
			fail_msg("'%s': %s", specs[i], vdisk_errmsg());
		assert_int_equal(vdisk_sector_size(d), 4096);
		assert_int_equal(vdisk_sector_count(d), 512);
		vdisk_unref(d);
	}
	/* @file */
	char path[512];
	snprintf(path, sizeof path, "%s/stack.json", tu_tmpdir());
	FILE *f = fopen(path, "w");
	fputs("{\"type\":\"null\",\"size\":\"8M\",\"read-only\":\"on\"}\n", f);
	fclose(f);
	char spec[600];
	snprintf(spec, sizeof spec, "@%s", path);
	struct vdisk *d = vdisk_open(spec, 0);
	assert_non_null(d);
	assert_true(vdisk_read_only(d));
	assert_int_equal(vdisk_sector_count(d), 16384);
	vdisk_unref(d);
}

static void write_file(const char *name, const void *head, size_t hlen, size_t total,
                       const void *tail, size_t tlen, char *path, size_t plen)
{
	snprintf(path, plen, "%s/%s", tu_tmpdir(), name);
	FILE *f = fopen(path, "w");
	char *buf = calloc(1, total);
	if (head)
		memcpy(buf, head, hlen);
	if (tail)
		memcpy(buf + total - tlen, tail, tlen);
	fwrite(buf, 1, total, f);
	fclose(f);
	free(buf);
}

static void test_probe(void **state)
{
	(void)state;
	char path[512];
	/* raw data opens as a file, writable */
	write_file("raw.img", "hello", 5, 1 << 16, NULL, 0, path, sizeof path);
	struct vdisk *d = vdisk_open(path, 0);
	assert_non_null(d);
	assert_string_equal(vdisk_type(d), "file");
	assert_false(vdisk_read_only(d));
	vdisk_unref(d);

	/* a VHDX signature a guest could have written: refused writable */
	write_file("vhdx.img", "vhdxfile", 8, 1 << 16, NULL, 0, path, sizeof path);
	assert_null(vdisk_open(path, 0));
	assert_non_null(strstr(vdisk_errmsg(), "looks like a vhdx image"));
	assert_non_null(strstr(vdisk_errmsg(), "give its type"));
	/* giving the type opens it as raw data */
	char spec[600];
	snprintf(spec, sizeof spec, "file:path=%s", path);
	d = vdisk_open(spec, 0);
	assert_non_null(d);
	vdisk_unref(d);

	/* a fixed-VHD footer at the end */
	unsigned char footer[512] = "conectix";
	footer[63] = 2; /* disk type fixed, big-endian */
	write_file("vhd.img", NULL, 0, 1 << 16, footer, sizeof footer, path, sizeof path);
	assert_null(vdisk_open(path, 0));
	assert_non_null(strstr(vdisk_errmsg(), "looks like a vhd1 image"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sizes),       cmocka_unit_test(test_durations),
	    cmocka_unit_test(test_bools),       cmocka_unit_test(test_open_errors),
	    cmocka_unit_test(test_forms_agree), cmocka_unit_test(test_probe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
