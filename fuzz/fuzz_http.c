/* Fuzz the blob backend's HTTP response checking (src/backends/blob/http.c):
 * any header block must be judged without a crash, and an answer accepted for
 * a range must really be that range of the blob opened.
 *
 * Input: 8 bytes that choose the range asked, the blob's size and the pinned
 * validators, then header lines separated by '\n' (the status line first). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/blob/http.h"

static uint64_t take(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	struct http_expect e = {0};
	e.first = take(data, 3);
	e.last = e.first + take(data + 3, 2);
	e.size = e.last + 1 + take(data + 5, 2);
	e.if_range = data[7] & 1;
	e.etag = (data[7] & 2) ? "\"abc\"" : "";
	e.last_modified = (data[7] & 4) ? "Wed, 02 Dec 2026 14:00:00 GMT" : NULL;
	const char *p = (const char *)data + 8, *end = (const char *)data + size;

	struct http_resp h = {0};
	http_resp_reset(&h);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
		(void)http_resp_header(&h, p, len);
		p += len;
	}
	if (memchr(h.why, 0, sizeof h.why) == NULL || memchr(h.etag, 0, sizeof h.etag) == NULL)
		abort();
	struct http_resp r = h;
	if (http_resp_check_range(&r, &e) == 0) {
		/* accepted: it must be exactly the range asked, of this blob */
		if (r.status != 206 || !r.have_cr || r.cr_first != e.first || r.cr_last != e.last ||
		    (r.cr_total_known && r.cr_total != e.size) || r.chunked || r.encoded ||
		    (r.have_cl && r.content_length != e.last - e.first + 1) || r.error)
			abort();
		if (*e.etag && *r.etag && strcmp(r.etag, e.etag) != 0)
			abort();
		if (!http_value_safe(r.etag) || !http_value_safe(r.last_modified))
			abort();
	} else if (!*r.why) {
		abort(); /* a refusal must say why */
	}
	uint64_t len = 0;
	for (int probe = 0; probe < 2; probe++) {
		r = h;
		if (http_resp_check_open(&r, probe, &len) == 0) {
			if (probe ? r.status != 206 || !r.cr_total_known || len != r.cr_total
			          : r.status != 200 || !r.have_cl || len != r.content_length)
				abort();
		} else if (!*r.why) {
			abort();
		}
	}

	/* the same bytes as a URL: the redacted form keeps no query string */
	char *url = malloc(size - 7);
	if (!url)
		return 0;
	memcpy(url, data + 8, size - 8);
	url[size - 8] = 0;
	char shown[64];
	http_url_redact(url, shown, sizeof shown);
	const char *q = strchr(url, '?');
	if (q && q[1] && strlen(q) > 4 && strstr(shown, q))
		abort();
	free(url);
	return 0;
}
