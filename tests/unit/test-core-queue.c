/* Queue semantics: where and when callbacks run, poll / wait / fd, argument
 * checks, wait-for-resize, timers, and bounce-buffer budgets. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

static void test_callback_never_inside_submit(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	struct iovec iov = {buf, sizeof buf};
	struct tu_flag f = {0};
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, tu_flag_cb, &f), 0);
	/* the RAM disk completed it inline, but the callback waits for poll */
	assert_int_equal(f.calls, 0);
	assert_int_equal(vdisk_queue_inflight(q), 1);
	assert_int_equal(vdisk_queue_poll(q), 1);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.st.kind, VDISK_OK);
	assert_int_equal(vdisk_queue_inflight(q), 0);
	assert_int_equal(vdisk_queue_poll(q), 0);
	/* an out-of-range request also completes through the callback */
	assert_int_equal(vdisk_readv(q, 1u << 20, &iov, 1, tu_flag_cb, &f), 0);
	assert_int_equal(f.calls, 1);
	assert_int_equal(vdisk_queue_wait(q, -1), 1);
	assert_int_equal(f.calls, 2);
	assert_int_equal(f.st.kind, VDISK_ERR_ILLEGAL_BLOCK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_invalid_arguments(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	struct iovec iov = {buf, sizeof buf};
	struct tu_flag f = {0};
	assert_int_equal(vdisk_readv(q, 0, NULL, 1, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_readv(q, 0, &iov, -1, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, NULL, &f), -EINVAL);
	assert_int_equal(vdisk_writev(q, 0, &iov, 1, 0x80, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_unmap(q, 0, 1, 0x80, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_write_zeroes(q, 0, 1, 0x80, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_extents(q, 0, 1, NULL, 1, NULL, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_wait_resize(q, 0, NULL, tu_flag_cb, &f), -EINVAL);
	assert_int_equal(vdisk_queue_poll(q), 0);
	assert_int_equal(f.calls, 0);
	assert_int_equal(vdisk_queue_inflight(q), 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_fd_signals_inline_completion(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = vdisk_queue_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(vdisk_queue_fd(q), fd);
	assert_false(tu_fd_readable(fd));
	unsigned char buf[512];
	struct iovec iov = {buf, sizeof buf};
	struct tu_flag f = {0};
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, tu_flag_cb, &f), 0);
	assert_true(tu_fd_readable(fd));
	assert_int_equal(vdisk_queue_poll(q), 1);
	assert_false(tu_fd_readable(fd));
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_fd_signals_kernel_completion(void **state)
{
	(void)state;
	/* O_DIRECT reads go through io_uring: the fd must wake an event loop */
	struct vdisk *d = tu_open("file:path=@TMP@/fd.img,create=1M,direct=on", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = vdisk_queue_fd(q);
	unsigned char *buf = tu_alloc(4096);
	struct iovec iov = {buf, 4096};
	struct tu_flag f = {0};
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, tu_flag_cb, &f), 0);
	struct pollfd p = {.fd = fd, .events = POLLIN};
	for (int i = 0; i < 100 && !f.calls; i++) {
		assert_true(poll(&p, 1, 5000) == 1);
		vdisk_queue_poll(q);
	}
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.st.kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void test_wait_timeout(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* nothing in flight: returns at once */
	assert_int_equal(vdisk_queue_wait(q, -1), 0);
	/* a wait-resize that never completes: wait times out */
	uint64_t newc = 0;
	struct tu_flag f = {0};
	assert_int_equal(vdisk_wait_resize(q, vdisk_sector_count(d), &newc, tu_flag_cb, &f), 0);
	uint64_t t0 = vdisk_now_ns();
	assert_int_equal(vdisk_queue_wait(q, 20 * 1000 * 1000), 0);
	uint64_t dt = vdisk_now_ns() - t0;
	assert_true(dt >= 19 * 1000 * 1000);
	assert_int_equal(f.calls, 0);
	/* destroying the queue drops the waiter without calling it */
	vdisk_queue_destroy(q);
	assert_int_equal(f.calls, 0);
	vdisk_unref(d);
}

static void test_wait_resize_immediate(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	uint64_t newc = 0;
	struct tu_flag f = {0};
	assert_int_equal(vdisk_wait_resize(q, 5, &newc, tu_flag_cb, &f), 0);
	assert_int_equal(vdisk_queue_wait(q, -1), 1);
	assert_int_equal(newc, 2048);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

struct tctx {
	struct vdisk_timer t;
	int *order;
	int *n;
	int id;
};

static void timer_fn(struct vdisk_timer *t)
{
	struct tctx *c = (struct tctx *)t;
	c->order[(*c->n)++] = c->id;
}

static void test_timers(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int order[4], n = 0;
	struct tctx t[4];
	uint64_t now = vdisk_now_ns();
	uint64_t at[4] = {now + 30000000, now + 10000000, now + 20000000, now + 40000000};
	for (int i = 0; i < 4; i++) {
		t[i] = (struct tctx){.order = order, .n = &n, .id = i};
		vdisk_timer_start(q, &t[i].t, at[i], timer_fn);
	}
	vdisk_timer_cancel(q, &t[3].t);
	int fd = vdisk_queue_fd(q);
	struct pollfd p = {.fd = fd, .events = POLLIN};
	while (n < 3) {
		/* the event-loop fd wakes for timers too */
		assert_int_equal(poll(&p, 1, 2000), 1);
		vdisk_queue_poll(q);
	}
	assert_true(vdisk_now_ns() >= at[0]);
	assert_int_equal(n, 3);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_bounce_budget(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* a request larger than the whole budget still gets a buffer when the
	 * queue holds none... */
	void *big = vdisk_bounce_get(q, 64u << 20);
	assert_non_null(big);
	assert_int_equal((uintptr_t)big % 4096, 0);
	/* ...but nothing more while it is held */
	assert_null(vdisk_bounce_get(q, 4096));
	vdisk_bounce_put(q, big, 64u << 20);
	void *a = vdisk_bounce_get(q, 4096), *b = vdisk_bounce_get(q, 5000);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal((uintptr_t)b % 4096, 0);
	memset(b, 1, 5000);
	vdisk_bounce_put(q, a, 4096);
	vdisk_bounce_put(q, b, 5000);
	/* reused from the pool */
	assert_ptr_equal(vdisk_bounce_get(q, 4096), a);
	vdisk_bounce_put(q, a, 4096);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_plug_batches(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("file:path=@TMP@/plug.img,create=1M,direct=on", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(16 * 4096);
	struct iovec iov[16];
	struct tu_flag f[16];
	memset(f, 0, sizeof f);
	vdisk_queue_plug(q);
	for (int i = 0; i < 16; i++) {
		iov[i] = (struct iovec){buf + i * 4096, 4096};
		assert_int_equal(vdisk_readv(q, (uint64_t)i * 8, &iov[i], 1, tu_flag_cb, &f[i]), 0);
	}
	vdisk_queue_unplug(q);
	int done = 0;
	while (done < 16)
		done += vdisk_queue_wait(q, -1);
	for (int i = 0; i < 16; i++)
		assert_int_equal(f[i].calls, 1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void test_stats_in_inspect(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[4096] = {1};
	for (int i = 0; i < 10; i++)
		assert_int_equal(tu_write(q, (uint64_t)i * 8, buf, sizeof buf, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 1u << 20, buf, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	char *s = vdisk_inspect(d, VDISK_INSPECT_STATS);
	json_t *o = json_loads(s, 0, NULL);
	assert_non_null(o);
	json_t *st = json_object_get(json_array_get(json_object_get(o, "layers"), 0), "stats");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "write"), "ops")),
	                 10);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "write"), "bytes")),
	                 40960);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "read"), "errors")),
	                 1);
	json_t *h = json_object_get(json_object_get(st, "write"), "latency_log2_ns");
	json_int_t total = 0;
	size_t i;
	json_t *b;
	json_array_foreach (h, i, b)
		total += json_integer_value(json_array_get(b, 1));
	assert_int_equal(total, 10);
	json_decref(o);
	free(s);
	/* statistics survive the queue */
	vdisk_queue_destroy(q);
	s = vdisk_inspect(d, VDISK_INSPECT_STATS);
	assert_non_null(strstr(s, "\"ops\":10"));
	free(s);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_callback_never_inside_submit),
	    cmocka_unit_test(test_invalid_arguments),
	    cmocka_unit_test(test_fd_signals_inline_completion),
	    cmocka_unit_test(test_fd_signals_kernel_completion),
	    cmocka_unit_test(test_wait_timeout),
	    cmocka_unit_test(test_wait_resize_immediate),
	    cmocka_unit_test(test_timers),
	    cmocka_unit_test(test_bounce_budget),
	    cmocka_unit_test(test_plug_batches),
	    cmocka_unit_test(test_stats_in_inspect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
