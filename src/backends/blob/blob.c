/* blob: a read-only disk streamed from an HTTP(S) URL with range requests.
 *
 *   {"type":"blob","url":"https://host/disk.img?sig=...","ca-file":P?,
 *    "insecure":false?,"retries":3?,"timeout":"30s"?,"split":"1M"?,
 *    "connections":16?,"size":N?,"etag":E?,"last-modified":D?}
 *
 * The disk is always read-only (a write fails with VDISK_ERR_READ_ONLY).
 * Given `size` with `etag` (or `last-modified`), open asks the server nothing:
 * the blob is pinned to that version and the first read checks it, so a disk
 * under a read cache opens, and reads what the cache holds, with the server
 * down.
 *
 * Open (control path, blocking): HEAD, following up to 5 redirects that keep
 * the scheme; the final URL serves every read.  The length comes from
 * Content-Length; a server that refuses HEAD (403, 405, 501) or gives no length
 * is asked GET bytes=0-0 and the length read from Content-Range.  The ETag (or,
 * lacking a strong one, Last-Modified) seen at open pins the blob: every range
 * carries If-Match (or If-Unmodified-Since), and every answer's validators and
 * Content-Range length must still match, so a blob replaced while open fails
 * reads with ESTALE instead of mixing two versions.
 *
 * Data path: no thread of our own and none per request.  Each queue owns a
 * libcurl multi handle driven through its socket interface from the queue's
 * own loop: libcurl's sockets are watched by the queue (vdisk_watch_start())
 * and its timeout is a queue timer, so transfers make progress from
 * vdisk_queue_poll()/wait() and complete on the queue's thread without a
 * hop.  A read becomes one ranged GET, or several run in parallel when it is
 * larger than `split`; connections are kept alive and reused (HTTP/1.1) or
 * multiplexed (HTTP/2 when the TLS server offers it), at most `connections`
 * per queue.  Transfer objects (a curl easy handle each) come from a per-queue
 * pool that grows to a bound; a request finding it empty waits in a FIFO.
 * (libcurl itself still allocates a little for each transfer.)
 *
 * Every answer is checked before its body is taken (http.c): status, framing,
 * Content-Range, Content-Length, validators; a body longer or shorter than
 * the range fails the read (the longer one is cut off, never copied past it).  Retries, with backoff from 100 ms doubling to
 * 2 s, are for refused or reset connections, timeouts and 5xx only; a wrong
 * answer fails at once.  A failed read completes with VDISK_ERR_IO and an
 * errno naming the class of cause (http.h); the sentence naming it is kept as
 * the layer's "last_error" in inspect.  The query string of the URL (a SAS or
 * presigned signature) and any userinfo are secrets: never printed. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "vdisk/backend.h"

#define BLOB_SECTOR 512
#define BLOB_MAX_REDIRECTS 5
#define BLOB_URL_SHOWN 512
#define BLOB_BACKOFF_FIRST_NS 100000000ull /* 100 ms */
#define BLOB_BACKOFF_MAX_NS 2000000000ull  /* 2 s */
#define BLOB_XFER_MAX 256                  /* transfers per queue */
#define BLOB_BUFFER_SIZE (128 * 1024)      /* libcurl's receive buffer, large ranges */
#define BLOB_BUFFER_SMALL (16 * 1024)      /* and small ones (libcurl's default) */

struct blob {
	char *url; /* the final URL, after redirects */
	char shown[BLOB_URL_SHOWN];
	char scheme[8];
	char *ca_file;
	bool insecure;
	unsigned retries;
	uint64_t timeout_ns;
	uint64_t split;
	unsigned connections;
	uint64_t size;
	char etag[HTTP_VALIDATOR_MAX];
	char last_modified[HTTP_VALIDATOR_MAX];
	const char *pinned_by; /* "etag", "last-modified" or "none" */
	struct curl_slist *headers;
	long http_version;
	_Atomic uint64_t n_gets, n_retries, n_failed;
	pthread_mutex_t lock; /* last_error */
	char last_error[HTTP_WHY_MAX + 128];
};

struct blob_q;

/* One ranged GET in flight (or waiting for its retry). */
struct blob_xfer {
	CURL *easy;
	struct blob_q *bq;
	struct vdisk_req *r;
	uint64_t off; /* blob byte offset */
	size_t len;   /* bytes asked */
	size_t roff;  /* offset in r's buffers */
	size_t got;   /* body bytes taken */
	unsigned attempt;
	int err; /* a wrong answer found by a callback: errno, why in resp */
	bool retry_5xx;
	struct http_resp resp;
	struct vdisk_timer retry_timer;
	char range[48];
	struct blob_xfer *next; /* free list */
};

struct blob_rctx {
	size_t next;          /* first byte of r not yet given to a transfer */
	unsigned outstanding; /* transfers running for r */
	int err;              /* first failure */
	bool pending;         /* in the queue's FIFO of requests waiting for transfers */
	struct vdisk_req *next_pending;
};

struct blob_q {
	struct blob *b;
	struct vdisk_queue *q;
	CURLM *multi;
	struct vdisk_timer timer;
	bool timer_on;
	bool busy;    /* inside bq_action() or a submission: libcurl runs before we return */
	bool run_now; /* libcurl asked to be run again at once (a timeout of 0) */
	struct blob_xfer *free;
	struct blob_xfer *all[BLOB_XFER_MAX];
	unsigned nxfer;
	struct vdisk_req *pend_head, **pend_tail;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void blob_curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void blob_note_error(struct blob *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void blob_note_error(struct blob *b, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&b->lock);
	va_start(ap, fmt);
	vsnprintf(b->last_error, sizeof b->last_error, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------------- */
/* Transport errors                                                            */
/* ------------------------------------------------------------------------- */

/* The errno and whether a retry may help, for a libcurl result. */
static int curl_errno(CURLcode c, bool *retryable)
{
	*retryable = false;
	switch (c) {
	case CURLE_OK: return 0;
	case CURLE_COULDNT_CONNECT: *retryable = true; return ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY: *retryable = true; return EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT: *retryable = true; return ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM: *retryable = true; return ECONNRESET;
	case CURLE_OUT_OF_MEMORY: return ENOMEM;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE: return EACCES;
	default: return EPROTO;
	}
}

/* ------------------------------------------------------------------------- */
/* Open: HEAD (or a one-byte GET), redirects, validators                       */
/* ------------------------------------------------------------------------- */

struct open_resp {
	struct http_resp h;
	char location[BLOB_URL_SHOWN];
};

static size_t open_header_cb(char *p, size_t size, size_t n, void *opaque)
{
	struct open_resp *o = opaque;
	size_t len = size * n;
	http_resp_header(&o->h, p, len);
	/* kept to name a redirect libcurl refuses to follow */
	if (len > 9 && strncasecmp(p, "location:", 9) == 0) {
		size_t i = 9, end = len;
		while (i < end && (p[i] == ' ' || p[i] == '\t'))
			i++;
		while (end > i && (p[end - 1] == '\r' || p[end - 1] == '\n' || p[end - 1] == ' '))
			end--;
		char tmp[BLOB_URL_SHOWN];
		snprintf(tmp, sizeof tmp, "%.*s", (int)(end - i), p + i);
		http_url_redact(tmp, o->location, sizeof o->location);
	}
	return len;
}

static size_t open_body_cb(char *p, size_t size, size_t n, void *opaque)
{
	/* the probe asks one byte; anything more is not read */
	size_t *got = opaque;
	*got += size * n;
	return *got > 1 ? 0 : size * n;
}

static int setup_common(struct blob *b, CURL *e, char *errbuf)
{
	int rc = 0;
	rc |= (int)curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= (int)curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, b->scheme);
	rc |= (int)curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(b->timeout_ns / 1000000));
	rc |= (int)curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(b->timeout_ns / 1000000));
	rc |= (int)curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	rc |= (int)curl_easy_setopt(e, CURLOPT_USERAGENT, "vdisk-blob/" VDISK_VERSION_STRING);
	if (b->ca_file)
		rc |= (int)curl_easy_setopt(e, CURLOPT_CAINFO, b->ca_file);
	if (b->insecure) {
		rc |= (int)curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		rc |= (int)curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (errbuf)
		rc |= (int)curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	return rc;
}

/* One open-time request.  Returns 0 (with *size), or an errno with the cause in
 * why; *retry says whether trying again may help. */
static int open_attempt(struct blob *b, const char *url, bool probe, uint64_t *size, char **final,
                        char *why, size_t whylen, bool *retry, int *status)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct open_resp o = {0};
	struct http_resp *h = &o.h;
	size_t got = 0;
	int err = 0;
	*retry = false;
	*status = 0;
	CURL *e = curl_easy_init();
	if (!e) {
		snprintf(why, whylen, "out of memory");
		return ENOMEM;
	}
	int rc = setup_common(b, e, errbuf);
	rc |= (int)curl_easy_setopt(e, CURLOPT_URL, url);
	rc |= (int)curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
	rc |= (int)curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)BLOB_MAX_REDIRECTS);
	rc |= (int)curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, b->scheme);
	rc |= (int)curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, open_header_cb);
	rc |= (int)curl_easy_setopt(e, CURLOPT_HEADERDATA, &o);
	rc |= (int)curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, open_body_cb);
	rc |= (int)curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
	if (probe)
		rc |= (int)curl_easy_setopt(e, CURLOPT_RANGE, "0-0");
	else
		rc |= (int)curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	if (rc) {
		snprintf(why, whylen, "libcurl refused an option (is it built with %s?)",
		         b->scheme);
		err = EINVAL;
		goto out;
	}
	CURLcode c = curl_easy_perform(e);
	long st = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
	*status = (int)st;
	if (c == CURLE_TOO_MANY_REDIRECTS) {
		snprintf(why, whylen, "more than %d redirects", BLOB_MAX_REDIRECTS);
		err = EPROTO;
		goto out;
	}
	if (c == CURLE_UNSUPPORTED_PROTOCOL && st >= 300 && st < 400) {
		snprintf(why, whylen, "redirect to another scheme refused (%s)", o.location);
		err = EPROTO;
		goto out;
	}
	if (c == CURLE_WRITE_ERROR && probe && got > 1) {
		snprintf(why, whylen,
		         "the server sent more than the one byte asked "
		         "(Range not respected)");
		err = EPROTO;
		goto out;
	}
	if (c != CURLE_OK) {
		err = curl_errno(c, retry);
		snprintf(why, whylen, "%s", *errbuf ? errbuf : curl_easy_strerror(c));
		goto out;
	}
	if (!probe && (st == 403 || st == 405 || st == 501)) {
		snprintf(why, whylen, "HEAD refused (status %ld)", st);
		err = ENOTSUP;
		goto out;
	}
	if (!probe && h->status == 200 && !h->have_cl && !h->error) {
		snprintf(why, whylen, "no Content-Length in the answer to HEAD");
		err = ENOTSUP;
		goto out;
	}
	err = http_resp_check_open(h, probe, size);
	if (err) {
		*retry = http_status_retryable(h->status);
		snprintf(why, whylen, "%s", h->why);
		goto out;
	}
	char *eff = NULL;
	curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
	*final = strdup(eff ? eff : url);
	if (!*final) {
		snprintf(why, whylen, "out of memory");
		err = ENOMEM;
		goto out;
	}
	curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &b->http_version);
	/* a weak ETag cannot be sent in If-Match (strong comparison): then the
	 * Last-Modified pins, and the ETag is still compared */
	snprintf(b->etag, sizeof b->etag, "%s", h->etag);
	snprintf(b->last_modified, sizeof b->last_modified, "%s", h->last_modified);
out:
	curl_easy_cleanup(e);
	return err;
}

static int blob_discover(struct blob *b, const char *url)
{
	char why[HTTP_WHY_MAX + CURL_ERROR_SIZE];
	bool retry;
	int status;
	for (int probe = 0; probe < 2; probe++) {
		for (unsigned attempt = 0;; attempt++) {
			char *final = NULL;
			int err = open_attempt(b, url, probe, &b->size, &final, why, sizeof why,
			                       &retry, &status);
			if (!err) {
				b->url = final;
				return 0;
			}
			if (err == ENOTSUP && !probe)
				break; /* ask GET bytes=0-0 instead */
			if (!retry || attempt >= b->retries)
				return vdisk_set_error_errno(err, "url %s: %s%s", b->shown, why,
				                             attempt ? " (after retries)" : "");
			uint64_t ns = BLOB_BACKOFF_FIRST_NS << (attempt < 5 ? attempt : 5);
			if (ns > BLOB_BACKOFF_MAX_NS)
				ns = BLOB_BACKOFF_MAX_NS;
			struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
			nanosleep(&ts, NULL);
		}
	}
	return vdisk_set_error_errno(EPROTO, "url %s: no length (HEAD gave none)", b->shown);
}

/* ------------------------------------------------------------------------- */
/* Open / close                                                                */
/* ------------------------------------------------------------------------- */

static void blob_free(struct blob *b)
{
	if (!b)
		return;
	free(b->url);
	free(b->ca_file);
	curl_slist_free_all(b->headers);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

static int blob_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"url",     "ca-file",       "insecure", "retries",
	                                   "timeout", "connections",   "split",    "size",
	                                   "etag",    "last-modified", NULL};
	const char *url = NULL, *ca = NULL, *etag = NULL, *lm = NULL;
	uint64_t retries = 3, conns = 16, split = 1u << 20, timeout_ns = 30000000000ull;
	uint64_t size = 0;
	int have_size;
	bool insecure = false;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "url", &url) < 0 ||
	    vdisk_cfg_string(cfg, "ca-file", &ca) < 0 ||
	    vdisk_cfg_bool(cfg, "insecure", &insecure) < 0 ||
	    vdisk_cfg_uint(cfg, "retries", &retries) < 0 ||
	    vdisk_cfg_duration(cfg, "timeout", &timeout_ns) < 0 ||
	    vdisk_cfg_uint(cfg, "connections", &conns) < 0 ||
	    vdisk_cfg_size(cfg, "split", &split) < 0 ||
	    (have_size = vdisk_cfg_size(cfg, "size", &size)) < 0 ||
	    vdisk_cfg_string(cfg, "etag", &etag) < 0 ||
	    vdisk_cfg_string(cfg, "last-modified", &lm) < 0)
		return -1;
	if ((etag || lm) && !have_size)
		return vdisk_set_error("size: required with etag or last-modified");
	if (have_size && !etag && !lm)
		return vdisk_set_error("size: needs etag or last-modified, which pin the "
		                       "blob that size belongs to");
	if ((etag && (!*etag || strlen(etag) >= HTTP_VALIDATOR_MAX || !http_value_safe(etag))) ||
	    (lm && (!*lm || strlen(lm) >= HTTP_VALIDATOR_MAX || !http_value_safe(lm))))
		return vdisk_set_error("%s: empty, too long or holding a control byte",
		                       etag ? "etag" : "last-modified");
	if (!url)
		return vdisk_set_error("'url' is required");
	if (retries > 20)
		return vdisk_set_error("retries: %" PRIu64 " is more than 20", retries);
	if (conns < 1 || conns > 256)
		return vdisk_set_error("connections: %" PRIu64 " is not 1..256", conns);
	if (split < BLOB_SECTOR || split % BLOB_SECTOR || split > (1u << 30))
		return vdisk_set_error(
		    "split: %" PRIu64 " is not a multiple of 512 between 512 and 1G", split);
	if (timeout_ns < 1000000 || timeout_ns > 3600000000000ull)
		return vdisk_set_error("timeout: not between 1ms and 1h");
	pthread_once(&curl_once, blob_curl_init);
	if (curl_init_rc != CURLE_OK)
		return vdisk_set_error("libcurl: %s", curl_easy_strerror(curl_init_rc));

	struct blob *b = calloc(1, sizeof *b);
	if (!b)
		return vdisk_set_error_errno(ENOMEM, "open");
	pthread_mutex_init(&b->lock, NULL);
	http_url_redact(url, b->shown, sizeof b->shown);
	if (strncasecmp(url, "http://", 7) == 0) {
		strcpy(b->scheme, "http");
	} else if (strncasecmp(url, "https://", 8) == 0) {
		strcpy(b->scheme, "https");
	} else {
		vdisk_set_error("url %s: not an http:// or https:// URL", b->shown);
		goto fail;
	}
	if (!http_value_safe(url)) {
		vdisk_set_error("url %s: holds a control byte or space", b->shown);
		goto fail;
	}
	if (ca && !(b->ca_file = strdup(ca))) {
		vdisk_set_error_errno(ENOMEM, "open");
		goto fail;
	}
	b->insecure = insecure;
	b->retries = (unsigned)retries;
	b->timeout_ns = timeout_ns;
	b->connections = (unsigned)conns;
	b->split = split;
	if (have_size) {
		/* pinned by the caller: no request at open; the first read checks */
		b->size = size;
		snprintf(b->etag, sizeof b->etag, "%s", etag ? etag : "");
		snprintf(b->last_modified, sizeof b->last_modified, "%s", lm ? lm : "");
		if (!(b->url = strdup(url))) {
			vdisk_set_error_errno(ENOMEM, "open");
			goto fail;
		}
	} else if (blob_discover(b, url) < 0) {
		goto fail;
	}
	http_url_redact(b->url, b->shown, sizeof b->shown);

	char hdr[HTTP_VALIDATOR_MAX + 32];
	bool strong = *b->etag && strncmp(b->etag, "W/", 2) != 0;
	b->pinned_by = "none";
	if (strong) {
		snprintf(hdr, sizeof hdr, "If-Match: %s", b->etag);
		b->pinned_by = "etag";
	} else if (*b->last_modified) {
		snprintf(hdr, sizeof hdr, "If-Unmodified-Since: %s", b->last_modified);
		b->pinned_by = "last-modified";
	}
	if (strcmp(b->pinned_by, "none") != 0 && !(b->headers = curl_slist_append(NULL, hdr))) {
		vdisk_set_error_errno(ENOMEM, "open");
		goto fail;
	}
	if (b->size < BLOB_SECTOR) {
		vdisk_set_error("url %s: the blob is %" PRIu64
		                " bytes, less than one 512-byte sector",
		                b->shown, b->size);
		goto fail;
	}

	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_count = b->size / BLOB_SECTOR; /* a partial last sector is left out */
	m->sector_size = BLOB_SECTOR;
	m->physical_sector_size = 4096;
	m->read_only = true;
	m->fua = false;
	m->unmap = VDISK_UNMAP_IGNORED;
	m->req_ctx_size = sizeof(struct blob_rctx);
	if (*b->etag || *b->last_modified) {
		/* the same blob version under the same address: the same id (the
		 * query string, often a signature that changes, is left out) */
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		size_t plen = strcspn(b->url, "?#");
		EVP_MD_CTX *mc = EVP_MD_CTX_new();
		if (!mc || !EVP_DigestInit_ex(mc, EVP_sha256(), NULL) ||
		    !EVP_DigestUpdate(mc, "vdisk-blob", 11) ||
		    !EVP_DigestUpdate(mc, b->url, plen) || !EVP_DigestUpdate(mc, "", 1) ||
		    !EVP_DigestUpdate(mc, *b->etag ? b->etag : b->last_modified,
		                      strlen(*b->etag ? b->etag : b->last_modified) + 1) ||
		    !EVP_DigestUpdate(mc, &b->size, sizeof b->size) ||
		    !EVP_DigestFinal_ex(mc, md, &mdlen) || mdlen < 16) {
			EVP_MD_CTX_free(mc);
			vdisk_set_error("SHA-256 for the disk id failed");
			goto fail;
		}
		EVP_MD_CTX_free(mc);
		memcpy(m->disk_id, md, 16);
		m->has_disk_id = true;
	}
	vdisk_set_priv(d, b);
	return 0;
fail:
	blob_free(b);
	return -1;
}

static void blob_close(struct vdisk *d)
{
	blob_free(vdisk_priv(d));
}

/* ------------------------------------------------------------------------- */
/* Transfers                                                                   */
/* ------------------------------------------------------------------------- */

static void bq_start(struct blob_q *bq, struct vdisk_req *r);
static void bq_action(struct blob_q *bq, curl_socket_t fd, int what);
static void bq_timer_fire(struct vdisk_timer *t);

static size_t xfer_header_cb(char *p, size_t size, size_t n, void *opaque)
{
	struct blob_xfer *x = opaque;
	struct blob *b = x->bq->b;
	size_t len = size * n;
	if (http_resp_header(&x->resp, p, len))
		return 0;
	if (len > 2 || (len && p[0] != '\r' && p[0] != '\n'))
		return len;
	/* the end of a header block: judge it before any of its body is taken */
	if (x->resp.status >= 100 && x->resp.status < 200)
		return len;
	if (http_status_retryable(x->resp.status)) {
		x->retry_5xx = true;
		snprintf(x->resp.why, sizeof x->resp.why, "HTTP status %d", x->resp.status);
		return 0;
	}
	struct http_expect e = {
	    .first = x->off,
	    .last = x->off + x->len - 1,
	    .size = b->size,
	    .etag = b->etag,
	    .last_modified = b->last_modified,
	};
	x->err = http_resp_check_range(&x->resp, &e);
	return x->err ? 0 : len;
}

static size_t xfer_body_cb(char *p, size_t size, size_t n, void *opaque)
{
	struct blob_xfer *x = opaque;
	size_t len = size * n;
	if (x->resp.status != 206 && !x->err) {
		x->err = EPROTO;
		snprintf(x->resp.why, sizeof x->resp.why, "body before a checked header block");
		return 0;
	}
	if (len > x->len - x->got) {
		x->err = EPROTO;
		snprintf(x->resp.why, sizeof x->resp.why,
		         "body longer than the %zu bytes of the range (range not respected)",
		         x->len);
		return 0;
	}
	vdisk_iov_from_buf(x->r->iov, x->r->iovcnt, x->roff + x->got, p, len);
	x->got += len;
	return len;
}

static struct blob_xfer *xfer_get(struct blob_q *bq)
{
	struct blob *b = bq->b;
	struct blob_xfer *x = bq->free;
	if (x) {
		bq->free = x->next;
		return x;
	}
	if (bq->nxfer == BLOB_XFER_MAX)
		return NULL;
	x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->bq = bq;
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return NULL;
	}
	CURL *e = x->easy;
	int rc = setup_common(b, e, NULL);
	rc |= (int)curl_easy_setopt(e, CURLOPT_URL, b->url);
	rc |= (int)curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	rc |= (int)curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, xfer_header_cb);
	rc |= (int)curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	rc |= (int)curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, xfer_body_cb);
	rc |= (int)curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	if (b->headers)
		rc |= (int)curl_easy_setopt(e, CURLOPT_HTTPHEADER, b->headers);
	/* over TLS, a new transfer waits for the first connection's ALPN answer
	 * and shares it when the server speaks HTTP/2, rather than open a
	 * connection of its own */
	if (strcmp(b->scheme, "https") == 0)
		rc |= (int)curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	if (rc) {
		curl_easy_cleanup(e);
		free(x);
		return NULL;
	}
	bq->all[bq->nxfer++] = x;
	return x;
}

static void xfer_put(struct blob_q *bq, struct blob_xfer *x)
{
	x->r = NULL;
	x->next = bq->free;
	bq->free = x;
}

static int xfer_add(struct blob_xfer *x)
{
	http_resp_reset(&x->resp);
	x->resp.nstatus = 0;
	x->got = 0;
	x->err = 0;
	x->retry_5xx = false;
	snprintf(x->range, sizeof x->range, "%" PRIu64 "-%" PRIu64, x->off, x->off + x->len - 1);
	curl_easy_setopt(x->easy, CURLOPT_RANGE, x->range);
	/* libcurl allocates its receive buffer for each transfer: a large one
	 * for a small range would cost a fresh heap extension (page faults) and
	 * its trim every time */
	curl_easy_setopt(x->easy, CURLOPT_BUFFERSIZE,
	                 (long)(x->len < BLOB_BUFFER_SIZE ? BLOB_BUFFER_SMALL : BLOB_BUFFER_SIZE));
	atomic_fetch_add_explicit(&x->bq->b->n_gets, 1, memory_order_relaxed);
	return curl_multi_add_handle(x->bq->multi, x->easy) == CURLM_OK ? 0 : ENOMEM;
}

/* r is over once every part was handed out and has finished, and r has left
 * the FIFO (a failed part ends the handing out, but r may still be linked). */
static void req_maybe_complete(struct vdisk_req *r)
{
	struct blob_rctx *c = vdisk_req_ctx(r);
	if (!c->pending && c->outstanding == 0 && c->next == r->len)
		vdisk_req_complete(r, c->err ? vdisk_status_io(c->err) : vdisk_status_ok());
}

static void req_fail(struct blob_q *bq, struct vdisk_req *r, int err)
{
	struct blob_rctx *c = vdisk_req_ctx(r);
	if (!c->err) {
		c->err = err;
		c->next = r->len; /* hand out no more of it */
		atomic_fetch_add_explicit(&bq->b->n_failed, 1, memory_order_relaxed);
	}
}

/* A part of r is over (err 0: all its bytes are in r's buffers). */
static void part_done(struct blob_q *bq, struct vdisk_req *r, int err)
{
	struct blob_rctx *c = vdisk_req_ctx(r);
	c->outstanding--;
	if (err)
		req_fail(bq, r, err);
	req_maybe_complete(r);
}

static void xfer_retry_fire(struct vdisk_timer *t)
{
	struct blob_xfer *x =
	    (struct blob_xfer *)((char *)t - offsetof(struct blob_xfer, retry_timer));
	struct blob_q *bq = x->bq;
	bq->busy = true; /* libcurl runs below */
	if (xfer_add(x)) {
		struct vdisk_req *r = x->r;
		blob_note_error(bq->b, "url %s: bytes %s: out of memory", bq->b->shown, x->range);
		xfer_put(bq, x);
		part_done(bq, r, ENOMEM);
	}
	bq->busy = false;
	bq_action(bq, CURL_SOCKET_TIMEOUT, 0);
}

/* A transfer finished with curl's result c. */
static void xfer_finish(struct blob_q *bq, struct blob_xfer *x, CURLcode c)
{
	struct blob *b = bq->b;
	struct vdisk_req *r = x->r;
	bool retryable = false;
	int err = 0;
	char why[HTTP_WHY_MAX + 64];
	curl_multi_remove_handle(bq->multi, x->easy);
	if (x->err) {
		err = x->err;
		snprintf(why, sizeof why, "%s", x->resp.why);
	} else if (x->retry_5xx) {
		err = EIO;
		retryable = true;
		snprintf(why, sizeof why, "%s", x->resp.why);
	} else if (c != CURLE_OK) {
		err = curl_errno(c, &retryable);
		if (c == CURLE_PARTIAL_FILE)
			snprintf(why, sizeof why,
			         "the connection closed after %zu of the %zu bytes of the body",
			         x->got, x->len);
		else if (x->resp.error)
			snprintf(why, sizeof why, "%s", x->resp.why);
		else
			snprintf(why, sizeof why, "%s", curl_easy_strerror(c));
		if (x->resp.error) {
			err = x->resp.error;
			retryable = false;
		}
	} else if (x->got != x->len) {
		err = EPROTO;
		snprintf(why, sizeof why,
		         "the body ended after %zu of the %zu bytes asked (unexpected EOF)", x->got,
		         x->len);
	}
	if (err && retryable && x->attempt < b->retries) {
		uint64_t ns = BLOB_BACKOFF_FIRST_NS << (x->attempt < 5 ? x->attempt : 5);
		if (ns > BLOB_BACKOFF_MAX_NS)
			ns = BLOB_BACKOFF_MAX_NS;
		x->attempt++;
		atomic_fetch_add_explicit(&b->n_retries, 1, memory_order_relaxed);
		vdisk_timer_start(bq->q, &x->retry_timer, vdisk_now_ns() + ns, xfer_retry_fire);
		return;
	}
	if (err)
		blob_note_error(b, "url %s: bytes %s: %s%s", b->shown, x->range, why,
		                x->attempt ? " (after retries)" : "");
	xfer_put(bq, x);
	part_done(bq, r, err);
}

/* Hand out the waiting requests' parts while transfers are free. */
static void bq_issue(struct blob_q *bq)
{
	while (bq->pend_head) {
		struct vdisk_req *r = bq->pend_head;
		struct blob_rctx *c = vdisk_req_ctx(r);
		while (c->next < r->len) {
			struct blob_xfer *x = xfer_get(bq);
			if (!x) {
				if (bq->nxfer > 0)
					return; /* one will be free again */
				/* no transfer could be made at all: fail, not wait */
				req_fail(bq, r, ENOMEM);
				break;
			}
			size_t part = r->len - c->next;
			if (part > bq->b->split)
				part = (size_t)bq->b->split;
			x->r = r;
			x->off = r->sector * BLOB_SECTOR + c->next;
			x->len = part;
			x->roff = c->next;
			x->attempt = 0;
			c->next += part;
			c->outstanding++;
			if (xfer_add(x)) {
				xfer_put(bq, x);
				part_done(bq, r, ENOMEM);
			}
		}
		bq->pend_head = c->next_pending;
		if (!bq->pend_head)
			bq->pend_tail = &bq->pend_head;
		c->pending = false;
		req_maybe_complete(r);
	}
}

static void bq_start(struct blob_q *bq, struct vdisk_req *r)
{
	struct blob_rctx *c = vdisk_req_ctx(r);
	c->next_pending = NULL;
	c->pending = true;
	*bq->pend_tail = r;
	bq->pend_tail = &c->next_pending;
	bq_issue(bq);
}

/* Collect what libcurl finished; free transfers go to waiting requests. */
static void bq_reap(struct blob_q *bq)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(bq->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct blob_xfer *x = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		xfer_finish(bq, x, m->data.result);
	}
	bq_issue(bq);
}

/* Run libcurl for an event (or its timeouts), take what it finished, and run
 * it again while it asks to be run at once: a request added, a transfer that
 * can go on.  Doing that here rather than through a queue timer of 0 ns saves
 * re-arming the queue's timer descriptor several times per request. */
static void bq_action(struct blob_q *bq, curl_socket_t fd, int what)
{
	int running;
	bool was_busy = bq->busy;
	bq->busy = true;
	bq->run_now = false;
	curl_multi_socket_action(bq->multi, fd, what, &running);
	bq_reap(bq);
	for (int i = 0; bq->run_now && i < 16; i++) {
		bq->run_now = false;
		curl_multi_socket_action(bq->multi, CURL_SOCKET_TIMEOUT, 0, &running);
		bq_reap(bq);
	}
	bq->busy = was_busy;
	if (bq->run_now) {
		/* still more: from the queue's next poll, not in a loop here */
		bq->run_now = false;
		if (bq->timer_on)
			vdisk_timer_cancel(bq->q, &bq->timer);
		bq->timer_on = true;
		vdisk_timer_start(bq->q, &bq->timer, 0, bq_timer_fire);
	}
}

static void bq_timer_fire(struct vdisk_timer *t)
{
	struct blob_q *bq = (struct blob_q *)((char *)t - offsetof(struct blob_q, timer));
	bq->timer_on = false;
	bq_action(bq, CURL_SOCKET_TIMEOUT, 0);
}

/* libcurl's timeout.  One queue timer serves it and is only moved earlier: one
 * that fires before libcurl's deadline costs a call that finds nothing to do,
 * while moving it at every change would cost a system call each time when the
 * queue runs from an event loop. */
static int bq_curl_timer(CURLM *multi, long timeout_ms, void *opaque)
{
	struct blob_q *bq = opaque;
	(void)multi;
	if (timeout_ms < 0)
		return 0;
	if (timeout_ms == 0 && bq->busy) {
		bq->run_now = true;
		return 0;
	}
	uint64_t deadline = vdisk_now_ns() + (uint64_t)timeout_ms * 1000000u;
	if (bq->timer_on) {
		if (bq->timer.deadline <= deadline)
			return 0;
		vdisk_timer_cancel(bq->q, &bq->timer);
	}
	bq->timer_on = true;
	vdisk_timer_start(bq->q, &bq->timer, deadline, bq_timer_fire);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* libcurl's sockets, watched from the queue                                   */
/* ------------------------------------------------------------------------- */

struct blob_sock {
	struct vdisk_watch watch; /* first: the watch callback finds the socket */
	struct blob_q *bq;
};

static void bq_sock_event(struct vdisk_watch *w, unsigned revents)
{
	struct blob_sock *s = (struct blob_sock *)w;
	int what = 0;
	if (revents & (POLLIN | POLLPRI | POLLHUP))
		what |= CURL_CSELECT_IN;
	if (revents & POLLOUT)
		what |= CURL_CSELECT_OUT;
	if (revents & POLLERR)
		what |= CURL_CSELECT_ERR;
	bq_action(s->bq, w->fd, what);
}

static int bq_curl_socket(CURL *easy, curl_socket_t fd, int what, void *opaque, void *sockp)
{
	struct blob_q *bq = opaque;
	struct blob_sock *s = sockp;
	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			vdisk_watch_stop(bq->q, &s->watch);
			curl_multi_assign(bq->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	unsigned ev = 0;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev |= POLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev |= POLLOUT;
	if (s)
		return vdisk_watch_modify(bq->q, &s->watch, ev) < 0 ? -1 : 0;
	s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->bq = bq;
	if (vdisk_watch_start(bq->q, &s->watch, fd, ev, bq_sock_event) < 0) {
		free(s);
		return -1;
	}
	curl_multi_assign(bq->multi, fd, s);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Queues and the data path                                                    */
/* ------------------------------------------------------------------------- */

static int blob_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	struct blob *b = vdisk_priv(d);
	struct blob_q *bq = calloc(1, sizeof *bq);
	if (!bq)
		return vdisk_set_error_errno(ENOMEM, "open");
	bq->b = b;
	bq->q = q;
	bq->pend_tail = &bq->pend_head;
	bq->multi = curl_multi_init();
	if (!bq->multi) {
		free(bq);
		return vdisk_set_error("curl_multi_init failed");
	}
	CURLM *m = bq->multi;
	int rc = 0;
	rc |= (int)curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, bq_curl_socket);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_SOCKETDATA, bq);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, bq_curl_timer);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_TIMERDATA, bq);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)b->connections);
	rc |= (int)curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)b->connections);
	if (rc) {
		curl_multi_cleanup(m);
		free(bq);
		return vdisk_set_error("libcurl refused a multi option");
	}
	*qstate = bq;
	return 0;
}

static void blob_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	struct blob_q *bq = qstate;
	(void)d;
	/* nothing is in flight; libcurl may still call back while it closes
	 * its connections: no timers from now on */
	curl_multi_setopt(bq->multi, CURLMOPT_TIMERFUNCTION, NULL);
	if (bq->timer_on)
		vdisk_timer_cancel(q, &bq->timer);
	for (unsigned i = 0; i < bq->nxfer; i++) {
		curl_multi_remove_handle(bq->multi, bq->all[i]->easy);
		curl_easy_cleanup(bq->all[i]->easy);
		free(bq->all[i]);
	}
	/* closes the cached connections, which unwatches their sockets */
	curl_multi_cleanup(bq->multi);
	free(bq);
}

static int blob_read(struct vdisk_req *r)
{
	struct blob_q *bq = vdisk_req_qstate(r);
	struct blob_rctx *c = vdisk_req_ctx(r);
	c->next = 0;
	c->outstanding = 0;
	c->err = 0;
	if (r->len == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (bq->busy) {
		/* submitted from a completion we deliver: bq_action runs libcurl */
		bq_start(bq, r);
		return 0;
	}
	bq->busy = true;
	bq_start(bq, r);
	bq->busy = false;
	bq_action(bq, CURL_SOCKET_TIMEOUT, 0);
	return 0;
}

static int blob_inspect(struct vdisk *d, json_t *obj)
{
	struct blob *b = vdisk_priv(d);
	json_t *cfg = json_object_get(obj, "config");
	if (json_is_object(cfg) && json_object_get(cfg, "url"))
		json_object_set_new(cfg, "url", json_string(b->shown));
	json_object_set_new(obj, "url", json_string(b->shown));
	json_object_set_new(obj, "size", json_integer((json_int_t)b->size));
	json_object_set_new(obj, "etag", *b->etag ? json_string(b->etag) : json_null());
	json_object_set_new(obj, "last_modified",
	                    *b->last_modified ? json_string(b->last_modified) : json_null());
	json_object_set_new(obj, "pinned_by", json_string(b->pinned_by));
	const char *ver = b->http_version == CURL_HTTP_VERSION_2_0   ? "2"
	                  : b->http_version == CURL_HTTP_VERSION_1_1 ? "1.1"
	                  : b->http_version == CURL_HTTP_VERSION_1_0 ? "1.0"
	                                                             : "?";
	json_object_set_new(obj, "http_version", json_string(ver));
	json_object_set_new(obj, "retries", json_integer(b->retries));
	json_object_set_new(obj, "timeout_ms", json_integer((json_int_t)(b->timeout_ns / 1000000)));
	json_object_set_new(obj, "split", json_integer((json_int_t)b->split));
	json_object_set_new(obj, "connections", json_integer(b->connections));
	json_object_set_new(obj, "gets", json_integer((json_int_t)atomic_load(&b->n_gets)));
	json_object_set_new(obj, "retried", json_integer((json_int_t)atomic_load(&b->n_retries)));
	json_object_set_new(obj, "failed", json_integer((json_int_t)atomic_load(&b->n_failed)));
	pthread_mutex_lock(&b->lock);
	json_object_set_new(obj, "last_error",
	                    *b->last_error ? json_string(b->last_error) : json_null());
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static const char *const blob_secret_keys[] = {"url", NULL};

const struct vdisk_driver vdisk_driver_blob = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "blob",
    .description = "read-only disk from an HTTP(S) URL, read with range requests",
    .open = blob_open,
    .close = blob_close,
    .queue_init = blob_queue_init,
    .queue_fini = blob_queue_fini,
    .read = blob_read,
    .inspect = blob_inspect,
    .secret_keys = blob_secret_keys,
};
