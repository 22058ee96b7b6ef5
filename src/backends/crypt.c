/* crypt: XTS-AES-256 over the disk below.
 *
 * The format is Linux dm-crypt's aes-xts-plain64 with one XTS data unit per
 * logical sector (for 4 KiB sectors that is dm-crypt with iv_large_sectors):
 * the 64-byte key is the AES-256 data key followed by the tweak key, and the
 * tweak of a sector is its number as a 64-bit little-endian integer
 * zero-extended to 16 bytes.
 *
 * Speed.  OpenSSL's XTS code is fast per byte, but its EVP interface re-reads
 * the cipher's parameters on each IV change (about 60 ns here), which costs
 * 40% at 512-byte sectors.  So there are two ways to the same ciphertext:
 *  - "xts": OpenSSL's XTS, one call per sector, through the provider's own
 *    dispatch table (the functions EVP calls, without the per-call parameter
 *    queries); for sectors of 4 KiB and more, where the per-call cost is small;
 *  - "ecb": XTS built from AES-256-ECB (OpenSSL, AES-NI): the tweaks of many
 *    sectors are encrypted in one ECB call, XORed in around one ECB call over
 *    up to 8 KiB of data, with the tweak sequence computed with AVX2 +
 *    VPCLMULQDQ where the CPU has them; for smaller sectors.
 * "implementation" in the spec forces one (tests check each against an
 * independent implementation).
 *
 * Writes are encrypted into a staging buffer from the queue's bounce pool (the
 * caller's buffer is never modified and no memory is allocated per I/O once
 * warm); reads are decrypted in place in the caller's buffer after the inner
 * read, so the caller may see ciphertext there until completion.  Unmap acts
 * on the ciphertext: zeros below decrypt to noise, so the unmap behaviour is
 * narrowed to unspecified unless the disk below ignores unmap, and
 * write-zeroes is left to the core, which writes encrypted zeros. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "vdisk/backend.h"

#define KEY_LEN 64
#define GROUP 8192 /* bytes per ECB call: the data and its tweaks stay in L1 */

enum impl { IMPL_XTS, IMPL_XTS_EVP, IMPL_ECB, IMPL_ECB_GENERIC };
static const char *const impl_names[] = {"xts", "xts-evp", "ecb", "ecb-generic"};

/* OpenSSL's AES-256-XTS provider functions. */
struct xts_dispatch {
	OSSL_FUNC_cipher_newctx_fn *newctx;
	OSSL_FUNC_cipher_freectx_fn *freectx;
	OSSL_FUNC_cipher_encrypt_init_fn *einit;
	OSSL_FUNC_cipher_decrypt_init_fn *dinit;
	OSSL_FUNC_cipher_cipher_fn *cipher;
	void *provctx;
};

struct crypt {
	struct vdisk *inner;
	unsigned char key[KEY_LEN];
	uint32_t ss;
	enum impl impl;
	bool simd;
	EVP_CIPHER *xts; /* fetched once; keeps the provider loaded */
	EVP_CIPHER *ecb;
	struct xts_dispatch xd;
};

struct crypt_q {
	/* xts */
	void *pctx[2];          /* provider contexts: [0] decrypt, [1] encrypt */
	EVP_CIPHER_CTX *evp[2]; /* xts-evp */
	/* ecb */
	EVP_CIPHER_CTX *ecb[2]; /* data key: [0] decrypt, [1] encrypt */
	EVP_CIPHER_CTX *tweak;  /* tweak key, encrypt */
	unsigned char *tw;      /* the tweaks of one group of data */
	unsigned char *ivs;     /* the sector numbers of one group */
	size_t per_group;       /* sectors per group */
	unsigned char *sec;     /* one sector split across iovec elements */
};

struct crypt_ctx {
	void *stage;
	struct iovec iov;
};

/* ------------------------------------------------------------------------- */
/* The XTS tweak sequence: T(j+1) = T(j) * x in GF(2^128), little-endian.       */
/* ------------------------------------------------------------------------- */

/* Portable: XOR the tweaks into in -> out and keep them in tw for the second
 * pass. */
static void pass1_generic(const unsigned char *in, unsigned char *out, unsigned char *tw,
                          const unsigned char t0[16], size_t len)
{
	uint64_t lo, hi;
	memcpy(&lo, t0, 8);
	memcpy(&hi, t0 + 8, 8);
	for (size_t b = 0; b < len; b += 16) {
		uint64_t a, c;
		memcpy(&a, in + b, 8);
		memcpy(&c, in + b + 8, 8);
		a ^= lo;
		c ^= hi;
		memcpy(out + b, &a, 8);
		memcpy(out + b + 8, &c, 8);
		memcpy(tw + b, &lo, 8);
		memcpy(tw + b + 8, &hi, 8);
		uint64_t carry = (uint64_t)((int64_t)hi >> 63) & 0x87;
		hi = (hi << 1) | (lo >> 63);
		lo = (lo << 1) ^ carry;
	}
}

static void pass2_generic(unsigned char *out, const unsigned char *tw, size_t len)
{
	for (size_t b = 0; b < len; b += 8) {
		uint64_t a, t;
		memcpy(&a, out + b, 8);
		memcpy(&t, tw + b, 8);
		a ^= t;
		memcpy(out + b, &a, 8);
	}
}

#if defined(__x86_64__)
/* Eight tweaks at a time in four 256-bit registers, each advanced by x^8: a
 * byte shift of each 128-bit lane plus the carried-out byte times 0x87
 * (carry-less, at most 15 bits, so no second reduction).  len is a multiple of
 * 128 (sectors are at least 512 bytes); tw is 32-byte aligned. */
__attribute__((target("avx2,pclmul,vpclmulqdq"))) static void
pass1_simd(const unsigned char *in, unsigned char *out, unsigned char *tw,
           const unsigned char t0[16], size_t len)
{
	/* t0 * x^k for k = 0..7, each straight from t0 (no chain of doublings):
	 * a 128-bit shift left by k, and the k bits shifted out times 0x87 */
	const __m128i t = _mm_loadu_si128((const void *)t0);
	const __m128i p128 = _mm_cvtsi32_si128(0x87);
#define MUL_XK(k)                                                                               \
	_mm_xor_si128(                                                                          \
	    _mm_or_si128(_mm_slli_epi64(t, k), _mm_srli_epi64(_mm_slli_si128(t, 8), 64 - (k))), \
	    _mm_clmulepi64_si128(_mm_srli_epi64(_mm_srli_si128(t, 8), 64 - (k)), p128, 0x00))
	const __m128i c[8] = {t,         MUL_XK(1), MUL_XK(2), MUL_XK(3),
	                      MUL_XK(4), MUL_XK(5), MUL_XK(6), MUL_XK(7)};
#undef MUL_XK
	/* four named registers, not an array: kept out of memory, so that the
	 * four tweak chains do not wait on store forwarding */
	__m256i y0 = _mm256_set_m128i(c[1], c[0]), y1 = _mm256_set_m128i(c[3], c[2]);
	__m256i y2 = _mm256_set_m128i(c[5], c[4]), y3 = _mm256_set_m128i(c[7], c[6]);
	const __m256i poly = _mm256_set_epi64x(0, 0x87, 0, 0x87);
#define XTS_STEP(y, k)                                                                      \
	do {                                                                                \
		__m256i x_ = _mm256_loadu_si256((const void *)(in + b + 32 * (k)));         \
		_mm256_storeu_si256((void *)(out + b + 32 * (k)), _mm256_xor_si256(x_, y)); \
		_mm256_store_si256((void *)(tw + b + 32 * (k)), y);                         \
		y = _mm256_xor_si256(                                                       \
		    _mm256_slli_si256(y, 1),                                                \
		    _mm256_clmulepi64_epi128(_mm256_srli_si256(y, 15), poly, 0x00));        \
	} while (0)
	for (size_t b = 0; b < len; b += 128) {
		XTS_STEP(y0, 0);
		XTS_STEP(y1, 1);
		XTS_STEP(y2, 2);
		XTS_STEP(y3, 3);
	}
#undef XTS_STEP
}

__attribute__((target("avx2"))) static void pass2_simd(unsigned char *out, const unsigned char *tw,
                                                       size_t len)
{
	for (size_t b = 0; b < len; b += 32) {
		__m256i x = _mm256_loadu_si256((const void *)(out + b));
		__m256i t = _mm256_load_si256((const void *)(tw + b));
		_mm256_storeu_si256((void *)(out + b), _mm256_xor_si256(x, t));
	}
}
#endif

/* ------------------------------------------------------------------------- */
/* Whole sectors in a flat buffer (in may equal out)                           */
/* ------------------------------------------------------------------------- */

static int run_ecb(const struct crypt *c, struct crypt_q *cq, bool enc, uint64_t sector, size_t n,
                   const unsigned char *in, unsigned char *out)
{
	size_t ss = c->ss;
	while (n) {
		size_t m = n < cq->per_group ? n : cq->per_group;
		int outl;
		for (size_t i = 0; i < m; i++) {
			/* little-endian, zero-extended: plain64 */
			uint64_t le[2] = {htole64(sector + i), 0};
			memcpy(cq->ivs + 16 * i, le, 16);
		}
		if (!EVP_EncryptUpdate(cq->tweak, cq->ivs, &outl, cq->ivs, (int)(16 * m)))
			return -1;
#if defined(__x86_64__)
		if (c->simd) {
			for (size_t i = 0; i < m; i++)
				pass1_simd(in + i * ss, out + i * ss, cq->tw + i * ss,
				           cq->ivs + 16 * i, ss);
			if (!EVP_CipherUpdate(cq->ecb[enc], out, &outl, out, (int)(m * ss)))
				return -1;
			pass2_simd(out, cq->tw, m * ss);
			goto next;
		}
#endif
		for (size_t i = 0; i < m; i++)
			pass1_generic(in + i * ss, out + i * ss, cq->tw + i * ss, cq->ivs + 16 * i,
			              ss);
		if (!EVP_CipherUpdate(cq->ecb[enc], out, &outl, out, (int)(m * ss)))
			return -1;
		pass2_generic(out, cq->tw, m * ss);
#if defined(__x86_64__)
	next:
#endif
		in += m * ss;
		out += m * ss;
		sector += m;
		n -= m;
	}
	return 0;
}

static int run_xts(const struct crypt *c, struct crypt_q *cq, bool enc, uint64_t sector, size_t n,
                   const unsigned char *in, unsigned char *out)
{
	unsigned char iv[16] = {0};
	for (size_t i = 0; i < n; i++, in += c->ss, out += c->ss) {
		uint64_t s = sector + i;
		for (int k = 0; k < 8; k++)
			iv[k] = (unsigned char)(s >> (8 * k));
		if (c->impl == IMPL_XTS) {
			size_t outl;
			void *p = cq->pctx[enc];
			int ok = enc ? c->xd.einit(p, NULL, 0, iv, 16, NULL)
			             : c->xd.dinit(p, NULL, 0, iv, 16, NULL);
			if (!ok || !c->xd.cipher(p, out, &outl, c->ss, in, c->ss))
				return -1;
		} else {
			int outl;
			if (!EVP_CipherInit_ex2(cq->evp[enc], NULL, NULL, iv, enc, NULL) ||
			    !EVP_CipherUpdate(cq->evp[enc], out, &outl, in, (int)c->ss))
				return -1;
		}
	}
	return 0;
}

static int run(const struct crypt *c, struct crypt_q *cq, bool enc, uint64_t sector, size_t n,
               const unsigned char *in, unsigned char *out)
{
	if (c->impl == IMPL_ECB || c->impl == IMPL_ECB_GENERIC)
		return run_ecb(c, cq, enc, sector, n, in, out);
	return run_xts(c, cq, enc, sector, n, in, out);
}

/* The sectors of iov, starting at sector, into out (a flat buffer as long as
 * iov) or in place when out is NULL.  A sector split across iovec elements is
 * gathered into one piece first. */
static int crypt_iov(const struct crypt *c, struct crypt_q *cq, bool enc, uint64_t sector,
                     const struct iovec *iov, int iovcnt, unsigned char *out)
{
	size_t ss = c->ss, pos = 0, eo = 0;
	int i = 0;
	while (i < iovcnt) {
		size_t avail = iov[i].iov_len - eo;
		if (avail == 0) {
			i++;
			eo = 0;
			continue;
		}
		unsigned char *base = (unsigned char *)iov[i].iov_base + eo;
		size_t whole = avail / ss;
		if (whole) {
			if (run(c, cq, enc, sector, whole, base, out ? out + pos : base) < 0)
				return -1;
			sector += whole;
			pos += whole * ss;
			eo += whole * ss;
			continue;
		}
		unsigned char *tmp = out ? out + pos : cq->sec;
		vdisk_iov_to_buf(iov, iovcnt, pos, tmp, ss);
		if (run(c, cq, enc, sector, 1, tmp, tmp) < 0)
			return -1;
		if (!out)
			vdisk_iov_from_buf(iov, iovcnt, pos, tmp, ss);
		for (size_t left = ss; left && i < iovcnt;) {
			size_t a = iov[i].iov_len - eo, t = a < left ? a : left;
			eo += t;
			left -= t;
			if (eo == iov[i].iov_len) {
				i++;
				eo = 0;
			}
		}
		sector++;
		pos += ss;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Keys and contexts                                                           */
/* ------------------------------------------------------------------------- */

/* Messages name the key and the length, never a byte of it. */
static int load_key(json_t *cfg, unsigned char key[KEY_LEN])
{
	const char *file = NULL, *hex = NULL;
	int hf = vdisk_cfg_string(cfg, "key-file", &file);
	int hh = hf < 0 ? -1 : vdisk_cfg_string(cfg, "key-hex", &hex);
	if (hf < 0 || hh < 0)
		return -1;
	if (hf && hh)
		return vdisk_set_error("key-file, key-hex: give one of them, not both");
	if (!hf && !hh)
		return vdisk_set_error("key-file or key-hex: required (a 64-byte XTS-AES-256 key)");
	if (hh) {
		size_t n = strlen(hex);
		if (n != 2 * KEY_LEN)
			return vdisk_set_error(
			    "key-hex: %zu hex digits; an xts-aes-256 key is exactly %d "
			    "(64 bytes: the data key, then the tweak key)",
			    n, 2 * KEY_LEN);
		if (vdisk_parse_hex(hex, key, KEY_LEN) < 0) {
			OPENSSL_cleanse(key, KEY_LEN);
			return vdisk_set_error("key-hex: not a string of hexadecimal digits");
		}
		return 0;
	}
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vdisk_set_error_errno(errno, "key-file '%s'", file);
	struct stat st;
	int rc = -1;
	if (fstat(fd, &st) < 0) {
		vdisk_set_error_errno(errno, "key-file '%s'", file);
	} else if (!S_ISREG(st.st_mode)) {
		vdisk_set_error("key-file '%s': not a regular file", file);
	} else if (st.st_size != KEY_LEN) {
		vdisk_set_error(
		    "key-file '%s': %lld bytes; an xts-aes-256 key is exactly %d (the data "
		    "key, then the tweak key)",
		    file, (long long)st.st_size, KEY_LEN);
	} else {
		size_t got = 0;
		while (got < KEY_LEN) {
			ssize_t n = read(fd, key + got, KEY_LEN - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				vdisk_set_error_errno(n < 0 ? errno : EIO, "key-file '%s': read",
				                      file);
				break;
			}
			got += (size_t)n;
		}
		rc = got == KEY_LEN ? 0 : -1;
	}
	close(fd);
	if (rc < 0)
		OPENSSL_cleanse(key, KEY_LEN);
	return rc;
}

/* Find OpenSSL's AES-256-XTS functions in the provider EVP fetched it from. */
static bool find_dispatch(struct crypt *c)
{
	const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(c->xts);
	int no_cache = 0;
	if (!prov)
		return false;
	const OSSL_ALGORITHM *algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_cache);
	const OSSL_DISPATCH *fns = NULL;
	for (const OSSL_ALGORITHM *a = algs; a && a->algorithm_names && !fns; a++) {
		/* names are "NAME:ALIAS:..." */
		const char *n = a->algorithm_names;
		size_t len = strlen("AES-256-XTS");
		for (const char *p = n; p; p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL)
			if (strncmp(p, "AES-256-XTS", len) == 0 &&
			    (p[len] == ':' || p[len] == '\0')) {
				fns = a->implementation;
				break;
			}
	}
	struct xts_dispatch xd = {0};
	for (; fns && fns->function_id; fns++) {
		switch (fns->function_id) {
		case OSSL_FUNC_CIPHER_NEWCTX: xd.newctx = OSSL_FUNC_cipher_newctx(fns); break;
		case OSSL_FUNC_CIPHER_FREECTX: xd.freectx = OSSL_FUNC_cipher_freectx(fns); break;
		case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
			xd.einit = OSSL_FUNC_cipher_encrypt_init(fns);
			break;
		case OSSL_FUNC_CIPHER_DECRYPT_INIT:
			xd.dinit = OSSL_FUNC_cipher_decrypt_init(fns);
			break;
		case OSSL_FUNC_CIPHER_CIPHER: xd.cipher = OSSL_FUNC_cipher_cipher(fns); break;
		default: break;
		}
	}
	if (algs)
		OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs);
	xd.provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
	if (!xd.newctx || !xd.freectx || !xd.einit || !xd.dinit || !xd.cipher || !xd.provctx)
		return false;
	c->xd = xd;
	return true;
}

static void cq_free(struct crypt *c, struct crypt_q *cq)
{
	for (int e = 0; e < 2; e++) {
		if (cq->pctx[e])
			c->xd.freectx(cq->pctx[e]);
		EVP_CIPHER_CTX_free(cq->evp[e]);
		EVP_CIPHER_CTX_free(cq->ecb[e]);
	}
	EVP_CIPHER_CTX_free(cq->tweak);
	free(cq->tw);
	free(cq->ivs);
	free(cq->sec);
	free(cq);
}

static EVP_CIPHER_CTX *evp_ctx(const EVP_CIPHER *ciph, const unsigned char *key, int enc)
{
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	if (!x || !EVP_CipherInit_ex2(x, ciph, key, NULL, enc, NULL) ||
	    !EVP_CIPHER_CTX_set_padding(x, 0)) {
		EVP_CIPHER_CTX_free(x);
		return NULL;
	}
	return x;
}

static struct crypt_q *cq_new(struct crypt *c)
{
	struct crypt_q *cq = calloc(1, sizeof *cq);
	if (!cq)
		goto fail;
	cq->sec = aligned_alloc(64, c->ss);
	if (!cq->sec)
		goto fail;
	for (int e = 0; e < 2; e++) {
		switch (c->impl) {
		case IMPL_XTS:
			cq->pctx[e] = c->xd.newctx(c->xd.provctx);
			if (!cq->pctx[e] ||
			    !(e ? c->xd.einit(cq->pctx[e], c->key, KEY_LEN, NULL, 0, NULL)
			        : c->xd.dinit(cq->pctx[e], c->key, KEY_LEN, NULL, 0, NULL)))
				goto fail;
			break;
		case IMPL_XTS_EVP:
			if (!(cq->evp[e] = evp_ctx(c->xts, c->key, e)))
				goto fail;
			break;
		default:
			if (!(cq->ecb[e] = evp_ctx(c->ecb, c->key, e)))
				goto fail;
			break;
		}
	}
	if (c->impl == IMPL_ECB || c->impl == IMPL_ECB_GENERIC) {
		size_t tw = c->ss > GROUP ? c->ss : GROUP;
		cq->per_group = tw / c->ss;
		cq->tw = aligned_alloc(64, tw);
		cq->ivs = aligned_alloc(64, (16 * cq->per_group + 63) / 64 * 64);
		cq->tweak = evp_ctx(c->ecb, c->key + KEY_LEN / 2, 1);
		if (!cq->tw || !cq->ivs || !cq->tweak)
			goto fail;
	}
	return cq;
fail:
	if (cq)
		cq_free(c, cq);
	return NULL;
}

/* ------------------------------------------------------------------------- */
/* Open, close, queues                                                         */
/* ------------------------------------------------------------------------- */

static void crypt_free(struct crypt *c)
{
	OPENSSL_cleanse(c->key, KEY_LEN);
	EVP_CIPHER_free(c->xts);
	EVP_CIPHER_free(c->ecb);
	free(c);
}

static int crypt_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner",   "cipher",         "key-file",
	                                   "key-hex", "implementation", NULL};
	const char *cipher = "xts-aes-256", *impl = "auto";
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "cipher", &cipher) < 0 ||
	    vdisk_cfg_string(cfg, "implementation", &impl) < 0)
		return -1;
	if (strcmp(cipher, "xts-aes-256") != 0)
		return vdisk_set_error("cipher: '%s' is not supported (only xts-aes-256)", cipher);
	int forced = -1;
	for (int i = 0; i < 4; i++)
		if (strcmp(impl, impl_names[i]) == 0)
			forced = i;
	if (forced < 0 && strcmp(impl, "auto") != 0)
		return vdisk_set_error(
		    "implementation: '%s' is not one of auto, xts, xts-evp, ecb, "
		    "ecb-generic",
		    impl);

	struct crypt *c = calloc(1, sizeof *c);
	if (!c)
		return vdisk_set_error_errno(ENOMEM, "crypt");
	if (load_key(cfg, c->key) < 0)
		goto fail;
	if (CRYPTO_memcmp(c->key, c->key + KEY_LEN / 2, KEY_LEN / 2) == 0) {
		vdisk_set_error("key: the data key and the tweak key (the two halves) are equal, "
		                "which XTS forbids");
		goto fail;
	}
	c->xts = EVP_CIPHER_fetch(NULL, "AES-256-XTS", NULL);
	c->ecb = EVP_CIPHER_fetch(NULL, "AES-256-ECB", NULL);
	if (!c->xts || !c->ecb) {
		vdisk_set_error("cipher: OpenSSL provides no AES-256-XTS / AES-256-ECB");
		goto fail;
	}
#if defined(__x86_64__)
	c->simd = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq");
#endif
	bool have_dispatch = find_dispatch(c);

	c->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!c->inner)
		goto fail;
	vdisk_set_priv(d, c);
	struct vdisk_meta *m = vdisk_meta(d);
	m->req_ctx_size = sizeof(struct crypt_ctx);
	vdisk_meta_inherit(d, c->inner);
	c->ss = m->sector_size;
	if (forced >= 0)
		c->impl = (enum impl)forced;
	else
		c->impl = c->ss >= 4096 ? IMPL_XTS : IMPL_ECB;
	if (c->impl == IMPL_XTS && !have_dispatch)
		c->impl = IMPL_XTS_EVP;
	if (c->impl == IMPL_ECB_GENERIC)
		c->simd = false;
	if (m->unmap != VDISK_UNMAP_IGNORED)
		m->unmap = VDISK_UNMAP_UNSPECIFIED;
	/* zeros below are not zeros here */
	m->caps &= ~(unsigned)VDISK_CAP_FAST_ZERO;

	/* a trial context: OpenSSL's own key checks, once, at open */
	struct crypt_q *trial = cq_new(c);
	if (!trial) {
		vdisk_set_error("key: rejected by OpenSSL's XTS-AES-256");
		vdisk_set_priv(d, NULL);
		goto fail;
	}
	cq_free(c, trial);
	return 0;
fail:
	crypt_free(c);
	return -1;
}

static void crypt_close(struct vdisk *d)
{
	crypt_free(vdisk_priv(d));
}

static int crypt_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	(void)q;
	struct crypt_q *cq = cq_new(vdisk_priv(d));
	if (!cq)
		return vdisk_set_error_errno(ENOMEM, "crypt queue");
	*qstate = cq;
	return 0;
}

static void crypt_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	(void)q;
	cq_free(vdisk_priv(d), qstate);
}

/* ------------------------------------------------------------------------- */
/* The data path                                                               */
/* ------------------------------------------------------------------------- */

static void read_done(struct vdisk_req *child, vdisk_status st)
{
	struct vdisk_req *r = child->opaque;
	struct crypt *c = vdisk_priv(r->disk);
	if (vdisk_ok(st) &&
	    crypt_iov(c, vdisk_req_qstate(r), false, r->sector, r->iov, r->iovcnt, NULL) < 0)
		st = vdisk_status_io(EIO);
	vdisk_req_complete(r, st);
}

static int crypt_read(struct vdisk_req *r)
{
	struct crypt *c = vdisk_priv(r->disk);
	if (r->len == 0)
		return vdisk_req_forward(r, c->inner);
	struct vdisk_req *child = vdisk_req_alloc(r, c->inner);
	if (!child)
		return -ENOMEM;
	vdisk_req_prep_rw(child, VDISK_OP_READ, r->sector, r->iov, r->iovcnt, 0);
	child->done = read_done;
	child->opaque = r;
	return vdisk_req_submit(child);
}

static void write_done(struct vdisk_req *child, vdisk_status st)
{
	struct vdisk_req *r = child->opaque;
	struct crypt_ctx *x = vdisk_req_ctx(r);
	vdisk_bounce_put(r->q, x->stage, r->len);
	x->stage = NULL;
	vdisk_req_complete(r, st);
}

static int crypt_write(struct vdisk_req *r)
{
	struct crypt *c = vdisk_priv(r->disk);
	struct crypt_ctx *x = vdisk_req_ctx(r);
	if (r->len == 0)
		return vdisk_req_forward(r, c->inner);
	x->stage = vdisk_bounce_get(r->q, r->len);
	if (!x->stage)
		return -errno;
	struct vdisk_req *child = NULL;
	if (crypt_iov(c, vdisk_req_qstate(r), true, r->sector, r->iov, r->iovcnt, x->stage) < 0 ||
	    !(child = vdisk_req_alloc(r, c->inner))) {
		vdisk_bounce_put(r->q, x->stage, r->len);
		x->stage = NULL;
		return child ? -EIO : -ENOMEM;
	}
	x->iov.iov_base = x->stage;
	x->iov.iov_len = r->len;
	vdisk_req_prep_rw(child, VDISK_OP_WRITE, r->sector, &x->iov, 1, r->flags);
	child->done = write_done;
	child->opaque = r;
	return vdisk_req_submit(child);
}

static int crypt_forward(struct vdisk_req *r)
{
	struct crypt *c = vdisk_priv(r->disk);
	return vdisk_req_forward(r, c->inner);
}

/* Allocation comes through; "reads as zeros" does not. */
static void extents_done(struct vdisk_req *child, vdisk_status st)
{
	struct vdisk_req *r = child->opaque;
	if (vdisk_ok(st))
		for (unsigned i = 0; i < *r->ext_n; i++)
			r->ext[i].flags &= ~(uint32_t)VDISK_EXTENT_ZERO;
	vdisk_req_complete(r, st);
}

static int crypt_extents(struct vdisk_req *r)
{
	struct crypt *c = vdisk_priv(r->disk);
	struct vdisk_req *child = vdisk_req_alloc(r, c->inner);
	if (!child)
		return -ENOMEM;
	vdisk_req_prep_extents(child, r->sector, r->count, r->ext, r->ext_max, r->ext_n);
	child->done = extents_done;
	child->opaque = r;
	return vdisk_req_submit(child);
}

static int crypt_inspect(struct vdisk *d, json_t *obj)
{
	struct crypt *c = vdisk_priv(d);
	json_object_set_new(obj, "cipher", json_string("xts-aes-256"));
	json_object_set_new(obj, "implementation", json_string(impl_names[c->impl]));
	json_object_set_new(obj, "simd", json_boolean(c->simd));
	return 0;
}

static const char *const crypt_secrets[] = {"key-hex", NULL};

const struct vdisk_driver vdisk_driver_crypt = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "crypt",
    .description = "XTS-AES-256 encryption, dm-crypt aes-xts-plain64 compatible (inner, "
                   "key-file or key-hex, cipher, implementation)",
    .open = crypt_open,
    .close = crypt_close,
    .queue_init = crypt_queue_init,
    .queue_fini = crypt_queue_fini,
    .read = crypt_read,
    .write = crypt_write,
    .flush = crypt_forward,
    .unmap = crypt_forward,
    .extents = crypt_extents,
    .eject = crypt_forward,
    .inspect = crypt_inspect,
    .secret_keys = crypt_secrets,
};
