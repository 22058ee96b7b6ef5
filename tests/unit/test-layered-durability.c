/* SQLite layer durability: a child process writes through a sqlite layer (16
 * writes in flight, a flush now and then) and reports every acknowledged write
 * and every finished flush on a pipe; the parent kills it with SIGKILL at a
 * random moment, reopens the file, and checks that every write acknowledged
 * before the last finished flush reads back (or a newer version of the
 * sector does), that nothing is torn, and that PRAGMA integrity_check is ok.
 * Three rounds on the same file, alternating stacks.
 *
 * ctest-timeout: 120 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define SS 512
#define SECTORS 2048
#define DEPTH 16
#define MAGIC 0x31305255444c4456ull /* "VDLDUR01" */

struct rec {
	uint32_t kind; /* 1: write acknowledged; 2: flush finished */
	uint32_t sector;
	uint64_t value; /* write: version; flush: acknowledged writes before it was issued */
};

static void fill(unsigned char *b, uint32_t sector, uint64_t version)
{
	uint64_t h[3] = {MAGIC, sector, version};
	tu_pattern(b, SS, sector, SS, version);
	memcpy(b, h, sizeof h);
}

/* 0: zeros (never written); 1: a valid block, version in *v; -1: torn */
static int decode(const unsigned char *b, uint32_t sector, uint64_t *v)
{
	uint64_t h[3];
	memcpy(h, b, sizeof h);
	if (h[0] != MAGIC) {
		for (int i = 0; i < SS; i++)
			if (b[i])
				return -1;
		return 0;
	}
	unsigned char want[SS];
	fill(want, sector, h[2]);
	if (h[1] != sector || memcmp(want, b, SS) != 0)
		return -1;
	*v = h[2];
	return 1;
}

struct child {
	struct vdisk_queue *q;
	int fd;
	uint64_t next_version;
	uint64_t acked;
	bool flushing;
	uint64_t flush_marker;
	unsigned char *bufs;
	uint32_t sectors[DEPTH];
	uint64_t versions[DEPTH];
	struct iovec iov[DEPTH]; /* valid until each write completes */
	uint64_t rng;
};

static void send_rec(struct child *c, uint32_t kind, uint32_t sector, uint64_t value)
{
	struct rec r = {kind, sector, value};
	if (write(c->fd, &r, sizeof r) != (ssize_t)sizeof r)
		_exit(4);
}

static void submit_write(struct child *c, int slot);

struct slot_ref {
	struct child *c;
	int slot;
};
static struct slot_ref refs[DEPTH];

static void write_done(void *o, vdisk_status st)
{
	struct slot_ref *ref = o;
	struct child *c = ref->c;
	if (!vdisk_ok(st))
		_exit(5);
	send_rec(c, 1, c->sectors[ref->slot], c->versions[ref->slot]);
	c->acked++;
	submit_write(c, ref->slot);
}

static void flush_done(void *o, vdisk_status st)
{
	struct child *c = o;
	if (!vdisk_ok(st))
		_exit(6);
	send_rec(c, 2, 0, c->flush_marker);
	c->flushing = false;
}

static void submit_write(struct child *c, int slot)
{
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	uint32_t s = (uint32_t)(c->rng % SECTORS);
	unsigned char *b = c->bufs + (size_t)slot * SS;
	c->sectors[slot] = s;
	c->versions[slot] = c->next_version++;
	fill(b, s, c->versions[slot]);
	c->iov[slot].iov_base = b;
	c->iov[slot].iov_len = SS;
	refs[slot].c = c;
	refs[slot].slot = slot;
	if (vdisk_writev(c->q, s, &c->iov[slot], 1, 0, write_done, &refs[slot]) < 0)
		_exit(7);
	if (!c->flushing && c->acked >= c->flush_marker + 40) {
		c->flushing = true;
		c->flush_marker = c->acked;
		if (vdisk_flush(c->q, flush_done, c) < 0)
			_exit(8);
	}
}

static _Noreturn void child_main(const char *spec, int fd, uint64_t first_version)
{
	struct vdisk *d = vdisk_open(spec, 0);
	if (!d) {
		fprintf(stderr, "child: %s\n", vdisk_errmsg());
		_exit(3);
	}
	struct child c = {0};
	c.q = vdisk_queue_create(d, NULL);
	c.fd = fd;
	c.next_version = first_version;
	c.rng = first_version * 0x9E3779B97F4A7C15ull | 1;
	c.bufs = tu_alloc(DEPTH * SS);
	for (int i = 0; i < DEPTH; i++)
		submit_write(&c, i);
	for (;;)
		vdisk_queue_wait(c.q, -1);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_kill_during_writes(void **state)
{
	(void)state;
	char path[512], spec[1024];
	snprintf(path, sizeof path, "%s/dur.dbhd", tu_tmpdir());
	uint64_t required[SECTORS] = {0};
	srand((unsigned)time(NULL));
	for (int round = 0; round < 3; round++) {
		if (round == 0)
			snprintf(spec, sizeof spec,
			         "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":"
			         "\"%s\","
			         "\"create\":true,\"size\":%d}]}",
			         path, SECTORS * SS);
		else if (round == 1)
			snprintf(
			    spec, sizeof spec,
			    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"write-through\":"
			    "true},{\"type\":\"sqlite\",\"path\":\"%s\"}]}",
			    path);
		else
			snprintf(spec, sizeof spec,
			         "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":"
			         "\"%s\"}]}",
			         path);
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			child_main(spec, p[1], (uint64_t)(round + 1) * 1000000000ull);
		}
		close(p[1]);
		/* collect records until the kill, then what is left in the pipe */
		struct rec *recs = NULL;
		size_t nrec = 0, cap = 0;
		uint64_t kill_at = now_ms() + 150 + (uint64_t)(rand() % 400);
		bool killed = false;
		for (;;) {
			/* not before the child has opened the disk and reported its
			 * first write: a slow start (sanitizers, a loaded machine) would
			 * otherwise be killed before the file exists */
			if (!killed && nrec > 0 && now_ms() >= kill_at) {
				kill(pid, SIGKILL);
				killed = true;
			}
			struct pollfd pfd = {p[0], POLLIN, 0};
			int r = poll(&pfd, 1, killed ? 1000 : 10);
			if (r <= 0)
				continue;
			if (nrec == cap) {
				cap = cap ? cap * 2 : 4096;
				recs = realloc(recs, cap * sizeof *recs);
			}
			ssize_t k = read(p[0], &recs[nrec], sizeof *recs);
			if (k == 0)
				break;
			assert_int_equal(k, (ssize_t)sizeof *recs);
			nrec++;
		}
		close(p[0]);
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status)) {
			fprintf(stderr, "child exited %d before the kill\n", WEXITSTATUS(status));
			fail();
		}
		/* writes acknowledged before the last finished flush was issued */
		uint64_t marker = 0, writes = 0, flushes = 0;
		for (size_t i = 0; i < nrec; i++)
			if (recs[i].kind == 2) {
				marker = recs[i].value;
				flushes++;
			}
		for (size_t i = 0; i < nrec && writes < marker; i++)
			if (recs[i].kind == 1) {
				writes++;
				if (recs[i].value > required[recs[i].sector])
					required[recs[i].sector] = recs[i].value;
			}
		fprintf(stderr,
		        "round %d: %zu records, %" PRIu64 " flushes, %" PRIu64
		        " writes must survive\n",
		        round, nrec, flushes, writes);
		free(recs);

		snprintf(
		    spec, sizeof spec,
		    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\"}]}",
		    path);
		struct vdisk *d = tu_open(spec, 0);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		unsigned char *b = tu_alloc(SECTORS * SS);
		assert_int_equal(tu_read(q, 0, b, SECTORS * SS).kind, VDISK_OK);
		for (uint32_t s = 0; s < SECTORS; s++) {
			uint64_t v = 0;
			int k = decode(b + (size_t)s * SS, s, &v);
			if (k < 0 || (required[s] && (k == 0 || v < required[s]))) {
				fprintf(stderr,
				        "round %d: sector %u: %s (version %" PRIu64
				        ", need %" PRIu64 ")\n",
				        round, s,
				        k < 0    ? "torn"
				        : k == 0 ? "lost"
				                 : "old",
				        v, required[s]);
				fail();
			}
		}
		vdisk_queue_destroy(q);
		vdisk_unref(d);
		free(b);

		sqlite3 *db = NULL;
		assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL),
		                 SQLITE_OK);
		sqlite3_stmt *st = NULL;
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
		                 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill_during_writes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
