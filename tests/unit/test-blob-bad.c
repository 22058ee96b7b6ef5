/* The blob backend against a server that misbehaves in every way it can
 * (tests/py/httpbad.py): each bad answer fails the read with an I/O error whose
 * errno names the class of cause and whose sentence (inspect's last_error)
 * names the cause; retries happen for 5xx and resets only; nothing hangs; the
 * URL's query string is never printed.  Good answers (also after a redirect,
 * a refused HEAD, a retried 503 or reset) give the blob's bytes.
 * ctest-timeout: 300 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define BLOB_SIZE (1u << 20)

static pid_t server;
static int port;
static char portfile[512];

static unsigned char blob_byte(size_t i)
{
	return (unsigned char)((i * 7 + i / 4096) & 0xff);
}

static int start_server(void **state)
{
	(void)state;
	const char *dir = getenv("TESTS_DIR");
	const char *py = getenv("PYTHON");
	char script[512];
	snprintf(script, sizeof script, "%s/py/httpbad.py", dir ? dir : "tests");
	snprintf(portfile, sizeof portfile, "%s/port", tu_tmpdir());
	if (access(py ? py : "/usr/bin/python3", X_OK) != 0) {
		fprintf(stderr, "SKIP: needs /usr/bin/python3\n");
		exit(77);
	}
	server = fork();
	if (server == 0) {
		execl(py ? py : "/usr/bin/python3", "python3", script, portfile, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			int ok = fscanf(f, "%d", &port);
			fclose(f);
			if (ok == 1)
				return 0;
		}
		int st;
		if (waitpid(server, &st, WNOHANG) == server) {
			fprintf(stderr, "httpbad.py exited before listening\n");
			return -1;
		}
		usleep(10000);
	}
	return -1;
}

static int stop_server(void **state)
{
	(void)state;
	if (server > 0) {
		kill(server, SIGTERM);
		waitpid(server, NULL, 0);
	}
	return 0;
}

static struct vdisk *open_mode(const char *mode, const char *extra)
{
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"blob\",\"url\":\"http://127.0.0.1:%d/%s/blob?sig=SECRET\","
	         "\"retries\":1%s%s%s}",
	         port, mode, extra && strstr(extra, "timeout") ? "" : ",\"timeout\":\"2s\"",
	         extra ? "," : "", extra ? extra : "");
	return vdisk_open(spec, 0);
}

static char *layer_string(struct vdisk *d, const char *key)
{
	char *s = vdisk_inspect(d, 0);
	assert_non_null(s);
	assert_null(strstr(s, "SECRET"));
	json_t *o = json_loads(s, 0, NULL);
	free(s);
	json_t *v = json_object_get(json_array_get(json_object_get(o, "layers"), 0), key);
	char *out = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
	json_decref(o);
	return out;
}

static long long layer_int(struct vdisk *d, const char *key)
{
	char *s = vdisk_inspect(d, 0);
	json_t *o = json_loads(s, 0, NULL);
	free(s);
	long long v = json_integer_value(
	    json_object_get(json_array_get(json_object_get(o, "layers"), 0), key));
	json_decref(o);
	return v;
}

static void check_data(const unsigned char *buf, size_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != blob_byte(off + i))
			fail_msg("byte %zu of the blob is %u, expected %u", off + i, buf[i],
			         blob_byte(off + i));
}

/* One read of 4 KiB at byte 8192 must fail with VDISK_ERR_IO, errnum, and a
 * last_error holding `why`. */
static void expect_fail(const char *mode, int errnum, const char *why)
{
	struct vdisk *d = open_mode(mode, NULL);
	if (!d)
		fail_msg("open %s: %s", mode, vdisk_errmsg());
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	unsigned char *buf = tu_alloc(4096);
	vdisk_status st = tu_read(q, 16, buf, 4096);
	char *last = layer_string(d, "last_error");
	if (st.kind != VDISK_ERR_IO || st.errnum != errnum || !last || !strstr(last, why))
		fail_msg("mode %s: got %s (errno %d), last_error '%s'; expected errno %d and '%s'",
		         mode, tu_st(st), st.errnum, last ? last : "(none)", errnum, why);
	assert_int_equal(layer_int(d, "failed"), 1);
	/* only a 5xx or a broken connection is tried again, never a wrong answer */
	bool transport = errnum == ECONNRESET || strstr(why, "HTTP status 5");
	assert_int_equal(layer_int(d, "retried"), transport ? 1 : 0);
	free(last);
	free(buf);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_good(void **state)
{
	(void)state;
	struct vdisk *d = open_mode("good", "\"split\":\"256k\"");
	if (!d)
		fail_msg("%s", vdisk_errmsg());
	assert_string_equal(vdisk_type(d), "blob");
	assert_true(vdisk_read_only(d));
	assert_int_equal(vdisk_sector_count(d), BLOB_SIZE / 512);
	assert_int_equal(vdisk_physical_sector_size(d), 4096);
	uint8_t id[16];
	assert_true(vdisk_disk_id(d, id));
	char *url = layer_string(d, "url");
	char want[128];
	snprintf(want, sizeof want, "http://127.0.0.1:%d/good/blob?***", port);
	assert_string_equal(url, want);
	free(url);
	char *pin = layer_string(d, "pinned_by");
	assert_string_equal(pin, "etag");
	free(pin);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* the whole blob in one read: four ranges of 256 KiB in parallel */
	unsigned char *buf = tu_alloc(BLOB_SIZE);
	long long before = layer_int(d, "gets");
	assert_int_equal(tu_read(q, 0, buf, BLOB_SIZE).kind, VDISK_OK);
	check_data(buf, 0, BLOB_SIZE);
	assert_int_equal(layer_int(d, "gets") - before, 4);
	/* scattered buffers */
	unsigned char a[512], b[3584];
	struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
	assert_int_equal(tu_readv(q, 1001, iov, 2).kind, VDISK_OK);
	check_data(a, 1001 * 512, sizeof a);
	check_data(b, 1002 * 512, sizeof b);
	/* writes are refused: the disk is read-only */
	assert_int_equal(tu_write(q, 0, a, 512, 0).kind, VDISK_ERR_READ_ONLY);
	assert_int_equal(tu_read(q, BLOB_SIZE / 512, a, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	free(buf);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* many reads in flight on one queue, each checked */
static void test_depth(void **state)
{
	(void)state;
	struct vdisk *d = open_mode("good", "\"connections\":4");
	assert_non_null(d);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	enum { N = 64, LEN = 8192 };
	unsigned char *bufs = tu_alloc((size_t)N * LEN);
	struct tu_flag flags[N];
	uint64_t sectors[N];
	struct iovec iov[N];
	for (int i = 0; i < N; i++) {
		sectors[i] = (uint64_t)(i * 37 % 120) * 16;
		iov[i] = (struct iovec){bufs + (size_t)i * LEN, LEN};
		memset(&flags[i], 0, sizeof flags[i]);
		assert_int_equal(vdisk_readv(q, sectors[i], &iov[i], 1, tu_flag_cb, &flags[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		while (!flags[i].calls)
			vdisk_queue_wait(q, -1);
		assert_int_equal(flags[i].st.kind, VDISK_OK);
		check_data(bufs + (size_t)i * LEN, sectors[i] * 512, LEN);
	}
	free(bufs);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_bad_answers(void **state)
{
	(void)state;
	expect_fail("ignore-range", EPROTO, "ignored the Range");
	expect_fail("status-416", ERANGE, "416");
	expect_fail("status-404", EIO, "HTTP status 404");
	expect_fail("wrong-range", EPROTO, "does not match the range asked");
	expect_fail("short-range", EPROTO, "does not match the range asked");
	expect_fail("close-mid-body", ECONNRESET, "connection closed after 2048 of the 4096");
	expect_fail("no-length-short", EPROTO, "unexpected EOF");
	expect_fail("long-body", EPROTO, "body longer than the 4096 bytes");
	expect_fail("lying-length", EPROTO, "Content-Length 4097 does not match");
	expect_fail("chunked", EPROTO, "chunked");
	expect_fail("gzip", EPROTO, "compressed");
	expect_fail("bad-length", EPROTO, "Content-Length '12x' is not a number");
	expect_fail("error-503", EIO, "HTTP status 503 (after retries)");
	expect_fail("etag-412", ESTALE, "changed since it was opened (412");
	expect_fail("etag-changed", ESTALE, "ETag \"v2\", \"v1\" at open");
	expect_fail("total-changed", ESTALE, "Content-Range length 2097152");
}

static void test_hang_times_out(void **state)
{
	(void)state;
	struct vdisk *d = open_mode("hang", "\"timeout\":\"500ms\"");
	if (!d)
		fail_msg("%s", vdisk_errmsg());
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	vdisk_status st = tu_read(q, 0, buf, sizeof buf);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_int_equal(st.errnum, ETIMEDOUT);
	assert_int_equal(layer_int(d, "retried"), 1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_retried(void **state)
{
	(void)state;
	const char *modes[] = {"flaky-503", "flaky-reset"};
	for (int i = 0; i < 2; i++) {
		struct vdisk *d = open_mode(modes[i], NULL);
		assert_non_null(d);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char buf[4096];
		vdisk_status st = tu_read(q, 8 + (uint64_t)i, buf, sizeof buf);
		if (st.kind != VDISK_OK)
			fail_msg("%s: %s", modes[i], tu_st(st));
		check_data(buf, (8 + (size_t)i) * 512, sizeof buf);
		assert_int_equal(layer_int(d, "retried"), 1);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	}
}

static void expect_open_fail(const char *mode, const char *why)
{
	struct vdisk *d = open_mode(mode, NULL);
	if (d)
		fail_msg("%s opened", mode);
	if (!strstr(vdisk_errmsg(), why) || strstr(vdisk_errmsg(), "SECRET"))
		fail_msg("%s: '%s' lacks '%s' (or shows the query string)", mode, vdisk_errmsg(),
		         why);
}

static void test_open(void **state)
{
	(void)state;
	expect_open_fail("redir/6", "more than 5 redirects");
	expect_open_fail("to-https", "redirect to another scheme refused (https://127.0.0.1");
	expect_open_fail("head-404", "HTTP status 404");
	const char *good[] = {"redir/5", "no-head", "head-no-length"};
	for (int i = 0; i < 3; i++) {
		struct vdisk *d = open_mode(good[i], NULL);
		if (!d)
			fail_msg("%s: %s", good[i], vdisk_errmsg());
		assert_int_equal(vdisk_sector_count(d), BLOB_SIZE / 512);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char buf[1024];
		assert_int_equal(tu_read(q, 3, buf, sizeof buf).kind, VDISK_OK);
		check_data(buf, 3 * 512, sizeof buf);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	}
	/* the redirected URL serves the reads */
	struct vdisk *d = open_mode("redir/2", NULL);
	assert_non_null(d);
	char *url = layer_string(d, "url");
	assert_non_null(strstr(url, "/good/blob"));
	free(url);
	vdisk_unref(d);
	/* bad specs */
	assert_null(vdisk_open("{\"type\":\"blob\",\"url\":\"ftp://x/y\"}", 0));
	assert_non_null(strstr(vdisk_errmsg(), "not an http:// or https:// URL"));
	assert_null(vdisk_open("{\"type\":\"blob\"}", 0));
	assert_non_null(strstr(vdisk_errmsg(), "'url' is required"));
	assert_null(vdisk_open("{\"type\":\"blob\",\"url\":\"http://x/\",\"split\":100}", 0));
	assert_non_null(strstr(vdisk_errmsg(), "split"));
	/* nothing listens: refused, retried, then a clear error */
	char spec[256];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"blob\",\"url\":\"http://127.0.0.1:1/x?sig=SECRET\",\"retries\":1}");
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "http://127.0.0.1:1/x?***"));
	assert_null(strstr(vdisk_errmsg(), "SECRET"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),        cmocka_unit_test(test_depth),
	    cmocka_unit_test(test_bad_answers), cmocka_unit_test(test_hang_times_out),
	    cmocka_unit_test(test_retried),     cmocka_unit_test(test_open),
	};
	return cmocka_run_group_tests(tests, start_server, stop_server);
}
