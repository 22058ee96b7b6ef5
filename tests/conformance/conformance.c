/* The conformance suite: what every disk and every stack promises, checked
 * through the public API only.  Run by `vdisk-conformance SPEC` over every spec
 * of the spec lists in tests/conformance. */
#include "conformance.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

struct ctx {
	const char *spec;
	struct vdisk *d;
	struct vdisk_queue *q;
	uint32_t ss;
	unsigned shift;
	uint64_t count, max_sector;
	bool ro;
	bool nodata; /* writes are discarded (null): no read-back checks */
	enum vdisk_unmap_behavior unmap;
	int checks, failures;
	const char *test;
};

static void failf(struct ctx *c, int line, const char *fmt, ...)
{
	va_list ap;
	c->failures++;
	printf("FAIL %s (line %d): ", c->test, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

#define CHECK(c, cond, ...)                                \
	do {                                               \
		(c)->checks++;                             \
		if (!(cond))                               \
			failf((c), __LINE__, __VA_ARGS__); \
	} while (0)

#define EXPECT_KIND(c, st, want, what, ...)                                                 \
	do {                                                                                \
		vdisk_status st_ = (st);                                                    \
		CHECK((c), st_.kind == (want), what ": got %s, expected %s", ##__VA_ARGS__, \
		      tu_st(st_), vdisk_error_name(want));                                  \
	} while (0)

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ------------------------------------------------------------------------- */

static void test_metadata(struct ctx *c)
{
	c->test = "metadata";
	uint8_t id1[16], id2[16];
	CHECK(c, c->ss >= 512 && !(c->ss & (c->ss - 1)), "sector size %u", c->ss);
	uint32_t ps = vdisk_physical_sector_size(c->d);
	CHECK(c, ps >= c->ss && !(ps & (ps - 1)), "physical sector size %u", ps);
	CHECK(c, c->count >= 2, "the suite needs at least 2 sectors, disk has %" PRIu64, c->count);
	CHECK(c, c->count <= c->max_sector, "sector count too large");
	CHECK(c, vdisk_optimal_unmap_sectors(c->d) >= 1, "optimal unmap sectors is 0");
	CHECK(c, c->unmap <= VDISK_UNMAP_ZEROES, "unmap behaviour %d", c->unmap);
	CHECK(c, vdisk_type(c->d) && *vdisk_type(c->d), "no type name");
	bool h1 = vdisk_disk_id(c->d, id1), h2 = vdisk_disk_id(c->d, id2);
	CHECK(c, h1 == h2 && (!h1 || memcmp(id1, id2, 16) == 0), "disk id not stable");
	char *s = vdisk_inspect(c->d, VDISK_INSPECT_STATS);
	CHECK(c, s && strstr(s, "\"layers\"") && strstr(s, vdisk_type(c->d)),
	      "inspect output lacks layers: %s", s ? s : vdisk_errmsg());
	free(s);
}

/* read, write, unmap, write-zeroes and extents of (sector, count) must all be
 * illegal-block */
static void expect_illegal(struct ctx *c, uint64_t sector, uint64_t count, const char *why)
{
	size_t len = (size_t)count * c->ss;
	unsigned char *buf = tu_alloc(len);
	memset(buf, 0xAB, len);
	EXPECT_KIND(c, tu_read(c->q, sector, buf, len), VDISK_ERR_ILLEGAL_BLOCK,
	            "read (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	bool untouched = true;
	for (size_t i = 0; i < len; i++)
		untouched &= buf[i] == 0xAB;
	CHECK(c, untouched, "a failed read at %" PRIu64 " wrote into the buffer (%s)", sector, why);
	EXPECT_KIND(c, tu_write(c->q, sector, buf, len, 0), VDISK_ERR_ILLEGAL_BLOCK,
	            "write (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	EXPECT_KIND(c, tu_write(c->q, sector, buf, len, VDISK_IO_FUA), VDISK_ERR_ILLEGAL_BLOCK,
	            "FUA write (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	EXPECT_KIND(c, tu_unmap(c->q, sector, count), VDISK_ERR_ILLEGAL_BLOCK,
	            "unmap (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	EXPECT_KIND(c, tu_write_zeroes(c->q, sector, count, 0), VDISK_ERR_ILLEGAL_BLOCK,
	            "write-zeroes (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	struct vdisk_extent e[4];
	unsigned n = 99;
	EXPECT_KIND(c, tu_extents(c->q, sector, count, e, 4, &n), VDISK_ERR_ILLEGAL_BLOCK,
	            "extents (%" PRIu64 ", %" PRIu64 ") %s", sector, count, why);
	free(buf);
}

static void test_representability(struct ctx *c)
{
	c->test = "representability";
	expect_illegal(c, UINT64_MAX, 1, "u64 max");
	expect_illegal(c, UINT64_MAX - 1, 2, "u64 max - 1");
	expect_illegal(c, c->max_sector, 1, "INT64_MAX >> shift");
	expect_illegal(c, c->max_sector - 1, 2, "INT64_MAX >> shift, minus 1");
	uint64_t wrap = 1ull << (64 - c->shift);
	expect_illegal(c, wrap, 1, "wraps to 0 when shifted");

	/* sector_does_not_wrap_when_shifted: what sector 0 holds must not come back */
	if (!c->ro) {
		unsigned char *buf = tu_alloc(c->ss);
		memset(buf, 0xCD, c->ss);
		EXPECT_KIND(c, tu_write(c->q, 0, buf, c->ss, 0), VDISK_OK, "write sector 0");
		memset(buf, 0, c->ss);
		EXPECT_KIND(c, tu_read(c->q, wrap, buf, c->ss), VDISK_ERR_ILLEGAL_BLOCK,
		            "read at wrap");
		CHECK(c, buf[0] != 0xCD, "read at 1<<(64-shift) returned sector 0's data");
		free(buf);
	}
}

static void test_range(struct ctx *c)
{
	c->test = "range";
	expect_illegal(c, c->count, 1, "first sector past the end");
	expect_illegal(c, c->count - 1, 2, "straddling the end");
	expect_illegal(c, c->max_sector - 1, 1, "far past the end");
	unsigned char *buf = tu_alloc(c->ss);
	EXPECT_KIND(c, tu_read(c->q, c->count - 1, buf, c->ss), VDISK_OK, "read the last sector");
	EXPECT_KIND(c, tu_read(c->q, 0, buf, 0), VDISK_OK, "zero-length read at 0");
	EXPECT_KIND(c, tu_read(c->q, c->count, buf, 0), VDISK_OK, "zero-length read at the end");
	EXPECT_KIND(c, tu_read(c->q, c->count + 1, buf, 0), VDISK_ERR_ILLEGAL_BLOCK,
	            "zero-length read past the end");
	if (!c->ro) {
		EXPECT_KIND(c, tu_unmap(c->q, 0, 0), VDISK_OK, "zero-count unmap at 0");
		EXPECT_KIND(c, tu_unmap(c->q, c->count, 0), VDISK_OK,
		            "zero-count unmap at the end");
		EXPECT_KIND(c, tu_write_zeroes(c->q, 0, 0, 0), VDISK_OK, "zero-count write-zeroes");
		EXPECT_KIND(c, tu_write(c->q, c->count - 1, buf, c->ss, 0), VDISK_OK,
		            "write the last sector");
	}
	/* a partial sector is invalid input, not a short transfer */
	EXPECT_KIND(c, tu_read(c->q, 0, buf, c->ss - 1), VDISK_ERR_INVALID_INPUT,
	            "read of a partial sector");
	free(buf);
}

/* Edges every disk must get right: zero-length and zero-count requests at and
 * past the end, extents that may return only what fits, empty iovecs between
 * full ones, and more iovecs than the kernel takes in one call. */
static void test_edges(struct ctx *c)
{
	c->test = "edges";
	unsigned char *buf = tu_alloc(4 * (size_t)c->ss);
	if (!c->ro) {
		EXPECT_KIND(c, tu_write(c->q, c->count, buf, 0, 0), VDISK_OK,
		            "zero-length write at the end");
		EXPECT_KIND(c, tu_write(c->q, c->count + 1, buf, 0, 0), VDISK_ERR_ILLEGAL_BLOCK,
		            "zero-length write past the end");
		EXPECT_KIND(c, tu_unmap(c->q, c->count + 1, 0), VDISK_ERR_ILLEGAL_BLOCK,
		            "zero-count unmap past the end");
		EXPECT_KIND(c, tu_write_zeroes(c->q, c->count, 0, VDISK_ZERO_MAY_UNMAP), VDISK_OK,
		            "zero-count write-zeroes at the end");
		EXPECT_KIND(c, tu_write_zeroes(c->q, c->count + 1, 0, 0), VDISK_ERR_ILLEGAL_BLOCK,
		            "zero-count write-zeroes past the end");
		EXPECT_KIND(c, tu_write_zeroes(c->q, c->count - 1, 1, VDISK_IO_FUA), VDISK_OK,
		            "write-zeroes of the last sector");
	}
	struct vdisk_extent e[2];
	unsigned n = 99;
	EXPECT_KIND(c, tu_extents(c->q, 0, 0, e, 2, &n), VDISK_OK, "extents of 0 sectors");
	CHECK(c, n == 0, "extents of 0 sectors gave %u extents", n);
	n = 99;
	EXPECT_KIND(c, tu_extents(c->q, c->count, 0, e, 2, &n), VDISK_OK,
	            "extents of 0 sectors at the end");
	n = 99;
	EXPECT_KIND(c, tu_extents(c->q, 0, c->count, e, 1, &n), VDISK_OK, "extents, room for one");
	CHECK(c, n == 1 && e[0].sector == 0 && e[0].count >= 1 && e[0].count <= c->count,
	      "extents with room for one gave n=%u", n);
	n = 99;
	EXPECT_KIND(c, tu_extents(c->q, 0, c->count, e, 0, &n), VDISK_OK, "extents, no room");
	CHECK(c, n == 0, "extents with no room gave n=%u", n);

	/* empty iovecs at the start, between and at the end */
	if (!c->ro && !c->nodata && c->count >= 4) {
		unsigned char *want = tu_alloc(2 * (size_t)c->ss),
		              *got = tu_alloc(2 * (size_t)c->ss);
		tu_pattern(want, 2 * (size_t)c->ss, 1, c->ss, 31);
		struct iovec iov[5] = {
		    {buf, 0}, {want, c->ss}, {buf, 0}, {want + c->ss, c->ss}, {buf, 0}};
		EXPECT_KIND(c, tu_writev(c->q, 1, iov, 5, 0), VDISK_OK, "write with empty iovecs");
		iov[1].iov_base = got;
		iov[3].iov_base = got + c->ss;
		EXPECT_KIND(c, tu_readv(c->q, 1, iov, 5), VDISK_OK, "read with empty iovecs");
		CHECK(c, memcmp(got, want, 2 * (size_t)c->ss) == 0, "empty iovecs: data differs");
		free(want);
		free(got);
	}

	/* more iovecs than IOV_MAX (1024): 1100 pieces of 512 bytes */
	size_t big = 1100 * 512;
	if (!c->ro && !c->nodata && big % c->ss == 0 && big / c->ss <= c->count) {
		unsigned char *want = tu_alloc(big), *got = tu_alloc(big);
		struct iovec *iov = calloc(1100, sizeof *iov);
		uint64_t s = c->count - big / c->ss;
		tu_pattern(want, big, s, c->ss, 32);
		for (int i = 0; i < 1100; i++)
			iov[i] = (struct iovec){want + (size_t)i * 512, 512};
		EXPECT_KIND(c, tu_writev(c->q, s, iov, 1100, 0), VDISK_OK, "write of 1100 iovecs");
		for (int i = 0; i < 1100; i++)
			iov[i] = (struct iovec){got + (size_t)i * 512, 512};
		EXPECT_KIND(c, tu_readv(c->q, s, iov, 1100), VDISK_OK, "read of 1100 iovecs");
		CHECK(c, memcmp(got, want, big) == 0, "1100 iovecs: data differs");
		free(iov);
		free(want);
		free(got);
	}
	free(buf);
}

/* ------------------------------------------------------------------------- */
/* Read-after-write through scatter-gather shapes                              */
/* ------------------------------------------------------------------------- */

struct shape {
	const char *name;
	size_t lens[32];
	int n;
	size_t misalign; /* added to each buffer's address */
};

static int build_shapes(struct shape *s, uint32_t ss)
{
	int k = 0;
	s[k++] = (struct shape){"one 64 KiB iovec", {65536}, 1, 0};
	struct shape t = {"30 x 4 KiB", {0}, 30, 0};
	for (int i = 0; i < 30; i++)
		t.lens[i] = 4096;
	s[k++] = t;
	struct shape u = {"512-byte iovecs", {0}, 16, 0};
	for (int i = 0; i < 16; i++)
		u.lens[i] = 512;
	if (ss > 8192)
		u.n = 0;
	else if (ss > 512)
		u.n = (int)(ss * 2 / 512);
	s[k++] = u;
	s[k++] =
	    (struct shape){"iovec boundary inside a sector", {700, 3 * (size_t)ss - 700}, 2, 0};
	s[k++] = (struct shape){"over 128 KiB in 2 iovecs", {100 * 1024, 156 * 1024}, 2, 0};
	s[k++] = (struct shape){"buffers at odd addresses (+1)", {8 * (size_t)ss}, 1, 1};
	s[k++] = (struct shape){
	    "buffers at +513, 3 iovecs", {(size_t)ss, 2 * (size_t)ss, (size_t)ss}, 3, 513};
	return k;
}

static void rw_shape(struct ctx *c, const struct shape *sh, uint64_t sector, uint64_t seed)
{
	size_t total = 0;
	for (int i = 0; i < sh->n; i++)
		total += sh->lens[i];
	if (!sh->n || total % c->ss || total / c->ss > c->count)
		return;
	if (sector + total / c->ss > c->count)
		sector = c->count - total / c->ss;
	unsigned char *want = tu_alloc(total), *flat = tu_alloc(total);
	tu_pattern(want, total, sector, c->ss, seed);
	struct iovec iov[32];
	unsigned char *bufs[32];
	size_t off = 0;
	for (int i = 0; i < sh->n; i++) {
		bufs[i] = tu_alloc(sh->lens[i] + sh->misalign);
		iov[i].iov_base = bufs[i] + sh->misalign;
		iov[i].iov_len = sh->lens[i];
		memcpy(iov[i].iov_base, want + off, sh->lens[i]);
		off += sh->lens[i];
	}
	EXPECT_KIND(c, tu_writev(c->q, sector, iov, sh->n, 0), VDISK_OK, "write %s at %" PRIu64,
	            sh->name, sector);
	/* the caller's buffers are never modified by a write */
	off = 0;
	bool intact = true;
	for (int i = 0; i < sh->n; i++) {
		intact &= memcmp(iov[i].iov_base, want + off, sh->lens[i]) == 0;
		off += sh->lens[i];
	}
	CHECK(c, intact, "write %s modified the caller's buffers", sh->name);
	EXPECT_KIND(c, tu_read(c->q, sector, flat, total), VDISK_OK, "read back %s", sh->name);
	CHECK(c, memcmp(flat, want, total) == 0, "data read back after %s at %" PRIu64 " differs",
	      sh->name, sector);
	for (int i = 0; i < sh->n; i++)
		memset(iov[i].iov_base, 0x5A, sh->lens[i]);
	EXPECT_KIND(c, tu_readv(c->q, sector, iov, sh->n), VDISK_OK, "read %s", sh->name);
	off = 0;
	bool same = true;
	for (int i = 0; i < sh->n; i++) {
		same &= memcmp(iov[i].iov_base, want + off, sh->lens[i]) == 0;
		off += sh->lens[i];
	}
	CHECK(c, same, "data read through %s at %" PRIu64 " differs", sh->name, sector);
	for (int i = 0; i < sh->n; i++)
		free(bufs[i]);
	free(want);
	free(flat);
}

static void test_rw_shapes(struct ctx *c)
{
	c->test = "read-after-write";
	if (c->ro || c->nodata)
		return;
	struct shape shapes[16];
	int n = build_shapes(shapes, c->ss);
	uint64_t where[3] = {0, c->count / 2 + 3, UINT64_MAX /* end-aligned */};
	for (int i = 0; i < n; i++)
		for (int w = 0; w < 3; w++)
			rw_shape(c, &shapes[i], where[w] == UINT64_MAX ? c->count : where[w],
			         (uint64_t)(i * 3 + w + 1));
}

/* ------------------------------------------------------------------------- */

static void test_read_only(struct ctx *c)
{
	c->test = "read-only";
	char *spec = tu_spec(c->spec);
	struct vdisk *d = vdisk_open(spec, VDISK_OPEN_READ_ONLY);
	free(spec);
	if (!d) {
		printf("note: read-only reopen not possible (%s); skipped\n", vdisk_errmsg());
		return;
	}
	CHECK(c, vdisk_read_only(d), "VDISK_OPEN_READ_ONLY gave a writable disk");
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	CHECK(c, q != NULL, "queue on the read-only disk: %s", vdisk_errmsg());
	if (q) {
		unsigned char *buf = tu_alloc(c->ss);
		EXPECT_KIND(c, tu_read(q, 0, buf, c->ss), VDISK_OK, "read of a read-only disk");
		EXPECT_KIND(c, tu_write(q, 0, buf, c->ss, 0), VDISK_ERR_READ_ONLY, "write");
		EXPECT_KIND(c, tu_write(q, 0, buf, c->ss, VDISK_IO_FUA), VDISK_ERR_READ_ONLY,
		            "FUA write");
		EXPECT_KIND(c, tu_unmap(q, 0, 1), VDISK_ERR_READ_ONLY, "unmap");
		EXPECT_KIND(c, tu_write_zeroes(q, 0, 1, 0), VDISK_ERR_READ_ONLY, "write-zeroes");
		EXPECT_KIND(c, tu_write_zeroes(q, 0, 1, VDISK_ZERO_MAY_UNMAP), VDISK_ERR_READ_ONLY,
		            "write-zeroes may-unmap");
		EXPECT_KIND(c, vdisk_pwrite(d, buf, 100, 10, 0), VDISK_ERR_READ_ONLY,
		            "vdisk_pwrite");
		EXPECT_KIND(c, tu_flush(q), VDISK_OK, "flush of a read-only disk");
		vdisk_queue_destroy(q);
		free(buf);
	}
	vdisk_unref(d);
}

static uint64_t span(struct ctx *c)
{
	uint64_t n = vdisk_optimal_unmap_sectors(c->d) * 2 + 6;
	if (n < 16)
		n = 16;
	if (n > 4096)
		n = 4096;
	if (n > c->count)
		n = c->count;
	return n;
}

static void test_unmap(struct ctx *c)
{
	c->test = "unmap";
	if (c->ro || c->nodata || c->count < 3)
		return;
	uint64_t n = span(c), s = c->count / 3;
	if (s + n > c->count)
		s = c->count - n;
	size_t len = (size_t)n * c->ss;
	unsigned char *want = tu_alloc(len), *got = tu_alloc(len);
	tu_pattern(want, len, s, c->ss, 77);
	EXPECT_KIND(c, tu_write(c->q, s, want, len, 0), VDISK_OK, "write before unmap");
	/* not aligned to the granularity, on purpose: partial blocks count */
	EXPECT_KIND(c, tu_unmap(c->q, s + 1, n - 2), VDISK_OK, "unmap");
	EXPECT_KIND(c, tu_read(c->q, s, got, len), VDISK_OK, "read after unmap");
	CHECK(c, memcmp(got, want, c->ss) == 0, "unmap changed the sector before the range");
	CHECK(c, memcmp(got + len - c->ss, want + len - c->ss, c->ss) == 0,
	      "unmap changed the sector after the range");
	if (c->unmap == VDISK_UNMAP_ZEROES)
		CHECK(c, all_zero(got + c->ss, len - 2 * c->ss),
		      "unmap behaviour is zeroes, but unmapped sectors did not read as zeros");
	if (c->unmap == VDISK_UNMAP_IGNORED)
		CHECK(c, memcmp(got, want, len) == 0,
		      "unmap behaviour is ignored, but unmap changed the data");
	free(want);
	free(got);
}

static void test_write_zeroes(struct ctx *c)
{
	c->test = "write-zeroes";
	if (c->ro || c->nodata || c->count < 3)
		return;
	static const unsigned flags[] = {0, VDISK_ZERO_MAY_UNMAP, VDISK_IO_FUA,
	                                 VDISK_ZERO_FAST_ONLY,
	                                 VDISK_ZERO_FAST_ONLY | VDISK_ZERO_MAY_UNMAP};
	uint64_t n = span(c), s = c->count / 4;
	if (s + n > c->count)
		s = c->count - n;
	size_t len = (size_t)n * c->ss;
	unsigned char *want = tu_alloc(len), *got = tu_alloc(len);
	for (unsigned i = 0; i < sizeof flags / sizeof *flags; i++) {
		tu_pattern(want, len, s, c->ss, 100 + i);
		EXPECT_KIND(c, tu_write(c->q, s, want, len, 0), VDISK_OK, "write");
		vdisk_status st = tu_write_zeroes(c->q, s + 1, n - 2, flags[i]);
		if ((flags[i] & VDISK_ZERO_FAST_ONLY) && st.kind == VDISK_ERR_NOT_SUPPORTED)
			continue;
		EXPECT_KIND(c, st, VDISK_OK, "write-zeroes flags %#x", flags[i]);
		EXPECT_KIND(c, tu_read(c->q, s, got, len), VDISK_OK, "read after write-zeroes");
		CHECK(c,
		      memcmp(got, want, c->ss) == 0 &&
		          memcmp(got + len - c->ss, want + len - c->ss, c->ss) == 0,
		      "write-zeroes flags %#x changed sectors outside the range", flags[i]);
		CHECK(c, all_zero(got + c->ss, len - 2 * c->ss),
		      "write-zeroes flags %#x: the range does not read as zeros", flags[i]);
	}
	if (vdisk_caps(c->d) & VDISK_CAP_FAST_ZERO) {
		vdisk_status st =
		    tu_write_zeroes(c->q, s, n, VDISK_ZERO_FAST_ONLY | VDISK_ZERO_MAY_UNMAP);
		CHECK(c, st.kind == VDISK_OK, "the disk claims fast zero, but fast-only failed: %s",
		      tu_st(st));
	}
	free(want);
	free(got);
}

static void test_extents(struct ctx *c)
{
	c->test = "extents";
	struct vdisk_extent ext[64];
	uint64_t pos = 0;
	unsigned rounds = 0;
	unsigned char *buf = tu_alloc(c->ss);
	if (!c->ro && !c->nodata) {
		/* a written sector must not be reported as zero */
		uint64_t s = c->count / 5;
		tu_pattern(buf, c->ss, s, c->ss, 5);
		EXPECT_KIND(c, tu_write(c->q, s, buf, c->ss, 0), VDISK_OK, "write");
		unsigned n = 0;
		EXPECT_KIND(c, tu_extents(c->q, s, 1, ext, 64, &n), VDISK_OK, "extents");
		CHECK(c,
		      n == 1 && ext[0].sector == s && ext[0].count == 1 &&
		          !(ext[0].flags & VDISK_EXTENT_ZERO),
		      "a written sector is reported as zero (n=%u flags=%u)", n,
		      n ? ext[0].flags : 0);
	}
	while (pos < c->count && rounds++ < 2000) {
		unsigned n = 0;
		vdisk_status st = tu_extents(c->q, pos, c->count - pos, ext, 64, &n);
		EXPECT_KIND(c, st, VDISK_OK, "extents at %" PRIu64, pos);
		if (!vdisk_ok(st) || n == 0) {
			CHECK(c, n > 0, "extents returned nothing at %" PRIu64, pos);
			break;
		}
		for (unsigned i = 0; i < n; i++) {
			CHECK(c,
			      ext[i].sector == pos && ext[i].count > 0 &&
			          ext[i].count <= c->count - pos &&
			          !(ext[i].flags &
			            ~(unsigned)(VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO)),
			      "bad extent %u at %" PRIu64 ": sector %" PRIu64 " count %" PRIu64
			      " flags %u",
			      i, pos, ext[i].sector, ext[i].count, ext[i].flags);
			if (ext[i].sector != pos || ext[i].count == 0 ||
			    ext[i].count > c->count - pos)
				return free(buf);
			if (ext[i].flags & VDISK_EXTENT_ZERO) {
				/* spot-check: first and last sector read as zeros */
				uint64_t probe[2] = {ext[i].sector,
				                     ext[i].sector + ext[i].count - 1};
				for (int k = 0; k < 2; k++) {
					EXPECT_KIND(c, tu_read(c->q, probe[k], buf, c->ss),
					            VDISK_OK, "read");
					CHECK(c, all_zero(buf, c->ss),
					      "sector %" PRIu64
					      " is in a zero extent but is not zero",
					      probe[k]);
				}
			}
			pos += ext[i].count;
		}
	}
	CHECK(c, pos == c->count, "extents covered %" PRIu64 " of %" PRIu64 " sectors", pos,
	      c->count);
	free(buf);
}

static void test_flush_fua(struct ctx *c)
{
	c->test = "flush-fua";
	EXPECT_KIND(c, tu_flush(c->q), VDISK_OK, "flush");
	if (c->ro)
		return;
	unsigned char *w = tu_alloc(4 * (size_t)c->ss), *r = tu_alloc(4 * (size_t)c->ss);
	if (c->nodata) {
		EXPECT_KIND(c, tu_write(c->q, 0, w, c->ss, VDISK_IO_FUA), VDISK_OK, "FUA write");
		free(w);
		free(r);
		return;
	}
	uint64_t s = c->count > 8 ? c->count - 8 : 0;
	size_t len = (size_t)(c->count - s < 4 ? c->count - s : 4) * c->ss;
	tu_pattern(w, len, s, c->ss, 9);
	EXPECT_KIND(c, tu_write(c->q, s, w, len, VDISK_IO_FUA), VDISK_OK, "FUA write");
	EXPECT_KIND(c, tu_read(c->q, s, r, len), VDISK_OK, "read after FUA write");
	CHECK(c, memcmp(w, r, len) == 0, "FUA write did not read back");
	EXPECT_KIND(c, tu_flush(c->q), VDISK_OK, "flush after writes");
	free(w);
	free(r);
}

/* Byte-addressed synchronous API and guest-memory buffers. */
struct gmem {
	unsigned char *base;
	uint64_t size;
	uint64_t split; /* translate at most this many bytes at once */
	bool fail;
};

static int64_t gmem_translate(void *ctx, uint64_t gpa, uint64_t len, bool writable, void **host)
{
	struct gmem *g = ctx;
	(void)writable;
	if (g->fail || gpa >= g->size || len > g->size - gpa)
		return -EFAULT;
	*host = g->base + gpa;
	uint64_t n = g->split - gpa % g->split;
	return (int64_t)(n < len ? n : len);
}

struct gwait {
	bool done;
	vdisk_status st;
};
static void gdone(void *o, vdisk_status st)
{
	struct gwait *w = o;
	w->done = true;
	w->st = st;
}

static void test_sync_and_guest(struct ctx *c)
{
	c->test = "sync-api";
	size_t len = 3 * (size_t)c->ss;
	unsigned char *a = tu_alloc(len + 4096), *b = tu_alloc(len + 4096);
	if (!c->ro && !c->nodata && c->count >= 6) {
		tu_pattern(a, 1000, 2, c->ss, 3);
		uint64_t off = 2 * (uint64_t)c->ss + 300;
		EXPECT_KIND(c, vdisk_pwrite(c->d, a, 1000, off, 0), VDISK_OK, "unaligned pwrite");
		EXPECT_KIND(c, vdisk_pread(c->d, b, 1000, off), VDISK_OK, "unaligned pread");
		CHECK(c, memcmp(a, b, 1000) == 0, "unaligned pwrite/pread round trip differs");
	}
	EXPECT_KIND(c, vdisk_pread(c->d, b, 10, c->count * c->ss - 5), VDISK_ERR_ILLEGAL_BLOCK,
	            "pread across the end");
	EXPECT_KIND(c, vdisk_pread(c->d, b, 10, UINT64_MAX - 3), VDISK_ERR_ILLEGAL_BLOCK,
	            "pread at u64 max");

	c->test = "guest-memory";
	struct gmem g = {tu_alloc(1 << 20), 1 << 20, 3000, false};
	struct vdisk_guest_range ranges[2] = {{4096 + 17, c->ss}, {65536 + 5, 2 * (uint64_t)c->ss}};
	if (c->count >= 3) {
		if (!c->ro && !c->nodata) {
			tu_pattern(a, len, 0, c->ss, 21);
			memcpy(g.base + ranges[0].gpa, a, c->ss);
			memcpy(g.base + ranges[1].gpa, a + c->ss, 2 * (size_t)c->ss);
			struct gwait w = {0};
			CHECK(c,
			      vdisk_write_guest(c->q, 0,
			                        &(struct vdisk_guest_mem){gmem_translate, &g},
			                        ranges, 2, 0, gdone, &w) == 0,
			      "write_guest submit");
			while (!w.done)
				vdisk_queue_wait(c->q, -1);
			EXPECT_KIND(c, w.st, VDISK_OK, "guest write");
			EXPECT_KIND(c, tu_read(c->q, 0, b, len), VDISK_OK, "read");
			CHECK(c, memcmp(a, b, len) == 0, "guest-memory write did not land");
		}
		memset(g.base, 0, g.size);
		struct gwait w = {0};
		EXPECT_KIND(c, tu_read(c->q, 0, a, len), VDISK_OK, "read");
		CHECK(c,
		      vdisk_read_guest(c->q, 0, &(struct vdisk_guest_mem){gmem_translate, &g},
		                       ranges, 2, gdone, &w) == 0,
		      "read_guest submit");
		while (!w.done)
			vdisk_queue_wait(c->q, -1);
		EXPECT_KIND(c, w.st, VDISK_OK, "guest read");
		CHECK(c,
		      memcmp(g.base + ranges[0].gpa, a, c->ss) == 0 &&
		          memcmp(g.base + ranges[1].gpa, a + c->ss, 2 * (size_t)c->ss) == 0,
		      "guest-memory read returned other data");
		g.fail = true;
		w.done = false;
		CHECK(c,
		      vdisk_read_guest(c->q, 0, &(struct vdisk_guest_mem){gmem_translate, &g},
		                       ranges, 2, gdone, &w) == 0,
		      "read_guest submit");
		while (!w.done)
			vdisk_queue_wait(c->q, -1);
		EXPECT_KIND(c, w.st, VDISK_ERR_MEMORY_ACCESS, "read with a failing translator");
	}
	free(g.base);
	free(a);
	free(b);
}

/* ------------------------------------------------------------------------- */
/* Concurrent random I/O from two queues on two threads, against a model      */
/* ------------------------------------------------------------------------- */

#define CHUNK 8 /* sectors; threads own alternating chunks */
#define DEPTH 8
#define OPS_PER_THREAD 3000

struct cthread;
struct cio {
	struct cthread *t;
	uint64_t chunk;
	uint64_t sector;
	size_t len;
	bool write;
	unsigned char *buf;
	struct iovec iov[2];
};

struct cthread {
	struct ctx *c;
	int id;
	unsigned char *model; /* shared, each thread writes only its chunks */
	uint64_t nchunks;
	uint64_t rng;
	unsigned char *busy; /* per chunk: in flight on this thread */
	unsigned issued, inflight;
	int errors;
	char msg[256];
	struct vdisk_queue *q;
	struct cio io[DEPTH];
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void cio_start(struct cio *io);

static void cio_done(void *o, vdisk_status st)
{
	struct cio *io = o;
	struct cthread *t = io->t;
	struct ctx *c = t->c;
	t->inflight--;
	if (!vdisk_ok(st)) {
		if (!t->errors++)
			snprintf(t->msg, sizeof t->msg, "%s at sector %" PRIu64 ": %s",
			         io->write ? "write" : "read", io->sector, tu_st(st));
	} else if (io->write) {
		memcpy(t->model + io->sector * c->ss, io->buf, io->len);
	} else if (memcmp(t->model + io->sector * c->ss, io->buf, io->len) != 0) {
		if (!t->errors++)
			snprintf(t->msg, sizeof t->msg,
			         "read at sector %" PRIu64 " differs from the model", io->sector);
	}
	t->busy[io->chunk] = 0;
	if (t->issued < OPS_PER_THREAD)
		cio_start(io);
}

static void cio_start(struct cio *io)
{
	struct cthread *t = io->t;
	struct ctx *c = t->c;
	uint64_t chunk;
	for (int tries = 0;; tries++) {
		chunk = (rnd(&t->rng) % ((t->nchunks + 1) / 2)) * 2 + (uint64_t)t->id;
		if (chunk < t->nchunks && !t->busy[chunk])
			break;
		if (tries > 1000)
			return;
	}
	uint64_t first = chunk * CHUNK;
	uint64_t avail = c->count - first < CHUNK ? c->count - first : CHUNK;
	uint64_t off = rnd(&t->rng) % avail;
	uint64_t n = 1 + rnd(&t->rng) % (avail - off);
	io->chunk = chunk;
	io->sector = first + off;
	io->len = (size_t)n * c->ss;
	io->write = rnd(&t->rng) % 2;
	t->busy[chunk] = 1;
	t->issued++;
	if (io->write)
		tu_pattern(io->buf, io->len, io->sector, c->ss, rnd(&t->rng));
	/* two iovecs split inside the transfer */
	size_t cut = io->len > 512 ? (size_t)(rnd(&t->rng) % (io->len / 512)) * 512 : 0;
	io->iov[0] = (struct iovec){io->buf, cut};
	io->iov[1] = (struct iovec){io->buf + cut, io->len - cut};
	int rc = io->write ? vdisk_writev(t->q, io->sector, io->iov, 2, 0, cio_done, io)
	                   : vdisk_readv(t->q, io->sector, io->iov, 2, cio_done, io);
	if (rc < 0) {
		t->busy[chunk] = 0;
		if (!t->errors++)
			snprintf(t->msg, sizeof t->msg, "submit: %s", strerror(-rc));
		return;
	}
	t->inflight++;
}

static void *cthread_main(void *arg)
{
	struct cthread *t = arg;
	t->q = vdisk_queue_create(t->c->d, NULL);
	if (!t->q) {
		snprintf(t->msg, sizeof t->msg, "queue: %s", vdisk_errmsg());
		t->errors++;
		return NULL;
	}
	for (int i = 0; i < DEPTH; i++) {
		t->io[i].t = t;
		t->io[i].buf = tu_alloc(CHUNK * (size_t)t->c->ss);
		cio_start(&t->io[i]);
	}
	while (t->inflight)
		vdisk_queue_wait(t->q, -1);
	for (int i = 0; i < DEPTH; i++)
		free(t->io[i].buf);
	vdisk_queue_destroy(t->q);
	return NULL;
}

static void test_concurrent(struct ctx *c)
{
	c->test = "concurrent";
	if (c->ro || c->nodata)
		return;
	uint64_t region = c->count < 4096 ? c->count : 4096;
	uint64_t nchunks = (region + CHUNK - 1) / CHUNK;
	if (nchunks < 2)
		return;
	size_t bytes = (size_t)region * c->ss;
	unsigned char *model = tu_alloc(bytes), *final = tu_alloc(bytes);
	EXPECT_KIND(c, tu_read(c->q, 0, model, bytes), VDISK_OK, "initial read");
	struct cthread t[2];
	pthread_t th[2];
	memset(t, 0, sizeof t);
	for (int i = 0; i < 2; i++) {
		t[i].c = c;
		t[i].id = i;
		t[i].model = model;
		t[i].nchunks = nchunks;
		t[i].rng = 0x1234567ull * (uint64_t)(i + 1) + 99;
		t[i].busy = calloc(nchunks, 1);
		pthread_create(&th[i], NULL, cthread_main, &t[i]);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		CHECK(c, t[i].errors == 0, "thread %d: %d errors, first: %s", i, t[i].errors,
		      t[i].msg);
		free(t[i].busy);
	}
	EXPECT_KIND(c, tu_read(c->q, 0, final, bytes), VDISK_OK, "final read");
	CHECK(c, memcmp(model, final, bytes) == 0, "the disk differs from the model after the run");
	free(model);
	free(final);
}

/* ------------------------------------------------------------------------- */

static void test_resize(struct ctx *c)
{
	c->test = "resize";
	if (!(vdisk_caps(c->d) & VDISK_CAP_RESIZE) || c->ro)
		return;
	uint64_t old = vdisk_sector_count(c->d), grown = old + 64, newcount = 0;
	struct gwait w = {0};
	CHECK(c, vdisk_wait_resize(c->q, old, &newcount, gdone, &w) == 0, "wait_resize submit");
	vdisk_queue_poll(c->q);
	CHECK(c, !w.done, "wait_resize completed before any resize");
	CHECK(c, vdisk_resize(c->d, grown) == 0, "grow: %s", vdisk_errmsg());
	while (!w.done)
		vdisk_queue_wait(c->q, 1000000000);
	CHECK(c, w.done && vdisk_ok(w.st) && newcount == grown,
	      "wait_resize gave %" PRIu64 ", expected %" PRIu64, newcount, grown);
	CHECK(c, vdisk_sector_count(c->d) == grown, "sector count after grow");
	unsigned char *buf = tu_alloc(c->ss);
	EXPECT_KIND(c, tu_read(c->q, grown - 1, buf, c->ss), VDISK_OK, "read the new last sector");
	CHECK(c, vdisk_resize(c->d, old) == 0, "shrink: %s", vdisk_errmsg());
	EXPECT_KIND(c, tu_read(c->q, old, buf, c->ss), VDISK_ERR_ILLEGAL_BLOCK,
	            "read past the end after shrink");
	CHECK(c, vdisk_sector_count(c->d) == old, "sector count after shrink");
	free(buf);
}

int vdisk_conformance(const char *spec, unsigned flags)
{
	(void)flags;
	struct ctx c = {.spec = spec, .nodata = flags & CONFORMANCE_NO_DATA};
	char *s = tu_spec(spec);
	c.d = vdisk_open(s, 0);
	free(s);
	if (!c.d) {
		printf("FAIL open '%s': %s\n", spec, vdisk_errmsg());
		return 1;
	}
	c.q = vdisk_queue_create(c.d, NULL);
	if (!c.q) {
		printf("FAIL queue: %s\n", vdisk_errmsg());
		vdisk_unref(c.d);
		return 1;
	}
	c.ss = vdisk_sector_size(c.d);
	c.shift = (unsigned)__builtin_ctz(c.ss);
	c.count = vdisk_sector_count(c.d);
	c.max_sector = (uint64_t)INT64_MAX >> c.shift;
	c.ro = vdisk_read_only(c.d);
	c.unmap = vdisk_unmap_behavior(c.d);
	printf("conformance: %s: type %s, %" PRIu64 " sectors of %u, unmap %s%s\n", spec,
	       vdisk_type(c.d), c.count, c.ss, vdisk_unmap_behavior_name(c.unmap),
	       c.ro ? ", read-only" : "");

	void (*const tests[])(struct ctx *) = {
	    test_metadata,  test_representability, test_range,          test_edges,
	    test_rw_shapes, test_read_only,        test_unmap,          test_write_zeroes,
	    test_extents,   test_flush_fua,        test_sync_and_guest, test_concurrent,
	    test_resize,
	};
	for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
		int before = c.failures;
		tests[i](&c);
		printf("%s %s\n", c.failures == before ? "ok  " : "FAIL", c.test);
		fflush(stdout);
	}
	vdisk_queue_destroy(c.q);
	vdisk_unref(c.d);
	printf("%d checks, %d failures\n", c.checks, c.failures);
	return c.failures ? 1 : 0;
}
