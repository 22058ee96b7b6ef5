/* crashsim: a workload crashed at every flush boundary (right after each
 * flush, and just before the next), with every write kept, every write
 * dropped, and a seeded mix: every write acknowledged before the last
 * completed flush, and every FUA write, unmap and write-zeroes, reads back.
 * Also: torn writes respect the atomic unit; the post-crash image reopened
 * from the file below (under encryption); the control errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define SS 512
#define NSEC 256
#define BYTES (NSEC * SS)

enum kind { W, W_FUA, UNMAP, WZ, FLUSH };
struct op {
	enum kind k;
	uint64_t sector, count, seed;
};

struct model {
	unsigned char *img;      /* every write applied */
	unsigned char *dur;      /* what must survive: flushed, then durable operations */
	bool vol[NSEC];          /* a volatile write since the last flush */
	bool last_durable[NSEC]; /* the last operation since the flush was durable */
};

static struct op *workload(unsigned *nops, unsigned *nflush)
{
	static struct op ops[400];
	uint64_t rng = 12345;
	unsigned n = 0, f = 0, until_flush = 4;
	while (n < 380) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t r = rng >> 20;
		if (until_flush-- == 0) {
			ops[n++] = (struct op){FLUSH, 0, 0, 0};
			f++;
			until_flush = (unsigned)(r % 9);
			continue;
		}
		struct op o;
		o.count = r % 12 + 1;
		o.sector = (r >> 8) % (NSEC - o.count + 1);
		o.seed = n;
		unsigned pick = (unsigned)((r >> 24) % 16);
		o.k = pick < 11 ? W : pick < 14 ? W_FUA : pick < 15 ? UNMAP : WZ;
		ops[n++] = o;
	}
	*nops = n;
	*nflush = f;
	return ops;
}

static void apply(struct vdisk_queue *q, struct model *m, const struct op *o, unsigned char *buf)
{
	size_t off = (size_t)o->sector * SS, len = (size_t)o->count * SS;
	switch (o->k) {
	case W:
	case W_FUA:
		tu_pattern(buf, len, o->sector, SS, o->seed);
		assert_int_equal(
		    tu_write(q, o->sector, buf, len, o->k == W_FUA ? VDISK_IO_FUA : 0).kind,
		    VDISK_OK);
		memcpy(m->img + off, buf, len);
		if (o->k == W_FUA)
			memcpy(m->dur + off, buf, len);
		break;
	case UNMAP:
	case WZ:
		assert_int_equal((o->k == UNMAP ? tu_unmap(q, o->sector, o->count)
		                                : tu_write_zeroes(q, o->sector, o->count, 0))
		                     .kind,
		                 VDISK_OK);
		memset(m->img + off, 0, len);
		memset(m->dur + off, 0, len);
		break;
	case FLUSH:
		assert_int_equal(tu_flush(q).kind, VDISK_OK);
		memcpy(m->dur, m->img, BYTES);
		memset(m->vol, 0, sizeof m->vol);
		memset(m->last_durable, 0, sizeof m->last_durable);
		return;
	}
	for (uint64_t s = o->sector; s < o->sector + o->count; s++) {
		if (o->k == W)
			m->vol[s] = true;
		m->last_durable[s] = o->k != W;
	}
}

static const char *const modes[] = {"keep", "drop", "random"};

/* Run ops[0..cut), crash, restart, check. */
static int crash_run(const struct op *ops, unsigned cut, const char *mode, uint64_t seed)
{
	struct vdisk *d = tu_open("{\"type\":\"crashsim\",\"inner\":\"ram:size=128k\"}", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct model m = {tu_alloc(BYTES), tu_alloc(BYTES), {0}, {0}};
	unsigned char *buf = tu_alloc(BYTES), *disk = tu_alloc(BYTES);
	for (unsigned i = 0; i < cut; i++)
		apply(q, &m, &ops[i], buf);
	char args[64], *res = NULL;
	snprintf(args, sizeof args, "{\"mode\":\"%s\",\"seed\":%llu}", mode,
	         (unsigned long long)seed);
	if (vdisk_ctl(d, "crash", args, &res) < 0)
		fail_msg("crash: %s", vdisk_errmsg());
	free(res);
	/* dead until restarted */
	assert_int_equal(tu_read(q, 0, buf, SS).kind, VDISK_ERR_IO);
	assert_int_equal(tu_write(q, 0, buf, SS, 0).kind, VDISK_ERR_IO);
	assert_int_equal(vdisk_ctl(d, "restart", NULL, NULL), 0);
	assert_int_equal(tu_read(q, 0, disk, BYTES).kind, VDISK_OK);
	int bad = 0;
	for (unsigned s = 0; s < NSEC; s++) {
		const unsigned char *got = disk + (size_t)s * SS;
		const unsigned char *want = NULL;
		if (strcmp(mode, "keep") == 0)
			want = m.img;
		else if (strcmp(mode, "drop") == 0)
			want = m.dur;
		else if (!m.vol[s] || m.last_durable[s])
			/* nothing volatile, or a durable operation after it */
			want = m.img;
		if (want && memcmp(got, want + (size_t)s * SS, SS) != 0) {
			if (!bad)
				printf("FAIL cut %u mode %s: sector %u differs (volatile %d, last "
				       "durable %d)\n",
				       cut, mode, s, m.vol[s], m.last_durable[s]);
			bad++;
		}
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(m.img);
	free(m.dur);
	free(buf);
	free(disk);
	return bad;
}

static void test_every_flush_boundary(void **state)
{
	(void)state;
	unsigned nops, nflush, runs = 0;
	const struct op *ops = workload(&nops, &nflush);
	int bad = 0;
	/* cut points: the start, right after each flush, and just before each flush */
	for (unsigned i = 0; i <= nops; i++) {
		bool after = i > 0 && ops[i - 1].k == FLUSH;
		bool before = i < nops && ops[i].k == FLUSH;
		if (i != 0 && i != nops && !after && !before)
			continue;
		for (int m = 0; m < 3; m++) {
			bad += crash_run(ops, i, modes[m], i * 3 + (unsigned)m);
			runs++;
		}
	}
	printf("%u operations, %u flushes, %u crashes\n", nops, nflush, runs);
	assert_true(nflush >= 30);
	assert_int_equal(bad, 0);
}

/* A torn write changes whole atomic units: each is new, old, or garbage. */
static void test_torn_units(void **state)
{
	(void)state;
	bool seen[3] = {false, false, false};
	for (uint64_t seed = 1; seed <= 12; seed++) {
		struct vdisk *d = tu_open(
		    "{\"type\":\"crashsim\",\"atomic-sector\":\"4k\",\"inner\":\"ram:size=128k\"}",
		    0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		size_t len = 64 * SS;
		unsigned char *old = tu_alloc(len), *neu = tu_alloc(len), *got = tu_alloc(len);
		tu_pattern(old, len, 16, SS, 1);
		tu_pattern(neu, len, 16, SS, 2);
		assert_int_equal(tu_write(q, 16, old, len, 0).kind, VDISK_OK);
		assert_int_equal(tu_flush(q).kind, VDISK_OK);
		assert_int_equal(tu_write(q, 16, neu, len, 0).kind, VDISK_OK);
		char args[64];
		snprintf(args, sizeof args, "{\"mode\":\"tear\",\"seed\":%llu}",
		         (unsigned long long)seed);
		assert_int_equal(vdisk_ctl(d, "crash", args, NULL), 0);
		assert_int_equal(vdisk_ctl(d, "restart", NULL, NULL), 0);
		assert_int_equal(tu_read(q, 16, got, len).kind, VDISK_OK);
		for (unsigned u = 0; u < 8; u++) {
			int cls = -1;
			for (unsigned s = 0; s < 8; s++) {
				size_t off = ((size_t)u * 8 + s) * SS;
				int c = memcmp(got + off, neu + off, SS) == 0   ? 0
				        : memcmp(got + off, old + off, SS) == 0 ? 1
				                                                : 2;
				if (cls >= 0 && c != cls)
					fail_msg("seed %llu: 4 KiB unit %u is partly torn",
					         (unsigned long long)seed, u);
				cls = c;
			}
			seen[cls] = true;
		}
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(old);
		free(neu);
		free(got);
	}
	assert_true(seen[0] && seen[1] && seen[2]);
}

/* 4 KiB sectors that are written 512 bytes at a time can tear inside. */
static void test_torn_inside_sector(void **state)
{
	(void)state;
	bool mixed = false;
	for (uint64_t seed = 1; seed <= 8 && !mixed; seed++) {
		struct vdisk *d = tu_open("{\"type\":\"crashsim\",\"atomic-sector\":512,\"inner\":"
		                          "\"ram:size=128k,sector-size=4096\"}",
		                          0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *old = tu_alloc(4096), *neu = tu_alloc(4096), *got = tu_alloc(4096);
		memset(old, 1, 4096);
		memset(neu, 2, 4096);
		assert_int_equal(tu_write(q, 3, old, 4096, VDISK_IO_FUA).kind, VDISK_OK);
		assert_int_equal(tu_write(q, 3, neu, 4096, 0).kind, VDISK_OK);
		char args[64];
		snprintf(args, sizeof args, "{\"mode\":\"tear\",\"seed\":%llu}",
		         (unsigned long long)seed);
		assert_int_equal(vdisk_ctl(d, "crash", args, NULL), 0);
		assert_int_equal(vdisk_ctl(d, "restart", NULL, NULL), 0);
		assert_int_equal(tu_read(q, 3, got, 4096).kind, VDISK_OK);
		bool has_old = false, has_new = false;
		for (int i = 0; i < 8; i++) {
			has_old |= memcmp(got + i * 512, old, 512) == 0;
			has_new |= memcmp(got + i * 512, neu, 512) == 0;
		}
		mixed = has_old && has_new;
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(old);
		free(neu);
		free(got);
	}
	assert_true(mixed);
}

/* The image left in the file below is the post-crash disk: reopened without
 * the simulator (and decrypted by a fresh crypt layer), it holds what must
 * survive and nothing that was dropped. */
static void test_reopen_file(void **state)
{
	(void)state;
	const char *key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	                  "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
	char spec[1024];
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"crypt\",\"key-hex\":\"%s\",\"inner\":{\"type\":\"crashsim\",\"id\":\"cs\","
	    "\"inner\":\"file:path=@TMP@/crash.img,create=128k\"}}",
	    key);
	unsigned nops, nflush;
	const struct op *ops = workload(&nops, &nflush);
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct model m = {tu_alloc(BYTES), tu_alloc(BYTES), {0}, {0}};
	unsigned char *buf = tu_alloc(BYTES), *disk = tu_alloc(BYTES);
	/* on a fresh file, unwritten sectors are zeros below but noise through
	 * crypt: start from a known image */
	memset(buf, 0, BYTES);
	assert_int_equal(tu_write(q, 0, buf, BYTES, VDISK_IO_FUA).kind, VDISK_OK);
	unsigned cut = nops / 2;
	while (ops[cut].k != FLUSH)
		cut++;
	cut--; /* writes after the last flush stay volatile */
	for (unsigned i = 0; i < cut; i++)
		apply(q, &m, &ops[i], buf);
	vdisk_queue_destroy(q);
	struct vdisk *cs = vdisk_find(d, "cs");
	assert_non_null(cs);
	char *res = NULL;
	if (vdisk_ctl(cs, "crash", "{\"mode\":\"drop\"}", &res) < 0)
		fail_msg("crash: %s", vdisk_errmsg());
	printf("crash: %s\n", res);
	free(res);
	vdisk_unref(cs);
	vdisk_unref(d);
	snprintf(spec, sizeof spec,
	         "{\"type\":\"crypt\",\"key-hex\":\"%s\",\"inner\":\"file:path=@TMP@/crash.img\"}",
	         key);
	d = tu_open(spec, 0);
	assert_int_equal(vdisk_pread(d, disk, BYTES, 0).kind, VDISK_OK);
	/* unmapped sectors read as noise through crypt; compare the others */
	int bad = 0;
	for (unsigned s = 0; s < NSEC; s++) {
		bool zero = true;
		for (unsigned i = 0; i < SS && zero; i++)
			zero = m.dur[(size_t)s * SS + i] == 0;
		if (!zero && memcmp(disk + (size_t)s * SS, m.dur + (size_t)s * SS, SS) != 0)
			bad++;
	}
	assert_int_equal(bad, 0);
	vdisk_unref(d);
	free(m.img);
	free(m.dur);
	free(buf);
	free(disk);
}

struct io {
	int done;
	vdisk_status st;
};
static void io_done(void *o, vdisk_status st)
{
	struct io *io = o;
	io->done++;
	io->st = st;
}

static void test_control(void **state)
{
	(void)state;
	struct vdisk *d =
	    tu_open("{\"type\":\"crashsim\",\"inner\":{\"type\":\"delay\",\"id\":\"dl\","
	            "\"write\":\"30ms\",\"inner\":\"ram:size=64k\"}}",
	            0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(4096);
	struct iovec iov = {buf, 4096};
	struct io io = {0};
	assert_int_equal(vdisk_writev(q, 0, &iov, 1, 0, io_done, &io), 0);
	vdisk_queue_poll(q);
	assert_int_equal(vdisk_ctl(d, "crash", NULL, NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "in flight"));
	while (!io.done)
		vdisk_queue_wait(q, -1);
	char *res = NULL;
	assert_int_equal(vdisk_ctl(d, "status", NULL, &res), 0);
	assert_non_null(strstr(res, "\"volatile-writes\":1"));
	free(res);
	assert_int_equal(vdisk_ctl(d, "crash", "{\"mode\":\"sideways\"}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "mode: 'sideways'"));
	assert_int_equal(vdisk_ctl(d, "crash", "{\"sead\":1}", NULL), -1);
	assert_int_equal(vdisk_ctl(d, "crash", "{\"seed\":7}", &res), 0);
	assert_non_null(strstr(res, "sectors-rewritten"));
	free(res);
	assert_int_equal(vdisk_ctl(d, "crash", NULL, NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "already crashed"));
	assert_int_equal(tu_flush(q).kind, VDISK_ERR_IO);
	assert_int_equal(tu_unmap(q, 0, 1).kind, VDISK_ERR_IO);
	assert_int_equal(vdisk_ctl(d, "restart", NULL, NULL), 0);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	assert_int_equal(vdisk_ctl(d, "explode", NULL, NULL), -1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* a disk below that refuses the post-crash image: the crash says so, and
	 * applies later */
	d = tu_open(
	    "{\"type\":\"crashsim\",\"id\":\"cs\",\"inner\":{\"type\":\"fault\",\"id\":\"f\","
	    "\"rules\":[{\"op\":\"write\",\"id\":\"nw\",\"armed\":false}],"
	    "\"inner\":\"ram:size=64k\"}}",
	    0);
	struct vdisk *cs = vdisk_find(d, "cs"), *f = vdisk_find(d, "f");
	memset(buf, 9, 4096);
	assert_int_equal(vdisk_pwrite(d, buf, 4096, 0, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_ctl(f, "arm", "{\"id\":\"nw\"}", NULL), 0);
	assert_int_equal(vdisk_ctl(cs, "crash", "{\"mode\":\"drop\"}", NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "could not be written"));
	assert_int_equal(vdisk_ctl(cs, "restart", NULL, NULL), -1);
	assert_int_equal(vdisk_ctl(f, "disarm", NULL, NULL), 0);
	assert_int_equal(vdisk_ctl(cs, "crash-apply", NULL, NULL), 0);
	assert_int_equal(vdisk_ctl(cs, "restart", NULL, NULL), 0);
	assert_int_equal(vdisk_pread(d, buf, 4096, 0).kind, VDISK_OK);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(buf[i], 0);
	vdisk_unref(cs);
	vdisk_unref(f);
	vdisk_unref(d);
	free(buf);

	struct vdisk *bad = vdisk_open("{\"type\":\"crashsim\",\"atomic-sector\":1000,\"inner\":"
	                               "\"ram:size=64k\"}",
	                               0);
	assert_null(bad);
	assert_non_null(strstr(vdisk_errmsg(), "atomic-sector: 1000"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_flush_boundary),
	    cmocka_unit_test(test_torn_units),
	    cmocka_unit_test(test_torn_inside_sector),
	    cmocka_unit_test(test_reopen_file),
	    cmocka_unit_test(test_control),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
