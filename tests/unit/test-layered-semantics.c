/* The layered disk's semantics, case by case: RAM diffs (fall-through,
 * zero_after after resize and unmap), read caches (the reference's own test,
 * and the stale-data case the reference gets wrong), write-through, visible
 * sizes, extents of both layers, clone-and-reset, and the merged metadata. */
#include <fcntl.h>
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

#define SS 512

/* A file of `sectors` patterned sectors (seed), at @TMP@/name. */
static void make_file(const char *name, uint64_t sectors, uint32_t ss, uint64_t seed)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
	size_t len = (size_t)(sectors * ss);
	unsigned char *b = tu_alloc(len);
	tu_pattern(b, len, 0, ss, seed);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, len, 0), (ssize_t)len);
	close(fd);
	free(b);
}

static void read_file(const char *name, void *buf, size_t len, uint64_t off)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* stack[index].key of the layered disk's inspect output */
static json_int_t stack_int(struct vdisk *d, unsigned index, const char *key)
{
	char *s = vdisk_inspect(d, 0);
	json_t *o = json_loads(s, 0, NULL);
	json_t *top = json_array_get(json_object_get(o, "layers"), 0);
	json_t *l = json_array_get(json_object_get(top, "stack"), index);
	json_int_t v = json_integer_value(json_object_get(l, key));
	json_decref(o);
	free(s);
	return v;
}

static void expect_pattern(const unsigned char *buf, uint64_t first, uint64_t n, uint64_t seed)
{
	unsigned char *want = tu_alloc((size_t)n * SS);
	tu_pattern(want, (size_t)n * SS, first, SS, seed);
	assert_memory_equal(buf, want, (size_t)n * SS);
	free(want);
}

static void expect_zero(const unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i]) {
			fprintf(stderr, "byte %zu is %02x, not zero\n", i, buf[i]);
			fail();
		}
}

static void test_ram_diff(void **state)
{
	(void)state;
	make_file("diff.img", 64, SS, 1);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/diff.img\"}]}",
	                          0);
	assert_int_equal(vdisk_sector_count(d), 64);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(64 * SS), *w = tu_alloc(8 * SS);
	/* reads fall through to the lower layer */
	assert_int_equal(tu_read(q, 0, buf, 64 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 64, 1);
	/* overlapping writes land in the upper layer */
	tu_pattern(w, 8 * SS, 10, SS, 2);
	assert_int_equal(tu_write(q, 10, w, 8 * SS, 0).kind, VDISK_OK);
	tu_pattern(w, 4 * SS, 14, SS, 3);
	assert_int_equal(tu_write(q, 14, w, 4 * SS, 0).kind, VDISK_OK);
	/* a mixed read: lower, upper (two writes), lower */
	memset(buf, 0xee, 64 * SS);
	assert_int_equal(tu_read(q, 5, buf, 20 * SS).kind, VDISK_OK);
	expect_pattern(buf, 5, 5, 1);
	expect_pattern(buf + 5 * SS, 10, 4, 2);
	expect_pattern(buf + 9 * SS, 14, 4, 3);
	expect_pattern(buf + 13 * SS, 18, 7, 1);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 8);
	/* the lower file never changed */
	read_file("diff.img", buf, 64 * SS, 0);
	expect_pattern(buf, 0, 64, 1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(w);
}

/* The reference's test_resize: shrink to half, grow back: the upper half
 * reads zeros although the lower layer has data there. */
static void test_ram_shrink_grow(void **state)
{
	(void)state;
	make_file("rs.img", 32, SS, 4);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/rs.img\"}]}",
	                          0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(32 * SS);
	assert_int_equal(vdisk_resize(d, 16), 0);
	assert_int_equal(vdisk_sector_count(d), 16);
	assert_int_equal(tu_read(q, 16, buf, SS).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(vdisk_resize(d, 32), 0);
	assert_int_equal(tu_read(q, 0, buf, 32 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 16, 4);
	expect_zero(buf + 16 * SS, 16 * SS);
	/* growing past the layer below also reads zeros */
	assert_int_equal(vdisk_resize(d, 48), 0);
	assert_int_equal(tu_read(q, 30, buf, 18 * SS).kind, VDISK_OK);
	expect_zero(buf, 18 * SS);
	assert_int_equal(vdisk_resize(d, 0), -1);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void resize_done(void *o, vdisk_status st)
{
	*(int *)o = vdisk_ok(st) ? 1 : -1;
}

static void test_wait_resize(void **state)
{
	(void)state;
	/* ram layer on top: the layered disk reports its resizes */
	struct vdisk *d =
	    tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"64k\"}]}", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	uint64_t got = 0;
	int done = 0;
	assert_int_equal(vdisk_wait_resize(q, 128, &got, resize_done, &done), 0);
	vdisk_queue_poll(q);
	assert_int_equal(done, 0);
	assert_int_equal(vdisk_resize(d, 200), 0);
	while (!done)
		vdisk_queue_wait(q, -1);
	assert_int_equal(got, 200);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* a disk on top: its own resize reaches the layered disk's waiters */
	d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"disk\",\"disk\":"
	            "{\"type\":\"ram\",\"size\":\"64k\",\"id\":\"inner\"}},{\"type\":\"ram\","
	            "\"size\":\"64k\"}]}",
	            0);
	q = vdisk_queue_create(d, NULL);
	done = 0;
	assert_int_equal(vdisk_wait_resize(q, 128, &got, resize_done, &done), 0);
	struct vdisk *inner = vdisk_find(d, "inner");
	assert_non_null(inner);
	assert_int_equal(vdisk_resize(inner, 96), 0);
	vdisk_unref(inner);
	while (!done)
		vdisk_queue_wait(q, -1);
	assert_int_equal(got, 96);
	assert_int_equal(vdisk_sector_count(d), 96);
	/* and resizing the layered disk resizes the disk on top */
	assert_int_equal(vdisk_resize(d, 100), 0);
	assert_int_equal(vdisk_sector_count(d), 100);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* a file on top cannot be resized, and says so */
	make_file("fixed.img", 8, SS, 3);
	d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"disk\",\"disk\":"
	            "\"file:path=@TMP@/fixed.img\"}]}",
	            0);
	assert_false(vdisk_caps(d) & VDISK_CAP_RESIZE);
	assert_int_equal(vdisk_resize(d, 256), -1);
	assert_non_null(strstr(vdisk_errmsg(), "cannot be resized"));
	assert_int_equal(vdisk_sector_count(d), 8);
	vdisk_unref(d);
}

/* The reference's test_unmap: an unmap that would leave a hole showing the
 * lower layer is ignored; one that reaches the end zeroes. */
static void test_ram_unmap(void **state)
{
	(void)state;
	make_file("um.img", 32, SS, 5);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/um.img\"}]}",
	                          0);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_UNSPECIFIED);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(32 * SS);
	assert_int_equal(tu_unmap(q, 0, 31).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, buf, 32 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 32, 5);
	assert_int_equal(tu_unmap(q, 16, 16).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, buf, 32 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 16, 5);
	expect_zero(buf + 16 * SS, 16 * SS);
	/* a zero-count unmap is fine anywhere up to the end */
	assert_int_equal(tu_unmap(q, 0, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 32, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 33, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* A RAM layer keeps its sectors in 1 GiB chunks: requests across a chunk
 * boundary (writes, reads, unmaps, extents, cache fills), the memory an unmap
 * gives back, and far sectors of a layer grown to 2^50 sectors. */
static void test_ram_chunks(void **state)
{
	(void)state;
	const uint64_t b = (1ull << 30) / SS; /* first sector of the second chunk */
	char path[512];
	snprintf(path, sizeof path, "%s/chunks.img", tu_tmpdir());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0666);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 3ll << 30), 0);
	unsigned char *buf = tu_alloc(256 * SS), *w = tu_alloc(64 * SS);
	tu_pattern(buf, 256 * SS, b - 128, SS, 40);
	assert_int_equal(pwrite(fd, buf, 256 * SS, (off_t)((b - 128) * SS)), 256 * SS);
	close(fd);
	struct vdisk *d = tu_open(
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"ram\",\"read-cache\":"
	    "true},{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/chunks.img\"}]}",
	    0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* a write across the boundary: 4 pages on each side */
	tu_pattern(w, 64 * SS, b - 32, SS, 41);
	assert_int_equal(tu_write(q, b - 32, w, 64 * SS, 0).kind, VDISK_OK);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 64);
	assert_int_equal(stack_int(d, 0, "allocated_bytes"), 8 * 4096);
	/* 1 MiB more in the 2 MiB region before the boundary: the region becomes
	 * a huge page where the system has them; its sectors not written stay
	 * absent all the same */
	unsigned char *mib = tu_alloc(2048 * SS);
	tu_pattern(mib, 2048 * SS, b - 4096, SS, 42);
	assert_int_equal(tu_write(q, b - 4096, mib, 2048 * SS, 0).kind, VDISK_OK);
	json_int_t alloc = stack_int(d, 0, "allocated_bytes");
	if (alloc != (2 << 20) + 4 * 4096)
		assert_int_equal(alloc, (1 << 20) + 8 * 4096);
	assert_int_equal(tu_read(q, b - 4096, mib, 2048 * SS).kind, VDISK_OK);
	expect_pattern(mib, b - 4096, 2048, 42);
	free(mib);
	/* a read across it: the file, the write, the file; the cache takes the
	 * file's part, also across the boundary */
	memset(buf, 0xee, 256 * SS);
	assert_int_equal(tu_read(q, b - 128, buf, 256 * SS).kind, VDISK_OK);
	expect_pattern(buf, b - 128, 96, 40);
	expect_pattern(buf + 96 * SS, b - 32, 64, 41);
	expect_pattern(buf + 160 * SS, b + 32, 96, 40);
	assert_int_equal(stack_int(d, 1, "present_sectors"), 192);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 64 + 2048);
	/* extents across it */
	struct vdisk_extent e[4];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, b - 40, 80, e, 4, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].count, 80);
	assert_int_equal(e[0].flags, 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* one layer: an unmap across the boundary makes zeros, and the two
	 * pages it empties go back */
	d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"3G\"}]}", 0);
	q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_write(q, b - 32, w, 64 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, b - 8, 16).kind, VDISK_OK);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 48);
	assert_int_equal(stack_int(d, 0, "allocated_bytes"), 6 * 4096);
	memset(buf, 0xee, 64 * SS);
	assert_int_equal(tu_read(q, b - 32, buf, 64 * SS).kind, VDISK_OK);
	expect_pattern(buf, b - 32, 24, 41);
	expect_zero(buf + 24 * SS, 16 * SS);
	expect_pattern(buf + 40 * SS, b + 8, 24, 41);
	tu_pattern(w, 64 * SS, b - 32, SS, 41);
	assert_int_equal(tu_write(q, b - 32, w, 64 * SS, 0).kind, VDISK_OK);

	/* grown far: its directory of chunks grows a level */
	const uint64_t far = 1ull << 50;
	assert_int_equal(vdisk_resize(d, far), 0);
	assert_int_equal(tu_write(q, far - 64, w, 64 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, far - 64, buf, 64 * SS).kind, VDISK_OK);
	expect_pattern(buf, b - 32, 64, 41);
	assert_int_equal(tu_read(q, b - 32, buf, 64 * SS).kind, VDISK_OK);
	expect_pattern(buf, b - 32, 64, 41);
	assert_int_equal(tu_extents(q, b, far - b, e, 4, &n).kind, VDISK_OK);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].count, 32);
	assert_int_equal(e[1].count, far - 64 - b - 32);
	assert_int_equal(e[1].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	assert_int_equal(e[2].sector, far - 64);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 128);
	/* shrinking drops the far sectors and their memory */
	assert_int_equal(vdisk_resize(d, b + 16), 0);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 48);
	assert_int_equal(stack_int(d, 0, "allocated_bytes"), 6 * 4096);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(w);
}

static void test_ram_sector_sizes(void **state)
{
	(void)state;
	/* lazy: a ram layer over a 4 KiB-sector layer takes its geometry */
	make_file("4k.img", 16, 4096, 6);
	struct vdisk *d = tu_open(
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\",\"disk\":"
	    "\"file:path=@TMP@/4k.img,sector-size=4096\"}]}",
	    0);
	assert_int_equal(vdisk_sector_size(d), 4096);
	assert_int_equal(vdisk_sector_count(d), 16);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(2 * 4096), *w = tu_alloc(4096);
	tu_pattern(w, 4096, 3, 4096, 9);
	assert_int_equal(tu_write(q, 3, w, 4096, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 3, buf, 2 * 4096).kind, VDISK_OK);
	assert_memory_equal(buf, w, 4096);
	unsigned char *want = tu_alloc(4096);
	tu_pattern(want, 4096, 4, 4096, 6);
	assert_memory_equal(buf + 4096, want, 4096);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(w);
	free(want);

	static const char *const bad[] = {
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":4096,\"sector-size\":"
	    "1000}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":4096,\"sector-size\":256}"
	    "]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":5000,\"sector-size\":"
	    "4096}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":0}]}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_null(vdisk_open(bad[i], 0));
		assert_non_null(strstr(vdisk_errmsg(), "layers[0] (ram)"));
	}
	/* mismatched sector sizes, both orders */
	assert_null(
	    vdisk_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"sector-size\":512},"
	               "{\"type\":\"ram\",\"size\":65536,\"sector-size\":4096}]}",
	               0));
	assert_non_null(strstr(vdisk_errmsg(), "layers[0] (ram): sector size 512 differs"));
	assert_null(
	    vdisk_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"sector-size\":4096},"
	               "{\"type\":\"ram\",\"size\":65536,\"sector-size\":512}]}",
	               0));
	assert_non_null(strstr(vdisk_errmsg(), "layers[0] (ram): sector size 4096 differs"));
}

/* The reference's test_read_cache: a cache over 2048 patterned sectors. */
static void test_read_cache(void **state)
{
	(void)state;
	make_file("rc.img", 2048, SS, 7);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"read-only\":true,\"layers\":["
	                          "{\"type\":\"ram\",\"read-cache\":true},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/rc.img\"}]}",
	                          0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(16 * SS);
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t s = 0; s <= 8; s += 2) {
			assert_int_equal(tu_read(q, s, buf, SS).kind, VDISK_OK);
			expect_pattern(buf, s, 1, 7);
		}
	assert_int_equal(stack_int(d, 0, "present_sectors"), 5);
	assert_int_equal(stack_int(d, 0, "populated_sectors"), 5);
	assert_int_equal(tu_read(q, 1, buf, 15 * SS).kind, VDISK_OK);
	expect_pattern(buf, 1, 15, 7);
	assert_int_equal(stack_int(d, 0, "present_sectors"), 16);
	/* a second read is all hits: nothing more to fill */
	assert_int_equal(tu_read(q, 0, buf, 16 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 16, 7);
	assert_int_equal(stack_int(d, 0, "populated_sectors"), 16);
	assert_int_equal(stack_int(d, 0, "populate_errors"), 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* The reference's [defect?] in 5.9.4: a RAM diff holds sector 1, the cache
 * below holds sector 2, a 3-sector read at 0: the cache's run [0,1) misses, its
 * run [2,3) hits.  The reference reads the hit into its private buffer and never
 * copies it to the guest; here every sector must be right, and no byte of the
 * guest's buffer may survive. */
static void test_read_cache_never_stale(void **state)
{
	(void)state;
	for (int kind = 0; kind < 2; kind++) {
		make_file("stale.img", 64, SS, 8);
		char spec[1024];
		snprintf(spec, sizeof spec,
		         "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},%s,"
		         "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/stale.img\"}]}",
		         kind == 0 ? "{\"type\":\"ram\",\"read-cache\":true}"
		                   : "{\"type\":\"sqlite\",\"read-cache\":true,\"create\":true,"
		                     "\"path\":\"@TMP@/stale.dbhd\"}");
		struct vdisk *d = tu_open(spec, 0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *buf = tu_alloc(3 * SS), *w = tu_alloc(SS);
		/* the cache gets sector 2 */
		assert_int_equal(tu_read(q, 2, buf, SS).kind, VDISK_OK);
		expect_pattern(buf, 2, 1, 8);
		assert_int_equal(stack_int(d, 1, "populated_sectors"), 1);
		/* the RAM diff gets sector 1 */
		tu_pattern(w, SS, 1, SS, 99);
		assert_int_equal(tu_write(q, 1, w, SS, 0).kind, VDISK_OK);
		memset(buf, 0xaa, 3 * SS);
		assert_int_equal(tu_read(q, 0, buf, 3 * SS).kind, VDISK_OK);
		expect_pattern(buf, 0, 1, 8);
		assert_memory_equal(buf + SS, w, SS);
		expect_pattern(buf + 2 * SS, 2, 1, 8);
		/* the miss was filled; the sector from above was not */
		assert_int_equal(stack_int(d, 1, "populated_sectors"), 2);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(buf);
		free(w);
		char *db = tu_spec("@TMP@/stale.dbhd");
		unlink(db);
		free(db);
	}
}

/* A cache fill never replaces what a write put in the cache meanwhile. */
static void test_read_cache_keeps_newer(void **state)
{
	(void)state;
	make_file("newer.img", 32, SS, 10);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":["
	                          "{\"type\":\"ram\",\"read-cache\":true},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/newer.img\"}]}",
	                          0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(8 * SS), *w = tu_alloc(2 * SS);
	tu_pattern(w, 2 * SS, 3, SS, 11);
	assert_int_equal(tu_write(q, 3, w, 2 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, buf, 8 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 3, 10);
	assert_memory_equal(buf + 3 * SS, w, 2 * SS);
	expect_pattern(buf + 5 * SS, 5, 3, 10);
	assert_int_equal(stack_int(d, 0, "populated_sectors"), 6);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(w);
}

static void test_write_through(void **state)
{
	(void)state;
	make_file("wt.img", 32, SS, 12);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":["
	                          "{\"type\":\"ram\",\"write-through\":true,\"read-cache\":true},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/wt.img\"}]}",
	                          0);
	/* write-through: unmap must act alike everywhere, so it is off */
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_IGNORED);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(4 * SS), *w = tu_alloc(4 * SS);
	tu_pattern(w, 4 * SS, 8, SS, 13);
	assert_int_equal(tu_write(q, 8, w, 4 * SS, VDISK_IO_FUA).kind, VDISK_OK);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	read_file("wt.img", buf, 4 * SS, 8 * SS);
	assert_memory_equal(buf, w, 4 * SS);
	assert_int_equal(tu_read(q, 8, buf, 4 * SS).kind, VDISK_OK);
	assert_memory_equal(buf, w, 4 * SS);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* a write-through layer smaller than the disk keeps what fits */
	make_file("small.img", 8, SS, 14);
	d = tu_open("{\"type\":\"layered\",\"layers\":["
	            "{\"type\":\"ram\",\"size\":8192,\"write-through\":true},"
	            "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/small.img\"}]}",
	            0);
	assert_int_equal(vdisk_sector_count(d), 16);
	q = vdisk_queue_create(d, NULL);
	tu_pattern(w, 4 * SS, 6, SS, 15);
	assert_int_equal(tu_write(q, 6, w, 4 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 6, buf, 4 * SS).kind, VDISK_OK);
	assert_memory_equal(buf, w, 4 * SS);
	read_file("small.img", buf, 2 * SS, 6 * SS);
	assert_memory_equal(buf, w, 2 * SS);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
	free(w);
}

/* Visible sizes are fixed when the disk opens: a top layer that grows does not
 * reveal what a lower layer holds beyond the old size. */
static void test_visible_after_growth(void **state)
{
	(void)state;
	make_file("vis.img", 32, SS, 16);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":["
	                          "{\"type\":\"ram\",\"size\":8192},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/vis.img\"}]}",
	                          0);
	assert_int_equal(vdisk_sector_count(d), 16);
	assert_int_equal(stack_int(d, 1, "visible_sectors"), 16);
	assert_int_equal(vdisk_resize(d, 32), 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(32 * SS);
	memset(buf, 0x55, 32 * SS);
	assert_int_equal(tu_read(q, 0, buf, 32 * SS).kind, VDISK_OK);
	expect_pattern(buf, 0, 16, 16);
	expect_zero(buf + 16 * SS, 16 * SS);
	struct vdisk_extent e[4];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 32, e, 4, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].count, 16);
	assert_int_equal(e[0].flags, 0);
	assert_int_equal(e[1].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

/* A RAM layer over a sparse file reports the holes of both. */
static void test_extents_both_layers(void **state)
{
	(void)state;
	char path[512];
	snprintf(path, sizeof path, "%s/sparse.img", tu_tmpdir());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0666);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	unsigned char *b = tu_alloc(8192);
	memset(b, 1, 8192);
	assert_int_equal(pwrite(fd, b, 8192, 65536), 8192); /* sectors 128..143 */
	close(fd);
	struct vdisk *d = tu_open("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},"
	                          "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/sparse.img\"}]}",
	                          0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_write(q, 512, b, 4096, 0).kind, VDISK_OK); /* 512..519, in the hole */
	struct vdisk_extent e[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 2048, e, 8, &n).kind, VDISK_OK);
	static const struct {
		uint64_t s, c;
		uint32_t f;
	} want[] = {{0, 128, 3}, {128, 16, 0}, {144, 368, 3}, {512, 8, 0}, {520, 1528, 3}};
	assert_int_equal(n, 5);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(e[i].sector, want[i].s);
		assert_int_equal(e[i].count, want[i].c);
		assert_int_equal(e[i].flags, want[i].f);
	}
	/* a short array: a prefix */
	assert_int_equal(tu_extents(q, 100, 500, e, 2, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].sector, 100);
	assert_int_equal(e[1].sector, 128);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(b);
}

/* Clone and reset: writes land in RAM, the base image is never modified, and
 * a fresh open starts from the base again. */
static void test_clone_and_reset(void **state)
{
	(void)state;
	make_file("base.img", 128, SS, 17);
	const char *spec =
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\","
	    "\"disk\":\"file:path=@TMP@/base.img\"}]}";
	for (int round = 0; round < 2; round++) {
		struct vdisk *d = tu_open(spec, 0);
		assert_false(vdisk_read_only(d));
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *buf = tu_alloc(128 * SS);
		assert_int_equal(tu_read(q, 0, buf, 128 * SS).kind, VDISK_OK);
		expect_pattern(buf, 0, 128, 17);
		memset(buf, 0x3c, 64 * SS);
		assert_int_equal(tu_write(q, 32, buf, 64 * SS, VDISK_IO_FUA).kind, VDISK_OK);
		assert_int_equal(tu_write_zeroes(q, 0, 8, VDISK_ZERO_MAY_UNMAP).kind, VDISK_OK);
		assert_int_equal(tu_unmap(q, 100, 28).kind, VDISK_OK);
		assert_int_equal(tu_flush(q).kind, VDISK_OK);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		read_file("base.img", buf, 128 * SS, 0);
		expect_pattern(buf, 0, 128, 17);
		free(buf);
	}
}

/* Requests beyond the inline bitmap (2048 sectors): pooled bitmaps, and with
 * a cache a private buffer as large as the request (beyond the queue's bounce
 * budget too). */
static void test_large_requests(void **state)
{
	(void)state;
	const uint64_t n = 72 * 1024; /* 36 MiB of 512-byte sectors */
	make_file("big.img", n, SS, 30);
	unsigned char *buf = tu_alloc(n * SS), *w = tu_alloc(64 * SS);
	for (int cache = 0; cache < 2; cache++) {
		char spec[512];
		snprintf(
		    spec, sizeof spec,
		    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"ram\","
		    "\"read-cache\":%s},{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/big.img\"}]}",
		    cache ? "true" : "false");
		struct vdisk *d = tu_open(spec, 0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		/* data in the top layer here and there */
		for (uint64_t s = 1000; s < n; s += 9000) {
			tu_pattern(w, 64 * SS, s, SS, 31);
			assert_int_equal(tu_write(q, s, w, 64 * SS, 0).kind, VDISK_OK);
		}
		for (int pass = 0; pass < 2; pass++) {
			memset(buf, 0x5a, n * SS);
			assert_int_equal(tu_read(q, 0, buf, n * SS).kind, VDISK_OK);
			for (uint64_t s = 0; s < n; s += 1000) {
				bool top = (s >= 1000 && (s - 1000) % 9000 < 64);
				unsigned char want[SS];
				tu_pattern(want, SS, s, SS, top ? 31 : 30);
				assert_memory_equal(buf + s * SS, want, SS);
			}
		}
		/* the cache holds all but what the top layer supplied: 9 writes of 64 */
		if (cache)
			assert_int_equal(stack_int(d, 1, "present_sectors"),
			                 (json_int_t)(n - 9 * 64));
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	}
	free(buf);
	free(w);
}

static void expect_meta(const char *spec, enum vdisk_unmap_behavior unmap, bool fua,
                        uint32_t optimal)
{
	struct vdisk *d = tu_open(spec, 0);
	if (vdisk_unmap_behavior(d) != unmap || vdisk_fua_respected(d) != fua ||
	    vdisk_optimal_unmap_sectors(d) != optimal) {
		fprintf(stderr, "%s: unmap %s fua %d optimal %u\n", spec,
		        vdisk_unmap_behavior_name(vdisk_unmap_behavior(d)), vdisk_fua_respected(d),
		        vdisk_optimal_unmap_sectors(d));
		fail();
	}
	vdisk_unref(d);
}

/* The merged metadata: unmap behaviour fold, FUA and optimal unmap over the
 * write path only. */
static void test_metadata(void **state)
{
	(void)state;
	make_file("meta.img", 64, SS, 18);
	const char *file = "{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/meta.img\"}";
	char spec[1024];
	struct vdisk *fd = tu_open("file:path=@TMP@/meta.img", 0);
	uint32_t file_opt = vdisk_optimal_unmap_sectors(fd);
	bool punch = vdisk_unmap_behavior(fd) == VDISK_UNMAP_ZEROES;
	vdisk_unref(fd);

	expect_meta("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":4096}]}",
	            VDISK_UNMAP_UNSPECIFIED, true, 1);
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"@TMP@/m1.dbhd\","
	    "\"create\":true},%s]}",
	    file);
	expect_meta(spec, VDISK_UNMAP_ZEROES, false, 1);
	/* both zeroing: still zeroes with write-through */
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"@TMP@/m2.dbhd\","
	    "\"create\":true,\"write-through\":true},%s]}",
	    file);
	expect_meta(spec, punch ? VDISK_UNMAP_ZEROES : VDISK_UNMAP_IGNORED, false,
	            file_opt > 1 ? file_opt : 1);
	/* a RAM diff over the file: only the RAM is in the write path */
	snprintf(spec, sizeof spec, "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},%s]}",
	         file);
	expect_meta(spec, VDISK_UNMAP_UNSPECIFIED, true, 1);
	/* write-through RAM: unmap must zero alike or be off */
	snprintf(spec, sizeof spec,
	         "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"write-through\":true},%s]}",
	         file);
	expect_meta(spec, VDISK_UNMAP_IGNORED, true, file_opt);
	/* the file alone, through a disk layer: its own optimal unmap */
	snprintf(spec, sizeof spec, "{\"type\":\"layered\",\"layers\":[%s]}", file);
	expect_meta(spec, punch ? VDISK_UNMAP_ZEROES : VDISK_UNMAP_IGNORED, true, file_opt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ram_diff),
	    cmocka_unit_test(test_ram_shrink_grow),
	    cmocka_unit_test(test_wait_resize),
	    cmocka_unit_test(test_ram_unmap),
	    cmocka_unit_test(test_ram_chunks),
	    cmocka_unit_test(test_ram_sector_sizes),
	    cmocka_unit_test(test_read_cache),
	    cmocka_unit_test(test_read_cache_never_stale),
	    cmocka_unit_test(test_read_cache_keeps_newer),
	    cmocka_unit_test(test_write_through),
	    cmocka_unit_test(test_visible_after_growth),
	    cmocka_unit_test(test_extents_both_layers),
	    cmocka_unit_test(test_clone_and_reset),
	    cmocka_unit_test(test_large_requests),
	    cmocka_unit_test(test_metadata),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
