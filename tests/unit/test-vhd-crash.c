/* VHD durability with the crash simulator below the image: random one-sector
 * writes (some FUA) into a dynamic and a differencing image that allocate
 * blocks as they go, flushes now and then, then a power cut.  The container
 * after the cut, opened as a VHD on its own, must open, hold every write that
 * was acknowledged before a finished flush was issued and every acknowledged
 * FUA write (unless a later volatile write to that sector may have torn it),
 * and read every sector never written as before: zeros, or the parent's. */
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define SS 512
#define SECTORS 16384 /* 8 MiB: 128 blocks of 64 KiB */
#define DEPTH 8
#define MAGIC 0x4d5343444856ull

struct wrec {
	uint32_t sector;
	uint64_t version;
	bool fua, acked;
	uint64_t acked_at;
};

struct run {
	struct vdisk_queue *q;
	struct wrec *w;
	size_t nw, capw;
	uint64_t clock, durable_before, flush_issued_at;
	bool flushing;
	unsigned inflight;
	uint64_t rng;
	unsigned char bufs[DEPTH][SS];
	struct iovec iov[DEPTH];
	size_t slot_rec[DEPTH];
	bool slot_busy[DEPTH];
	struct slot {
		struct run *r;
		unsigned index;
	} slots[DEPTH];
	int failed;
};

static uint64_t rnd(struct run *r)
{
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 7;
	r->rng ^= r->rng << 17;
	return r->rng;
}

static void fill(unsigned char *b, uint32_t sector, uint64_t version)
{
	uint64_t h[3] = {MAGIC, sector, version};
	tu_pattern(b, SS, sector, SS, version);
	memcpy(b, h, sizeof h);
}

static void w_done(void *o, vdisk_status st)
{
	struct slot *slot = o;
	struct run *r = slot->r;
	if (!vdisk_ok(st)) {
		fprintf(stderr, "write failed: %s\n", tu_st(st));
		r->failed = 1;
	}
	struct wrec *w = &r->w[r->slot_rec[slot->index]];
	w->acked = true;
	w->acked_at = ++r->clock;
	r->inflight--;
}

static void f_done(void *o, vdisk_status st)
{
	struct run *r = o;
	if (!vdisk_ok(st)) {
		fprintf(stderr, "flush failed: %s\n", tu_st(st));
		r->failed = 1;
	}
	r->durable_before = r->flush_issued_at;
	r->flushing = false;
	r->inflight--;
}

static void issue(struct run *r, unsigned slot, uint64_t version)
{
	if (r->nw == r->capw) {
		r->capw = r->capw ? r->capw * 2 : 1024;
		r->w = realloc(r->w, r->capw * sizeof *r->w);
	}
	struct wrec *w = &r->w[r->nw];
	bool clash;
	do {
		/* clustered, so blocks fill and several writes share a group */
		w->sector = (uint32_t)(rnd(r) % 4 == 0 ? rnd(r) % SECTORS
		                                       : rnd(r) % 64 * 256 + rnd(r) % 24);
		clash = false;
		for (unsigned k = 0; k < DEPTH; k++)
			if (k != slot && r->slot_busy[k] && !r->w[r->slot_rec[k]].acked &&
			    r->w[r->slot_rec[k]].sector == w->sector)
				clash = true;
	} while (clash);
	w->version = version;
	w->fua = rnd(r) % 10 == 0;
	w->acked = false;
	r->slot_rec[slot] = r->nw++;
	fill(r->bufs[slot], w->sector, version);
	r->iov[slot] = (struct iovec){r->bufs[slot], SS};
	r->inflight++;
	assert_int_equal(vdisk_writev(r->q, w->sector, &r->iov[slot], 1, w->fua ? VDISK_IO_FUA : 0,
	                              w_done, &r->slots[slot]),
	                 0);
}

static void crash_round(const char *stack, const char *reopen, const char *parent, uint64_t seed)
{
	char *spec = tu_spec(stack);
	struct vdisk *d = tu_open(spec, 0);
	assert_int_equal(vdisk_sector_count(d), SECTORS);
	struct run *r = calloc(1, sizeof *r);
	r->q = vdisk_queue_create(d, NULL);
	r->rng = seed * 0x9E3779B97F4A7C15ull | 1;
	for (unsigned i = 0; i < DEPTH; i++)
		r->slots[i] = (struct slot){r, i};
	uint64_t version = 1, next_flush = 50;
	unsigned total = 400 + (unsigned)(rnd(r) % 800);
	while (r->nw < total || r->inflight) {
		for (unsigned s = 0; s < DEPTH && r->nw < total; s++) {
			if (r->slot_busy[s] && !r->w[r->slot_rec[s]].acked)
				continue;
			issue(r, s, version++);
			r->slot_busy[s] = true;
		}
		if (!r->flushing && r->clock >= next_flush && r->nw < total) {
			r->flushing = true;
			r->flush_issued_at = r->clock;
			r->inflight++;
			assert_int_equal(vdisk_flush(r->q, f_done, r), 0);
			next_flush = r->clock + 30 + rnd(r) % 60;
		}
		vdisk_queue_wait(r->q, -1);
	}
	assert_int_equal(r->failed, 0);

	/* the power cut; then the container as it came out of it, into a file */
	struct vdisk *cs = vdisk_find(d, "cs");
	assert_non_null(cs);
	char args[64], *res = NULL;
	snprintf(args, sizeof args, "{\"seed\":%" PRIu64 "}", seed);
	if (vdisk_ctl(cs, "crash", args, &res) < 0) {
		fprintf(stderr, "crash: %s\n", vdisk_errmsg());
		fail();
	}
	free(res);
	assert_int_equal(vdisk_ctl(cs, "restart", "{}", NULL), 0);
	size_t clen = (size_t)vdisk_sector_count(cs) * vdisk_sector_size(cs);
	unsigned char *img = malloc(clen);
	assert_true(vdisk_ok(vdisk_pread(cs, img, clen, 0)));
	vdisk_unref(cs);
	vdisk_queue_destroy(r->q);
	vdisk_unref(d);
	char *dump = tu_spec("@TMP@/after.vhd");
	int fd = open(dump, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_int_equal(write(fd, img, clen), (ssize_t)clen);
	close(fd);
	free(img);

	uint64_t *want = calloc(SECTORS, sizeof *want);
	bool *skip = calloc(SECTORS, 1);
	for (size_t i = 0; i < r->nw; i++) {
		struct wrec *w = &r->w[i];
		if (w->fua || w->acked_at <= r->durable_before) {
			want[w->sector] = w->version;
			skip[w->sector] = false;
		} else {
			skip[w->sector] = true;
		}
	}
	char *rs = tu_spec(reopen);
	struct vdisk *after = vdisk_open(rs, VDISK_OPEN_READ_ONLY);
	if (!after) {
		fprintf(stderr, "seed %" PRIu64 ": the image does not open after the crash: %s\n",
		        seed, vdisk_errmsg());
		fail();
	}
	unsigned char *all = malloc((size_t)SECTORS * SS);
	assert_true(vdisk_ok(vdisk_pread(after, all, (size_t)SECTORS * SS, 0)));
	vdisk_unref(after);
	/* a writable open puts back an end footer the cut tore; then every
	 * structure checks out */
	after = vdisk_open(rs, 0);
	assert_non_null(after);
	vdisk_unref(after);
	after = vdisk_open(rs, VDISK_OPEN_READ_ONLY);
	assert_non_null(after);
	char *chk = NULL;
	int problems = vdisk_check(after, 0, &chk);
	if (problems != 0)
		fprintf(stderr, "check after the crash: %s\n", chk);
	free(chk);
	assert_int_equal(problems, 0);
	vdisk_unref(after);
	for (uint32_t s = 0; s < SECTORS; s++) {
		if (skip[s])
			continue;
		unsigned char expect[SS];
		if (want[s])
			fill(expect, s, want[s]);
		else if (parent)
			tu_pattern(expect, SS, s, SS, 99);
		else
			memset(expect, 0, SS);
		if (memcmp(all + (size_t)s * SS, expect, SS) != 0) {
			fprintf(stderr,
			        "%s, seed %" PRIu64 ": sector %u lost version %" PRIu64 "\n", stack,
			        seed, s, want[s]);
			fail();
		}
	}
	free(all);
	free(want);
	free(skip);
	free(r->w);
	free(r);
	free(spec);
	free(rs);
	free(dump);
}

static void test_dynamic(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 8; seed++)
		crash_round("{\"type\":\"vhd\",\"create\":\"8M\",\"block-size\":\"64k\",\"inner\":"
		            "{\"type\":\"crashsim\",\"id\":\"cs\",\"inner\":\"ram:size=4k,max-size="
		            "64M\"}}",
		            "vhd:path=@TMP@/after.vhd", NULL, seed * 7919);
}

static void test_differencing(void **state)
{
	(void)state;
	char *p = tu_spec("@TMP@/parent.raw");
	unsigned char *buf = malloc((size_t)SECTORS * SS);
	for (uint32_t s = 0; s < SECTORS; s++)
		tu_pattern(buf + (size_t)s * SS, SS, s, SS, 99);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_int_equal(write(fd, buf, (size_t)SECTORS * SS), (ssize_t)SECTORS * SS);
	close(fd);
	free(buf);
	free(p);
	for (uint64_t seed = 1; seed <= 8; seed++)
		crash_round("{\"type\":\"vhd\",\"create\":true,\"block-size\":\"64k\",\"parent\":"
		            "\"file:path=@TMP@/parent.raw,read-only=on\",\"inner\":{\"type\":"
		            "\"crashsim\",\"id\":\"cs\",\"inner\":\"ram:size=4k,max-size=64M\"}}",
		            "{\"type\":\"vhd\",\"path\":\"@TMP@/after.vhd\",\"parent\":"
		            "\"file:path=@TMP@/parent.raw,read-only=on\"}",
		            "parent", seed * 104729);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dynamic),
	    cmocka_unit_test(test_differencing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
