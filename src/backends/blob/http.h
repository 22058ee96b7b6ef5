/* HTTP response checking for the blob backend: pure functions, no I/O, so that
 * every rule is fuzzed (fuzz/fuzz_http.c) and unit-tested without a server.
 *
 * libcurl hands each header line of a response (the status line first, the
 * blank line last, and again for every interim or redirected response) to
 * http_resp_header(); the blob backend then asks http_resp_check_range() or
 * http_resp_check_head() whether the answer is the one it asked for.  A failed
 * check writes a sentence naming the cause into the response's `why` and
 * returns the errno the request fails with:
 *   EPROTO   the server broke the protocol (a malformed or contradictory header,
 *            a chunked or compressed body, a Range ignored or not respected);
 *   ESTALE   the blob is not the one opened (ETag, Last-Modified or size
 *            changed; 412; a 200 answered to If-Range);
 *   ERANGE   416: the range is past the blob's end (it shrank);
 *   EIO      any other unexpected status (the retryable ones are 5xx). */
#ifndef VDISK_BLOB_HTTP_H
#define VDISK_BLOB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_VALIDATOR_MAX 192 /* ETag / Last-Modified values kept */
#define HTTP_WHY_MAX 256

struct http_resp {
	int status;   /* of the last status line; 0 before one */
	int nstatus;  /* status lines seen (redirects, 100 Continue) */
	bool have_cl; /* Content-Length */
	uint64_t content_length;
	bool have_cr; /* Content-Range: bytes first-last/total (total unknown: !cr_total_known) */
	uint64_t cr_first, cr_last, cr_total;
	bool cr_total_known;
	bool cr_unsatisfied; /* the unsatisfied form of a 416: no bytes */
	bool chunked;        /* a Transfer-Encoding other than identity */
	bool encoded;        /* a Content-Encoding other than identity */
	bool multipart;      /* Content-Type multipart/... */
	bool ranges_none;    /* Accept-Ranges: none */
	char etag[HTTP_VALIDATOR_MAX];
	char last_modified[HTTP_VALIDATOR_MAX];
	int error; /* first malformed header: its errno (EPROTO), else 0 */
	char why[HTTP_WHY_MAX];
};

/* Start a response over (before a transfer, and at each status line). */
void http_resp_reset(struct http_resp *h);

/* Feed one header line as received (with or without its CR LF).  A status line
 * ("HTTP/1.1 206 Partial Content", "HTTP/2 200") starts a new response; the
 * blank line ends the block.  Returns 0, or the errno of the first malformed
 * header (kept in h->error and h->why; later lines are then ignored). */
int http_resp_header(struct http_resp *h, const char *line, size_t len);

/* What a ranged GET asked for, and what the blob was at open. */
struct http_expect {
	uint64_t first, last;      /* the inclusive byte range asked */
	uint64_t size;             /* the blob's length at open */
	const char *etag;          /* pinned validator ("" or NULL: none) */
	const char *last_modified; /* pinned when there is no ETag */
	bool if_range;             /* the request carried If-Range */
};

/* Check the headers of the answer to a ranged GET.  Returns 0, or an errno with
 * h->why set. */
int http_resp_check_range(struct http_resp *h, const struct http_expect *e);

/* Check the headers of the answer to the HEAD (or GET bytes=0-0 when probe is
 * true) at open, and find the blob's length.  Returns 0 with *size set, or an
 * errno with h->why set. */
int http_resp_check_open(struct http_resp *h, bool probe, uint64_t *size);

/* Whether a status is worth a retry (5xx but 501 and 505). */
bool http_status_retryable(int status);

/* A value safe to send back in a header: printable ASCII, no CR/LF/NUL. */
bool http_value_safe(const char *s);

/* Copy url into out with userinfo and the query string (and fragment) replaced
 * by "***", for messages and inspect: a signed URL's secret is never printed. */
void http_url_redact(const char *url, char *out, size_t outlen);

#endif
