/* The nbd backend against misbehaving servers (tests/py/nbdc_badserver.py):
 * a server that closes in the middle of a reply, one that answers with a
 * cookie never sent, one that never answers, one that closes in the
 * handshake, one that never speaks.  Every request in flight and every
 * later one fails with an I/O error whose errno names the cause; nothing
 * hangs; nothing is reconnected. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

extern char **environ;

#define NREQ 8

struct server {
	pid_t pid;
	char sock[512];
};

static void server_start(struct server *s, const char *mode)
{
	const char *tests = getenv("TESTS_DIR");
	const char *py = getenv("PYTHON");
	if (!tests) {
		fprintf(stderr, "SKIP: run through ctest (TESTS_DIR)\n");
		exit(77);
	}
	char script[512];
	snprintf(script, sizeof script, "%s/py/nbdc_badserver.py", tests);
	snprintf(s->sock, sizeof s->sock, "%s/%s.sock", tu_tmpdir(), mode);
	char *argv[] = {(char *)(py ? py : "/usr/bin/python3"), script, (char *)mode, s->sock,
	                NULL};
	assert_int_equal(posix_spawn(&s->pid, argv[0], NULL, NULL, argv, environ), 0);
	struct stat st;
	for (int i = 0; i < 400 && stat(s->sock, &st) < 0; i++)
		usleep(10000);
	assert_int_equal(stat(s->sock, &st), 0);
}

static void server_stop(struct server *s)
{
	kill(s->pid, SIGTERM);
	waitpid(s->pid, NULL, 0);
}

static struct vdisk *open_bad(struct server *s, const char *timeout)
{
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"nbd\",\"uri\":\"nbd+unix:///?socket=%s\",\"timeout\":\"%s\"}",
	         s->sock, timeout);
	struct vdisk *d = vdisk_open(spec, 0);
	if (!d)
		fail_msg("open: %s", vdisk_errmsg());
	assert_int_equal(vdisk_sector_count(d), 2048);
	return d;
}

/* NREQ reads at once: each completes once, with an I/O error of errno want
 * (or alt, when not 0); then a later read fails at once the same way. */
static void all_fail2(struct vdisk *d, int want, int alt)
{
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	static char bufs[NREQ][4096];
	struct iovec iov[NREQ];
	struct tu_flag f[NREQ] = {0};
	for (int i = 0; i < NREQ; i++) {
		iov[i] = (struct iovec){bufs[i], sizeof bufs[i]};
		assert_int_equal(vdisk_readv(q, (uint64_t)i * 8, &iov[i], 1, tu_flag_cb, &f[i]), 0);
	}
	/* bounded: a hang fails the test instead of blocking it */
	for (int spins = 0; vdisk_queue_inflight(q) && spins < 100; spins++)
		assert_true(vdisk_queue_wait(q, 200000000) >= 0);
	assert_int_equal(vdisk_queue_inflight(q), 0);
	for (int i = 0; i < NREQ; i++) {
		assert_int_equal(f[i].calls, 1);
		if (f[i].st.kind != VDISK_ERR_IO ||
		    (f[i].st.errnum != want && (!alt || f[i].st.errnum != alt)))
			fail_msg("request %d: %s errno %d (%s), expected errno %d (%s)", i,
			         tu_st(f[i].st), f[i].st.errnum, strerror(f[i].st.errnum), want,
			         strerror(want));
	}
	vdisk_status st = tu_read(q, 0, bufs[0], 4096);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_true(st.errnum == want || (alt && st.errnum == alt));
	st = tu_flush(q);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	vdisk_queue_destroy(q);
}

static void all_fail(struct vdisk *d, int want)
{
	all_fail2(d, want, 0);
}

static void test_close_mid_reply(void **state)
{
	struct server s;
	server_start(&s, "close-mid-reply");
	struct vdisk *d = open_bad(&s, "10s");
	/* the close is seen by the read of the reply (ECONNRESET) or, when a
	 * request is still being sent, by that send (EPIPE) */
	all_fail2(d, ECONNRESET, EPIPE);
	vdisk_unref(d);
	server_stop(&s);
}

static void test_unknown_cookie(void **state)
{
	struct server s;
	server_start(&s, "unknown-cookie");
	struct vdisk *d = open_bad(&s, "10s");
	all_fail(d, EPROTO);
	vdisk_unref(d);
	server_stop(&s);
}

static void test_silent(void **state)
{
	struct server s;
	server_start(&s, "silent");
	struct vdisk *d = open_bad(&s, "300ms");
	all_fail(d, ETIMEDOUT);
	vdisk_unref(d);
	server_stop(&s);
}

/* A control: the same server answering properly serves the same reads. */
static void test_good(void **state)
{
	struct server s;
	server_start(&s, "good");
	struct vdisk *d = open_bad(&s, "10s");
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	static char buf[65536];
	memset(buf, 0xee, sizeof buf);
	vdisk_status st = tu_read(q, 100, buf, sizeof buf);
	assert_int_equal(st.kind, VDISK_OK);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	server_stop(&s);
}

static void test_close_handshake(void **state)
{
	struct server s;
	server_start(&s, "close-handshake");
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"nbd\",\"uri\":\"nbd+unix:///?socket=%s\",\"timeout\":\"5s\"}",
	         s.sock);
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), s.sock));
	server_stop(&s);
}

/* A server that accepts and never speaks: open gives up after the timeout. */
static void test_stall_handshake(void **state)
{
	struct server s;
	server_start(&s, "stall-handshake");
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"nbd\",\"uri\":\"nbd+unix:///?socket=%s\",\"timeout\":\"300ms\"}",
	         s.sock);
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "no answer from the server"));
	server_stop(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_close_mid_reply),
	    cmocka_unit_test(test_unknown_cookie),
	    cmocka_unit_test(test_silent),
	    cmocka_unit_test(test_close_handshake),
	    cmocka_unit_test(test_stall_handshake),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
