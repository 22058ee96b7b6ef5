/* prwrap and I/O: the SPC-4 / NVMe table of what each initiator may do under
 * each reservation type (holder, other registrant, unregistered; reads,
 * writes and the write-class commands), table-driven; preempt-and-abort
 * aborting I/O in flight; two initiators clustering over one file; the
 * reservations seen through other decorators; configuration errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

enum { A, B, C };
enum { OP_READ, OP_WRITE, OP_FUA_WRITE, OP_FLUSH, OP_UNMAP, OP_WRITE_ZEROES, OP_EXTENTS, NOPS };
static const char *const op_names[NOPS] = {"read",  "write",        "fua-write", "flush",
                                           "unmap", "write-zeroes", "extents"};
static const bool op_is_read[NOPS] = {true, false, false, false, false, false, true};

/* "rw": reads and writes allowed; "r": reads only; "-": nothing.  Rows:
 * reservation type (0 = none); columns: holder A, registrant B, unregistered
 * C.  From SPC-4 5.12.1 (table 64) and SBC-4 4.17; NVMe 1.4 8.8.4. */
static const char *const allowed[7][3] = {
    {"rw", "rw", "rw"}, /* no reservation */
    {"rw", "r", "r"},   /* write exclusive */
    {"rw", "-", "-"},   /* exclusive access */
    {"rw", "rw", "r"},  /* write exclusive, registrants only */
    {"rw", "rw", "-"},  /* exclusive access, registrants only */
    {"rw", "rw", "r"},  /* write exclusive, all registrants */
    {"rw", "rw", "-"},  /* exclusive access, all registrants */
};

static struct vdisk *initiator(const char *domain, const char *host, const char *inner)
{
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"prwrap\",\"domain\":\"%s\",\"host-id\":\"%s\",\"inner\":%s}", domain,
	         host, inner);
	return tu_open(spec, 0);
}

static int do_op(struct vdisk_queue *q, int op, unsigned char *buf)
{
	struct vdisk_extent ext[4];
	unsigned n;
	switch (op) {
	case OP_READ: return tu_read(q, 8, buf, 4096).kind;
	case OP_WRITE: return tu_write(q, 8, buf, 4096, 0).kind;
	case OP_FUA_WRITE: return tu_write(q, 8, buf, 4096, VDISK_IO_FUA).kind;
	case OP_FLUSH: return tu_flush(q).kind;
	case OP_UNMAP: return tu_unmap(q, 8, 8).kind;
	case OP_WRITE_ZEROES: return tu_write_zeroes(q, 8, 8, 0).kind;
	default: return tu_extents(q, 0, 64, ext, 4, &n).kind;
	}
}

static void test_access_table(void **state)
{
	(void)state;
	static const char *const hosts[3] = {"0a0a0a0a0a0a0a0a", "0b0b0b0b0b0b0b0b",
	                                     "0c0c0c0c0c0c0c0c"};
	int failures = 0;
	unsigned char *buf = tu_alloc(4096);
	for (int t = 0; t <= 6; t++) {
		char domain[32], inner[512];
		snprintf(domain, sizeof domain, "access-%d", t);
		/* shared storage: three writers of one file, which the image
		 * lock would refuse (the reservations are what orders them) */
		snprintf(inner, sizeof inner,
		         "{\"type\":\"file\",\"path\":\"%s/shared-%d.img\",\"create\":\"1M\","
		         "\"locking\":false}",
		         tu_tmpdir(), t);
		struct vdisk *d[3];
		struct vdisk_queue *q[3];
		for (int w = 0; w < 3; w++) {
			d[w] = initiator(domain, hosts[w], inner);
			q[w] = vdisk_queue_create(d[w], NULL);
		}
		assert_int_equal(vdisk_pr_register(d[A], 0, 0xA, 0).kind, VDISK_OK);
		assert_int_equal(vdisk_pr_register(d[B], 0, 0xB, 0).kind, VDISK_OK);
		if (t)
			assert_int_equal(vdisk_pr_reserve(d[A], 0xA, (enum vdisk_pr_type)t).kind,
			                 VDISK_OK);
		for (int w = 0; w < 3; w++) {
			for (int op = 0; op < NOPS; op++) {
				bool ok = strchr(allowed[t][w], op_is_read[op] ? 'r' : 'w') != NULL;
				int want = ok ? VDISK_OK : VDISK_ERR_RESERVATION_CONFLICT;
				int got = do_op(q[w], op, buf);
				if (got != want) {
					printf("FAIL %s: initiator %c %s: got %s, expected %s\n",
					       vdisk_pr_type_name((enum vdisk_pr_type)t), 'A' + w,
					       op_names[op],
					       vdisk_error_name((enum vdisk_error)got),
					       vdisk_error_name((enum vdisk_error)want));
					failures++;
				}
			}
		}
		/* released: everyone may do everything again */
		if (t) {
			assert_int_equal(vdisk_pr_release(d[A], 0xA, (enum vdisk_pr_type)t).kind,
			                 VDISK_OK);
			for (int w = 0; w < 3; w++)
				for (int op = 0; op < NOPS; op++)
					if (do_op(q[w], op, buf) != VDISK_OK)
						failures++;
		}
		for (int w = 0; w < 3; w++) {
			vdisk_queue_destroy(q[w]);
			vdisk_unref(d[w]);
		}
	}
	free(buf);
	assert_int_equal(failures, 0);
}

/* Access follows registration changes at once. */
static void test_access_follows_state(void **state)
{
	(void)state;
	const char *inner = "\"ram:size=1M\"";
	struct vdisk *a = initiator("follow", "0000000000000001", inner);
	struct vdisk *b = initiator("follow", "0000000000000002", inner);
	struct vdisk_queue *qb = vdisk_queue_create(b, NULL);
	unsigned char *buf = tu_alloc(4096);
	assert_int_equal(vdisk_pr_register(a, 0, 1, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_register(b, 0, 2, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 1, VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY).kind,
	                 VDISK_OK);
	assert_int_equal(do_op(qb, OP_WRITE, buf), VDISK_OK);
	assert_int_equal(vdisk_pr_register(b, 2, 0, 0).kind, VDISK_OK);
	assert_int_equal(do_op(qb, OP_READ, buf), VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(vdisk_pr_register(b, 0, 3, 0).kind, VDISK_OK);
	assert_int_equal(do_op(qb, OP_READ, buf), VDISK_OK);
	/* the holder leaves: a single-holder reservation ends */
	assert_int_equal(vdisk_pr_register(a, 1, 0, 0).kind, VDISK_OK);
	struct vdisk_pr_report rep;
	assert_int_equal(vdisk_pr_report(b, &rep, NULL, 0).kind, VDISK_OK);
	assert_int_equal(rep.type, VDISK_PR_NONE);
	vdisk_queue_destroy(qb);
	vdisk_unref(a);
	vdisk_unref(b);
	free(buf);
}

struct io {
	int done;
	vdisk_status st;
};
static void io_done(void *o, vdisk_status st)
{
	struct io *io = o;
	io->done++;
	io->st = st;
}

/* B preempts A with abort while A's read and write are in flight (a delay
 * layer below keeps them there): they complete with aborted-preempt, and A,
 * now unregistered, meets reservation conflicts. */
static void test_preempt_and_abort(void **state)
{
	(void)state;
	const char *inner = "{\"type\":\"delay\",\"read\":\"50ms\",\"write\":\"50ms\","
	                    "\"inner\":\"ram:size=1M\"}";
	struct vdisk *a = initiator("abort", "00000000000000aa", inner);
	struct vdisk *b = initiator("abort", "00000000000000bb", inner);
	struct vdisk_queue *qa = vdisk_queue_create(a, NULL);
	unsigned char *buf = tu_alloc(8192);
	struct iovec r = {buf, 4096}, w = {buf + 4096, 4096};
	assert_int_equal(vdisk_pr_register(a, 0, 0xA, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_register(b, 0, 0xB, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 0xA, VDISK_PR_EXCLUSIVE_ACCESS).kind, VDISK_OK);
	struct io ir = {0}, iw = {0};
	assert_int_equal(vdisk_readv(qa, 0, &r, 1, io_done, &ir), 0);
	assert_int_equal(vdisk_writev(qa, 8, &w, 1, 0, io_done, &iw), 0);
	vdisk_queue_poll(qa);
	assert_int_equal(vdisk_pr_preempt(b, 0xB, 0xA, VDISK_PR_EXCLUSIVE_ACCESS, true).kind,
	                 VDISK_OK);
	while (vdisk_queue_inflight(qa))
		vdisk_queue_wait(qa, -1);
	assert_int_equal(ir.st.kind, VDISK_ERR_ABORTED_PREEMPT);
	assert_int_equal(iw.st.kind, VDISK_ERR_ABORTED_PREEMPT);
	assert_int_equal(tu_read(qa, 0, buf, 512).kind, VDISK_ERR_RESERVATION_CONFLICT);
	/* a preempt without abort leaves I/O in flight alone */
	assert_int_equal(vdisk_pr_register(a, 0, 0xA, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_release(b, 0xB, VDISK_PR_EXCLUSIVE_ACCESS).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 0xA, VDISK_PR_WRITE_EXCLUSIVE).kind, VDISK_OK);
	ir.done = 0;
	assert_int_equal(vdisk_readv(qa, 0, &r, 1, io_done, &ir), 0);
	vdisk_queue_poll(qa);
	assert_int_equal(vdisk_pr_preempt(b, 0xB, 0xA, VDISK_PR_WRITE_EXCLUSIVE, false).kind,
	                 VDISK_OK);
	while (!ir.done)
		vdisk_queue_wait(qa, -1);
	assert_int_equal(ir.st.kind, VDISK_OK);
	vdisk_queue_destroy(qa);
	vdisk_unref(a);
	vdisk_unref(b);
	free(buf);
}

/* Two "virtual machines" sharing a file: the data one writes under its
 * reservation is what the other reads, and the other cannot write. */
static void test_two_initiators_share_a_file(void **state)
{
	(void)state;
	char inner[512];
	snprintf(
	    inner, sizeof inner,
	    "{\"type\":\"file\",\"path\":\"%s/cluster.img\",\"create\":\"1M\",\"locking\":false}",
	    tu_tmpdir());
	struct vdisk *a = initiator("cluster", "1111111111111111", inner);
	struct vdisk *b = initiator("cluster", "2222222222222222", inner);
	unsigned char *w = tu_alloc(4096), *r = tu_alloc(4096);
	tu_pattern(w, 4096, 0, 512, 1);
	assert_int_equal(vdisk_pr_register(a, 0, 0x1, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 0x1, VDISK_PR_WRITE_EXCLUSIVE).kind, VDISK_OK);
	assert_int_equal(vdisk_pwrite(a, w, 4096, 0, VDISK_IO_FUA).kind, VDISK_OK);
	assert_int_equal(vdisk_pwrite(b, w, 4096, 4096, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(vdisk_pread(b, r, 4096, 0).kind, VDISK_OK);
	assert_memory_equal(w, r, 4096);
	vdisk_unref(a);
	/* the reservation outlives the initiator's handle, as on a real target */
	assert_int_equal(vdisk_pwrite(b, w, 4096, 4096, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(vdisk_pr_register(b, 0, 0x2, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_preempt(b, 0x2, 0x1, VDISK_PR_WRITE_EXCLUSIVE, true).kind,
	                 VDISK_OK);
	assert_int_equal(vdisk_pwrite(b, w, 4096, 4096, 0).kind, VDISK_OK);
	vdisk_unref(b);
	free(w);
	free(r);
}

/* Decorators without reservations pass the calls to the prwrap below them. */
static void test_through_decorators(void **state)
{
	(void)state;
	struct vdisk *d = tu_open(
	    "{\"type\":\"delay\",\"inner\":{\"type\":\"crypt\",\"key-hex\":"
	    "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\",\"inner\":"
	    "{\"type\":\"fault\",\"inner\":{\"type\":\"prwrap\",\"domain\":\"deco\",\"inner\":"
	    "\"ram:size=1M\"}}}}",
	    0);
	struct vdisk *other = initiator("deco", "ffffffffffffffff", "\"ram:size=1M\"");
	assert_true(vdisk_has_persistent_reservations(d));
	assert_int_equal(vdisk_pr_register(d, 0, 7, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(d, 7, VDISK_PR_EXCLUSIVE_ACCESS).kind, VDISK_OK);
	unsigned char *buf = tu_alloc(512);
	assert_int_equal(vdisk_pwrite(d, buf, 512, 0, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pread(other, buf, 512, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant reg;
	assert_int_equal(vdisk_pr_report(other, &rep, &reg, 1).kind, VDISK_OK);
	assert_int_equal(rep.nregistrants, 1);
	assert_int_equal(reg.host_id_len, 8);
	assert_int_equal(reg.host_id[0], 0); /* the default host id: zeros */
	vdisk_unref(other);
	vdisk_unref(d);

	/* a stripe set over prwraps has no single reservation state */
	d = tu_open(
	    "{\"type\":\"striped\",\"disks\":[{\"type\":\"prwrap\",\"inner\":\"ram:size=1M\"},"
	    "{\"type\":\"prwrap\",\"inner\":\"ram:size=1M\"}]}",
	    0);
	assert_false(vdisk_has_persistent_reservations(d));
	assert_int_equal(vdisk_pr_register(d, 0, 1, 0).kind, VDISK_ERR_NOT_SUPPORTED);
	vdisk_unref(d);
	free(buf);
}

static void expect_open_error(const char *spec, const char *what)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, 0);
	if (d)
		fail_msg("'%s' opened", s);
	if (!strstr(vdisk_errmsg(), what))
		fail_msg("'%s': message '%s' lacks '%s'", s, vdisk_errmsg(), what);
	free(s);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_open_error("{\"type\":\"prwrap\",\"host-id\":\"xyz\",\"inner\":\"ram:size=1M\"}",
	                  "host-id: 'xyz'");
	expect_open_error("{\"type\":\"prwrap\",\"host-id\":\"00112233445566778\",\"inner\":"
	                  "\"ram:size=1M\"}",
	                  "host-id");
	expect_open_error("{\"type\":\"prwrap\",\"host-id\":\"0011223344556677g0112233445566ff\","
	                  "\"inner\":\"ram:size=1M\"}",
	                  "host-id");
	expect_open_error("{\"type\":\"prwrap\",\"domain\":\"\",\"inner\":\"ram:size=1M\"}",
	                  "domain: must not be empty");
	expect_open_error("{\"type\":\"prwrap\",\"domain\":7,\"inner\":\"ram:size=1M\"}",
	                  "domain: expected a string");
	expect_open_error("{\"type\":\"prwrap\",\"hostid\":\"00\",\"inner\":\"ram:size=1M\"}",
	                  "hostid");
	expect_open_error("{\"type\":\"prwrap\"}", "inner");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_access_table),
	    cmocka_unit_test(test_access_follows_state),
	    cmocka_unit_test(test_preempt_and_abort),
	    cmocka_unit_test(test_two_initiators_share_a_file),
	    cmocka_unit_test(test_through_decorators),
	    cmocka_unit_test(test_config_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
