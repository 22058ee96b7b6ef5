/* Layered disks used from several threads at once, one queue each, several
 * requests in flight per queue: every request slot owns a region of the disk
 * and checks it against its own model, so the data must be exact while the
 * RAM layer's locks, the cache fills and the SQLite workers' hand-back to the
 * right queue are all busy. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define SS 512
#define THREADS 3
#define DEPTH 6
#define REGION 48 /* sectors per slot */
#define SECTORS (THREADS * DEPTH * REGION)

struct slot {
	struct worker *w;
	unsigned index;
	uint64_t first;       /* first sector of the slot's region */
	unsigned char *model; /* REGION sectors */
	unsigned char *buf;
	struct iovec iov[3];
	int op; /* in flight: 0 read, 1 write, 2 write-zeroes, 3 flush */
	uint64_t s, n;
	uint64_t rng;
	unsigned done;
};

struct worker {
	struct vdisk *d;
	unsigned index;
	struct vdisk_queue *q;
	struct slot slots[DEPTH];
	uint64_t deadline_ms;
	int failed;
	unsigned ops;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t next(struct slot *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static void start(struct slot *s);

static void slot_done(void *o, vdisk_status st)
{
	struct slot *s = o;
	struct worker *w = s->w;
	w->ops++;
	if (!vdisk_ok(st)) {
		fprintf(stderr, "thread %u slot %u: op %d at %" PRIu64 ": %s\n", w->index, s->index,
		        s->op, s->s, tu_st(st));
		w->failed = 1;
		return;
	}
	size_t off = (size_t)(s->s - s->first) * SS, len = (size_t)s->n * SS;
	if (s->op == 0 && memcmp(s->buf, s->model + off, len) != 0) {
		fprintf(stderr, "thread %u slot %u: read at %" PRIu64 "+%" PRIu64 " differs\n",
		        w->index, s->index, s->s, s->n);
		w->failed = 1;
		return;
	}
	if (s->op == 1)
		memcpy(s->model + off, s->buf, len);
	if (s->op == 2)
		memset(s->model + off, 0, len);
	s->done++;
	if (now_ms() < w->deadline_ms && !w->failed)
		start(s);
}

static void start(struct slot *s)
{
	struct worker *w = s->w;
	unsigned r = (unsigned)(next(s) % 16);
	s->op = r < 7 ? 0 : r < 13 ? 1 : r < 15 ? 2 : 3;
	s->n = 1 + next(s) % 16;
	s->s = s->first + next(s) % (REGION - s->n + 1);
	size_t len = (size_t)s->n * SS;
	int rc;
	if (s->op <= 1) {
		if (s->op == 1)
			tu_pattern(s->buf, len, s->s, SS, next(s));
		else
			memset(s->buf, 0xcd, len);
		size_t cut = (size_t)(next(s) % (len + 1));
		s->iov[0].iov_base = s->buf;
		s->iov[0].iov_len = cut;
		s->iov[1].iov_base = s->buf + cut;
		s->iov[1].iov_len = len - cut;
		rc = s->op == 0 ? vdisk_readv(w->q, s->s, s->iov, 2, slot_done, s)
		                : vdisk_writev(w->q, s->s, s->iov, 2, 0, slot_done, s);
	} else if (s->op == 2) {
		rc = vdisk_write_zeroes(w->q, s->s, s->n, 0, slot_done, s);
	} else {
		rc = vdisk_flush(w->q, slot_done, s);
	}
	if (rc < 0) {
		fprintf(stderr, "submit: %d\n", rc);
		w->failed = 1;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	w->q = vdisk_queue_create(w->d, NULL);
	if (!w->q) {
		w->failed = 1;
		return NULL;
	}
	for (unsigned i = 0; i < DEPTH; i++)
		start(&w->slots[i]);
	while (vdisk_queue_inflight(w->q))
		vdisk_queue_wait(w->q, -1);
	vdisk_queue_destroy(w->q);
	return NULL;
}

static void run_stack(const char *spec, const unsigned char *base)
{
	struct vdisk *d = tu_open(spec, 0);
	assert_true(vdisk_sector_count(d) >= SECTORS);
	struct worker w[THREADS];
	pthread_t t[THREADS];
	memset(w, 0, sizeof w);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i].d = d;
		w[i].index = i;
		w[i].deadline_ms = now_ms() + 700;
		for (unsigned k = 0; k < DEPTH; k++) {
			struct slot *s = &w[i].slots[k];
			s->w = &w[i];
			s->index = k;
			s->first = ((uint64_t)i * DEPTH + k) * REGION;
			s->model = tu_alloc(REGION * SS);
			s->buf = tu_alloc(16 * SS);
			s->rng = (s->first + 1) * 0x9E3779B97F4A7C15ull | 1;
			memcpy(s->model, base + s->first * SS, REGION * SS);
		}
	}
	for (unsigned i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	unsigned ops = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failed, 0);
		ops += w[i].ops;
	}
	/* and once more, the whole disk from one queue */
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *all = tu_alloc(SECTORS * SS);
	assert_int_equal(tu_read(q, 0, all, SECTORS * SS).kind, VDISK_OK);
	for (unsigned i = 0; i < THREADS; i++)
		for (unsigned k = 0; k < DEPTH; k++) {
			struct slot *s = &w[i].slots[k];
			assert_memory_equal(all + s->first * SS, s->model, REGION * SS);
			free(s->model);
			free(s->buf);
		}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(all);
	fprintf(stderr, "%u operations: %s\n", ops, spec);
}

static void test_threads(void **state)
{
	(void)state;
	unsigned char *base = tu_alloc(SECTORS * SS), *zero = tu_alloc(SECTORS * SS);
	tu_pattern(base, SECTORS * SS, 0, SS, 42);
	char path[512];
	snprintf(path, sizeof path, "%s/base.img", tu_tmpdir());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	assert_int_equal(pwrite(fd, base, SECTORS * SS, 0), SECTORS * SS);
	close(fd);
	static const char *const stacks[] = {
	    /* a RAM diff over a read-only base, a cache in between */
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"sqlite\",\"read-"
	    "cache\":"
	    "true,\"create\":true,\"path\":\"@TMP@/c1.dbhd\"},{\"type\":\"disk\",\"disk\":"
	    "\"file:path=@TMP@/base.img\"}]}",
	    /* a RAM read cache with write-through to the base */
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"read-cache\":true,\"write-"
	    "through\":"
	    "true},{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/base.img\"}]}",
	    /* a sqlite diff, then two sqlite layers written through */
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"create\":true,\"path\":"
	    "\"@TMP@/d1.dbhd\"},{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/base.img\"}]}",
	    "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"write-through\":true,"
	    "\"create\":"
	    "true,\"path\":\"@TMP@/d2.dbhd\",\"size\":\"2M\"},{\"type\":\"sqlite\",\"create\":true,"
	    "\"path\":\"@TMP@/d3.dbhd\",\"size\":\"2M\"}]}",
	};
	for (size_t i = 0; i < sizeof stacks / sizeof *stacks; i++) {
		/* the base file changes under write-through: rewrite it first */
		fd = open(path, O_WRONLY);
		assert_int_equal(pwrite(fd, base, SECTORS * SS, 0), SECTORS * SS);
		close(fd);
		char *spec = tu_spec(stacks[i]);
		run_stack(spec, i == 3 ? zero : base);
		free(spec);
	}
	free(base);
	free(zero);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
