/* prwrap persist-through-power-loss: the state file written atomically on
 * each change when PTPL is active, reloaded at the next open of the domain
 * (generation back to 0), ignored without PTPL; a failed save changes
 * nothing; malformed state files and clashing domains are refused with
 * messages that name the field. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

static char state_path[512];

static struct vdisk *initiator(const char *domain, const char *host, const char *state)
{
	char spec[1200];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"prwrap\",\"domain\":\"%s\",\"host-id\":\"%s\",\"state-file\":\"%s\","
	         "\"inner\":\"ram:size=1M\"}",
	         domain, host, state);
	return tu_open(spec, 0);
}

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static void test_power_cycle(void **state)
{
	(void)state;
	snprintf(state_path, sizeof state_path, "%s/pr.json", tu_tmpdir());
	char tmp[600];
	snprintf(tmp, sizeof tmp, "%s.tmp", state_path);
	struct vdisk *a = initiator("ptpl", "aaaaaaaaaaaaaaaa", state_path);
	struct vdisk *b = initiator("ptpl", "bbbbbbbbbbbbbbbb", state_path);
	struct vdisk_pr_capabilities caps;
	assert_int_equal(vdisk_pr_capabilities(a, &caps).kind, VDISK_OK);
	assert_true(caps.persist_through_power_loss);
	/* without PTPL nothing is written */
	assert_int_equal(vdisk_pr_register(a, 0, 0xA, 0).kind, VDISK_OK);
	assert_false(exists(state_path));
	assert_int_equal(vdisk_pr_register(a, 0xA, 0xA1, VDISK_PR_SET_PTPL).kind, VDISK_OK);
	assert_true(exists(state_path));
	assert_int_equal(vdisk_pr_register(b, 0, 0xB, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(a, 0xA1, VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY).kind,
	                 VDISK_OK);
	assert_false(exists(tmp));
	struct vdisk_pr_report rep;
	assert_int_equal(vdisk_pr_report(a, &rep, NULL, 0).kind, VDISK_OK);
	assert_true(rep.persist_through_power_loss);
	assert_int_equal(rep.generation, 3);
	vdisk_unref(a);
	vdisk_unref(b);

	/* power on: the registrations and the reservation are back, generation 0 */
	b = initiator("ptpl", "bbbbbbbbbbbbbbbb", state_path);
	struct vdisk *c = initiator("ptpl", "cccccccccccccccc", state_path);
	struct vdisk_pr_registrant regs[4];
	assert_int_equal(vdisk_pr_report(b, &rep, regs, 4).kind, VDISK_OK);
	assert_int_equal(rep.generation, 0);
	assert_int_equal(rep.type, VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
	assert_true(rep.persist_through_power_loss);
	assert_int_equal(rep.nregistrants, 2);
	assert_int_equal(regs[0].key, 0xA1);
	assert_true(regs[0].holds_reservation);
	assert_int_equal(regs[1].key, 0xB);
	assert_false(regs[1].holds_reservation);
	/* and enforced: B (registrant) writes, C (not registered) does not */
	unsigned char buf[512] = {1};
	assert_int_equal(vdisk_pwrite(b, buf, 512, 0, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pwrite(c, buf, 512, 0, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(vdisk_pread(c, buf, 512, 0).kind, VDISK_OK);
	/* the old key still works for the holder after power on */
	a = initiator("ptpl", "aaaaaaaaaaaaaaaa", state_path);
	assert_int_equal(vdisk_pr_release(a, 0xA1, VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY).kind,
	                 VDISK_OK);
	/* PTPL off: written once more, then the next power on starts empty */
	assert_int_equal(vdisk_pr_register(b, 0xB, 0xB, VDISK_PR_CLEAR_PTPL).kind, VDISK_OK);
	vdisk_unref(a);
	vdisk_unref(b);
	vdisk_unref(c);
	a = initiator("ptpl", "aaaaaaaaaaaaaaaa", state_path);
	assert_int_equal(vdisk_pr_report(a, &rep, NULL, 0).kind, VDISK_OK);
	assert_int_equal(rep.nregistrants, 0);
	assert_false(rep.persist_through_power_loss);
	assert_int_equal(rep.type, VDISK_PR_NONE);
	vdisk_unref(a);
}

/* A save that fails leaves the state as it was. */
static void test_failed_save(void **state)
{
	(void)state;
	char dir[512], path[600];
	snprintf(dir, sizeof dir, "%s/gone", tu_tmpdir());
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof path, "%s/pr.json", dir);
	struct vdisk *a = initiator("failsave", "0101010101010101", path);
	assert_int_equal(rmdir(dir), 0);
	vdisk_status st = vdisk_pr_register(a, 0, 5, VDISK_PR_SET_PTPL);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_true(st.errnum > 0);
	struct vdisk_pr_report rep;
	assert_int_equal(vdisk_pr_report(a, &rep, NULL, 0).kind, VDISK_OK);
	assert_int_equal(rep.nregistrants, 0);
	assert_int_equal(rep.generation, 0);
	assert_false(rep.persist_through_power_loss);
	vdisk_unref(a);
}

static void write_state(const char *name, const char *text)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", tu_tmpdir(), name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
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

static void test_bad_state_files(void **state)
{
	(void)state;
	static const struct {
		const char *text, *what;
	} cases[] = {
	    {"{", "line 1"},
	    {"[]", "format"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":2}", "version"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":\"yes\"}", "ptpl"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"mine\","
	     "\"registrants\":[]}",
	     "type"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\"}",
	     "registrants"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"zz\",\"key\":\"0x1\"}]}",
	     "registrants[0].host-id"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"0\"}]}",
	     "registrants[0].key"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"-1\"}]}",
	     "registrants[0].key"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\" 0x10\"}]}",
	     "registrants[0].key"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"+5\"}]}",
	     "registrants[0].key"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"0x\"}]}",
	     "registrants[0].key"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"none\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"0x1\"},"
	     "{\"host-id\":\"0000000000000001\",\"key\":\"0x2\"}]}",
	     "registrants[1]: host-id registered twice"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,\"type\":\"write-"
	     "exclusive\","
	     "\"registrants\":[{\"host-id\":\"0000000000000001\",\"key\":\"0x1\"}],"
	     "\"holder\":\"0000000000000002\"}",
	     "holder"},
	    {"{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,"
	     "\"type\":\"exclusive-access-all-registrants\",\"registrants\":[]}",
	     "without registrants"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char name[32], spec[512];
		snprintf(name, sizeof name, "bad%zu.json", i);
		write_state(name, cases[i].text);
		snprintf(
		    spec, sizeof spec,
		    "{\"type\":\"prwrap\",\"state-file\":\"@TMP@/%s\",\"inner\":\"ram:size=1M\"}",
		    name);
		expect_open_error(spec, cases[i].what);
		expect_open_error(spec, name); /* the message names the file */
	}
	/* a good one written by hand */
	write_state("good.json",
	            "{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,"
	            "\"type\":\"exclusive-access-all-registrants\",\"registrants\":"
	            "[{\"host-id\":\"00000000000000000000000000000001\",\"key\":\"0xfeed\"}]}");
	struct vdisk *d = tu_open("{\"type\":\"prwrap\",\"state-file\":\"@TMP@/good.json\","
	                          "\"inner\":\"ram:size=1M\"}",
	                          0);
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant reg;
	assert_int_equal(vdisk_pr_report(d, &rep, &reg, 1).kind, VDISK_OK);
	assert_int_equal(rep.type, VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS);
	assert_int_equal(reg.key, 0xfeed);
	assert_int_equal(reg.host_id_len, 16);
	/* we are not that registrant: shut out */
	unsigned char buf[512];
	assert_int_equal(vdisk_pread(d, buf, 512, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	vdisk_unref(d);
}

/* A state file with n registrants, host ids 1..n. */
static void write_many(const char *name, unsigned n)
{
	size_t cap = 128 + (size_t)n * 64, len = 0;
	char *t = malloc(cap);
	len += (size_t)snprintf(t, cap,
	                        "{\"format\":\"vdisk-prwrap\",\"version\":1,\"ptpl\":true,"
	                        "\"type\":\"none\",\"registrants\":[");
	for (unsigned i = 1; i <= n; i++)
		len +=
		    (size_t)snprintf(t + len, cap - len, "%s{\"host-id\":\"%016x\",\"key\":\"%u\"}",
		                     i > 1 ? "," : "", i, i);
	snprintf(t + len, cap - len, "]}");
	write_state(name, t);
	free(t);
}

/* A domain keeps at most 4096 registrants: a state file with more is refused
 * at open (by its size, before anything is parsed), one with 4096 loads. */
static void test_registrant_limit(void **state)
{
	(void)state;
	write_many("many.json", 4097);
	expect_open_error("{\"type\":\"prwrap\",\"state-file\":\"@TMP@/many.json\","
	                  "\"inner\":\"ram:size=1M\"}",
	                  "4097 of them, more than the 4096 a domain keeps");
	write_many("full.json", 4096);
	struct vdisk *d = tu_open("{\"type\":\"prwrap\",\"state-file\":\"@TMP@/full.json\","
	                          "\"host-id\":\"0000000000002000\",\"inner\":\"ram:size=1M\"}",
	                          0);
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant reg;
	assert_int_equal(vdisk_pr_report(d, &rep, &reg, 1).kind, VDISK_OK);
	assert_int_equal(rep.nregistrants, 4096);
	/* a full domain refuses one more, as insufficient resources */
	vdisk_status st = vdisk_pr_register(d, 0, 0x77, 0);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_int_equal(st.errnum, ENOSPC);
	vdisk_unref(d);
}

static void test_domain_clashes(void **state)
{
	(void)state;
	struct vdisk *a =
	    tu_open("{\"type\":\"prwrap\",\"domain\":\"x\",\"state-file\":\"@TMP@/x.json\","
	            "\"inner\":\"ram:size=1M\"}",
	            0);
	expect_open_error("{\"type\":\"prwrap\",\"domain\":\"x\",\"state-file\":\"@TMP@/y.json\","
	                  "\"inner\":\"ram:size=1M\"}",
	                  "domain 'x' is open with state-file");
	expect_open_error("{\"type\":\"prwrap\",\"domain\":\"z\",\"state-file\":\"@TMP@/x.json\","
	                  "\"inner\":\"ram:size=1M\"}",
	                  "in use by domain 'x'");
	expect_open_error(
	    "{\"type\":\"prwrap\",\"state-file\":\"@TMP@/x.json\",\"inner\":\"ram:size=1M\"}",
	    "in use");
	/* the same domain without naming the file joins it */
	struct vdisk *b =
	    tu_open("{\"type\":\"prwrap\",\"domain\":\"x\",\"host-id\":\"0000000000000002\","
	            "\"inner\":\"ram:size=1M\"}",
	            0);
	struct vdisk_pr_capabilities caps;
	assert_int_equal(vdisk_pr_capabilities(b, &caps).kind, VDISK_OK);
	assert_true(caps.persist_through_power_loss);
	vdisk_unref(a);
	vdisk_unref(b);
	struct vdisk *p =
	    tu_open("{\"type\":\"prwrap\",\"domain\":\"w\",\"inner\":\"ram:size=1M\"}", 0);
	expect_open_error("{\"type\":\"prwrap\",\"domain\":\"w\",\"state-file\":\"@TMP@/w.json\","
	                  "\"inner\":\"ram:size=1M\"}",
	                  "domain 'w' is open without a state-file");
	vdisk_unref(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_power_cycle),     cmocka_unit_test(test_failed_save),
	    cmocka_unit_test(test_bad_state_files), cmocka_unit_test(test_registrant_limit),
	    cmocka_unit_test(test_domain_clashes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
