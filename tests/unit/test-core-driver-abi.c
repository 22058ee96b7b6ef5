/* The driver ABI: a table built against an older backend.h (a smaller
 * struct_size) is registered with every member it did not have read as NULL, even
 * when the memory after its end holds something else; the request's public
 * layout is what the header promises. */
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

static unsigned poison_calls;

static int old_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"size", "secret", NULL};
	uint64_t size = 1 << 20;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_size(cfg, "size", &size) < 0)
		return -1;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->physical_sector_size = 512;
	m->sector_count = size / 512;
	return 0;
}

static int old_read(struct vdisk_req *r)
{
	vdisk_iov_memset(r->iov, r->iovcnt, 0, 0x5A, r->len);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int poison_inspect(struct vdisk *d, json_t *obj)
{
	poison_calls++;
	json_object_set_new(obj, "poison", json_true());
	return 0;
}
static int poison_ctl(struct vdisk *d, const char *op, json_t *args, json_t **result)
{
	poison_calls++;
	return 0;
}
static int poison_check(struct vdisk *d, struct vdisk_check *chk)
{
	poison_calls++;
	vdisk_check_problem(chk, "poison");
	return 0;
}
static const char *const poison_secrets[] = {"secret", NULL};
static vdisk_status poison_pr_caps(struct vdisk *d, struct vdisk_pr_capabilities *caps)
{
	poison_calls++;
	return vdisk_status_ok();
}
static const struct vdisk_pr_ops poison_pr = {.capabilities = poison_pr_caps};

/* A full table whose struct_size says it ends just before `inspect`: what a
 * driver compiled against a header without inspect, ctl, secret_keys, pr and
 * check would pass, followed by whatever happens to be in memory after it. */
static struct vdisk_driver old_table(const char *name, size_t size)
{
	struct vdisk_driver t = {
	    .struct_size = size,
	    .name = name,
	    .description = "test: a table from an older header",
	    .open = old_open,
	    .read = old_read,
	    .inspect = poison_inspect,
	    .ctl = poison_ctl,
	    .secret_keys = poison_secrets,
	    .pr = &poison_pr,
	    .check = poison_check,
	};
	return t;
}

static void test_older_table_members_are_null(void **state)
{
	(void)state;
	struct vdisk_driver t = old_table("oldabi", offsetof(struct vdisk_driver, inspect));
	assert_int_equal(vdisk_register_driver(&t), 0);
	/* the registry keeps its own copy: the caller's table may go away */
	memset(&t, 0xA5, sizeof t);

	poison_calls = 0;
	struct vdisk *d = tu_open("oldabi:size=64k,secret=hunter2", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	assert_int_equal(tu_read(q, 3, buf, sizeof buf).kind, VDISK_OK);
	assert_int_equal(buf[0], 0x5A);
	vdisk_queue_destroy(q);

	/* ctl: absent */
	assert_int_equal(vdisk_ctl(d, "anything", NULL, NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "oldabi"));
	/* inspect: the core's part only, and no secret key known */
	char *js = vdisk_inspect(d, 0);
	assert_non_null(js);
	assert_null(strstr(js, "poison"));
	assert_non_null(strstr(js, "hunter2"));
	free(js);
	/* check: nothing for this layer to check */
	char *report = NULL;
	assert_int_equal(vdisk_check(d, 0, &report), 0);
	assert_null(report ? strstr(report, "poison") : NULL);
	free(report);
	/* reservations: the layer has none */
	struct vdisk_pr_capabilities caps;
	assert_int_not_equal(vdisk_pr_capabilities(d, &caps).kind, VDISK_OK);
	assert_int_equal(poison_calls, 0);
	vdisk_unref(d);
}

static void test_full_table_members_are_used(void **state)
{
	(void)state;
	/* the same table at the current size: the members are called */
	struct vdisk_driver t = old_table("newabi", sizeof(struct vdisk_driver));
	assert_int_equal(vdisk_register_driver(&t), 0);
	poison_calls = 0;
	struct vdisk *d = tu_open("newabi:size=64k,secret=hunter2", 0);
	char *js = vdisk_inspect(d, 0);
	assert_non_null(strstr(js, "poison"));
	assert_null(strstr(js, "hunter2"));
	free(js);
	assert_int_equal(vdisk_ctl(d, "anything", NULL, NULL), 0);
	assert_int_equal(poison_calls, 2);
	vdisk_unref(d);
}

static void test_table_without_read_refused(void **state)
{
	(void)state;
	struct vdisk_driver t = old_table("tiny", offsetof(struct vdisk_driver, read));
	assert_int_equal(vdisk_register_driver(&t), -1);
	assert_non_null(strstr(vdisk_errmsg(), "read"));
	assert_null(vdisk_open("tiny:", 0));
}

static void test_request_layout(void **state)
{
	(void)state;
	/* what drivers compiled against 0.1 read stays where it was */
	assert_int_equal(offsetof(struct vdisk_req, disk), 0);
	assert_true(offsetof(struct vdisk_req, internal) > offsetof(struct vdisk_req, opaque));
	assert_true(offsetof(struct vdisk_req, ctx) >=
	            offsetof(struct vdisk_req, internal) + sizeof(struct vdisk_req_internal));
	assert_int_equal(offsetof(struct vdisk_req, ctx) % 64, 0);
}

static void test_queue_opts(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("{\"type\":\"delay\",\"inner\":\"ram:size=1M\"}", 0);
	/* options from a header that had only struct_size: depth reads as 0 */
	struct vdisk_queue_opts o = {.struct_size = sizeof(size_t), .depth = 1u << 30};
	struct vdisk_queue *q = vdisk_queue_create(d, &o);
	assert_non_null(q);
	vdisk_queue_destroy(q);
	/* a depth reserved up front */
	o.struct_size = sizeof o;
	o.depth = 100;
	q = vdisk_queue_create(d, &o);
	assert_non_null(q);
	unsigned char buf[4096];
	assert_int_equal(tu_read(q, 0, buf, sizeof buf).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	/* an absurd one is refused, naming it */
	o.depth = 1u << 30;
	assert_null(vdisk_queue_create(d, &o));
	assert_non_null(strstr(vdisk_errmsg(), "depth"));
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_older_table_members_are_null),
	    cmocka_unit_test(test_full_table_members_are_used),
	    cmocka_unit_test(test_table_without_read_refused),
	    cmocka_unit_test(test_request_layout),
	    cmocka_unit_test(test_queue_opts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
