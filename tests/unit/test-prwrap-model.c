/* prwrap: every persistent-reservation command outcome, table-driven, for each
 * of the six reservation types.  Three initiators share a domain: A and B are
 * registered (keys 0xA, 0xB) and A holds a reservation of the type under test
 * (for the all-registrants types A and B both hold it); C is not registered.
 * Each row runs one command on a fresh domain and checks the status, the
 * generation change, the reservation type, the registrants and the holders,
 * with one expectation for the single-holder types and one for the
 * all-registrants types.  A second table starts with no reservation. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

enum who { A, B, C };
enum cmd { REG, REG_IGN, RES, REL, CLR, PRE, PRE_ABORT };
#define SAME 0  /* the type under test */
#define OTHER 1 /* another type */
#define NONE (-1)

struct expect {
	enum vdisk_error st;
	int dgen;            /* generation change */
	int type;            /* SAME, OTHER, NONE */
	const char *regs;    /* "A=a B=bb": initiators and keys, in order A, B, C */
	const char *holders; /* "AB" */
};

struct row {
	const char *what;
	enum who who;
	enum cmd cmd;
	uint64_t key, key2; /* current / reservation key; new / preempt key */
	int type;           /* SAME or OTHER */
	struct expect single, all;
};

#define E(st, dg, ty, regs, hold)              \
	{                                      \
		VDISK_##st, dg, ty, regs, hold \
	}

/* starting from: A=a B=b registered, A reserved (type T) */
static const struct row reserved_rows[] = {
    {"unregistered registers", C, REG, 0, 0xC, SAME, E(OK, 1, SAME, "A=a B=b C=c", "A"),
     E(OK, 1, SAME, "A=a B=b C=c", "ABC")},
    {"unregistered registers with a current key", C, REG, 5, 0xC, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"unregistered registers key 0", C, REG, 0, 0, SAME, E(OK, 0, SAME, "A=a B=b", "A"),
     E(OK, 0, SAME, "A=a B=b", "AB")},
    {"registrant changes its key", B, REG, 0xB, 0xBB, SAME, E(OK, 1, SAME, "A=a B=bb", "A"),
     E(OK, 1, SAME, "A=a B=bb", "AB")},
    {"registrant gives a wrong current key", B, REG, 1, 0xBB, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"register-and-ignore with any current key", B, REG_IGN, 1, 0xBB, SAME,
     E(OK, 1, SAME, "A=a B=bb", "A"), E(OK, 1, SAME, "A=a B=bb", "AB")},
    {"register-and-ignore by the unregistered", C, REG_IGN, 7, 0xC, SAME,
     E(OK, 1, SAME, "A=a B=b C=c", "A"), E(OK, 1, SAME, "A=a B=b C=c", "ABC")},
    {"holder unregisters", A, REG, 0xA, 0, SAME, E(OK, 1, NONE, "B=b", ""),
     E(OK, 1, SAME, "B=b", "B")},
    {"registrant unregisters", B, REG, 0xB, 0, SAME, E(OK, 1, SAME, "A=a", "A"),
     E(OK, 1, SAME, "A=a", "A")},
    {"holder unregisters ignoring the key", A, REG_IGN, 0, 0, SAME, E(OK, 1, NONE, "B=b", ""),
     E(OK, 1, SAME, "B=b", "B")},
    {"unregistered reserves", C, RES, 0, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"registrant reserves the type held", B, RES, 0xB, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"), E(OK, 0, SAME, "A=a B=b", "AB")},
    {"registrant reserves another type", B, RES, 0xB, 0, OTHER,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"holder reserves again", A, RES, 0xA, 0, SAME, E(OK, 0, SAME, "A=a B=b", "A"),
     E(OK, 0, SAME, "A=a B=b", "AB")},
    {"holder reserves another type", A, RES, 0xA, 0, OTHER,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"holder reserves with a wrong key", A, RES, 0xBAD, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"holder releases", A, REL, 0xA, 0, SAME, E(OK, 0, NONE, "A=a B=b", ""),
     E(OK, 0, NONE, "A=a B=b", "")},
    {"holder releases another type", A, REL, 0xA, 0, OTHER,
     E(ERR_INVALID_INPUT, 0, SAME, "A=a B=b", "A"), E(ERR_INVALID_INPUT, 0, SAME, "A=a B=b", "AB")},
    {"registrant releases", B, REL, 0xB, 0, SAME, E(OK, 0, SAME, "A=a B=b", "A"),
     E(OK, 0, NONE, "A=a B=b", "")},
    {"unregistered releases", C, REL, 0, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"holder releases with a wrong key", A, REL, 0xBAD, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"registrant clears", B, CLR, 0xB, 0, SAME, E(OK, 1, NONE, "", ""), E(OK, 1, NONE, "", "")},
    {"unregistered clears", C, CLR, 0, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"clear with a wrong key", B, CLR, 0xBAD, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"registrant preempts the holder", B, PRE, 0xB, 0xA, OTHER, E(OK, 1, OTHER, "B=b", "B"),
     E(OK, 1, SAME, "B=b", "B")},
    {"registrant preempts and aborts the holder", B, PRE_ABORT, 0xB, 0xA, OTHER,
     E(OK, 1, OTHER, "B=b", "B"), E(OK, 1, SAME, "B=b", "B")},
    {"preempt key 0", B, PRE, 0xB, 0, OTHER, E(ERR_INVALID_INPUT, 0, SAME, "A=a B=b", "A"),
     E(OK, 1, OTHER, "B=b", "B")},
    {"preempt a key nobody has", B, PRE, 0xB, 0x777, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"unregistered preempts", C, PRE, 0, 0xA, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"preempt with a wrong key", B, PRE, 0xBAD, 0xA, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "A"),
     E(ERR_RESERVATION_CONFLICT, 0, SAME, "A=a B=b", "AB")},
    {"holder preempts its own key", A, PRE, 0xA, 0xA, OTHER, E(OK, 1, OTHER, "A=a B=b", "A"),
     E(OK, 1, SAME, "A=a B=b", "AB")},
    {"holder preempts a registrant", A, PRE, 0xA, 0xB, OTHER, E(OK, 1, SAME, "A=a", "A"),
     E(OK, 1, SAME, "A=a", "A")},
};

/* starting from: A=a B=b registered, no reservation */
static const struct row free_rows[] = {
    {"reserve", A, RES, 0xA, 0, SAME, E(OK, 0, SAME, "A=a B=b", "A"),
     E(OK, 0, SAME, "A=a B=b", "AB")},
    {"reserve with a wrong key", A, RES, 0xB, 0, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, NONE, "A=a B=b", ""),
     E(ERR_RESERVATION_CONFLICT, 0, NONE, "A=a B=b", "")},
    {"release when nothing is reserved", B, REL, 0xB, 0, SAME, E(OK, 0, NONE, "A=a B=b", ""),
     E(OK, 0, NONE, "A=a B=b", "")},
    {"preempt a registrant", B, PRE, 0xB, 0xA, SAME, E(OK, 1, NONE, "B=b", ""),
     E(OK, 1, NONE, "B=b", "")},
    {"preempt key 0", B, PRE, 0xB, 0, SAME, E(ERR_INVALID_INPUT, 0, NONE, "A=a B=b", ""),
     E(ERR_INVALID_INPUT, 0, NONE, "A=a B=b", "")},
    {"preempt a key nobody has", B, PRE, 0xB, 0x777, SAME,
     E(ERR_RESERVATION_CONFLICT, 0, NONE, "A=a B=b", ""),
     E(ERR_RESERVATION_CONFLICT, 0, NONE, "A=a B=b", "")},
    {"clear", A, CLR, 0xA, 0, SAME, E(OK, 1, NONE, "", ""), E(OK, 1, NONE, "", "")},
    {"register a third", C, REG, 0, 0xC, SAME, E(OK, 1, NONE, "A=a B=b C=c", ""),
     E(OK, 1, NONE, "A=a B=b C=c", "")},
};

static const char *const HOST[3] = {"a0a0a0a0a0a0a0a0", "b0b0b0b0b0b0b0b0",
                                    "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"};

static struct vdisk *initiator(const char *domain, int who)
{
	char spec[512];
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"prwrap\",\"domain\":\"%s\",\"host-id\":\"%s\",\"inner\":\"ram:size=64k\"}",
	    domain, HOST[who]);
	return tu_open(spec, 0);
}

static int who_of(const struct vdisk_pr_registrant *r)
{
	for (int w = 0; w < 3; w++) {
		uint8_t h[16];
		size_t n = strlen(HOST[w]) / 2;
		for (size_t i = 0; i < n; i++)
			sscanf(HOST[w] + 2 * i, "%2hhx", &h[i]);
		if (r->host_id_len == n && memcmp(r->host_id, h, n) == 0)
			return w;
	}
	return -1;
}

static const char *key_name(uint64_t k)
{
	switch (k) {
	case 0xA: return "a";
	case 0xB: return "b";
	case 0xBB: return "bb";
	case 0xC: return "c";
	default: return "?";
	}
}

static vdisk_status run_cmd(struct vdisk *d, const struct row *r, enum vdisk_pr_type type)
{
	switch (r->cmd) {
	case REG: return vdisk_pr_register(d, r->key, r->key2, 0);
	case REG_IGN: return vdisk_pr_register(d, r->key, r->key2, VDISK_PR_IGNORE_EXISTING_KEY);
	case RES: return vdisk_pr_reserve(d, r->key, type);
	case REL: return vdisk_pr_release(d, r->key, type);
	case CLR: return vdisk_pr_clear(d, r->key);
	case PRE: return vdisk_pr_preempt(d, r->key, r->key2, type, false);
	default: return vdisk_pr_preempt(d, r->key, r->key2, type, true);
	}
}

static int run_table(const struct row *rows, size_t n, bool reserved)
{
	static unsigned domain_no;
	int failures = 0;
	for (int t = VDISK_PR_WRITE_EXCLUSIVE; t <= VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
	     t++) {
		bool allreg = t >= VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS;
		/* another type of the same class, so that one expectation holds */
		enum vdisk_pr_type other = (enum vdisk_pr_type)(allreg ? 11 - t : t % 4 + 1);
		for (size_t i = 0; i < n; i++) {
			const struct row *r = &rows[i];
			const struct expect *e = allreg ? &r->all : &r->single;
			char domain[32];
			snprintf(domain, sizeof domain, "model-%u", domain_no++);
			struct vdisk *d[3] = {initiator(domain, A), initiator(domain, B),
			                      initiator(domain, C)};
			assert_int_equal(vdisk_pr_register(d[A], 0, 0xA, 0).kind, VDISK_OK);
			assert_int_equal(vdisk_pr_register(d[B], 0, 0xB, 0).kind, VDISK_OK);
			if (reserved)
				assert_int_equal(
				    vdisk_pr_reserve(d[A], 0xA, (enum vdisk_pr_type)t).kind,
				    VDISK_OK);
			struct vdisk_pr_report before, after;
			struct vdisk_pr_registrant regs[4];
			assert_int_equal(vdisk_pr_report(d[C], &before, regs, 4).kind, VDISK_OK);

			vdisk_status st =
			    run_cmd(d[r->who], r, r->type == SAME ? (enum vdisk_pr_type)t : other);

			assert_int_equal(vdisk_pr_report(d[A], &after, regs, 4).kind, VDISK_OK);
			char got_regs[64] = "", got_hold[8] = "";
			for (int w = 0; w < 3; w++)
				for (unsigned k = 0; k < after.nregistrants && k < 4; k++)
					if (who_of(&regs[k]) == w) {
						snprintf(got_regs + strlen(got_regs),
						         sizeof got_regs - strlen(got_regs),
						         "%s%c=%s", *got_regs ? " " : "", 'A' + w,
						         key_name(regs[k].key));
						if (regs[k].holds_reservation)
							got_hold[strlen(got_hold)] =
							    (char)('A' + w);
					}
			int want_type = e->type == NONE   ? VDISK_PR_NONE
			                : e->type == SAME ? t
			                                  : (int)other;
			if (st.kind != e->st ||
			    (int)(after.generation - before.generation) != e->dgen ||
			    after.type != want_type || strcmp(got_regs, e->regs) != 0 ||
			    strcmp(got_hold, e->holders) != 0) {
				printf("FAIL [%s] %s: got %s gen%+d type %s regs \"%s\" holders "
				       "\"%s\"; "
				       "expected %s gen%+d type %s regs \"%s\" holders \"%s\"\n",
				       vdisk_pr_type_name((enum vdisk_pr_type)t), r->what,
				       tu_st(st), (int)(after.generation - before.generation),
				       vdisk_pr_type_name((enum vdisk_pr_type)after.type), got_regs,
				       got_hold, vdisk_error_name(e->st), e->dgen,
				       vdisk_pr_type_name((enum vdisk_pr_type)want_type), e->regs,
				       e->holders);
				failures++;
			}
			for (int w = 0; w < 3; w++)
				vdisk_unref(d[w]);
		}
	}
	return failures;
}

static void test_reserved_table(void **state)
{
	(void)state;
	assert_int_equal(
	    run_table(reserved_rows, sizeof reserved_rows / sizeof *reserved_rows, true), 0);
}

static void test_free_table(void **state)
{
	(void)state;
	assert_int_equal(run_table(free_rows, sizeof free_rows / sizeof *free_rows, false), 0);
}

/* The call checks of the core, and what a report says. */
static void test_arguments_and_report(void **state)
{
	(void)state;
	struct vdisk *d = initiator("args", A);
	assert_true(vdisk_has_persistent_reservations(d));
	assert_int_equal(vdisk_pr_reserve(d, 0, VDISK_PR_NONE).kind, VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pr_reserve(d, 0, (enum vdisk_pr_type)7).kind,
	                 VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pr_release(d, 0, (enum vdisk_pr_type)0).kind,
	                 VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pr_preempt(d, 0, 1, (enum vdisk_pr_type)9, false).kind,
	                 VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pr_register(d, 0, 1, 1u << 7).kind, VDISK_ERR_INVALID_INPUT);
	assert_int_equal(vdisk_pr_register(d, 0, 1, VDISK_PR_SET_PTPL | VDISK_PR_CLEAR_PTPL).kind,
	                 VDISK_ERR_INVALID_INPUT);
	/* no state file: persistence cannot be asked for */
	assert_int_equal(vdisk_pr_register(d, 0, 1, VDISK_PR_SET_PTPL).kind,
	                 VDISK_ERR_INVALID_INPUT);
	struct vdisk_pr_capabilities caps;
	assert_int_equal(vdisk_pr_capabilities(d, &caps).kind, VDISK_OK);
	assert_int_equal(caps.types, 0x7E);
	assert_false(caps.persist_through_power_loss);
	assert_int_equal(vdisk_pr_register(d, 0, 0x1122334455667788ull, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_pr_reserve(d, 0x1122334455667788ull, VDISK_PR_EXCLUSIVE_ACCESS).kind,
	                 VDISK_OK);
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant reg;
	assert_int_equal(vdisk_pr_report(d, &rep, NULL, 0).kind, VDISK_OK);
	assert_int_equal(rep.nregistrants, 1);
	assert_int_equal(rep.generation, 1);
	assert_int_equal(rep.type, VDISK_PR_EXCLUSIVE_ACCESS);
	assert_false(rep.persist_through_power_loss);
	assert_int_equal(vdisk_pr_report(d, &rep, &reg, 1).kind, VDISK_OK);
	assert_int_equal(reg.key, 0x1122334455667788ull);
	assert_int_equal(reg.host_id_len, 8);
	assert_int_equal(reg.host_id[0], 0xa0);
	assert_true(reg.holds_reservation);
	assert_int_equal(vdisk_pr_report(d, NULL, NULL, 0).kind, VDISK_ERR_INVALID_INPUT);
	assert_string_equal(vdisk_pr_type_name(VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY),
	                    "exclusive-access-registrants-only");
	char *ins = vdisk_inspect(d, 0);
	assert_non_null(strstr(ins, "\"type\":\"exclusive-access\""));
	assert_non_null(strstr(ins, "\"domain\":\"args\""));
	free(ins);
	vdisk_unref(d);

	/* a disk without reservations */
	struct vdisk *r = tu_open("ram:size=64k", 0);
	assert_false(vdisk_has_persistent_reservations(r));
	assert_int_equal(vdisk_pr_register(r, 0, 1, 0).kind, VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(vdisk_pr_capabilities(r, &caps).kind, VDISK_ERR_NOT_SUPPORTED);
	vdisk_unref(r);
}

/* The sequence of the reference's SCSI compliance script, with the
 * generation after each step: register-and-ignore, reserve, release, register,
 * register-and-ignore, reserve, clear, ..., preempt, preempt-and-abort. */
static void test_scripted_sequence(void **state)
{
	(void)state;
	for (int t = 1; t <= 6; t++) {
		char domain[32];
		snprintf(domain, sizeof domain, "script-%d", t);
		struct vdisk *a = initiator(domain, A), *b = initiator(domain, B);
		struct vdisk_pr_report rep;
		enum vdisk_pr_type ty = (enum vdisk_pr_type)t;
#define STEP(call, want, gen)                                                       \
	do {                                                                        \
		assert_int_equal((call).kind, VDISK_##want);                        \
		assert_int_equal(vdisk_pr_report(a, &rep, NULL, 0).kind, VDISK_OK); \
		assert_int_equal(rep.generation, gen);                              \
	} while (0)
		STEP(vdisk_pr_register(a, 0, 0x11, VDISK_PR_IGNORE_EXISTING_KEY), OK, 1);
		STEP(vdisk_pr_reserve(a, 0x11, ty), OK, 1);
		STEP(vdisk_pr_release(a, 0x11, ty), OK, 1);
		STEP(vdisk_pr_register(a, 0x11, 0x12, 0), OK, 2);
		STEP(vdisk_pr_register(a, 0x99, 0x13, VDISK_PR_IGNORE_EXISTING_KEY), OK, 3);
		STEP(vdisk_pr_reserve(a, 0x13, ty), OK, 3);
		STEP(vdisk_pr_reserve(a, 0x12, ty), ERR_RESERVATION_CONFLICT, 3);
		STEP(vdisk_pr_clear(a, 0x13), OK, 4);
		STEP(vdisk_pr_register(a, 0, 0x21, 0), OK, 5);
		STEP(vdisk_pr_register(b, 0, 0x22, 0), OK, 6);
		STEP(vdisk_pr_reserve(a, 0x21, ty), OK, 6);
		STEP(vdisk_pr_preempt(b, 0x22, 0x21, ty, false), OK, 7);
		STEP(vdisk_pr_register(a, 0, 0x23, 0), OK, 8);
		STEP(vdisk_pr_preempt(a, 0x23, 0x22, ty, true), OK, 9);
		assert_int_equal(rep.nregistrants, 1);
#undef STEP
		vdisk_unref(a);
		vdisk_unref(b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reserved_table),
	    cmocka_unit_test(test_free_table),
	    cmocka_unit_test(test_arguments_and_report),
	    cmocka_unit_test(test_scripted_sequence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
