/* Extents of the striped decorator: random writes and unmaps over sparse RAM
 * members checked against a model of which 4 KiB blocks hold data, for several
 * member counts and chunk sizes, random ranges and maxima (max = 1 included);
 * sparse file members with holes at known places; ranges that start and end
 * inside chunks; merging across members; a member whose extents fail and one
 * that answers for less than it was asked; and `vdisk map --json`. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define HOLE (VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO)

static uint64_t rng_state = 1;
static uint64_t rnd(uint64_t n)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (rng_state >> 33) % n;
}

/* One call's answer must be well formed: 1..max extents, contiguous from
 * sector, inside the range, none empty, neighbours of different flags (merged
 * as far as they can be), and each agreeing with the model (data[block of 8
 * sectors]).  Returns the sectors covered. */
static uint64_t check_answer(const bool *data, uint64_t sector, uint64_t count,
                             const struct vdisk_extent *e, unsigned n, unsigned max)
{
	if (n == 0 || n > max)
		fail_msg("extents (%" PRIu64 ", %" PRIu64 ") max %u: %u extents", sector, count,
		         max, n);
	uint64_t pos = sector;
	for (unsigned i = 0; i < n; i++) {
		if (e[i].sector != pos || e[i].count == 0 || e[i].count > sector + count - pos)
			fail_msg("extents (%" PRIu64 ", %" PRIu64 ") max %u: extent %u is (%" PRIu64
			         ", %" PRIu64 "), expected to start at %" PRIu64,
			         sector, count, max, i, e[i].sector, e[i].count, pos);
		if (i && e[i].flags == e[i - 1].flags)
			fail_msg("extents (%" PRIu64 ", %" PRIu64 ") max %u: extents %u and %u "
			         "have the same flags and were not merged",
			         sector, count, max, i - 1, i);
		if (data) {
			for (uint64_t s = e[i].sector; s < e[i].sector + e[i].count; s++) {
				uint32_t want = data[s / 8] ? 0 : HOLE;
				if (e[i].flags != want)
					fail_msg("extents (%" PRIu64 ", %" PRIu64 ") max %u: "
					         "sector %" PRIu64 " is %s, the model says %s",
					         sector, count, max, s,
					         e[i].flags ? "a hole" : "data",
					         want ? "a hole" : "data");
			}
		}
		pos += e[i].count;
	}
	return pos - sector;
}

/* Ask again from where each answer stopped until the range is covered. */
static void check_range(struct vdisk_queue *q, const bool *data, uint64_t sector, uint64_t count,
                        unsigned max)
{
	struct vdisk_extent *e = calloc(max, sizeof *e);
	uint64_t pos = sector, end = sector + count;
	while (pos < end) {
		unsigned n = 0;
		vdisk_status st = tu_extents(q, pos, end - pos, e, max, &n);
		if (!vdisk_ok(st))
			fail_msg("extents (%" PRIu64 ", %" PRIu64 "): %s", pos, end - pos,
			         tu_st(st));
		pos += check_answer(data, pos, end - pos, e, n, max);
	}
	free(e);
}

/* Random 4 KiB-block writes and unmaps over RAM members, extents of random
 * ranges with random maxima against the model. */
static void model_run(unsigned members, const char *chunk, uint64_t seed)
{
	rng_state = seed;
	struct vdisk *d = tu_open_stripe(members, chunk, "\"ram:size=256k\"");
	uint64_t count = vdisk_sector_count(d), blocks = count / 8;
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	bool *data = calloc(blocks, sizeof *data);
	unsigned char *buf = tu_alloc(64 * 1024);
	memset(buf, 0xA5, 64 * 1024);
	for (int round = 0; round < 6; round++) {
		for (int i = 0; i < 40; i++) {
			uint64_t n = rnd(16) + 1, b = rnd(blocks - n + 1);
			if (rnd(4) == 0) {
				assert_int_equal(tu_unmap(q, b * 8, n * 8).kind, VDISK_OK);
				memset(data + b, 0, n * sizeof *data);
			} else {
				assert_int_equal(tu_write(q, b * 8, buf, n * 4096, 0).kind,
				                 VDISK_OK);
				for (uint64_t k = b; k < b + n; k++)
					data[k] = true;
			}
		}
		check_range(q, data, 0, count, 256);
		check_range(q, data, 0, count, 1);
		for (int i = 0; i < 60; i++) {
			uint64_t s = rnd(count), n = rnd(count - s) + 1;
			static const unsigned maxes[] = {1, 2, 3, 5, 8, 64, 1024};
			check_range(q, data, s, n, maxes[rnd(7)]);
		}
	}
	free(buf);
	free(data);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_model_2x4k(void **state)
{
	(void)state;
	model_run(2, "4k", 11);
}
static void test_model_3x8k(void **state)
{
	(void)state;
	model_run(3, "8k", 12);
}
static void test_model_5x16k(void **state)
{
	(void)state;
	model_run(5, "16k", 13);
}
static void test_model_1x4k(void **state)
{
	(void)state;
	model_run(1, "4k", 14);
}

/* Sparse files: holes where nothing was written, data where it was. */
static void test_file_members(void **state)
{
	(void)state;
	struct vdisk *d = tu_open_stripe(3, "64k",
	                                 "{\"type\":\"file\",\"path\":\"@TMP@/x%d.img\","
	                                 "\"create\":\"1M\"}");
	uint64_t count = vdisk_sector_count(d);
	assert_int_equal(count, 3 * 2048);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	bool *data = calloc(count / 8, sizeof *data);
	check_range(q, data, 0, count, 16);
	unsigned char *buf = tu_alloc(65536);
	memset(buf, 1, 65536);
	/* 4 KiB blocks: the first, the last of chunk 1 and the first of chunk 2
	 * (two members), the whole of chunk 5, the disk's last */
	const uint64_t at[][2] = {{0, 1}, {31, 2}, {80, 16}, {count / 8 - 1, 1}};
	for (int i = 0; i < 4; i++) {
		uint64_t b = at[i][0], nb = at[i][1];
		assert_int_equal(tu_write(q, b * 8, buf, nb * 4096, 0).kind, VDISK_OK);
		for (uint64_t k = b; k < b + nb; k++)
			data[k] = true;
	}
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	for (unsigned max = 1; max <= 8; max++)
		check_range(q, data, 0, count, max);
	/* the whole disk in one answer: data, hole, data, hole, data, hole, data */
	struct vdisk_extent e[16];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, count, e, 16, &n).kind, VDISK_OK);
	assert_int_equal(n, 7);
	assert_int_equal(check_answer(data, 0, count, e, n, 16), count);
	assert_int_equal(e[2].sector, 31 * 8);
	assert_int_equal(e[2].count, 16);
	free(buf);
	free(data);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* Ranges that start and end inside chunks, and answers that merge across
 * members. */
static void test_chunk_boundaries(void **state)
{
	(void)state;
	/* 4 members, 8 KiB chunks (16 sectors) */
	struct vdisk *d = tu_open_stripe(4, "8k", "\"ram:size=64k\"");
	uint64_t count = vdisk_sector_count(d);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct vdisk_extent e[8];
	unsigned n = 0;
	/* all holes: one extent for the whole disk, and for any range */
	assert_int_equal(tu_extents(q, 0, count, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].count, count);
	assert_int_equal(e[0].flags, HOLE);
	assert_int_equal(tu_extents(q, 13, 40, e, 1, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].sector, 13);
	assert_int_equal(e[0].count, 40);
	/* chunks 1 and 2 (members 1 and 2) full of data: one extent across the
	 * two members */
	unsigned char *buf = tu_alloc(16384);
	assert_int_equal(tu_write(q, 16, buf, 16384, 0).kind, VDISK_OK);
	assert_int_equal(tu_extents(q, 0, count, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].count, 16);
	assert_int_equal(e[1].sector, 16);
	assert_int_equal(e[1].count, 32);
	assert_int_equal(e[1].flags, 0);
	assert_int_equal(e[2].count, count - 48);
	/* inside one chunk; starting inside the data; ending inside it */
	assert_int_equal(tu_extents(q, 20, 4, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].sector, 20);
	assert_int_equal(e[0].count, 4);
	assert_int_equal(e[0].flags, 0);
	assert_int_equal(tu_extents(q, 40, 30, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].count, 8);
	assert_int_equal(e[1].sector, 48);
	assert_int_equal(e[1].count, 22);
	assert_int_equal(tu_extents(q, 3, 20, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].count, 13);
	assert_int_equal(e[0].flags, HOLE);
	assert_int_equal(e[1].count, 7);
	/* max 1 stops at the first change */
	assert_int_equal(tu_extents(q, 3, 60, e, 1, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].count, 13);
	/* the last sector; and nothing */
	assert_int_equal(tu_extents(q, count - 1, 1, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].sector, count - 1);
	assert_int_equal(tu_extents(q, 5, 0, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 0);
	assert_int_equal(tu_extents(q, 0, count + 1, e, 8, &n).kind, VDISK_ERR_ILLEGAL_BLOCK);
	free(buf);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* A test member over an inner disk: "fail" makes its extents fail with a
 * medium error, "short" makes them answer at most one extent of at most 3
 * sectors (a prefix, as the contract allows). */
struct tm {
	struct vdisk *inner;
	bool fail;
};

static int tm_open(struct vdisk *d, json_t *cfg)
{
	struct tm *t = calloc(1, sizeof *t);
	t->fail = json_is_true(json_object_get(cfg, "fail"));
	t->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!t->inner) {
		free(t);
		return -1;
	}
	vdisk_set_priv(d, t);
	vdisk_meta_inherit(d, t->inner);
	return 0;
}
static void tm_close(struct vdisk *d)
{
	free(vdisk_priv(d));
}
static int tm_fwd(struct vdisk_req *r)
{
	return vdisk_req_forward(r, ((struct tm *)vdisk_priv(r->disk))->inner);
}
static int tm_extents(struct vdisk_req *r)
{
	struct tm *t = vdisk_priv(r->disk);
	if (t->fail) {
		vdisk_req_complete(r, vdisk_status_medium(VDISK_MEDIUM_UNRECOVERED_READ, EIO));
		return 0;
	}
	r->ext[0] = (struct vdisk_extent){r->sector, r->count < 3 ? r->count : 3, HOLE, 0};
	*r->ext_n = 1;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}
static const struct vdisk_driver tm_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "stripetestmember",
    .open = tm_open,
    .close = tm_close,
    .read = tm_fwd,
    .write = tm_fwd,
    .flush = tm_fwd,
    .extents = tm_extents,
};

/* the same without extents: the core answers "all data" for it */
static const struct vdisk_driver plain_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "stripetestplain",
    .open = tm_open,
    .close = tm_close,
    .read = tm_fwd,
    .write = tm_fwd,
    .flush = tm_fwd,
};

/* A member without native extents is data between the holes of the others. */
static void test_member_without_extents(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&plain_driver), 0);
	struct vdisk *d =
	    tu_open("{\"type\":\"striped\",\"chunk-size\":\"4k\",\"disks\":[\"ram:size=64k\","
	            "{\"type\":\"stripetestplain\",\"inner\":\"ram:size=64k\"}]}",
	            0);
	assert_true(vdisk_caps(d) & VDISK_CAP_EXTENTS);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct vdisk_extent e[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 4, 64, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 8);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(e[i].flags, i % 2 ? 0 : HOLE);
		assert_int_equal(e[i].count, i ? 8 : 4);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_member_errors_and_prefixes(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&tm_driver), 0);
	struct vdisk *d =
	    tu_open("{\"type\":\"striped\",\"chunk-size\":\"4k\",\"disks\":[\"ram:size=64k\","
	            "{\"type\":\"stripetestmember\",\"fail\":true,\"inner\":\"ram:size=64k\"}]}",
	            0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct vdisk_extent e[8];
	unsigned n = 7;
	/* only member 0 (chunk 0): fine; member 1 in the range: its error */
	assert_int_equal(tu_extents(q, 0, 8, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	vdisk_status st = tu_extents(q, 0, 9, e, 8, &n);
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	assert_int_equal(st.medium, VDISK_MEDIUM_UNRECOVERED_READ);
	assert_int_equal(n, 0);
	st = tu_extents(q, 8, 1, e, 1, &n);
	assert_int_equal(st.kind, VDISK_ERR_MEDIUM);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* a member that answers for 3 sectors at a time: the answer stops there
	 * and the caller asks again */
	d = tu_open("{\"type\":\"striped\",\"chunk-size\":\"4k\",\"disks\":[\"ram:size=64k\","
	            "{\"type\":\"stripetestmember\",\"inner\":\"ram:size=64k\"}]}",
	            0);
	q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_extents(q, 0, 128, e, 8, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].count, 11); /* chunk 0 of member 0, 3 of member 1 */
	bool *none = calloc(16, sizeof *none);
	check_range(q, none, 0, 128, 8);
	check_range(q, none, 5, 100, 1);
	free(none);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* `vdisk map --json` shows the holes of a stripe set. */
static void test_map_json(void **state)
{
	(void)state;
	const char *tool = getenv("VDISK");
	if (!tool)
		skip();
	char *spec = tu_stripe_spec(2, "8k",
	                            "{\"type\":\"file\",\"path\":\"@TMP@/map%d.img\","
	                            "\"create\":\"64k\"}",
	                            NULL);
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(4096);
	memset(buf, 7, 4096);
	/* logical bytes 28672..32767: member 1, its second chunk, second half */
	assert_int_equal(tu_write(q, 56, buf, 4096, 0).kind, VDISK_OK);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	char *full = tu_spec(spec), cmd[4096], out[4096];
	snprintf(cmd, sizeof cmd, "'%s' map --json '%s'", tool, full);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t len = fread(out, 1, sizeof out - 1, p);
	out[len] = '\0';
	assert_int_equal(pclose(p), 0);
	const char *want = "[\n"
	                   "{\"offset\":0,\"length\":28672,\"zero\":true,\"hole\":true},\n"
	                   "{\"offset\":28672,\"length\":4096,\"zero\":false,\"hole\":false},\n"
	                   "{\"offset\":32768,\"length\":98304,\"zero\":true,\"hole\":true}\n"
	                   "]\n";
	if (strcmp(out, want) != 0)
		fail_msg("vdisk map --json printed\n%s\nexpected\n%s", out, want);
	free(buf);
	free(full);
	free(spec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model_2x4k),
	    cmocka_unit_test(test_model_3x8k),
	    cmocka_unit_test(test_model_5x16k),
	    cmocka_unit_test(test_model_1x4k),
	    cmocka_unit_test(test_file_members),
	    cmocka_unit_test(test_chunk_boundaries),
	    cmocka_unit_test(test_member_without_extents),
	    cmocka_unit_test(test_member_errors_and_prefixes),
	    cmocka_unit_test(test_map_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
