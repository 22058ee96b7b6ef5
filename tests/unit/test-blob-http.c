/* The blob backend's HTTP response checks (src/backends/blob/http.c) on header
 * blocks written out by hand: what a range answer must be, what open takes the
 * length from, strict numbers, and the redaction of a URL's secrets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "backends/blob/http.h"

/* Feed "\n"-separated header lines; returns the first error. */
static int feed(struct http_resp *h, const char *block)
{
	int rc = 0;
	http_resp_reset(h);
	h->nstatus = 0;
	for (const char *p = block; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		int r = http_resp_header(h, p, n);
		if (r && !rc)
			rc = r;
		p += n + (nl ? 1 : 0);
	}
	return rc;
}

static const struct http_expect want = {
    .first = 4096, .last = 8191, .size = 1 << 20, .etag = "\"v1\"", .last_modified = ""};

static int range(const char *block, const char *why)
{
	struct http_resp h;
	feed(&h, block);
	int rc = http_resp_check_range(&h, &want);
	if (why && !strstr(h.why, why))
		fail_msg("'%s' lacks '%s'", h.why, why);
	return rc;
}

static void test_range_good(void **state)
{
	(void)state;
	assert_int_equal(range("HTTP/1.1 206 Partial Content\nContent-Length: 4096\n"
	                       "content-range:  bytes 4096-8191/1048576 \nETag: \"v1\"\n\n",
	                       NULL),
	                 0);
	/* HTTP/2 status line, no length, unknown total, a 100 Continue first */
	assert_int_equal(range("HTTP/1.1 100 Continue\n\nHTTP/2 206\n"
	                       "Content-Range: bytes 4096-8191/*\n\n",
	                       NULL),
	                 0);
}

static void test_range_bad(void **state)
{
	(void)state;
	assert_int_equal(range("HTTP/1.1 200 OK\nContent-Length: 1048576\n", "ignored the Range"),
	                 EPROTO);
	assert_int_equal(range("HTTP/1.1 412 Precondition Failed\n", "changed"), ESTALE);
	assert_int_equal(range("HTTP/1.1 416 Range Not Satisfiable\n", "416"), ERANGE);
	assert_int_equal(range("HTTP/1.1 302 Found\nLocation: /x\n", "redirect"), EPROTO);
	assert_int_equal(range("HTTP/1.1 500 Oops\n", "status 500"), EIO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Length: 4096\n", "without a Content-Range"),
	                 EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4097-8192/1048576\n",
	                       "does not match the range asked"),
	                 EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4096-8191/2097152\n",
	                       "Content-Range length 2097152"),
	                 ESTALE);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4096-8191/1048576\n"
	                       "Content-Length: 4095\n",
	                       "Content-Length 4095 does not match"),
	                 EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4096-8191/1048576\n"
	                       "Transfer-Encoding: chunked\n",
	                       "chunked"),
	                 EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4096-8191/1048576\n"
	                       "Content-Encoding: br\n",
	                       "compressed"),
	                 EPROTO);
	assert_int_equal(
	    range("HTTP/1.1 206 P\nContent-Type: multipart/byteranges; b=1\n", "multipart"),
	    EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Range: bytes 4096-8191/1048576\n"
	                       "ETag: \"v2\"\n",
	                       "ETag \"v2\", \"v1\" at open"),
	                 ESTALE);
	/* malformed headers */
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Length: -1\n", "not a number"), EPROTO);
	assert_int_equal(
	    range("HTTP/1.1 206 P\nContent-Length: 18446744073709551616\n", "not a number"),
	    EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nContent-Length: 1\nContent-Length: 2\n",
	                       "two different Content-Length"),
	                 EPROTO);
	assert_int_equal(
	    range("HTTP/1.1 206 P\nContent-Range: bytes 9-8/100\n", "malformed Content-Range"),
	    EPROTO);
	assert_int_equal(
	    range("HTTP/1.1 206 P\nContent-Range: bytes 0-100/100\n", "malformed Content-Range"),
	    EPROTO);
	assert_int_equal(
	    range("HTTP/1.1 206 P\nContent-Range: items 0-1/100\n", "malformed Content-Range"),
	    EPROTO);
	assert_int_equal(range("HTTP/1.1 2O6 P\n", "malformed status line"), EPROTO);
	assert_int_equal(range("Content-Length: 1\n", "before the status line"), EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nno colon here\n", "without a colon"), EPROTO);
	assert_int_equal(range("HTTP/1.1 206 P\nETag: \"a\x01\"\n", "control byte"), EPROTO);
}

static void test_open(void **state)
{
	(void)state;
	struct http_resp h;
	uint64_t size = 0;
	feed(&h, "HTTP/1.1 200 OK\nContent-Length: 123456\nETag: \"x\"\n"
	         "Last-Modified: Wed, 02 Dec 2026 14:00:00 GMT\n");
	assert_int_equal(http_resp_check_open(&h, false, &size), 0);
	assert_int_equal(size, 123456);
	assert_string_equal(h.etag, "\"x\"");
	assert_string_equal(h.last_modified, "Wed, 02 Dec 2026 14:00:00 GMT");
	feed(&h, "HTTP/1.1 200 OK\nContent-Length: 5\nAccept-Ranges: none\n");
	assert_int_equal(http_resp_check_open(&h, false, &size), EPROTO);
	feed(&h, "HTTP/1.1 200 OK\n");
	assert_int_equal(http_resp_check_open(&h, false, &size), EPROTO);
	assert_non_null(strstr(h.why, "no Content-Length"));
	feed(&h, "HTTP/1.1 206 P\nContent-Range: bytes 0-0/777\nContent-Length: 1\n");
	assert_int_equal(http_resp_check_open(&h, true, &size), 0);
	assert_int_equal(size, 777);
	feed(&h, "HTTP/1.1 206 P\nContent-Range: bytes 0-0/*\n");
	assert_int_equal(http_resp_check_open(&h, true, &size), EPROTO);
	feed(&h, "HTTP/1.1 200 OK\nContent-Length: 777\n");
	assert_int_equal(http_resp_check_open(&h, true, &size), EPROTO);
	feed(&h, "HTTP/1.1 404 Not Found\n");
	assert_int_equal(http_resp_check_open(&h, false, &size), EIO);
	assert_non_null(strstr(h.why, "404"));
	assert_true(http_status_retryable(503));
	assert_false(http_status_retryable(501));
	assert_false(http_status_retryable(404));
}

static void test_redact(void **state)
{
	(void)state;
	char out[128];
	http_url_redact("https://user:pw@host.example:8443/a/b.img?sv=1&sig=SECRET#x", out,
	                sizeof out);
	assert_string_equal(out, "https://***@host.example:8443/a/b.img?***");
	http_url_redact("http://h/p", out, sizeof out);
	assert_string_equal(out, "http://h/p");
	http_url_redact("http://h/p?", out, sizeof out);
	assert_string_equal(out, "http://h/p?***");
	http_url_redact("http://h/a@b?c=d", out, sizeof out);
	assert_string_equal(out, "http://h/a@b?***");
	http_url_redact("http://h/averyveryverylongpath?sig=SECRET", out, 12);
	assert_null(strstr(out, "SECRET"));
	assert_true(http_value_safe("\"abc\""));
	assert_false(http_value_safe("a\r\nX-Injected: 1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_range_good),
	    cmocka_unit_test(test_range_bad),
	    cmocka_unit_test(test_open),
	    cmocka_unit_test(test_redact),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
