/* An RBD image resized by another client: vdisk_wait_resize() on this one
 * completes (librbd's update watch), the sector count follows, growing and
 * shrinking, and I/O past the new end is an illegal block.  Needs a cluster:
 * run by tests/sh/test-rbd-resize.sh, which starts one and sets
 * VDISK_RBD_CONF; skipped without it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

static int fails;
#define CHECK(c, ...)                                                \
	do {                                                         \
		if (!(c)) {                                          \
			fprintf(stderr, "FAIL line %d: ", __LINE__); \
			fprintf(stderr, __VA_ARGS__);                \
			fprintf(stderr, "\n");                       \
			fails++;                                     \
		}                                                    \
	} while (0)

struct waiter {
	bool done;
	vdisk_status st;
};

static void wait_cb(void *opaque, vdisk_status st)
{
	struct waiter *w = opaque;
	w->done = true;
	w->st = st;
}

/* Resize through b and see a's waiter complete with the new count. */
static void resize_seen(struct vdisk *a, struct vdisk_queue *qa, struct vdisk *b, uint64_t count)
{
	uint64_t old = vdisk_sector_count(a), seen = 0;
	struct waiter w = {0};
	CHECK(vdisk_wait_resize(qa, old, &seen, wait_cb, &w) == 0, "wait_resize submit");
	CHECK(vdisk_resize(b, count) == 0, "resize through the other client: %s", vdisk_errmsg());
	/* the bound only keeps a broken watch from hanging the test */
	for (int i = 0; i < 120 && !w.done; i++)
		vdisk_queue_wait(qa, 1000000000);
	CHECK(w.done, "the waiter of the other client never completed (%" PRIu64 " -> %" PRIu64 ")",
	      old, count);
	CHECK(w.done && vdisk_ok(w.st) && seen == count, "waiter saw %" PRIu64 ", want %" PRIu64,
	      seen, count);
	CHECK(vdisk_sector_count(a) == count, "sector count %" PRIu64 ", want %" PRIu64,
	      vdisk_sector_count(a), count);
}

int main(void)
{
	const char *conf = getenv("VDISK_RBD_CONF");
	if (!conf) {
		fprintf(stderr,
		        "SKIP: needs a cluster (run through tests/sh/test-rbd-resize.sh)\n");
		return 77;
	}
	char spec[1024];
	snprintf(spec, sizeof spec,
	         "{\"type\":\"rbd\",\"conf\":\"%s\",\"pool\":\"rbd\",\"image\":\"resize\","
	         "\"create\":\"8M\"}",
	         conf);
	struct vdisk *a = vdisk_open(spec, 0);
	if (!a) {
		fprintf(stderr, "FAIL: open: %s\n", vdisk_errmsg());
		return 1;
	}
	snprintf(spec, sizeof spec,
	         "{\"type\":\"rbd\",\"conf\":\"%s\",\"pool\":\"rbd\",\"image\":\"resize\"}", conf);
	struct vdisk *b = vdisk_open(spec, 0);
	if (!b) {
		fprintf(stderr, "FAIL: second open: %s\n", vdisk_errmsg());
		return 1;
	}
	struct vdisk_queue *qa = vdisk_queue_create(a, NULL);
	CHECK(vdisk_sector_count(a) == 16384, "initial count %" PRIu64, vdisk_sector_count(a));

	resize_seen(a, qa, b, 32768); /* grow */
	static char buf[4096];
	memset(buf, 0xa5, sizeof buf);
	vdisk_status st = tu_write(qa, 32768 - 8, buf, sizeof buf, 0);
	CHECK(vdisk_ok(st), "write at the new end: %s", tu_st(st));

	resize_seen(a, qa, b, 4096); /* shrink */
	st = tu_read(qa, 8192, buf, sizeof buf);
	CHECK(st.kind == VDISK_ERR_ILLEGAL_BLOCK, "read past the new end: %s", tu_st(st));
	st = tu_read(qa, 4096 - 8, buf, sizeof buf);
	CHECK(vdisk_ok(st), "read at the new end: %s", tu_st(st));

	/* and this client's own resize is seen by the other */
	struct vdisk_queue *qb = vdisk_queue_create(b, NULL);
	resize_seen(b, qb, a, 12288);
	vdisk_queue_destroy(qb);

	vdisk_queue_destroy(qa);
	vdisk_unref(b);
	vdisk_unref(a);
	if (fails)
		return 1;
	printf("ok\n");
	return 0;
}
