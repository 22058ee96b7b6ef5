/* The sqlite and sqlite-cache layers: persistence, the file format (NULL for
 * zero sectors, metadata, version marks), files written by OpenVMM, creation
 * that never overwrites, corrupt files refused with a clear error, the cache's
 * key and its creation raced by several processes. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define SS 512

static char *tmp(const char *name)
{
	char *p = malloc(512);
	snprintf(p, 512, "%s/%s", tu_tmpdir(), name);
	return p;
}

static char *one_layer(const char *path, const char *extra)
{
	char *s = malloc(1024);
	snprintf(s, 1024,
	         "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\"%s}]}",
	         path, extra);
	return s;
}

static sqlite3 *db_open(const char *path)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	return db;
}

static int64_t db_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void db_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "%s: %s\n", sql, err);
		fail();
	}
}

static void expect_integrity(const char *path)
{
	sqlite3 *db = db_open(path);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_persistence_and_format(void **state)
{
	(void)state;
	char *path = tmp("p.dbhd");
	char *spec = one_layer(path, ",\"create\":true,\"size\":\"1M\"");
	struct vdisk *d = tu_open(spec, 0);
	assert_int_equal(vdisk_sector_count(d), 2048);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_ZEROES);
	assert_false(vdisk_fua_respected(d));
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *w = tu_alloc(16 * SS), *r = tu_alloc(16 * SS);
	tu_pattern(w, 16 * SS, 100, SS, 1);
	memset(w + 4 * SS, 0, SS); /* one zero sector in the middle */
	assert_int_equal(tu_write(q, 100, w, 16 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_write(q, 2047, w, SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_write(q, 2047, w, 2 * SS, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
	/* at the bottom, an unmap makes sectors absent */
	assert_int_equal(tu_unmap(q, 110, 2).kind, VDISK_OK);
	/* zero-count unmaps at the edges */
	assert_int_equal(tu_unmap(q, 0, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 2048, 0).kind, VDISK_OK);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* the file, as SQLite sees it */
	sqlite3 *db = db_open(path);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors"), 15);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors WHERE data IS NULL"), 1);
	assert_int_equal(db_int(db, "SELECT sector FROM sectors WHERE data IS NULL"), 104);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors WHERE sector IN (110, 111)"), 0);
	assert_int_equal(db_int(db, "SELECT json_extract(metadata, '$.sector_count') FROM meta"),
	                 2048);
	assert_int_equal(db_int(db, "SELECT json_extract(metadata, '$.sector_size') FROM meta"),
	                 512);
	assert_int_equal(
	    db_int(db, "SELECT json_extract(metadata, '$.logically_read_only') FROM meta"), 0);
	assert_int_equal(db_int(db, "PRAGMA user_version"), 1);
	assert_int_equal(db_int(db, "PRAGMA application_id"), 0x7664736c);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
	expect_integrity(path);

	/* reopened: the same content */
	free(spec);
	spec = one_layer(path, "");
	d = tu_open(spec, 0);
	q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_read(q, 100, r, 16 * SS).kind, VDISK_OK);
	memset(w + 10 * SS, 0, 2 * SS);
	assert_memory_equal(r, w, 16 * SS);
	struct vdisk_extent e[8];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 96, 32, e, 8, &n).kind, VDISK_OK);
	/* absent, data, zero row, data, absent (unmapped), data, absent */
	static const struct {
		uint64_t s, c;
		uint32_t f;
	} want[] = {{96, 4, 3},  {100, 4, 0}, {104, 1, 2}, {105, 5, 0},
	            {110, 2, 3}, {112, 4, 0}, {116, 12, 3}};
	assert_int_equal(n, 7);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(e[i].sector, want[i].s);
		assert_int_equal(e[i].count, want[i].c);
		assert_int_equal(e[i].flags, want[i].f);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(w);
	free(r);
	free(spec);
	free(path);
}

/* create never replaces a file, whatever it holds, and never leaves one behind
 * when it refuses. */
static void test_create_never_overwrites(void **state)
{
	(void)state;
	char *path = tmp("keep.dbhd");
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "precious", 8), 8);
	close(fd);
	char *spec = one_layer(path, ",\"create\":true,\"size\":\"1M\"");
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "exists; create refuses to overwrite it"));
	char buf[16] = {0};
	fd = open(path, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof buf), 8);
	close(fd);
	assert_string_equal(buf, "precious");
	free(spec);

	/* a valid layer is not reformatted either */
	char *p2 = tmp("keep2.dbhd");
	spec = one_layer(p2, ",\"create\":true,\"size\":\"64k\"");
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *w = tu_alloc(SS);
	memset(w, 0x42, SS);
	assert_int_equal(tu_write(q, 5, w, SS, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	assert_null(vdisk_open(spec, 0));
	free(spec);
	spec = one_layer(p2, "");
	d = tu_open(spec, 0);
	q = vdisk_queue_create(d, NULL);
	memset(w, 0, SS);
	assert_int_equal(tu_read(q, 5, w, SS).kind, VDISK_OK);
	assert_int_equal(w[0], 0x42);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	/* no creation leftovers beside the files */
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q vdisk-create", tu_tmpdir());
	assert_int_not_equal(system(cmd), 0);
	free(w);
	free(spec);
	free(p2);
	free(path);
}

static void expect_refused(const char *path, const char *want)
{
	char *spec = one_layer(path, "");
	struct vdisk *d = vdisk_open(spec, 0);
	if (d || !strstr(vdisk_errmsg(), want)) {
		fprintf(stderr, "%s: got '%s', want '%s'\n", path, d ? "(opened)" : vdisk_errmsg(),
		        want);
		fail();
	}
	assert_non_null(strstr(vdisk_errmsg(), "layers[0] (sqlite)"));
	free(spec);
}

/* A database with the reference's tables and the given metadata. */
static void make_db(const char *path, const char *meta, const char *extra_sql)
{
	unlink(path);
	sqlite3 *db = NULL;
	assert_int_equal(
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	    SQLITE_OK);
	db_exec(db,
	        "PRAGMA journal_mode=WAL;"
	        "CREATE TABLE sectors (sector INTEGER NOT NULL, data BLOB, PRIMARY KEY (sector));"
	        "CREATE TABLE meta (metadata TEXT NOT NULL)");
	if (meta) {
		char sql[512];
		snprintf(sql, sizeof sql, "INSERT INTO meta VALUES ('%s')", meta);
		db_exec(db, sql);
	}
	if (extra_sql)
		db_exec(db, extra_sql);
	sqlite3_close(db);
}

static void test_corrupt_files(void **state)
{
	(void)state;
	char *path = tmp("bad.dbhd");
	/* not a database at all */
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	unsigned char junk[8192];
	tu_pattern(junk, sizeof junk, 0, 512, 3);
	assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
	close(fd);
	expect_refused(path, "file is not a database");
	/* metadata missing, malformed or out of bounds */
	make_db(path, NULL, NULL);
	expect_refused(path, "no metadata row");
	make_db(path, "not json", NULL);
	expect_refused(path, "metadata is not JSON");
	make_db(path, "{\"sector_count\":8}", NULL);
	expect_refused(path, "metadata lacks");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":1000}",
	        NULL);
	expect_refused(path, "sector size 1000");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":0,\"sector_size\":512}",
	        NULL);
	expect_refused(path, "sector count 0");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":-5,\"sector_size\":512}",
	        NULL);
	expect_refused(path, "sector count -5");
	make_db(
	    path,
	    "{\"logically_read_only\":false,\"sector_count\":9223372036854775807,\"sector_size\":"
	    "512}",
	    NULL);
	expect_refused(path, "is not valid");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":512}",
	        "INSERT INTO meta VALUES ('{}')");
	expect_refused(path, "more than one metadata row");
	/* another application's file, and a newer format */
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":512}",
	        "PRAGMA application_id = 1234");
	expect_refused(path, "another application");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":512}",
	        "PRAGMA user_version = 2");
	expect_refused(path, "format version 2 is newer");
	/* no sectors table */
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":512}",
	        "DROP TABLE sectors");
	expect_refused(path, "not a sqlite layer");

	/* a damaged row fails the read, never returns short data */
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":8,\"sector_size\":512}",
	        "INSERT INTO sectors VALUES (3, x'0102')");
	char *spec = one_layer(path, "");
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *b = tu_alloc(8 * SS);
	assert_int_equal(tu_read(q, 0, b, 3 * SS).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, b, 8 * SS).kind, VDISK_ERR_MEDIUM);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(spec);

	/* a truncated database: refused at open, or failing reads; never a crash */
	char *big = tmp("big.dbhd");
	spec = one_layer(big, ",\"create\":true,\"size\":\"4M\"");
	d = tu_open(spec, 0);
	q = vdisk_queue_create(d, NULL);
	for (uint64_t s = 0; s < 8192; s += 8) {
		tu_pattern(b, 8 * SS, s, SS, 4);
		assert_int_equal(tu_write(q, s, b, 8 * SS, 0).kind, VDISK_OK);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	struct stat stb;
	assert_int_equal(stat(big, &stb), 0);
	assert_int_equal(truncate(big, stb.st_size / 2), 0);
	free(spec);
	spec = one_layer(big, "");
	d = vdisk_open(spec, 0);
	if (d) {
		q = vdisk_queue_create(d, NULL);
		vdisk_status st = vdisk_status_ok();
		for (uint64_t s = 0; s < 8192 && vdisk_ok(st); s += 8)
			st = tu_read(q, s, b, 8 * SS);
		assert_true(st.kind == VDISK_ERR_IO || st.kind == VDISK_ERR_MEDIUM);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	} else {
		assert_non_null(strstr(vdisk_errmsg(), "layers[0] (sqlite)"));
	}
	free(spec);
	free(big);
	free(b);
	free(path);
}

/* A file as OpenVMM writes it (no application id, user_version 0) opens, reads
 * NULL rows as zeros and accepts writes. */
static void test_openvmm_file(void **state)
{
	(void)state;
	char *path = tmp("ovmm.dbhd");
	make_db(path, "{\"logically_read_only\":false,\"sector_count\":64,\"sector_size\":512}",
	        "INSERT INTO sectors VALUES (1, NULL);"
	        "INSERT INTO sectors VALUES (2, zeroblob(512));"
	        "INSERT INTO sectors VALUES (3, randomblob(512))");
	char *spec = one_layer(path, "");
	struct vdisk *d = tu_open(spec, 0);
	assert_int_equal(vdisk_sector_count(d), 64);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *b = tu_alloc(4 * SS);
	memset(b, 0x77, 4 * SS);
	assert_int_equal(tu_read(q, 0, b, 4 * SS).kind, VDISK_OK);
	for (int i = 0; i < 3 * SS; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(tu_write(q, 10, b + 3 * SS, SS, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	expect_integrity(path);
	free(b);
	free(spec);
	free(path);
}

/* Resizing a sqlite top and discarding to its end: the watermark makes the
 * regrown or discarded part read zeros (not the layer below) without a row
 * per sector, and it survives a reopen. */
static void test_resize_and_discard(void **state)
{
	(void)state;
	char *base = tmp("rd.img"), *path = tmp("rd.dbhd");
	unsigned char *b = tu_alloc(80 * SS), *pat = tu_alloc(64 * SS);
	tu_pattern(pat, 64 * SS, 0, SS, 21);
	int fd = open(base, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_int_equal(pwrite(fd, pat, 64 * SS, 0), 64 * SS);
	close(fd);
	char spec[1024];
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\",\"create\":"
	    "true},{\"type\":\"disk\",\"disk\":\"file:path=%s\"}]}",
	    path, base);
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	memset(b, 0x61, 4 * SS);
	assert_int_equal(tu_write(q, 40, b, 4 * SS, 0).kind, VDISK_OK);
	assert_int_equal(vdisk_resize(d, 32), 0);
	assert_int_equal(tu_read(q, 32, b, SS).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_int_equal(vdisk_resize(d, 80), 0);
	assert_int_equal(vdisk_sector_count(d), 80);
	assert_int_equal(tu_read(q, 0, b, 64 * SS).kind, VDISK_OK);
	assert_memory_equal(b, pat, 32 * SS);
	for (int i = 32 * SS; i < 64 * SS; i++)
		assert_int_equal(b[i], 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);

	/* after a reopen: the same, from the metadata */
	snprintf(spec, sizeof spec,
	         "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\"},"
	         "{\"type\":\"disk\",\"disk\":\"file:path=%s\"}]}",
	         path, base);
	d = tu_open(spec, 0);
	assert_int_equal(vdisk_sector_count(d), 80);
	q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_read(q, 0, b, 64 * SS).kind, VDISK_OK);
	assert_memory_equal(b, pat, 32 * SS);
	for (int i = 32 * SS; i < 64 * SS; i++)
		assert_int_equal(b[i], 0);
	sqlite3 *db = db_open(path);
	assert_int_equal(db_int(db, "SELECT json_extract(metadata, '$.zero_after') FROM meta"), 32);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors"), 0);
	sqlite3_close(db);

	/* a discard in the middle: rows of zeros, as the reference stores them */
	assert_int_equal(tu_unmap(q, 4, 4).kind, VDISK_OK);
	/* a discard of the whole disk: the watermark, no row per sector */
	memset(b, 0x62, 8 * SS);
	assert_int_equal(tu_write(q, 10, b, 8 * SS, 0).kind, VDISK_OK);
	assert_int_equal(tu_unmap(q, 2, 78).kind, VDISK_OK);
	assert_int_equal(tu_read(q, 0, b, 80 * SS).kind, VDISK_OK);
	assert_memory_equal(b, pat, 2 * SS);
	for (int i = 2 * SS; i < 80 * SS; i++)
		assert_int_equal(b[i], 0);
	struct vdisk_extent e[4];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 0, 80, e, 4, &n).kind, VDISK_OK);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].count, 2);
	assert_int_equal(e[0].flags, 0);
	assert_int_equal(e[1].flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
	assert_int_equal(db_int(db = db_open(path), "SELECT count(*) FROM sectors"), 0);
	assert_int_equal(db_int(db, "SELECT json_extract(metadata, '$.zero_after') FROM meta"), 2);
	sqlite3_close(db);
	/* and writes after it read back */
	memset(b, 0x63, SS);
	assert_int_equal(tu_write(q, 70, b, SS, 0).kind, VDISK_OK);
	memset(b, 0, SS);
	assert_int_equal(tu_read(q, 70, b, SS).kind, VDISK_OK);
	assert_int_equal(b[0], 0x63);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	expect_integrity(path);

	/* a cache is logically read-only: not resizable */
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\",\"create\":"
	    "true},{\"type\":\"sqlite-cache\",\"root\":\"%s.c\",\"key\":\"k\",\"read-cache\":true},"
	    "{\"type\":\"disk\",\"disk\":\"file:path=%s\"}]}",
	    path, path, base);
	unlink(path);
	d = tu_open(spec, 0);
	assert_int_equal(vdisk_resize(d, 100), 0);
	vdisk_unref(d);
	free(b);
	free(pat);
	free(base);
	free(path);
}

/* A test-only disk with an id, for the cache key. */
static int idd_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->sector_count = 256;
	m->has_disk_id = true;
	for (int i = 0; i < 16; i++)
		m->disk_id[i] = (uint8_t)(0xa0 + i);
	m->read_only = true;
	return 0;
}

static int idd_read(struct vdisk_req *r)
{
	/* every byte of a sector: its number, odd so never zero */
	for (uint64_t i = 0; i < r->count; i++)
		vdisk_iov_memset(r->iov, r->iovcnt, (size_t)i * 512,
		                 (int)((r->sector + i) & 0xff) | 1, 512);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static const struct vdisk_driver idd_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "idtest",
    .open = idd_open,
    .read = idd_read,
};

static void test_cache(void **state)
{
	(void)state;
	char *root = tmp("cache");
	const char *stack =
	    "{\"type\":\"layered\",\"read-only\":true,\"layers\":[{\"type\":"
	    "\"sqlite-cache\",\"root\":\"%s\",\"read-cache\":true},{\"type\":\"disk\","
	    "\"disk\":\"idtest:\"}]}";
	char spec[1024];
	snprintf(spec, sizeof spec, stack, root);
	struct vdisk *d = tu_open(spec, 0);
	/* the layer below's id names the cache */
	uint8_t id[16];
	assert_true(vdisk_disk_id(d, id));
	assert_int_equal(id[0], 0xa0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *b = tu_alloc(8 * SS);
	assert_int_equal(tu_read(q, 16, b, 8 * SS).kind, VDISK_OK);
	assert_int_equal(b[0], 17);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	char *file = malloc(600);
	snprintf(file, 600, "%s/a0a1a2a3a4a5a6a7a8a9aaabacadaeaf/cache.dbhd", root);
	sqlite3 *db = db_open(file);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors"), 8);
	assert_int_equal(
	    db_int(db, "SELECT json_extract(metadata, '$.logically_read_only') FROM meta"), 1);
	sqlite3_close(db);
	/* the cache survives: a second open finds the sectors there */
	d = tu_open(spec, 0);
	q = vdisk_queue_create(d, NULL);
	struct vdisk_extent e[4];
	unsigned n = 0;
	assert_int_equal(tu_read(q, 20, b, 8 * SS).kind, VDISK_OK);
	assert_int_equal(b[0], 21);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	db = db_open(file);
	assert_int_equal(db_int(db, "SELECT count(*) FROM sectors"), 12);
	sqlite3_close(db);
	(void)e;
	(void)n;

	/* a cache made for another size is refused, not reused */
	snprintf(
	    spec, sizeof spec,
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"sqlite-cache\","
	    "\"root\":\"%s\",\"key\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\",\"read-cache\":true},"
	    "{\"type\":\"disk\",\"disk\":\"ram:size=64k\"}]}",
	    root);
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "layers[1] (sqlite-cache)"));
	assert_non_null(strstr(vdisk_errmsg(), "caches a disk of 256"));
	free(file);
	free(b);
	free(root);
}

/* Several processes create the same cache at once: every one opens it, one
 * file results, no temporary directory is left. */
static void test_cache_creation_race(void **state)
{
	(void)state;
	char *root = tmp("race");
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"sqlite-cache\","
	         "\"root\":\"%s\",\"key\":\"shared\",\"read-cache\":true},{\"type\":\"disk\","
	         "\"disk\":\"ram:size=1M\"}]}",
	         root);
	enum { N = 6 };
	for (int round = 0; round < 3; round++) {
		char cmd[700];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
		assert_int_equal(system(cmd), 0);
		int go[2];
		assert_int_equal(pipe(go), 0);
		pid_t pids[N];
		for (int i = 0; i < N; i++) {
			pids[i] = fork();
			assert_true(pids[i] >= 0);
			if (pids[i] == 0) {
				char c;
				close(go[1]);
				/* start together */
				if (read(go[0], &c, 1) != 0)
					_exit(3);
				struct vdisk *d = vdisk_open(spec, 0);
				if (!d) {
					fprintf(stderr, "child %d: %s\n", i, vdisk_errmsg());
					_exit(1);
				}
				struct vdisk_queue *q = vdisk_queue_create(d, NULL);
				unsigned char *b = tu_alloc(64 * SS);
				vdisk_status st = vdisk_status_ok();
				for (uint64_t s = 0; s < 2048 && vdisk_ok(st);
				     s += 64 + (uint64_t)i * 8)
					st = tu_read(q, s, b, (2048 - s < 64 ? 2048 - s : 64) * SS);
				if (!vdisk_ok(st))
					fprintf(stderr, "child %d: read: %s (errno %d)\n", i,
					        tu_st(st), st.errnum);
				vdisk_queue_destroy(q);
				vdisk_unref(d);
				_exit(vdisk_ok(st) ? 0 : 2);
			}
		}
		close(go[0]);
		close(go[1]);
		for (int i = 0; i < N; i++) {
			int status = 0;
			assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 0);
		}
		snprintf(cmd, sizeof cmd, "! ls -A %s/shared | grep -q vdisk-create", root);
		assert_int_equal(system(cmd), 0);
		char file[700];
		snprintf(file, sizeof file, "%s/shared/cache.dbhd", root);
		expect_integrity(file);
	}
	free(root);
}

int main(void)
{
	vdisk_register_driver(&idd_driver);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_persistence_and_format),
	    cmocka_unit_test(test_create_never_overwrites),
	    cmocka_unit_test(test_corrupt_files),
	    cmocka_unit_test(test_openvmm_file),
	    cmocka_unit_test(test_resize_and_discard),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_cache_creation_race),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
