/* The fault decorator: every trigger and effect, run-time control, and
 * configuration errors that name the key. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

struct t {
	struct vdisk *d;
	struct vdisk_queue *q;
	unsigned char *buf, *chk;
};

static struct t setup(const char *rules)
{
	char spec[4096];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"fault\",\"inner\":\"ram:size=1M\",\"id\":\"f\",\"rules\":%s}", rules);
	struct t t;
	t.d = tu_open(spec, 0);
	t.q = vdisk_queue_create(t.d, NULL);
	t.buf = tu_alloc(65536);
	t.chk = tu_alloc(65536);
	return t;
}

static void teardown(struct t *t)
{
	vdisk_queue_destroy(t->q);
	vdisk_unref(t->d);
	free(t->buf);
	free(t->chk);
}

static int kind_w(struct t *t, uint64_t sector, unsigned flags)
{
	tu_pattern(t->buf, 512, sector, 512, sector);
	return tu_write(t->q, sector, t->buf, 512, flags).kind;
}

static int kind_r(struct t *t, uint64_t sector)
{
	return tu_read(t->q, sector, t->buf, 512).kind;
}

static bool holds_pattern(struct t *t, uint64_t sector, uint64_t seed)
{
	tu_pattern(t->chk, 512, sector, 512, seed);
	assert_int_equal(tu_read(t->q, sector, t->buf, 512).kind, VDISK_OK);
	return memcmp(t->buf, t->chk, 512) == 0;
}

static void test_nth_every_once(void **state)
{
	(void)state;
	struct t t =
	    setup("[{\"op\":\"write\",\"nth\":3},"
	          "{\"op\":\"read\",\"every\":2,\"error\":\"medium\",\"errno\":\"ENODATA\"},"
	          "{\"op\":\"flush\",\"once\":true,\"error\":\"io\",\"errno\":28}]");
	assert_int_equal(kind_w(&t, 1, 0), VDISK_OK);
	assert_int_equal(kind_w(&t, 2, 0), VDISK_OK);
	assert_int_equal(kind_w(&t, 3, 0), VDISK_ERR_IO);
	assert_int_equal(kind_w(&t, 4, 0), VDISK_OK);
	/* the failed write never reached the disk */
	assert_int_equal(kind_r(&t, 0), VDISK_OK);
	vdisk_status st = tu_read(t.q, 3, t.buf, 512);
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	assert_int_equal(st.errnum, ENODATA);
	assert_int_equal(st.medium, VDISK_MEDIUM_UNRECOVERED_READ);
	assert_true(holds_pattern(&t, 2, 2));              /* read 3: ok, and write 2 landed */
	assert_int_equal(kind_r(&t, 3), VDISK_ERR_MEDIUM); /* read 4 */
	assert_int_equal(kind_r(&t, 3), VDISK_OK);
	st = tu_flush(t.q);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_int_equal(st.errnum, ENOSPC);
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK);
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK);
	char *res;
	assert_int_equal(vdisk_ctl(t.d, "list", NULL, &res), 0);
	assert_non_null(strstr(res, "\"flushes\":3"));
	free(res);
	teardown(&t);
}

static void test_range_sticky(void **state)
{
	(void)state;
	/* bytes 4096..8191 = sectors 8..15; fires on the second matching write and
	 * then on every later one, reads included, whatever the count */
	struct t t = setup("[{\"op\":\"any\",\"offset\":\"4k\",\"length\":4096,\"nth\":2,"
	                   "\"sticky\":true,\"error\":\"medium\",\"medium\":\"write-fault\"}]");
	assert_int_equal(kind_w(&t, 7, 0), VDISK_OK);
	assert_int_equal(kind_w(&t, 8, 0), VDISK_OK);
	assert_int_equal(kind_w(&t, 16, 0), VDISK_OK);
	vdisk_status st = tu_write(t.q, 15, t.buf, 1024, 0); /* 15..16 overlaps */
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	assert_int_equal(st.medium, VDISK_MEDIUM_WRITE_FAULT);
	assert_int_equal(kind_r(&t, 9), VDISK_ERR_MEDIUM);
	assert_int_equal(kind_r(&t, 16), VDISK_OK);
	assert_int_equal(kind_r(&t, 7), VDISK_OK);
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK); /* a flush has no range */
	assert_int_equal(tu_unmap(t.q, 0, 9).kind, VDISK_ERR_MEDIUM);
	assert_int_equal(tu_write_zeroes(t.q, 12, 1, 0).kind, VDISK_ERR_MEDIUM);
	/* disarm, and it is gone; arm again, and it counts afresh */
	assert_int_equal(vdisk_ctl(t.d, "disarm", "{\"rule\":0}", NULL), 0);
	assert_int_equal(kind_r(&t, 9), VDISK_OK);
	assert_int_equal(vdisk_ctl(t.d, "arm", NULL, NULL), 0);
	assert_int_equal(kind_r(&t, 9), VDISK_OK);
	assert_int_equal(kind_r(&t, 9), VDISK_ERR_MEDIUM);
	teardown(&t);
}

static void test_after_flushes(void **state)
{
	(void)state;
	struct t t = setup("[{\"op\":\"fua-write\",\"after-flushes\":2,\"error\":"
	                   "\"reservation-conflict\"}]");
	assert_int_equal(kind_w(&t, 1, VDISK_IO_FUA), VDISK_OK);
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK);
	assert_int_equal(kind_w(&t, 1, VDISK_IO_FUA), VDISK_OK);
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK);
	assert_int_equal(kind_w(&t, 1, 0), VDISK_OK); /* not FUA */
	assert_int_equal(kind_w(&t, 1, VDISK_IO_FUA), VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(kind_w(&t, 2, VDISK_IO_FUA), VDISK_ERR_RESERVATION_CONFLICT);
	teardown(&t);
}

static void test_probability(void **state)
{
	(void)state;
	int hits[2] = {0, 0};
	bool pattern[2][400];
	for (int run = 0; run < 2; run++) {
		struct t t = setup("[{\"op\":\"read\",\"probability\":0.25,\"seed\":42}]");
		for (int i = 0; i < 400; i++) {
			pattern[run][i] = kind_r(&t, (uint64_t)i) != VDISK_OK;
			hits[run] += pattern[run][i];
		}
		teardown(&t);
	}
	/* the same seed gives the same faults; about a quarter of them */
	assert_memory_equal(pattern[0], pattern[1], sizeof pattern[0]);
	printf("probability 0.25: %d of 400\n", hits[0]);
	assert_true(hits[0] > 60 && hits[0] < 140);
}

static void test_short_transfers(void **state)
{
	(void)state;
	struct t t =
	    setup("[{\"op\":\"read\",\"effect\":\"short\",\"nth\":2},"
	          "{\"op\":\"write\",\"effect\":\"short\",\"short-sectors\":3,\"nth\":2}]");
	size_t len = 8 * 512;
	tu_pattern(t.chk, len, 0, 512, 1);
	assert_int_equal(tu_write(t.q, 0, t.chk, len, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(t.q, 0, t.buf, len).kind, VDISK_OK);
	memset(t.buf, 0, len);
	vdisk_status st = tu_read(t.q, 0, t.buf, len);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	/* half came through, the rest is poison, and the read failed */
	assert_memory_equal(t.buf, t.chk, 4 * 512);
	for (size_t i = 4 * 512; i < len; i++)
		assert_int_equal(t.buf[i], 0xCC);
	/* a short write: three sectors land, the rest do not */
	unsigned char *w = tu_alloc(len);
	tu_pattern(w, len, 0, 512, 2);
	assert_int_equal(tu_write(t.q, 0, w, len, 0).kind, VDISK_ERR_IO);
	assert_int_equal(tu_read(t.q, 0, t.buf, len).kind, VDISK_OK);
	assert_memory_equal(t.buf, w, 3 * 512);
	assert_memory_equal(t.buf + 3 * 512, t.chk + 3 * 512, len - 3 * 512);
	free(w);
	teardown(&t);
}

static void test_lost_and_performed(void **state)
{
	(void)state;
	struct t t = setup("[{\"id\":\"lost\",\"op\":\"write\",\"effect\":\"lost\",\"nth\":1},"
	                   "{\"id\":\"late\",\"op\":\"write\",\"performed\":true,\"nth\":2,"
	                   "\"error\":\"io\",\"errno\":\"EIO\"},"
	                   "{\"id\":\"fl\",\"op\":\"flush\",\"effect\":\"lost\"}]");
	assert_int_equal(kind_r(&t, 5), VDISK_OK);
	/* write 1: acknowledged, not written */
	assert_int_equal(kind_w(&t, 5, 0), VDISK_OK);
	assert_int_equal(kind_r(&t, 5), VDISK_OK);
	for (int i = 0; i < 512; i++)
		assert_int_equal(t.buf[i], 0);
	/* write 2: written, then reported failed */
	assert_int_equal(kind_w(&t, 6, 0), VDISK_ERR_IO);
	assert_true(holds_pattern(&t, 6, 6));
	assert_int_equal(tu_flush(t.q).kind, VDISK_OK);
	char *res;
	assert_int_equal(vdisk_ctl(t.d, "list", NULL, &res), 0);
	assert_non_null(strstr(res, "\"id\":\"fl\",\"armed\":true,\"seen\":1,\"hits\":1"));
	free(res);
	teardown(&t);
}

static void test_ctl(void **state)
{
	(void)state;
	struct t t = setup("[]");
	char *res = NULL;
	assert_int_equal(kind_w(&t, 1, 0), VDISK_OK);
	assert_int_equal(vdisk_ctl(t.d, "add", "{\"op\":\"write\",\"id\":\"w\"}", &res), 0);
	assert_string_equal(res, "{\"index\":0}");
	free(res);
	assert_int_equal(kind_w(&t, 1, 0), VDISK_ERR_IO);
	assert_int_equal(vdisk_ctl(t.d, "add", "{\"op\":\"read\",\"armed\":false}", &res), 0);
	free(res);
	assert_int_equal(kind_r(&t, 1), VDISK_OK);
	assert_int_equal(vdisk_ctl(t.d, "arm", "{\"rule\":1}", NULL), 0);
	assert_int_equal(kind_r(&t, 1), VDISK_ERR_IO);
	assert_int_equal(vdisk_ctl(t.d, "remove", "{\"rule\":\"w\"}", NULL), 0);
	assert_int_equal(kind_w(&t, 1, 0), VDISK_OK);
	assert_int_equal(kind_r(&t, 1), VDISK_ERR_IO);
	assert_int_equal(vdisk_ctl(t.d, "clear", NULL, NULL), 0);
	assert_int_equal(kind_r(&t, 1), VDISK_OK);

	assert_int_equal(vdisk_ctl(t.d, "remove", "{\"rule\":\"nope\"}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "nope"));
	assert_int_equal(vdisk_ctl(t.d, "arm", "{\"rule\":7}", NULL), -1);
	assert_int_equal(vdisk_ctl(t.d, "add", "{\"op\":\"wirte\"}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "rule.op: 'wirte'"));
	assert_int_equal(vdisk_ctl(t.d, "explode", NULL, NULL), -1);
	/* found by id inside a stack */
	struct vdisk *top =
	    tu_open("{\"type\":\"delay\",\"inner\":{\"type\":\"fault\",\"id\":\"ff\","
	            "\"inner\":\"ram:size=1M\"}}",
	            0);
	struct vdisk *f = vdisk_find(top, "ff");
	assert_non_null(f);
	assert_int_equal(vdisk_ctl(f, "add", "{\"op\":\"read\",\"error\":\"illegal-block\"}", NULL),
	                 0);
	struct vdisk_queue *q = vdisk_queue_create(top, NULL);
	assert_int_equal(tu_read(q, 0, t.buf, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	vdisk_queue_destroy(q);
	vdisk_unref(f);
	vdisk_unref(top);
	teardown(&t);
}

static void expect_open_error(const char *rules, const char *what)
{
	char spec[1024];
	snprintf(spec, sizeof spec, "{\"type\":\"fault\",\"inner\":\"ram:size=1M\",\"rules\":%s}",
	         rules);
	struct vdisk *d = vdisk_open(spec, 0);
	if (d)
		fail_msg("'%s' opened", rules);
	if (!strstr(vdisk_errmsg(), what))
		fail_msg("'%s': message '%s' lacks '%s'", rules, vdisk_errmsg(), what);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_open_error("{}", "rules: expected an array");
	expect_open_error("[7]", "rules[0]: expected an object");
	expect_open_error("[{}]", "rules[0].op: required");
	expect_open_error("[{\"op\":\"write\"},{\"op\":\"red\"}]", "rules[1].op: 'red'");
	expect_open_error("[{\"op\":\"write\",\"bogus\":1}]", "rules[0].unknown key 'bogus'");
	expect_open_error("[{\"op\":\"read\",\"effect\":\"lost\"}]",
	                  "rules[0].effect: a read cannot");
	expect_open_error("[{\"op\":\"flush\",\"effect\":\"short\"}]", "short transfer applies");
	expect_open_error("[{\"op\":\"read\",\"effect\":\"boom\"}]", "effect: 'boom'");
	expect_open_error("[{\"op\":\"read\",\"error\":\"eio\"}]", "error: 'eio'");
	expect_open_error("[{\"op\":\"read\",\"errno\":\"EBOGUS\"}]", "rules[0].errno");
	expect_open_error("[{\"op\":\"read\",\"errno\":-4}]", "errno");
	expect_open_error("[{\"op\":\"read\",\"medium\":\"guard-check\"}]", "medium: only");
	expect_open_error("[{\"op\":\"read\",\"error\":\"medium\",\"medium\":\"rust\"}]",
	                  "medium: 'rust'");
	expect_open_error("[{\"op\":\"read\",\"probability\":1.5}]", "probability");
	expect_open_error("[{\"op\":\"read\",\"seed\":3}]", "seed: only meaningful");
	expect_open_error("[{\"op\":\"read\",\"nth\":\"three\"}]", "nth");
	expect_open_error("[{\"op\":\"read\",\"length\":0}]", "length");
	expect_open_error("[{\"op\":\"read\",\"sticky\":true,\"once\":true}]", "sticky, once");
	expect_open_error("[{\"op\":\"write\",\"effect\":\"lost\",\"error\":\"io\"}]",
	                  "lost write reports success");
	expect_open_error("[{\"op\":\"write\",\"short-sectors\":2}]", "short-sectors");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nth_every_once),
	    cmocka_unit_test(test_range_sticky),
	    cmocka_unit_test(test_after_flushes),
	    cmocka_unit_test(test_probability),
	    cmocka_unit_test(test_short_transfers),
	    cmocka_unit_test(test_lost_and_performed),
	    cmocka_unit_test(test_ctl),
	    cmocka_unit_test(test_config_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
