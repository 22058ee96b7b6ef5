/* Eject through the decorators.  No base backend can eject, so a test driver
 * over RAM that can ("ejectable", counting its ejects, failing them on
 * request) stands below: every pass-through decorator (delay, prwrap, fault,
 * crashsim, crypt), alone and stacked, declares VDISK_CAP_EJECT exactly when
 * the disk below does, passes eject down and brings its outcome back up; over
 * a disk that cannot eject it says so.  prwrap treats eject as a write (the
 * reservation decides), crashsim refuses it while crashed, and striped never
 * ejects (its members are not one medium). */
#include <errno.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define KEY "\"key-hex\":\"" HALF1 HALF2 "\""
#define HALF1 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HALF2 "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

static atomic_uint ejects;   /* every ejectable disk's ejects */
static atomic_bool fail_now; /* ejects fail with EBUSY while set */

static int ej_open(struct vdisk *d, json_t *cfg)
{
	struct vdisk *in = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!in)
		return -1;
	vdisk_set_priv(d, in);
	vdisk_meta_inherit(d, in);
	vdisk_meta(d)->caps |= VDISK_CAP_EJECT;
	return 0;
}
static int ej_fwd(struct vdisk_req *r)
{
	return vdisk_req_forward(r, vdisk_priv(r->disk));
}
static int ej_eject(struct vdisk_req *r)
{
	atomic_fetch_add(&ejects, 1);
	vdisk_req_complete(r, atomic_load(&fail_now) ? vdisk_status_io(EBUSY) : vdisk_status_ok());
	return 0;
}
static const struct vdisk_driver ej_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "ejectable",
    .open = ej_open,
    .read = ej_fwd,
    .write = ej_fwd,
    .flush = ej_fwd,
    .eject = ej_eject,
};

static vdisk_status eject(struct vdisk *d)
{
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	vdisk_status st = tu_eject(q);
	vdisk_queue_destroy(q);
	return st;
}

static int setup(void **state)
{
	(void)state;
	static bool registered;
	if (!registered)
		assert_int_equal(vdisk_register_driver(&ej_driver), 0);
	registered = true;
	atomic_store(&ejects, 0);
	atomic_store(&fail_now, false);
	return 0;
}

/* The decorators, with %s for the inner spec. */
static const char *const decorators[] = {
    "{\"type\":\"delay\",\"read\":\"1ms\",\"inner\":%s}",
    "{\"type\":\"prwrap\",\"inner\":%s}",
    "{\"type\":\"fault\",\"rules\":[{\"op\":\"any\",\"every\":2}],\"inner\":%s}",
    "{\"type\":\"crashsim\",\"inner\":%s}",
    "{\"type\":\"crypt\"," KEY ",\"inner\":%s}",
};
#define NDECO (sizeof decorators / sizeof *decorators)

static struct vdisk *open_over(const char *deco, const char *inner)
{
	char spec[1024];
	snprintf(spec, sizeof spec, deco, inner);
	return tu_open(spec, 0);
}

static const char *const ejectable = "{\"type\":\"ejectable\",\"inner\":\"ram:size=1M\"}";

static void test_forwarded(void **state)
{
	(void)state;
	for (unsigned i = 0; i < NDECO; i++) {
		struct vdisk *d = open_over(decorators[i], ejectable);
		if (!(vdisk_caps(d) & VDISK_CAP_EJECT))
			fail_msg("%s does not declare eject over a disk that can", vdisk_type(d));
		unsigned before = atomic_load(&ejects);
		vdisk_status st = eject(d);
		if (!vdisk_ok(st) || atomic_load(&ejects) != before + 1)
			fail_msg("%s: eject gave %s, %u ejects below", vdisk_type(d), tu_st(st),
			         atomic_load(&ejects) - before);
		/* the outcome below comes up unchanged */
		atomic_store(&fail_now, true);
		st = eject(d);
		atomic_store(&fail_now, false);
		if (st.kind != VDISK_ERR_IO || st.errnum != EBUSY)
			fail_msg("%s: a failed eject came up as %s", vdisk_type(d), tu_st(st));
		vdisk_unref(d);
	}
}

static void test_not_declared_over_ram(void **state)
{
	(void)state;
	for (unsigned i = 0; i < NDECO; i++) {
		struct vdisk *d = open_over(decorators[i], "\"ram:size=1M\"");
		if (vdisk_caps(d) & VDISK_CAP_EJECT)
			fail_msg("%s declares eject over a disk that cannot", vdisk_type(d));
		vdisk_status st = eject(d);
		if (st.kind != VDISK_ERR_UNSUPPORTED_EJECT)
			fail_msg("%s over ram: eject gave %s", vdisk_type(d), tu_st(st));
		vdisk_unref(d);
	}
}

/* All five stacked: the eject reaches the bottom once. */
static void test_stacked(void **state)
{
	(void)state;
	char a[4096], b[4096];
	snprintf(a, sizeof a, "%s", ejectable);
	for (unsigned i = 0; i < NDECO; i++) {
		snprintf(b, sizeof b, decorators[i], a);
		memcpy(a, b, sizeof a);
	}
	struct vdisk *d = tu_open(a, 0);
	assert_true(vdisk_caps(d) & VDISK_CAP_EJECT);
	assert_int_equal(eject(d).kind, VDISK_OK);
	assert_int_equal(atomic_load(&ejects), 1);
	vdisk_unref(d);
}

/* prwrap: eject is a write; another initiator's write-exclusive reservation
 * refuses it without passing it down. */
static void test_prwrap_reservation(void **state)
{
	(void)state;
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"prwrap\",\"domain\":\"ej\",\"host-id\":\"%s\",\"inner\":%s}",
	         "00000000000000000000000000000001", ejectable);
	struct vdisk *a = tu_open(spec, 0);
	snprintf(spec, sizeof spec,
	         "{\"type\":\"prwrap\",\"domain\":\"ej\",\"host-id\":\"%s\",\"inner\":%s}",
	         "00000000000000000000000000000002", ejectable);
	struct vdisk *b = tu_open(spec, 0);
	assert_int_equal(vdisk_pr_register(a, 0, 0xA, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 0xA, VDISK_PR_WRITE_EXCLUSIVE).kind, VDISK_OK);
	assert_int_equal(eject(b).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(atomic_load(&ejects), 0);
	assert_int_equal(eject(a).kind, VDISK_OK);
	assert_int_equal(atomic_load(&ejects), 1);
	assert_int_equal(vdisk_pr_release(a, 0xA, VDISK_PR_WRITE_EXCLUSIVE).kind, VDISK_OK);
	assert_int_equal(eject(b).kind, VDISK_OK);
	vdisk_unref(a);
	vdisk_unref(b);
}

/* crashsim: a crashed disk refuses eject like everything else until restart. */
static void test_crashsim_crashed(void **state)
{
	(void)state;
	char spec[1024];
	snprintf(spec, sizeof spec, "{\"type\":\"crashsim\",\"inner\":%s}", ejectable);
	struct vdisk *d = tu_open(spec, 0);
	char *res = NULL;
	assert_int_equal(vdisk_ctl(d, "crash", "{\"seed\":1}", &res), 0);
	free(res);
	vdisk_status st = eject(d);
	assert_int_not_equal(st.kind, VDISK_OK);
	assert_int_equal(atomic_load(&ejects), 0);
	res = NULL;
	assert_int_equal(vdisk_ctl(d, "restart", NULL, &res), 0);
	free(res);
	assert_int_equal(eject(d).kind, VDISK_OK);
	assert_int_equal(atomic_load(&ejects), 1);
	vdisk_unref(d);
}

/* striped: never, even when every member can. */
static void test_striped_refuses(void **state)
{
	(void)state;
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"striped\",\"chunk-size\":\"4k\",\"disks\":[%s,%s]}", ejectable,
	         ejectable);
	struct vdisk *d = tu_open(spec, 0);
	assert_false(vdisk_caps(d) & VDISK_CAP_EJECT);
	assert_int_equal(eject(d).kind, VDISK_ERR_UNSUPPORTED_EJECT);
	assert_int_equal(atomic_load(&ejects), 0);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_forwarded, setup),
	    cmocka_unit_test_setup(test_not_declared_over_ram, setup),
	    cmocka_unit_test_setup(test_stacked, setup),
	    cmocka_unit_test_setup(test_prwrap_reservation, setup),
	    cmocka_unit_test_setup(test_crashsim_crashed, setup),
	    cmocka_unit_test_setup(test_striped_refuses, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
