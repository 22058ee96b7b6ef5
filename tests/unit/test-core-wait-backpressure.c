/* vdisk_queue_wait under back-pressure: a request refused with -EAGAIN while
 * others are in flight waits for their completion; the wait sleeps rather than
 * retrying it in a loop, and returns when its timeout passes. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

/* ---- "gate": the first read goes to the worker pool and waits there for the
 * test; reads meanwhile are refused with -EAGAIN, as a spent resource would. */

static sem_t gate;
static _Atomic int busy;
static int refusals;

static int gate_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->sector_count = 64;
	return 0;
}

static vdisk_status gate_work(struct vdisk_req *r)
{
	(void)r;
	sem_wait(&gate);
	busy = 0;
	return vdisk_status_ok();
}

static int gate_read(struct vdisk_req *r)
{
	if (busy) {
		refusals++;
		return -EAGAIN;
	}
	if (r->sector == 0) {
		busy = 1;
		return vdisk_offload(r, gate_work);
	}
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static const struct vdisk_driver gate_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "gate",
    .open = gate_open,
    .read = gate_read,
};

static int done;
static void done_cb(void *o, vdisk_status st)
{
	(void)o;
	assert_int_equal(st.kind, VDISK_OK);
	done++;
}

static void test_wait_sleeps_under_backpressure(void **state)
{
	(void)state;
	sem_init(&gate, 0, 0);
	struct vdisk *d = tu_open("gate:", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[1024];
	struct iovec a = {buf, 512}, b = {buf + 512, 512};
	assert_int_equal(vdisk_readv(q, 0, &a, 1, done_cb, NULL), 0);
	assert_int_equal(vdisk_readv(q, 1, &b, 1, done_cb, NULL), 0);
	assert_int_equal(refusals, 1);
	/* nothing can complete for these 20 ms: the retry waits for the first
	 * read; a wait that kept resubmitting it would count thousands.  The
	 * alarm only turns a wait that never returns into a failure. */
	alarm(20);
	assert_int_equal(vdisk_queue_wait(q, 20000000), 0);
	alarm(0);
	if (refusals > 4)
		fail_msg("vdisk_queue_wait resubmitted a refused request %d times while nothing "
		         "completed",
		         refusals);
	sem_post(&gate);
	while (done < 2)
		assert_true(vdisk_queue_wait(q, -1) >= 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	sem_destroy(&gate);
}

int main(void)
{
	if (vdisk_register_driver(&gate_driver) < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wait_sleeps_under_backpressure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
