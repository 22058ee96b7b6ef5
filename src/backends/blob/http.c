/* HTTP response checking for the blob backend (see http.h).  Headers are
 * parsed strictly (RFC 9110): a length is plain decimal digits, repeated
 * Content-Length values must agree, Content-Range is "bytes F-L/T" with
 * F <= L < T, or with an asterisk for T (length unknown). */
#include "http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int resp_fail(struct http_resp *h, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int resp_fail(struct http_resp *h, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(h->why, sizeof h->why, fmt, ap);
	va_end(ap);
	return err;
}

void http_resp_reset(struct http_resp *h)
{
	int nstatus = h->nstatus;
	memset(h, 0, sizeof *h);
	h->nstatus = nstatus;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Parse decimal digits [s, s+n) into *out; no sign, no space, no overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned dgt = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - dgt) / 10)
			return false;
		v = v * 10 + dgt;
	}
	*out = v;
	return true;
}

static bool name_is(const char *name, size_t nlen, const char *want)
{
	return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* Quote a header value into a message: printable bytes only, cut short. */
static void quote(const char *v, size_t n, char *out, size_t outlen)
{
	size_t j = 0;
	for (size_t i = 0; i < n && j + 5 < outlen; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c >= 0x20 && c < 0x7f) {
			out[j++] = (char)c;
		} else {
			snprintf(out + j, outlen - j, "\\x%02x", c);
			j += 4;
		}
	}
	if (outlen)
		out[j < outlen ? j : outlen - 1] = 0;
}

static int parse_status(struct http_resp *h, const char *s, size_t n)
{
	/* "HTTP/1.1 206 Partial Content" or "HTTP/2 200" */
	size_t i = 5;
	while (i < n && s[i] != ' ')
		i++;
	if (i + 4 > n || s[i] != ' ' || !(i + 4 == n || s[i + 4] == ' '))
		goto bad;
	uint64_t st;
	if (!parse_u64(s + i + 1, 3, &st) || st < 100)
		goto bad;
	http_resp_reset(h);
	h->status = (int)st;
	h->nstatus++;
	return 0;
bad:;
	char q[64];
	quote(s, n, q, sizeof q);
	h->error = resp_fail(h, EPROTO, "malformed status line '%s'", q);
	return h->error;
}

static int parse_content_range(struct http_resp *h, const char *v, size_t n)
{
	uint64_t first, last, total = 0;
	const char *dash, *slash;
	bool known = true;
	if (n < 6 || strncasecmp(v, "bytes ", 6) != 0)
		return -1;
	v += 6;
	n -= 6;
	if (n >= 2 && v[0] == '*' && v[1] == '/') {
		/* what a 416 names: the length alone */
		if (!parse_u64(v + 2, n - 2, &total))
			return -1;
		h->cr_unsatisfied = true;
		h->cr_total = total;
		return 0;
	}
	dash = memchr(v, '-', n);
	slash = memchr(v, '/', n);
	if (!dash || !slash || dash > slash)
		return -1;
	if (!parse_u64(v, (size_t)(dash - v), &first) ||
	    !parse_u64(dash + 1, (size_t)(slash - dash - 1), &last))
		return -1;
	size_t tn = n - (size_t)(slash + 1 - v);
	if (tn == 1 && slash[1] == '*')
		known = false;
	else if (!parse_u64(slash + 1, tn, &total))
		return -1;
	if (first > last || (known && last >= total))
		return -1;
	if (h->have_cr && (h->cr_first != first || h->cr_last != last ||
	                   h->cr_total_known != known || h->cr_total != total))
		return -1;
	h->have_cr = true;
	h->cr_first = first;
	h->cr_last = last;
	h->cr_total = total;
	h->cr_total_known = known;
	return 0;
}

static int keep_validator(struct http_resp *h, char *dst, const char *name, const char *v, size_t n)
{
	char q[64];
	if (n >= HTTP_VALIDATOR_MAX) {
		quote(v, n, q, sizeof q);
		h->error = resp_fail(h, EPROTO, "%s longer than %d bytes ('%s...')", name,
		                     HTTP_VALIDATOR_MAX - 1, q);
		return h->error;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f) {
			quote(v, n, q, sizeof q);
			h->error = resp_fail(h, EPROTO, "%s holds a control byte ('%s')", name, q);
			return h->error;
		}
	if (*dst && (strlen(dst) != n || memcmp(dst, v, n) != 0)) {
		quote(v, n, q, sizeof q);
		h->error = resp_fail(h, EPROTO, "two different %s headers ('%s')", name, q);
		return h->error;
	}
	memcpy(dst, v, n);
	dst[n] = 0;
	return 0;
}

int http_resp_header(struct http_resp *h, const char *line, size_t len)
{
	if (h->error)
		return h->error;
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 0)
		return 0; /* end of a header block */
	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
		return parse_status(h, line, len);
	if (h->status == 0) {
		char q[64];
		quote(line, len, q, sizeof q);
		h->error = resp_fail(h, EPROTO, "header before the status line: '%s'", q);
		return h->error;
	}
	if (is_ows(line[0]))
		return 0; /* an obsolete folded continuation: of no header we read */
	const char *colon = memchr(line, ':', len);
	if (!colon) {
		char q[64];
		quote(line, len, q, sizeof q);
		h->error = resp_fail(h, EPROTO, "header line without a colon: '%s'", q);
		return h->error;
	}
	size_t nlen = (size_t)(colon - line);
	const char *v = colon + 1;
	size_t vn = len - nlen - 1;
	while (vn && is_ows(*v))
		v++, vn--;
	while (vn && is_ows(v[vn - 1]))
		vn--;
	char q[64];
	if (name_is(line, nlen, "content-length")) {
		uint64_t cl;
		if (!parse_u64(v, vn, &cl)) {
			quote(v, vn, q, sizeof q);
			h->error = resp_fail(h, EPROTO, "Content-Length '%s' is not a number", q);
			return h->error;
		}
		if (h->have_cl && h->content_length != cl) {
			h->error = resp_fail(
			    h, EPROTO, "two different Content-Length headers (%llu and %llu)",
			    (unsigned long long)h->content_length, (unsigned long long)cl);
			return h->error;
		}
		h->have_cl = true;
		h->content_length = cl;
	} else if (name_is(line, nlen, "content-range")) {
		if (parse_content_range(h, v, vn) < 0) {
			quote(v, vn, q, sizeof q);
			h->error = resp_fail(h, EPROTO, "malformed Content-Range '%s'", q);
			return h->error;
		}
	} else if (name_is(line, nlen, "transfer-encoding")) {
		if (!(vn == 8 && strncasecmp(v, "identity", 8) == 0))
			h->chunked = true;
	} else if (name_is(line, nlen, "content-encoding")) {
		if (!(vn == 8 && strncasecmp(v, "identity", 8) == 0))
			h->encoded = true;
	} else if (name_is(line, nlen, "content-type")) {
		if (vn >= 10 && strncasecmp(v, "multipart/", 10) == 0)
			h->multipart = true;
	} else if (name_is(line, nlen, "accept-ranges")) {
		if (vn == 4 && strncasecmp(v, "none", 4) == 0)
			h->ranges_none = true;
	} else if (name_is(line, nlen, "etag")) {
		return keep_validator(h, h->etag, "ETag", v, vn);
	} else if (name_is(line, nlen, "last-modified")) {
		return keep_validator(h, h->last_modified, "Last-Modified", v, vn);
	}
	return 0;
}

bool http_status_retryable(int status)
{
	return status >= 500 && status <= 599 && status != 501 && status != 505;
}

static int check_body_framing(struct http_resp *h)
{
	if (h->chunked)
		return resp_fail(h, EPROTO,
		                 "chunked body (Transfer-Encoding): its length is not known "
		                 "before it ends");
	if (h->encoded)
		return resp_fail(h, EPROTO, "compressed body (Content-Encoding) was not asked for");
	if (h->multipart)
		return resp_fail(h, EPROTO, "multipart body for a single range");
	return 0;
}

static int check_status(struct http_resp *h)
{
	if (h->status == 412)
		return resp_fail(h, ESTALE,
		                 "the blob changed since it was opened (412 Precondition Failed)");
	if (h->status == 416)
		return resp_fail(h, ERANGE,
		                 "416 Range Not Satisfiable: the blob is shorter than at open");
	if (h->status >= 300 && h->status < 400)
		return resp_fail(h, EPROTO, "unexpected redirect (status %d) for a range",
		                 h->status);
	if (h->status == 0)
		return resp_fail(h, EPROTO, "no status line");
	return resp_fail(h, EIO, "HTTP status %d", h->status);
}

int http_resp_check_range(struct http_resp *h, const struct http_expect *e)
{
	uint64_t want = e->last - e->first + 1;
	if (h->error)
		return h->error;
	if (h->status == 200) {
		if (e->if_range)
			return resp_fail(h, ESTALE,
			                 "the blob changed since it was opened (200 with the whole "
			                 "blob answered to If-Range)");
		return resp_fail(
		    h, EPROTO, "the server ignored the Range (200 instead of 206 Partial Content)");
	}
	if (h->status != 206)
		return check_status(h);
	int rc = check_body_framing(h);
	if (rc)
		return rc;
	if (!h->have_cr)
		return resp_fail(h, EPROTO, "206 without a Content-Range naming its bytes");
	if (h->cr_first != e->first || h->cr_last != e->last)
		return resp_fail(h, EPROTO,
		                 "Content-Range bytes %llu-%llu does not match the range asked "
		                 "(%llu-%llu)",
		                 (unsigned long long)h->cr_first, (unsigned long long)h->cr_last,
		                 (unsigned long long)e->first, (unsigned long long)e->last);
	if (h->cr_total_known && h->cr_total != e->size)
		return resp_fail(h, ESTALE,
		                 "the blob changed since it was opened (Content-Range length %llu, "
		                 "%llu at open)",
		                 (unsigned long long)h->cr_total, (unsigned long long)e->size);
	if (h->have_cl && h->content_length != want)
		return resp_fail(h, EPROTO,
		                 "Content-Length %llu does not match the range length %llu",
		                 (unsigned long long)h->content_length, (unsigned long long)want);
	if (e->etag && *e->etag) {
		if (*h->etag && strcmp(h->etag, e->etag) != 0)
			return resp_fail(
			    h, ESTALE, "the blob changed since it was opened (ETag %s, %s at open)",
			    h->etag, e->etag);
	} else if (e->last_modified && *e->last_modified && *h->last_modified &&
	           strcmp(h->last_modified, e->last_modified) != 0) {
		return resp_fail(h, ESTALE,
		                 "the blob changed since it was opened (Last-Modified %s, %s at "
		                 "open)",
		                 h->last_modified, e->last_modified);
	}
	return 0;
}

int http_resp_check_open(struct http_resp *h, bool probe, uint64_t *size)
{
	if (h->error)
		return h->error;
	if (probe) {
		/* GET bytes=0-0: a 206 names the length in Content-Range; a 200
		 * means no range support */
		if (h->status == 200)
			return resp_fail(h, EPROTO,
			                 "the server does not answer byte ranges (200 to a Range "
			                 "request)");
		if (h->status != 206)
			return check_status(h);
		int rc = check_body_framing(h);
		if (rc)
			return rc;
		if (!h->have_cr || !h->cr_total_known)
			return resp_fail(h, EPROTO,
			                 "206 without a Content-Range naming the blob's length");
		if (h->cr_first != 0 || h->cr_last != 0)
			return resp_fail(h, EPROTO,
			                 "Content-Range bytes %llu-%llu does not match the range "
			                 "asked (0-0)",
			                 (unsigned long long)h->cr_first,
			                 (unsigned long long)h->cr_last);
		*size = h->cr_total;
		return 0;
	}
	if (h->status != 200)
		return check_status(h);
	if (h->ranges_none)
		return resp_fail(h, EPROTO,
		                 "the server does not answer byte ranges "
		                 "(Accept-Ranges: none)");
	if (h->encoded)
		return resp_fail(h, EPROTO, "compressed blob (Content-Encoding) was not asked for");
	if (!h->have_cl)
		return resp_fail(h, EPROTO, "no Content-Length in the answer to HEAD");
	*size = h->content_length;
	return 0;
}

bool http_value_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

void http_url_redact(const char *url, char *out, size_t outlen)
{
	if (!outlen)
		return;
	const char *scheme_end = strstr(url, "://");
	if (scheme_end && (size_t)(scheme_end - url) > strcspn(url, "/?#"))
		scheme_end = NULL; /* a "://" inside the path or query is no scheme */
	const char *host = scheme_end ? scheme_end + 3 : url;
	size_t hostpart = strcspn(host, "/?#");
	const char *at = NULL;
	for (size_t i = 0; i < hostpart; i++)
		if (host[i] == '@')
			at = host + i;
	size_t j = 0;
#define PUT(p, n)                            \
	do {                                 \
		size_t n_ = (n);             \
		if (n_ > outlen - 1 - j)     \
			n_ = outlen - 1 - j; \
		memcpy(out + j, (p), n_);    \
		j += n_;                     \
	} while (0)
	PUT(url, (size_t)(host - url));
	if (at) {
		PUT("***@", 4);
		hostpart -= (size_t)(at + 1 - host);
		host = at + 1;
	}
	size_t path = strcspn(host, "?#");
	PUT(host, path);
	if (host[path])
		PUT("?***", 4);
#undef PUT
	out[j] = 0;
}
