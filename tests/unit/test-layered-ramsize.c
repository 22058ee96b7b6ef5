/* What a RAM layer smaller than its 1 GiB chunks reserves: under strict
 * overcommit every byte of a private mapping is charged, so a small layer
 * must not map a whole chunk; and growing such a layer keeps its data and
 * reaches the new sectors. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define SS 512

/* In a child with 256 MiB of address space to spare (as strict overcommit
 * would leave): a 64 MiB layer takes writes at both ends. */
static void test_small_layer_reserves_little(void **state)
{
	(void)state;
#ifdef TU_SANITIZED
	skip(); /* sanitizers reserve terabytes of address space */
#else
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\","
		                          "\"size\":\"64M\"}]}",
		                          0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *w = tu_alloc(8 * SS), *r = tu_alloc(8 * SS);
		struct rlimit lim;
		lim.rlim_cur = lim.rlim_max = tu_vm_size() + (256ull << 20);
		if (setrlimit(RLIMIT_AS, &lim) < 0)
			_exit(3);
		const uint64_t at[] = {0, (64ull << 20) / SS - 8};
		for (int i = 0; i < 2; i++) {
			tu_pattern(w, 8 * SS, at[i], SS, 5);
			vdisk_status st = tu_write(q, at[i], w, 8 * SS, 0);
			if (st.kind != VDISK_OK) {
				fprintf(stderr, "write at %" PRIu64 ": %s\n", at[i], tu_st(st));
				_exit(1);
			}
			if (tu_read(q, at[i], r, 8 * SS).kind != VDISK_OK || memcmp(w, r, 8 * SS))
				_exit(2);
		}
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

static void write_at(struct vdisk_queue *q, uint64_t s, uint64_t seed)
{
	unsigned char *w = tu_alloc(8 * SS);
	tu_pattern(w, 8 * SS, s, SS, seed);
	assert_int_equal(tu_write(q, s, w, 8 * SS, 0).kind, VDISK_OK);
	free(w);
}

static void expect_at(struct vdisk_queue *q, uint64_t s, uint64_t seed)
{
	unsigned char *w = tu_alloc(8 * SS), *r = tu_alloc(8 * SS);
	if (seed)
		tu_pattern(w, 8 * SS, s, SS, seed);
	assert_int_equal(tu_read(q, s, r, 8 * SS).kind, VDISK_OK);
	assert_memory_equal(r, w, 8 * SS);
	free(w);
	free(r);
}

/* A layer that grows keeps what its short chunks hold and writes beyond
 * their old end; also a chunk made short after a shrink. */
static void test_grow_short_chunks(void **state)
{
	(void)state;
	const uint64_t mib = (1ull << 20) / SS, gib = 1024 * mib;
	struct vdisk *d =
	    tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"64M\"}]}", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	write_at(q, 0, 1);
	write_at(q, 60 * mib, 2);
	write_at(q, 64 * mib - 8, 3);
	assert_int_equal(vdisk_resize(d, 3 * gib), 0);
	expect_at(q, 0, 1);
	expect_at(q, 60 * mib, 2);
	expect_at(q, 64 * mib - 8, 3);
	expect_at(q, 64 * mib, 0);
	write_at(q, gib - 8, 4);
	write_at(q, 2 * gib + 5, 5);
	expect_at(q, gib - 8, 4);
	expect_at(q, 2 * gib + 5, 5);
	expect_at(q, 60 * mib, 2);

	/* 1.5 GiB: the second chunk is made short; shrink below it, grow past it */
	assert_int_equal(vdisk_resize(d, gib + gib / 2), 0);
	write_at(q, gib + 100 * mib, 6);
	assert_int_equal(vdisk_resize(d, gib / 2), 0);
	assert_int_equal(vdisk_resize(d, 3 * gib), 0);
	expect_at(q, gib + 100 * mib, 0);
	write_at(q, 2 * gib - 8, 7);
	write_at(q, gib + 600 * mib, 8);
	expect_at(q, 2 * gib - 8, 7);
	expect_at(q, gib + 600 * mib, 8);
	expect_at(q, 0, 1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_small_layer_reserves_little),
	    cmocka_unit_test(test_grow_short_chunks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
