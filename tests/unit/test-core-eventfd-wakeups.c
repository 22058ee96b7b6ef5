/* Wake-ups of a queue's event-loop descriptor: a remote completion that races
 * the poll's reset of the eventfd, and kernel completions beyond the size of the
 * completion ring. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "testutil.h"
#include "vdisk/backend.h"

/* read(2) of this test, to run a hook at the exact moment the queue reads its
 * eventfd: a kick from another thread landing there is a race the scheduler
 * rarely shows, made deterministic here.  Every other read is the system
 * call. */
static void (*read_hook)(void);

ssize_t read(int fd, void *buf, size_t len)
{
	if (read_hook && len == sizeof(uint64_t)) {
		void (*hook)(void) = read_hook;
		read_hook = NULL;
		hook();
	}
	return syscall(SYS_read, fd, buf, len);
}

static struct vdisk *hook_disk;
static uint64_t hook_size;

/* What another thread does during the race: a resize, which completes a
 * wait-for-resize request of the queue remotely and kicks its eventfd. */
static void resize_in_read(void)
{
	assert_int_equal(vdisk_resize(hook_disk, ++hook_size), 0);
}

static void test_kick_during_reset_is_not_lost(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = vdisk_queue_fd(q);
	assert_true(fd >= 0);
	hook_disk = d;
	hook_size = vdisk_sector_count(d);

	/* an inline completion kicks the eventfd */
	unsigned char buf[512];
	struct iovec iov = {buf, sizeof buf};
	struct tu_flag r = {0}, w1 = {0}, w2 = {0};
	uint64_t n1 = 0, n2 = 0;
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, tu_flag_cb, &r), 0);
	assert_int_equal(vdisk_wait_resize(q, hook_size, &n1, tu_flag_cb, &w1), 0);
	assert_true(tu_fd_readable(fd));

	/* the poll reads the eventfd just as a resize completes w1 remotely */
	read_hook = resize_in_read;
	assert_int_equal(vdisk_queue_poll(q), 2);
	assert_null(read_hook);
	assert_int_equal(w1.calls, 1);
	assert_int_equal(n1, hook_size);

	/* a later remote completion must still make the descriptor readable */
	assert_int_equal(vdisk_wait_resize(q, hook_size, &n2, tu_flag_cb, &w2), 0);
	assert_int_equal(vdisk_resize(d, hook_size + 1), 0);
	assert_true(tu_fd_readable(fd));
	assert_int_equal(vdisk_queue_poll(q), 1);
	assert_int_equal(w2.calls, 1);
	assert_int_equal(n2, hook_size + 1);
	assert_false(tu_fd_readable(fd));

	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* ---- "nop": every read is an io_uring NOP, which the kernel completes at once,
 * inside the submission: many of them overflow the completion ring. ---------- */

struct nop_ctx {
	struct vdisk_uring_op op;
};

static int nop_open(struct vdisk *d, json_t *cfg)
{
	(void)cfg;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = 512;
	m->sector_count = 2048;
	m->req_ctx_size = sizeof(struct nop_ctx);
	return 0;
}

static int nop_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	(void)d;
	*qstate = NULL;
	return vdisk_queue_uring(q) ? 0 : -1;
}

static void nop_cb(struct vdisk_uring_op *op, int res)
{
	struct vdisk_req *r = vdisk_req_from_ctx(op);
	vdisk_req_complete(r, res < 0 ? vdisk_status_io(-res) : vdisk_status_ok());
}

static int nop_read(struct vdisk_req *r)
{
	struct nop_ctx *c = vdisk_req_ctx(r);
	c->op.cb = nop_cb;
	struct io_uring_sqe *sqe = vdisk_uring_sqe(r->q, &c->op);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &c->op);
	return 0;
}

static const struct vdisk_driver nop_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "nop",
    .open = nop_open,
    .queue_init = nop_queue_init,
    .read = nop_read,
};

static void test_completions_beyond_the_ring_are_reaped(void **state)
{
	(void)state;
	enum { N = 1500 }; /* more than the completion ring holds */
	struct vdisk *d = tu_open("nop:", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	int fd = vdisk_queue_fd(q);
	assert_true(fd >= 0);
	static struct tu_flag f[N];
	struct iovec iov = {NULL, 0};
	vdisk_queue_plug(q);
	for (int i = 0; i < N; i++)
		assert_int_equal(vdisk_readv(q, 0, &iov, 0, tu_flag_cb, &f[i]), 0);
	vdisk_queue_unplug(q);
	/* an event loop: wait for the descriptor, poll; each readable descriptor
	 * must bring progress, or the loop spins for ever */
	int done = 0, idle = 0;
	while (done < N && idle < 100) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 10000), 1);
		int n = vdisk_queue_poll(q);
		assert_true(n >= 0);
		idle = n ? 0 : idle + 1;
		done += n;
	}
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(f[i].calls, 1);
	assert_int_equal(vdisk_queue_inflight(q), 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	if (vdisk_register_driver(&nop_driver) < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kick_during_reset_is_not_lost),
	    cmocka_unit_test(test_completions_beyond_the_ring_are_reaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
