/* Wake-ups of a queue's event-loop descriptor: a remote completion that races
 * the poll's reset of the eventfd. */
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

#include "testutil.h"
#include "vdisk/backend.h"

struct flag {
	int calls;
	vdisk_status st;
};

static void flag_cb(void *o, vdisk_status st)
{
	struct flag *f = o;
	f->calls++;
	f->st = st;
}

static bool fd_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

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
static void resize_in_read(void) { assert_int_equal(vdisk_resize(hook_disk, ++hook_size), 0); }

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
	struct flag r = {0}, w1 = {0}, w2 = {0};
	uint64_t n1 = 0, n2 = 0;
	assert_int_equal(vdisk_readv(q, 0, &iov, 1, flag_cb, &r), 0);
	assert_int_equal(vdisk_wait_resize(q, hook_size, &n1, flag_cb, &w1), 0);
	assert_true(fd_readable(fd));

	/* the poll reads the eventfd just as a resize completes w1 remotely */
	read_hook = resize_in_read;
	assert_int_equal(vdisk_queue_poll(q), 2);
	assert_null(read_hook);
	assert_int_equal(w1.calls, 1);
	assert_int_equal(n1, hook_size);

	/* a later remote completion must still make the descriptor readable */
	assert_int_equal(vdisk_wait_resize(q, hook_size, &n2, flag_cb, &w2), 0);
	assert_int_equal(vdisk_resize(d, hook_size + 1), 0);
	assert_true(fd_readable(fd));
	assert_int_equal(vdisk_queue_poll(q), 1);
	assert_int_equal(w2.calls, 1);
	assert_int_equal(n2, hook_size + 1);
	assert_false(fd_readable(fd));

	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kick_during_reset_is_not_lost),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
