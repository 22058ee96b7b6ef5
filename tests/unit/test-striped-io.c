/* The striped decorator: the reference's cases (4 KiB chunks over 2 disks with
 * odd buffer offsets, 128 KiB chunks over 4, 64 KiB chunks over 32, the
 * negative and unmap cases), the layout on the members checked against the
 * mapping, pieces running concurrently, member errors keeping their kind,
 * unmap coalesced to one range per member, and the unmap behaviour fold. */
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
#include "vdisk/backend.h"

/* write at sector with a buffer starting `offset` bytes into an allocation,
 * read it back the same way, compare */
static void rw_check(struct vdisk_queue *q, uint64_t sector, size_t len, size_t offset,
                     uint64_t seed)
{
	unsigned char *wm = tu_alloc(len + 2048), *rm = tu_alloc(len + 2048);
	unsigned char *w = wm + offset, *r = rm + offset;
	tu_pattern(w, len, sector, 512, seed);
	vdisk_status st = tu_write(q, sector, w, len, 0);
	if (!vdisk_ok(st))
		fail_msg("write %zu at %" PRIu64 " offset %zu: %s", len, sector, offset, tu_st(st));
	st = tu_read(q, sector, r, len);
	if (!vdisk_ok(st))
		fail_msg("read %zu at %" PRIu64 ": %s", len, sector, tu_st(st));
	if (memcmp(w, r, len) != 0)
		fail_msg("data differs: %zu bytes at %" PRIu64 " buffer offset %zu", len, sector,
		         offset);
	free(wm);
	free(rm);
}

/* 2 disks, 4 KiB chunks: 1K, 512 B, 16K at the start, the middle and the end;
 * buffers aligned and at offsets 512, 513, 1028; and unmap. */
static void test_4k_chunks(void **state)
{
	(void)state;
	struct vdisk *d = tu_open_stripe(2, "4k", "\"ram:size=1M\"");
	uint64_t count = vdisk_sector_count(d);
	assert_int_equal(count, 4096);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	static const size_t lens[] = {1024, 512, 16384};
	static const size_t offs[] = {0, 512, 513, 1028};
	for (size_t l = 0; l < 3; l++) {
		uint64_t ns = lens[l] / 512;
		uint64_t where[] = {0, count / 2 - 1, count / 2 + 3, count - ns};
		for (size_t w = 0; w < 4; w++)
			for (size_t o = 0; o < 4; o++)
				rw_check(q, where[w], lens[l], offs[o], l * 100 + w * 10 + o);
	}
	assert_int_equal(tu_unmap(q, 0, count).kind, VDISK_OK);
	unsigned char *buf = tu_alloc(16384), *z = tu_alloc(16384);
	assert_int_equal(tu_read(q, count - 32, buf, 16384).kind, VDISK_OK);
	assert_memory_equal(buf, z, 16384);
	free(buf);
	free(z);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void big_chunks(unsigned n, const char *chunk, size_t maxio)
{
	struct vdisk *d = tu_open_stripe(n, chunk, "\"ram:size=1M\"");
	uint64_t count = vdisk_sector_count(d);
	assert_int_equal(count, (uint64_t)n * 2048);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	uint64_t rng = n;
	for (int i = 0; i < 200; i++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		size_t len = ((rng >> 33) % (maxio / 512) + 1) * 512;
		uint64_t sector = (rng >> 13) % (count - len / 512 + 1);
		rw_check(q, sector, len, (rng >> 7) % 3 ? 0 : 513, (uint64_t)i);
	}
	rw_check(q, 0, maxio, 0, 1);
	rw_check(q, count - maxio / 512, maxio, 1028, 2);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_128k_chunks_4_disks(void **state)
{
	(void)state;
	big_chunks(4, "128k", 256 * 1024);
}

static void test_64k_chunks_32_disks(void **state)
{
	(void)state;
	big_chunks(32, "64k", 1024 * 1024);
}

static void expect_open_error(const char *spec, const char *what)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, 0);
	if (d)
		fail_msg("'%s' opened", s);
	if (!strstr(vdisk_errmsg(), what))
		fail_msg("'%s': message '%s' lacks '%s'", s, vdisk_errmsg(), what);
	free(s);
}

static void test_negative(void **state)
{
	(void)state;
	expect_open_error("{\"type\":\"striped\",\"disks\":[\"ram:size=1M\",\"ram:size=2M\"]}",
	                  "disks[1]: 4096 sectors, but disks[0] has 2048");
	expect_open_error("{\"type\":\"striped\",\"chunk-size\":4097,\"disks\":[\"ram:size=1M\","
	                  "\"ram:size=1M\"]}",
	                  "chunk-size: 4097 is not a multiple");
	expect_open_error("{\"type\":\"striped\",\"chunk-size\":0,\"disks\":[\"ram:size=1M\"]}",
	                  "chunk-size: must not be 0");
	expect_open_error(
	    "{\"type\":\"striped\",\"chunk-size\":\"2M\",\"disks\":[\"ram:size=1M\"]}",
	    "larger than a member");
	expect_open_error("{\"type\":\"striped\",\"sector-count\":4097,\"chunk-size\":512,"
	                  "\"disks\":[\"ram:size=1M\",\"ram:size=1M\"]}",
	                  "sector-count: 4097 is not in 1..4096");
	expect_open_error("{\"type\":\"striped\",\"sector-count\":1000,\"chunk-size\":\"4k\","
	                  "\"disks\":[\"ram:size=1M\",\"ram:size=1M\"]}",
	                  "not a multiple of a stripe (16 sectors");
	expect_open_error("{\"type\":\"striped\",\"disks\":[]}", "disks: empty");
	expect_open_error("{\"type\":\"striped\"}", "disks: required");
	expect_open_error("{\"type\":\"striped\",\"disks\":\"ram:size=1M\"}",
	                  "disks: expected an array");
	expect_open_error(
	    "{\"type\":\"striped\",\"disks\":[\"ram:size=1M\",\"ram:size=1M,sector-size=4096\"]}",
	    "disks[1]: 4096-byte sectors");
	expect_open_error(
	    "{\"type\":\"striped\",\"disks\":[\"ram:size=1M\",\"ram:size=1M,bogus=1\"]}",
	    "disks[1]");
	expect_open_error("{\"type\":\"striped\",\"stripes\":2,\"disks\":[\"ram:size=1M\"]}",
	                  "stripes");
	expect_open_error("{\"type\":\"striped\",\"disks\":[\"ram:size=1M\",{\"type\":\"file\","
	                  "\"path\":\"@TMP@/ro.img\",\"create\":\"1M\",\"read-only\":true}]}",
	                  "");

	/* a smaller logical count: I/O stops there */
	struct vdisk *d =
	    tu_open("{\"type\":\"striped\",\"sector-count\":2048,\"chunk-size\":\"4k\","
	            "\"disks\":[\"ram:size=1M\",\"ram:size=1M\"]}",
	            0);
	assert_int_equal(vdisk_sector_count(d), 2048);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(1024);
	assert_int_equal(tu_write(q, 2048, buf, 512, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_read(q, 2048, buf, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_read(q, 2047, buf, 1024).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_unmap(q, 2047, 2).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_read(q, UINT64_MAX - 1, buf, 512).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_write(q, 2047, buf, 512, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void test_unmap_cases(void **state)
{
	(void)state;
	struct vdisk *d = tu_open_stripe(3, "4k", "\"ram:size=1M\"");
	uint64_t count = vdisk_sector_count(d);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	for (uint64_t s = 0; s + 37 <= count; s += 301)
		assert_int_equal(tu_unmap(q, s, 37).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, count - 1, 1).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, count, 1).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_unmap(q, count - 1, 2).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(tu_unmap(q, 5, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, count, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* The layout on the members is the reference's mapping. */
static void test_layout(void **state)
{
	(void)state;
	enum { N = 3, SPC = 8 };
	struct vdisk *d = tu_open_stripe(N, "4k",
	                                 "{\"type\":\"file\",\"path\":\"@TMP@/m%d.img\","
	                                 "\"create\":\"256k\"}");
	uint64_t count = vdisk_sector_count(d);
	assert_int_equal(count, 3 * 512);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	size_t bytes = (size_t)count * 512;
	unsigned char *model = tu_alloc(bytes);
	uint64_t rng = 5;
	for (int i = 0; i < 300; i++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t n = (rng >> 40) % 40 + 1, s = (rng >> 8) % (count - n + 1);
		tu_pattern(model + s * 512, n * 512, s, 512, (uint64_t)i);
		assert_int_equal(
		    tu_write(q, s, model + s * 512, n * 512, i % 5 ? 0 : VDISK_IO_FUA).kind,
		    VDISK_OK);
	}
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	unsigned char *m = tu_alloc(256 * 1024);
	for (unsigned dn = 0; dn < N; dn++) {
		char path[512];
		snprintf(path, sizeof path, "%s/m%u.img", tu_tmpdir(), dn);
		int fd = open(path, O_RDONLY);
		assert_int_equal(pread(fd, m, 256 * 1024, 0), 256 * 1024);
		close(fd);
		for (uint64_t ms = 0; ms < 512; ms++) {
			uint64_t l = ((ms / SPC) * N + dn) * SPC + ms % SPC;
			if (memcmp(m + ms * 512, model + l * 512, 512) != 0)
				fail_msg("member %u sector %" PRIu64
				         " is not logical sector %" PRIu64,
				         dn, ms, l);
		}
	}
	free(m);
	free(model);
}

/* "gate": a member that holds every request until the test opens the gate,
 * so what is in flight at once can be counted without timing anything. */
enum { GATE_MAX = 64 };
static struct vdisk_req *gate_held[GATE_MAX];
static unsigned gate_n;

static int gate_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->physical_sector_size = 512;
	m->sector_count = 512;
	return 0;
}

static int gate_hold(struct vdisk_req *r)
{
	assert_true(gate_n < GATE_MAX);
	gate_held[gate_n++] = r;
	return 0;
}

static void gate_release(void)
{
	unsigned n = gate_n;
	gate_n = 0;
	for (unsigned i = 0; i < n; i++)
		vdisk_req_complete(gate_held[i], vdisk_status_ok());
}

static const struct vdisk_driver gate_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "gate",
    .description = "test: holds requests until released",
    .open = gate_open,
    .read = gate_hold,
    .write = gate_hold,
    .flush = gate_hold,
};

static void done_flag(void *opaque, vdisk_status st)
{
	assert_true(vdisk_ok(st));
	*(bool *)opaque = true;
}

/* A request over 8 members is one piece on each member, all 8 in flight before
 * any completes; the request completes only after the last. */
static void test_concurrent_pieces(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&gate_driver), 0);
	struct vdisk *d = tu_open_stripe(8, "4k", "{\"type\":\"gate\"}");
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	size_t len = 8 * 4096 * 2;
	unsigned char *buf = tu_alloc(len);
	struct iovec iov = {buf, len};
	for (int op = 0; op < 3; op++) {
		bool done = false;
		int rc = op == 0   ? vdisk_writev(q, 3, &iov, 1, 0, done_flag, &done)
		         : op == 1 ? vdisk_readv(q, 3, &iov, 1, done_flag, &done)
		                   : vdisk_flush(q, done_flag, &done);
		assert_int_equal(rc, 0);
		vdisk_queue_poll(q);
		assert_int_equal(gate_n, 8); /* one piece per member, all at once */
		assert_false(done);
		struct vdisk_req *last = gate_held[--gate_n];
		gate_release(); /* all members but one answer */
		vdisk_queue_poll(q);
		assert_false(done);
		vdisk_req_complete(last, vdisk_status_ok());
		while (!done)
			vdisk_queue_wait(q, -1);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* A member's error comes up with its kind; the others still complete. */
static void test_member_errors(void **state)
{
	(void)state;
	struct vdisk *d = tu_open(
	    "{\"type\":\"striped\",\"chunk-size\":\"4k\",\"disks\":[\"ram:size=1M\","
	    "{\"type\":\"fault\",\"inner\":\"ram:size=1M\",\"rules\":["
	    "{\"op\":\"write\",\"error\":\"reservation-conflict\",\"offset\":0,\"length\":4096},"
	    "{\"op\":\"read\",\"error\":\"medium\",\"offset\":8192,\"length\":4096},"
	    "{\"op\":\"flush\",\"error\":\"io\",\"errno\":\"ENOSPC\",\"nth\":1},"
	    "{\"op\":\"unmap\",\"error\":\"illegal-block\"}]},\"ram:size=1M\"]}",
	    0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(65536);
	/* sectors 8..15 are member 1's first chunk */
	assert_int_equal(tu_write(q, 8, buf, 512, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(tu_write(q, 0, buf, 65536, 0).kind, VDISK_ERR_RESERVATION_CONFLICT);
	assert_int_equal(tu_write(q, 16, buf, 4096, 0).kind, VDISK_OK);
	/* member 1's member sectors 16..23 = logical chunk 7 = sectors 56..63 */
	vdisk_status st = tu_read(q, 0, buf, 65536);
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	assert_int_equal(st.medium, VDISK_MEDIUM_UNRECOVERED_READ);
	assert_int_equal(tu_read(q, 0, buf, 56 * 512).kind, VDISK_OK);
	st = tu_flush(q);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_int_equal(st.errnum, 28);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 0, 8).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 0, 9).kind, VDISK_ERR_ILLEGAL_BLOCK);
	/* the write rule does not cover write-zeroes */
	assert_int_equal(tu_write_zeroes(q, 0, 100, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* A request over many chunks sends one unmap to each member. */
static void test_unmap_coalesced(void **state)
{
	(void)state;
	char *spec = tu_stripe_spec(4, "4k",
	                            "{\"type\":\"fault\",\"id\":\"f%d\",\"inner\":\"ram:size=1M\","
	                            "\"rules\":[{\"op\":\"unmap\",\"nth\":1000000}]}",
	                            NULL);
	struct vdisk *d = tu_open(spec, 0);
	free(spec);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* 3..1000: chunks 0..125 over 4 members */
	assert_int_equal(tu_unmap(q, 3, 998).kind, VDISK_OK);
	assert_int_equal(tu_write_zeroes(q, 3, 998, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	for (int i = 0; i < 4; i++) {
		char id[8], *res = NULL;
		snprintf(id, sizeof id, "f%d", i);
		struct vdisk *f = vdisk_find(d, id);
		assert_non_null(f);
		assert_int_equal(vdisk_ctl(f, "list", NULL, &res), 0);
		if (!strstr(res, "\"seen\":1,"))
			fail_msg("member %d saw other than one unmap: %s", i, res);
		free(res);
		vdisk_unref(f);
	}
	vdisk_unref(d);
}

/* A decorator that ignores unmap, for the fold. */
static int ign_open(struct vdisk *d, json_t *cfg)
{
	struct vdisk *in = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!in)
		return -1;
	vdisk_set_priv(d, in);
	vdisk_meta_inherit(d, in);
	vdisk_meta(d)->unmap = VDISK_UNMAP_IGNORED;
	return 0;
}
static int ign_fwd(struct vdisk_req *r)
{
	return vdisk_req_forward(r, vdisk_priv(r->disk));
}
static const struct vdisk_driver ign_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "ignunmap",
    .open = ign_open,
    .read = ign_fwd,
    .write = ign_fwd,
    .flush = ign_fwd,
};

static void test_metadata_fold(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&ign_driver), 0);
	struct vdisk *d =
	    tu_open_stripe(3, "4k", "{\"type\":\"ignunmap\",\"inner\":\"ram:size=1M\"}");
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_IGNORED);
	vdisk_unref(d);
	d = tu_open("{\"type\":\"striped\",\"disks\":[\"ram:size=1M\",{\"type\":\"ignunmap\","
	            "\"inner\":\"ram:size=1M\"}]}",
	            0);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_UNSPECIFIED);
	assert_false(vdisk_caps(d) & VDISK_CAP_FAST_ZERO);
	vdisk_unref(d);
	d = tu_open("{\"type\":\"striped\",\"disks\":[\"ram:size=1M,sector-size=4096\","
	            "\"null:size=1M,sector-size=4096\"]}",
	            0);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_ZEROES);
	assert_int_equal(vdisk_sector_size(d), 4096);
	assert_true(vdisk_fua_respected(d));
	assert_true(vdisk_caps(d) & VDISK_CAP_FAST_ZERO);
	assert_false(vdisk_caps(d) & VDISK_CAP_RESIZE);
	assert_false(vdisk_has_persistent_reservations(d));
	assert_false(vdisk_disk_id(d, NULL));
	assert_int_equal(vdisk_sector_count(d), 512);
	vdisk_unref(d);
	/* read-only members make a read-only set */
	d = tu_open("{\"type\":\"striped\",\"read-only\":true,\"disks\":[\"ram:size=1M\","
	            "\"ram:size=1M\"]}",
	            0);
	assert_true(vdisk_read_only(d));
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_4k_chunks),           cmocka_unit_test(test_128k_chunks_4_disks),
	    cmocka_unit_test(test_64k_chunks_32_disks), cmocka_unit_test(test_negative),
	    cmocka_unit_test(test_unmap_cases),         cmocka_unit_test(test_layout),
	    cmocka_unit_test(test_concurrent_pieces),   cmocka_unit_test(test_member_errors),
	    cmocka_unit_test(test_unmap_coalesced),     cmocka_unit_test(test_metadata_fold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
