/* Layered durability with the crash simulator below a disk layer in the write
 * path: random writes (some FUA) with flushes now and then, then a simulated
 * power cut; the file below, reopened on its own, must hold every write that
 * was acknowledged before a finished flush was issued and every acknowledged
 * FUA write, unless a later volatile write to the same sector may have torn
 * it.  So a layered flush and FUA must reach each write-path layer, through a
 * RAM cache, a sqlite layer, or nothing at all. */
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
#define SECTORS 1024
#define DEPTH 8
#define MAGIC 0x4d53434c444c4456ull /* "VDLDLCSM" */

struct wrec {
	uint32_t sector;
	uint64_t version;
	uint64_t issued; /* issue order */
	bool fua;
	bool acked;
	uint64_t acked_at; /* event clock */
};

struct run {
	struct vdisk_queue *q;
	struct wrec *w;
	size_t nw, capw;
	uint64_t clock;
	uint64_t durable_before; /* acks before this event were flushed */
	uint64_t flush_issued_at;
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
	if (!vdisk_ok(st))
		r->failed = 1;
	struct wrec *w = &r->w[r->slot_rec[slot->index]];
	w->acked = true;
	w->acked_at = ++r->clock;
	r->inflight--;
}

static void f_done(void *o, vdisk_status st)
{
	struct run *r = o;
	if (!vdisk_ok(st))
		r->failed = 1;
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
	/* never two writes to one sector in flight: their order would be
	 * undefined, on any disk */
	bool clash;
	do {
		w->sector = (uint32_t)(rnd(r) % SECTORS);
		clash = false;
		for (unsigned k = 0; k < DEPTH; k++)
			if (k != slot && r->slot_busy[k] &&
			    r->w[r->slot_rec[k]].sector == w->sector && !r->w[r->slot_rec[k]].acked)
				clash = true;
	} while (clash);
	w->version = version;
	w->issued = r->nw;
	w->fua = rnd(r) % 10 == 0;
	w->acked = false;
	r->slot_rec[slot] = r->nw++;
	fill(r->bufs[slot], w->sector, version);
	r->iov[slot].iov_base = r->bufs[slot];
	r->iov[slot].iov_len = SS;
	r->inflight++;
	assert_int_equal(vdisk_writev(r->q, w->sector, &r->iov[slot], 1, w->fua ? VDISK_IO_FUA : 0,
	                              w_done, &r->slots[slot]),
	                 0);
}

static void crash_round(const char *stack, uint64_t seed)
{
	char path[512];
	snprintf(path, sizeof path, "%s/cs.img", tu_tmpdir());
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_int_equal(ftruncate(fd, SECTORS * SS), 0);
	close(fd);
	char *spec = tu_spec(stack);
	struct vdisk *d = tu_open(spec, 0);
	struct run *r = calloc(1, sizeof *r);
	r->q = vdisk_queue_create(d, NULL);
	r->rng = seed * 0x9E3779B97F4A7C15ull | 1;
	for (unsigned i = 0; i < DEPTH; i++) {
		r->slots[i].r = r;
		r->slots[i].index = i;
	}
	uint64_t version = 1;
	unsigned total = 300 + (unsigned)(rnd(r) % 700);
	/* keep DEPTH writes in flight; a flush after every ~50 acknowledgements */
	uint64_t next_flush = 50;
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
			next_flush = r->clock + 30 + rnd(r) % 40;
		}
		vdisk_queue_wait(r->q, -1);
	}
	assert_int_equal(r->failed, 0);

	/* the power cut */
	struct vdisk *cs = vdisk_find(d, "cs");
	assert_non_null(cs);
	char args[64], *res = NULL;
	snprintf(args, sizeof args, "{\"seed\":%" PRIu64 "}", seed);
	if (vdisk_ctl(cs, "crash", args, &res) < 0) {
		fprintf(stderr, "crash: %s\n", vdisk_errmsg());
		fail();
	}
	free(res);
	vdisk_unref(cs);
	vdisk_queue_destroy(r->q);
	vdisk_unref(d);

	/* what must have survived: per sector, the last durable write, unless a
	 * volatile write was issued after it */
	uint64_t *want = calloc(SECTORS, sizeof *want);
	bool *skip = calloc(SECTORS, 1);
	for (size_t i = 0; i < r->nw; i++) {
		struct wrec *w = &r->w[i];
		bool durable = w->fua || w->acked_at <= r->durable_before;
		if (durable) {
			want[w->sector] = w->version;
			skip[w->sector] = false;
		} else {
			skip[w->sector] = true;
		}
	}
	fd = open(path, O_RDONLY);
	unsigned char b[SS];
	for (uint32_t s = 0; s < SECTORS; s++) {
		if (skip[s])
			continue;
		assert_int_equal(pread(fd, b, SS, (off_t)s * SS), SS);
		unsigned char expect[SS];
		if (want[s])
			fill(expect, s, want[s]);
		else
			memset(expect, 0, SS);
		if (memcmp(b, expect, SS) != 0) {
			uint64_t h[3];
			memcpy(h, b, sizeof h);
			fprintf(stderr,
			        "%s, seed %" PRIu64 ": sector %u lost version %" PRIu64
			        " (holds %s %" PRIu64 "); durable before event %" PRIu64 "\n",
			        spec, seed, s, want[s], h[0] == MAGIC ? "version" : "garbage", h[2],
			        r->durable_before);
			for (size_t i = 0; i < r->nw; i++)
				if (r->w[i].sector == s)
					fprintf(stderr,
					        "  issued %" PRIu64 " version %" PRIu64
					        " fua %d acked at %" PRIu64 "\n",
					        r->w[i].issued, r->w[i].version, r->w[i].fua,
					        r->w[i].acked_at);
			fail();
		}
	}
	close(fd);
	free(want);
	free(skip);
	free(r->w);
	free(r);
	free(spec);
}

static void test_crash(void **state)
{
	(void)state;
	static const char *const stacks[] = {
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"disk\",\"disk\":{\"type\":\"crashsim\","
	    "\"id\":\"cs\",\"inner\":\"file:path=@TMP@/cs.img\"}}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"write-through\":true,\"read-"
	    "cache\":"
	    "true},{\"type\":\"disk\",\"disk\":{\"type\":\"crashsim\",\"id\":\"cs\",\"inner\":"
	    "\"file:path=@TMP@/cs.img\"}}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"write-through\":true},{\"type\":"
	    "\"ram\",\"write-through\":true},{\"type\":\"disk\",\"disk\":{\"type\":\"crashsim\","
	    "\"id\":\"cs\",\"inner\":\"file:path=@TMP@/cs.img\"}}]}",
	};
	for (size_t i = 0; i < sizeof stacks / sizeof *stacks; i++)
		for (uint64_t seed = 1; seed <= 6; seed++)
			crash_round(stacks[i], seed * 7919 + i);

	/* and through a sqlite layer that writes through (its own file is made
	 * durable by the same flushes; the crash here is the disk below) */
	char *db = tu_spec("@TMP@/cs.dbhd");
	for (uint64_t seed = 1; seed <= 3; seed++) {
		unlink(db);
		crash_round(
		    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"create\":true,"
		    "\"write-through\":true,\"path\":\"@TMP@/cs.dbhd\",\"size\":524288},"
		    "{\"type\":\"disk\",\"disk\":{\"type\":\"crashsim\",\"id\":\"cs\",\"inner\":"
		    "\"file:path=@TMP@/cs.img\"}}]}",
		    seed);
	}
	free(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crash),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
