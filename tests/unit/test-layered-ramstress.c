/* A RAM layer hammered from several queues at once where its sectors share
 * pages: each thread owns every third run of three sectors of the same few
 * 2 MiB regions, so the 4 KiB pages (and the huge pages the regions become)
 * hold sectors of all threads.  Writes, reads, unmaps that give pages back
 * and resizes beyond the owned area run concurrently; every thread checks
 * its own sectors against its own model. */
#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define THREADS 3
#define RUN 3                  /* sectors of a run */
#define OWNED 8192             /* sectors of the owned area: 4 MiB at 512 */
#define OPS 40000              /* per thread */
#define STRIDE (RUN * THREADS) /* sectors from one run of a thread to its next */

struct worker {
	struct vdisk *d;
	unsigned index;
	uint32_t ss;
	unsigned char *model;   /* OWNED sectors; only the owned ones are used */
	unsigned char *unknown; /* per sector: unmapped, old data or zeros */
	uint64_t rng;
	char err[256];
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static bool is_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Compare n sectors at s with the model; pins unknown sectors. */
static bool check(struct worker *w, uint64_t s, uint64_t n, const unsigned char *got)
{
	uint32_t ss = w->ss;
	for (uint64_t i = 0; i < n; i++) {
		unsigned char *want = w->model + (s + i) * ss;
		const unsigned char *g = got + i * ss;
		if (memcmp(want, g, ss) == 0) {
			w->unknown[s + i] = 0;
			continue;
		}
		if (w->unknown[s + i] && is_zero(g, ss)) {
			memset(want, 0, ss);
			w->unknown[s + i] = 0;
			continue;
		}
		snprintf(w->err, sizeof w->err,
		         "thread %u: sector %" PRIu64 " differs from the model (byte 0: %02x, want "
		         "%02x)",
		         w->index, s + i, g[0], want[0]);
		return false;
	}
	return true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint32_t ss = w->ss;
	struct vdisk_queue *q = vdisk_queue_create(w->d, NULL);
	unsigned char *buf = tu_alloc(RUN * ss);
	for (unsigned op = 0; op < OPS && !w->err[0]; op++) {
		uint64_t run = rnd(&w->rng) % (OWNED / STRIDE);
		uint64_t first = run * STRIDE + w->index * RUN;
		uint64_t off = rnd(&w->rng) % RUN, n = 1 + rnd(&w->rng) % (RUN - off);
		uint64_t s = first + off;
		vdisk_status st;
		switch (rnd(&w->rng) % 8) {
		case 0:
		case 1:
		case 2: /* write */
			for (uint64_t i = 0; i < n * ss; i += 8) {
				uint64_t v = rnd(&w->rng);
				memcpy(buf + i, &v, 8);
			}
			buf[0] |= 1; /* never all zeros */
			st = tu_write(q, s, buf, n * ss, 0);
			if (st.kind != VDISK_OK) {
				snprintf(w->err, sizeof w->err, "write: %s", tu_st(st));
				break;
			}
			memcpy(w->model + s * ss, buf, n * ss);
			memset(w->unknown + s, 0, n);
			break;
		case 3:
		case 4: /* unmap */
			st = tu_unmap(q, s, n);
			if (st.kind != VDISK_OK) {
				snprintf(w->err, sizeof w->err, "unmap: %s", tu_st(st));
				break;
			}
			memset(w->unknown + s, 1, n);
			break;
		default: /* read */
			st = tu_read(q, s, buf, n * ss);
			if (st.kind != VDISK_OK) {
				snprintf(w->err, sizeof w->err, "read: %s", tu_st(st));
				break;
			}
			check(w, s, n, buf);
			break;
		}
	}
	free(buf);
	vdisk_queue_destroy(q);
	return NULL;
}

struct resizer {
	struct vdisk *d;
	_Atomic int stop;
	int failed;
};

/* Shrinks and grows the disk beyond the owned area, far too, while the
 * workers run. */
static void *resizer_main(void *arg)
{
	struct resizer *r = arg;
	static const uint64_t sizes[] = {OWNED + 1, 3ull << 21, OWNED * 2, OWNED + 4000};
	for (unsigned i = 0; !r->stop; i++)
		if (vdisk_resize(r->d, sizes[i % 4]) < 0)
			r->failed = 1;
	return NULL;
}

static void run(const char *spec, uint32_t ss, bool resize)
{
	struct vdisk *d = tu_open(spec, 0);
	struct worker w[THREADS];
	pthread_t t[THREADS], rt;
	struct resizer r = {.d = d};
	memset(w, 0, sizeof w);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i].d = d;
		w[i].index = i;
		w[i].ss = ss;
		w[i].model = tu_alloc((size_t)OWNED * ss);
		w[i].unknown = tu_alloc(OWNED);
		w[i].rng = (i + 1) * 0x9E3779B97F4A7C15ull;
	}
	if (resize)
		assert_int_equal(pthread_create(&rt, NULL, resizer_main, &r), 0);
	for (unsigned i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	int bad = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err[0]) {
			fprintf(stderr, "%s: %s\n", spec, w[i].err);
			bad = 1;
		}
	}
	r.stop = 1;
	if (resize)
		pthread_join(rt, NULL);
	assert_int_equal(r.failed, 0);
	assert_int_equal(bad, 0);
	/* the whole owned area once more, from one queue */
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *all = tu_alloc((size_t)OWNED * ss);
	assert_int_equal(tu_read(q, 0, all, (size_t)OWNED * ss).kind, VDISK_OK);
	for (uint64_t s = 0; s < OWNED - OWNED % STRIDE; s++) {
		struct worker *o = &w[s % STRIDE / RUN];
		if (!check(o, s, 1, all + s * ss)) {
			fprintf(stderr, "%s: at the end: %s\n", spec, o->err);
			fail();
		}
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(all);
	for (unsigned i = 0; i < THREADS; i++) {
		free(w[i].model);
		free(w[i].unknown);
	}
}

static void test_shared_pages(void **state)
{
	(void)state;
	run("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"8M\"}]}", 512, false);
}

static void test_shared_pages_resize(void **state)
{
	(void)state;
	run("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"8M\"}]}", 512, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shared_pages),
	    cmocka_unit_test(test_shared_pages_resize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
