/* The ram backend: sparse memory, resize with wait-for-resize, zeros after a
 * shrink and grow, extents, partial unmaps. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

static json_int_t allocated(struct vdisk *d)
{
	char *s = vdisk_inspect(d, 0);
	json_t *o = json_loads(s, 0, NULL);
	json_int_t v = json_integer_value(
	    json_object_get(json_array_get(json_object_get(o, "layers"), 0), "allocated_bytes"));
	json_decref(o);
	free(s);
	return v;
}

static void test_sparse(void **state)
{
	(void)state;
	/* 64 GiB of disk costs nothing until written */
	struct vdisk *d = tu_open("ram:size=64G,huge-pages=off", 0);
	assert_int_equal(allocated(d), 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	memset(buf, 7, sizeof buf);
	assert_int_equal(tu_write(q, 123456789, buf, sizeof buf, 0).kind, VDISK_OK);
	assert_int_equal(allocated(d), 4096);
	memset(buf, 0, sizeof buf);
	assert_int_equal(tu_read(q, 123456789, buf, sizeof buf).kind, VDISK_OK);
	assert_int_equal(buf[0], 7);
	/* reading never-written sectors allocates nothing */
	assert_int_equal(tu_read(q, 99999999, buf, sizeof buf).kind, VDISK_OK);
	assert_int_equal(buf[0], 0);
	assert_int_equal(allocated(d), 4096);
	assert_int_equal(tu_unmap(q, 123456784, 8).kind, VDISK_OK);
	assert_int_equal(allocated(d), 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_extents(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[4096];
	memset(buf, 1, sizeof buf);
	assert_int_equal(tu_write(q, 64, buf, 4096, 0).kind, VDISK_OK); /* page 8 */
	assert_int_equal(tu_write(q, 80, buf, 512, 0).kind, VDISK_OK);  /* page 10 */
	struct vdisk_extent e[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 2048, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 5);
	const struct {
		uint64_t s, c;
		uint32_t f;
	} want[5] = {{0, 64, 3}, {64, 8, 0}, {72, 8, 3}, {80, 8, 0}, {88, 2048 - 88, 3}};
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(e[i].sector, want[i].s);
		assert_int_equal(e[i].count, want[i].c);
		assert_int_equal(e[i].flags, want[i].f);
	}
	/* a limit on the number of extents covers a prefix */
	assert_int_equal(tu_extents(q, 0, 2048, e, 2, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[1].sector + e[1].count, 72);
	/* starting inside a run */
	assert_int_equal(tu_extents(q, 66, 3, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].count, 3);
	assert_int_equal(e[0].flags, 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_unmap_across_a_page_boundary(void **state)
{
	(void)state;
	/* sectors 20..26 cross from page 2 into page 3 without covering either;
	 * only page 3 holds data */
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	memset(buf, 0x77, sizeof buf);
	assert_int_equal(tu_write(q, 24, buf, sizeof buf, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 20, 7).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 24, buf, sizeof buf).kind, VDISK_OK);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_partial_unmap_zeroes(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[8192], out[8192];
	memset(buf, 0xAA, sizeof buf);
	assert_int_equal(tu_write(q, 0, buf, sizeof buf, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 3, 7).kind, VDISK_OK); /* bytes 1536..5119, two pages */
	assert_int_equal(tu_read(q, 0, out, sizeof out).kind, VDISK_OK);
	for (size_t i = 0; i < sizeof out; i++) {
		bool zero = i >= 1536 && i < 5120;
		if (out[i] != (zero ? 0 : 0xAA))
			fail_msg("byte %zu is %#x", i, out[i]);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

struct waiter {
	struct vdisk *d;
	uint64_t old, got;
	bool done;
	vdisk_status st;
	pthread_barrier_t *ready;
};

static void wcb(void *o, vdisk_status st)
{
	struct waiter *w = o;
	w->done = true;
	w->st = st;
}

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	struct vdisk_queue *q = vdisk_queue_create(w->d, NULL);
	vdisk_wait_resize(q, w->old, &w->got, wcb, w);
	pthread_barrier_wait(w->ready);
	while (!w->done)
		vdisk_queue_wait(q, -1);
	vdisk_queue_destroy(q);
	return NULL;
}

static void test_resize_wakes_every_waiter(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	pthread_barrier_t ready;
	pthread_barrier_init(&ready, NULL, 4);
	struct waiter w[3];
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		w[i] = (struct waiter){.d = d, .old = 2048, .ready = &ready};
		pthread_create(&th[i], NULL, wait_thread, &w[i]);
	}
	pthread_barrier_wait(&ready);
	assert_int_equal(vdisk_resize(d, 4096), 0);
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		assert_true(w[i].done);
		assert_int_equal(w[i].st.kind, VDISK_OK);
		assert_int_equal(w[i].got, 4096);
	}
	pthread_barrier_destroy(&ready);
	vdisk_unref(d);
}

static void test_shrink_then_grow_reads_zeros(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(1 << 20);
	memset(buf, 0x33, 1 << 20);
	assert_int_equal(tu_write(q, 0, buf, 1 << 20, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_resize(d, 1000), 0); /* not on a page boundary */
	assert_int_equal(vdisk_sector_count(d), 1000);
	assert_int_equal(tu_read(q, 1000, buf, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_write(q, 999, buf, 1024, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(vdisk_resize(d, 2048), 0);
	memset(buf, 0xFF, 1 << 20);
	assert_int_equal(tu_read(q, 0, buf, 1 << 20).kind, VDISK_OK);
	for (size_t i = 0; i < (1 << 20); i++) {
		unsigned char want = i < 1000 * 512 ? 0x33 : 0;
		if (buf[i] != want)
			fail_msg("byte %zu is %#x, expected %#x", i, buf[i], want);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void test_resize_limits(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M,max-size=4M", 0);
	assert_int_equal(vdisk_resize(d, 8192), 0);
	assert_int_equal(vdisk_resize(d, 8193), -1);
	assert_non_null(strstr(vdisk_errmsg(), "max-size"));
	assert_int_equal(vdisk_resize(d, 0), -1);
	assert_int_equal(vdisk_sector_count(d), 8192);
	vdisk_unref(d);
	d = tu_open("file:path=@TMP@/r.img,create=1M", 0);
	assert_int_equal(vdisk_resize(d, 4096), -1);
	assert_non_null(strstr(vdisk_errmsg(), "cannot be resized"));
	vdisk_unref(d);
}

static void test_sector_4096(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M,sector-size=4096", 0);
	assert_int_equal(vdisk_sector_count(d), 256);
	assert_int_equal(vdisk_physical_sector_size(d), 4096);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(8192);
	memset(buf, 9, 8192);
	assert_int_equal(tu_write(q, 254, buf, 8192, 0).kind, VDISK_OK);
	assert_int_equal(tu_write(q, 255, buf, 8192, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_read(q, 0, buf, 512).kind, VDISK_ERR_INVALID_INPUT);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sparse),
	    cmocka_unit_test(test_extents),
	    cmocka_unit_test(test_partial_unmap_zeroes),
	    cmocka_unit_test(test_unmap_across_a_page_boundary),
	    cmocka_unit_test(test_resize_wakes_every_waiter),
	    cmocka_unit_test(test_shrink_then_grow_reads_zeros),
	    cmocka_unit_test(test_resize_limits),
	    cmocka_unit_test(test_sector_4096),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
