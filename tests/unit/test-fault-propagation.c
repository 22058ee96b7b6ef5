/* Errors are never swallowed: a fault layer at the bottom of each decorator
 * stack injects each error kind on each operation, and the operation at the
 * top must fail with that kind (and errno, and medium detail).  A lost write
 * below is the one thing a stack cannot see, and the test shows that too. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define FAULT "{\"type\":\"fault\",\"id\":\"f\",\"inner\":\"ram:size=1M\"}"
#define KEY                                                                \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" \
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

static const struct {
	const char *name, *spec;
	bool zeroes_are_writes; /* write-zeroes reaches the fault layer as writes */
} stacks[] = {
    {"fault", FAULT, false},
    {"delay", "{\"type\":\"delay\",\"write\":\"10us\",\"inner\":" FAULT "}", false},
    {"crypt", "{\"type\":\"crypt\",\"key-hex\":\"" KEY "\",\"inner\":" FAULT "}", true},
    {"prwrap", "{\"type\":\"prwrap\",\"inner\":" FAULT "}", false},
    {"crashsim", "{\"type\":\"crashsim\",\"inner\":" FAULT "}", false},
    {"striped-1", "{\"type\":\"striped\",\"disks\":[" FAULT "]}", false},
    {"striped-2", "{\"type\":\"striped\",\"chunk-size\":512,\"disks\":[" FAULT ",\"ram:size=1M\"]}",
     false},
    {"all",
     "{\"type\":\"delay\",\"inner\":{\"type\":\"prwrap\",\"inner\":{\"type\":\"crypt\","
     "\"key-hex\":\"" KEY "\",\"inner\":{\"type\":\"striped\",\"chunk-size\":512,\"disks\":"
     "[{\"type\":\"crashsim\",\"inner\":" FAULT "},\"ram:size=1M\"]}}}}",
     true},
};

static const char *const ops[] = {"read", "write", "fua-write", "flush", "unmap", "write-zeroes"};

static const struct {
	const char *rule; /* the error part of the rule */
	enum vdisk_error kind;
	int errnum;
	enum vdisk_medium medium;
} errors[] = {
    {"\"error\":\"io\",\"errno\":\"ENOSPC\"", VDISK_ERR_IO, ENOSPC, VDISK_MEDIUM_NONE},
    {"\"error\":\"medium\",\"medium\":\"guard-check\"", VDISK_ERR_MEDIUM, EIO,
     VDISK_MEDIUM_GUARD_CHECK},
    {"\"error\":\"reservation-conflict\"", VDISK_ERR_RESERVATION_CONFLICT, 0, VDISK_MEDIUM_NONE},
    {"\"error\":\"aborted-preempt\"", VDISK_ERR_ABORTED_PREEMPT, 0, VDISK_MEDIUM_NONE},
    {"\"error\":\"invalid-input\"", VDISK_ERR_INVALID_INPUT, 0, VDISK_MEDIUM_NONE},
    {"\"error\":\"illegal-block\"", VDISK_ERR_ILLEGAL_BLOCK, 0, VDISK_MEDIUM_NONE},
};

static vdisk_status run_op(struct vdisk_queue *q, int op, unsigned char *buf)
{
	switch (op) {
	case 0: return tu_read(q, 0, buf, 4096);
	case 1: return tu_write(q, 0, buf, 4096, 0);
	case 2: return tu_write(q, 0, buf, 4096, VDISK_IO_FUA);
	case 3: return tu_flush(q);
	case 4: return tu_unmap(q, 0, 8);
	default: return tu_write_zeroes(q, 0, 8, 0);
	}
}

static void test_every_error_comes_up(void **state)
{
	(void)state;
	unsigned char *buf = tu_alloc(4096);
	int failures = 0, checks = 0;
	for (size_t s = 0; s < sizeof stacks / sizeof *stacks; s++) {
		struct vdisk *d = tu_open(stacks[s].spec, 0);
		struct vdisk *f = vdisk_find(d, "f");
		assert_non_null(f);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		for (size_t op = 0; op < sizeof ops / sizeof *ops; op++) {
			/* unmap on a layer that narrowed it away never reaches below */
			if (op == 4 && vdisk_unmap_behavior(d) == VDISK_UNMAP_IGNORED)
				continue;
			for (size_t e = 0; e < sizeof errors / sizeof *errors; e++) {
				const char *rop =
				    op == 5 && stacks[s].zeroes_are_writes ? "write" : ops[op];
				char rule[256];
				snprintf(rule, sizeof rule, "{\"op\":\"%s\",\"once\":true,%s}", rop,
				         errors[e].rule);
				assert_int_equal(vdisk_ctl(f, "clear", NULL, NULL), 0);
				assert_int_equal(vdisk_ctl(f, "add", rule, NULL), 0);
				vdisk_status st = run_op(q, (int)op, buf);
				checks++;
				if (st.kind != errors[e].kind ||
				    (errors[e].errnum && st.errnum != errors[e].errnum) ||
				    st.medium != errors[e].medium) {
					char b[128];
					printf("FAIL %s: %s with %s came up as %s\n",
					       stacks[s].name, ops[op], errors[e].rule,
					       vdisk_status_str(st, b, sizeof b));
					failures++;
				}
			}
		}
		vdisk_queue_destroy(q);
		vdisk_unref(f);
		vdisk_unref(d);
	}
	printf("%d checks\n", checks);
	free(buf);
	assert_int_equal(failures, 0);
}

/* A lost write is acknowledged; only reading back shows it. */
static void test_lost_write_is_invisible_until_read(void **state)
{
	(void)state;
	struct vdisk *d = tu_open(stacks[7].spec, 0);
	struct vdisk *f = vdisk_find(d, "f");
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *w = tu_alloc(512), *r = tu_alloc(512);
	tu_pattern(w, 512, 0, 512, 1);
	assert_int_equal(tu_write(q, 0, w, 512, 0).kind, VDISK_OK);
	assert_int_equal(
	    vdisk_ctl(f, "add", "{\"op\":\"write\",\"effect\":\"lost\",\"once\":true}", NULL), 0);
	tu_pattern(w, 512, 0, 512, 2);
	assert_int_equal(tu_write(q, 0, w, 512, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, r, 512).kind, VDISK_OK);
	assert_memory_not_equal(w, r, 512);
	tu_pattern(w, 512, 0, 512, 1);
	assert_memory_equal(w, r, 512);
	vdisk_queue_destroy(q);
	vdisk_unref(f);
	vdisk_unref(d);
	free(w);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_error_comes_up),
	    cmocka_unit_test(test_lost_write_is_invisible_until_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
