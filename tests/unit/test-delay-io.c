/* The delay decorator: latency per operation on queue timers, replies out of
 * order, many delayed requests in flight on one queue, delays changed while
 * running, bad configuration named. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

struct done_rec {
	int order[8];
	int n;
};

struct tag {
	struct done_rec *rec;
	int id;
	vdisk_status st;
	uint64_t t;
};

static void tag_done(void *o, vdisk_status st)
{
	struct tag *t = o;
	t->st = st;
	t->t = vdisk_now_ns();
	t->rec->order[t->rec->n++] = t->id;
}

static void wait_all(struct vdisk_queue *q)
{
	while (vdisk_queue_inflight(q))
		vdisk_queue_wait(q, -1);
}

static void test_out_of_order(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("{\"type\":\"delay\",\"read\":\"30ms\",\"write\":\"0\","
	                          "\"inner\":\"ram:size=1M\"}",
	                          0);
	assert_string_equal(vdisk_type(d), "delay");
	assert_int_equal(vdisk_sector_count(d), 2048);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *a = tu_alloc(4096), *b = tu_alloc(4096);
	struct iovec ia = {a, 4096}, ib = {b, 4096};
	struct done_rec rec = {0};
	struct tag t1 = {&rec, 1, {0}, 0}, t2 = {&rec, 2, {0}, 0};
	uint64_t t0 = vdisk_now_ns();
	/* the read goes first but waits 30 ms; the write after it has no delay */
	assert_int_equal(vdisk_readv(q, 0, &ia, 1, tag_done, &t1), 0);
	assert_int_equal(vdisk_writev(q, 8, &ib, 1, 0, tag_done, &t2), 0);
	wait_all(q);
	assert_int_equal(rec.n, 2);
	assert_int_equal(rec.order[0], 2);
	assert_int_equal(rec.order[1], 1);
	assert_true(vdisk_ok(t1.st) && vdisk_ok(t2.st));
	/* the order above shows the write was not held; only the lower bound is
	 * a promise a loaded machine keeps */
	assert_true(t1.t - t0 >= 30000000u);

	/* changed while running: now the write is slow and the read fast */
	char *res = NULL;
	assert_int_equal(vdisk_ctl(d, "set", "{\"read\":\"0\",\"write\":\"20ms\"}", &res), 0);
	assert_non_null(strstr(res, "\"write\":\"20ms\""));
	free(res);
	rec.n = 0;
	t0 = vdisk_now_ns();
	assert_int_equal(vdisk_writev(q, 8, &ib, 1, 0, tag_done, &t2), 0);
	assert_int_equal(vdisk_readv(q, 0, &ia, 1, tag_done, &t1), 0);
	wait_all(q);
	assert_int_equal(rec.order[0], 1);
	assert_int_equal(rec.order[1], 2);
	assert_true(t2.t - t0 >= 20000000u);

	assert_int_equal(vdisk_ctl(d, "get", NULL, &res), 0);
	assert_string_equal(res,
	                    "{\"read\":\"0\",\"write\":\"20ms\",\"flush\":\"0\",\"unmap\":\"0\"}");
	free(res);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(a);
	free(b);
}

struct many {
	unsigned done, errors;
};

static void many_done(void *o, vdisk_status st)
{
	struct many *m = o;
	m->done++;
	if (!vdisk_ok(st))
		m->errors++;
}

/* No thread sleeps: 4000 requests of 25 ms each finish in about 25 ms. */
static void test_many_in_flight(void **state)
{
	(void)state;
	enum { N = 4000 };
	struct vdisk *d = tu_open("{\"type\":\"delay\",\"read\":\"25ms\",\"flush\":\"25ms\","
	                          "\"unmap\":\"25ms\",\"inner\":\"ram:size=4M\"}",
	                          0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(512);
	struct iovec iov = {buf, 512};
	struct many m = {0};
	uint64_t t0 = vdisk_now_ns();
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(vdisk_readv(q, i % 8192, &iov, 1, many_done, &m), 0);
	assert_int_equal(vdisk_flush(q, many_done, &m), 0);
	assert_int_equal(vdisk_unmap(q, 0, 8, 0, many_done, &m), 0);
	assert_int_equal(vdisk_queue_inflight(q), N + 2);
	wait_all(q);
	uint64_t el = vdisk_now_ns() - t0;
	assert_int_equal(m.done, N + 2);
	assert_int_equal(m.errors, 0);
	assert_true(el >= 25000000u);
	printf("%u delayed requests took %.1f ms\n", N + 2, (double)el / 1e6);
	/* one after another they would take 100 s; a loaded machine may be slow,
	 * so the bound only tells "in flight together" from "in turn" */
	assert_true(el < 20000000000u);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* Through the event-loop descriptor: a delayed request wakes the fd. */
static void test_fd_wakeup(void **state)
{
	(void)state;
	struct vdisk *d =
	    tu_open("{\"type\":\"delay\",\"write\":\"10ms\",\"inner\":\"ram:size=1M\"}", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = vdisk_queue_fd(q);
	assert_true(fd >= 0);
	unsigned char *buf = tu_alloc(512);
	struct iovec iov = {buf, 512};
	struct many m = {0};
	assert_int_equal(vdisk_writev(q, 1, &iov, 1, VDISK_IO_FUA, many_done, &m), 0);
	uint64_t t0 = vdisk_now_ns();
	while (!m.done) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_true(poll(&p, 1, 5000) == 1);
		vdisk_queue_poll(q);
	}
	assert_true(vdisk_now_ns() - t0 >= 10000000u);
	assert_int_equal(m.errors, 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void expect_open_error(const char *spec, const char *what)
{
	struct vdisk *d = vdisk_open(spec, 0);
	if (d)
		fail_msg("'%s' opened", spec);
	if (!strstr(vdisk_errmsg(), what))
		fail_msg("'%s': message '%s' lacks '%s'", spec, vdisk_errmsg(), what);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_open_error("{\"type\":\"delay\",\"read\":\"5 parsecs\",\"inner\":\"ram:size=1M\"}",
	                  "read");
	expect_open_error("{\"type\":\"delay\",\"wrte\":\"5ms\",\"inner\":\"ram:size=1M\"}",
	                  "wrte");
	expect_open_error("{\"type\":\"delay\",\"read\":\"5ms\"}", "inner");
	expect_open_error("{\"type\":\"delay\",\"inner\":\"ram:size=0\"}", "size");
	struct vdisk *d = tu_open("{\"type\":\"delay\",\"inner\":\"ram:size=1M\"}", 0);
	assert_int_equal(vdisk_ctl(d, "set", "{\"flush\":\"soon\"}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "flush"));
	assert_int_equal(vdisk_ctl(d, "set", "{\"read\":\"1ms\",\"bogus\":1}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "bogus"));
	assert_int_equal(vdisk_ctl(d, "speed-up", NULL, NULL), -1);
	/* nothing changed by the failed calls */
	char *res = NULL;
	assert_int_equal(vdisk_ctl(d, "get", NULL, &res), 0);
	assert_string_equal(res,
	                    "{\"read\":\"0\",\"write\":\"0\",\"flush\":\"0\",\"unmap\":\"0\"}");
	free(res);
	vdisk_unref(d);
}

/* The inner disk's metadata and resize come through. */
static void test_passthrough(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("{\"type\":\"delay\",\"read\":\"1ms\",\"inner\":"
	                          "\"ram:size=1M,sector-size=4096\"}",
	                          0);
	assert_int_equal(vdisk_sector_size(d), 4096);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_ZEROES);
	assert_true(vdisk_fua_respected(d));
	assert_true(vdisk_caps(d) & VDISK_CAP_RESIZE);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	uint64_t newcount = 0;
	struct many m = {0};
	assert_int_equal(vdisk_wait_resize(q, 256, &newcount, many_done, &m), 0);
	assert_int_equal(vdisk_resize(d, 300), 0);
	while (!m.done)
		vdisk_queue_wait(q, -1);
	assert_int_equal(newcount, 300);
	assert_int_equal(vdisk_sector_count(d), 300);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_out_of_order), cmocka_unit_test(test_many_in_flight),
	    cmocka_unit_test(test_fd_wakeup),    cmocka_unit_test(test_config_errors),
	    cmocka_unit_test(test_passthrough),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
