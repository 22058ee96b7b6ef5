/* Wake-ups of vdisk_wait_resize() when resizes race: a waiter is never told a
 * size the disk no longer has. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/internal.h"
#include "testutil.h"

/* pthread_mutex_lock of this test, to run a hook just before a given mutex is
 * taken: what another thread could do at that moment, made deterministic. */
static int (*real_lock)(pthread_mutex_t *);
static pthread_mutex_t *hook_mutex;
static void (*lock_hook)(void);

int pthread_mutex_lock(pthread_mutex_t *m)
{
	if (lock_hook && m == hook_mutex) {
		void (*hook)(void) = lock_hook;
		lock_hook = NULL;
		hook();
	}
	/* libraries linked in (librbd's) take mutexes in their constructors,
	 * before main */
	if (!real_lock)
		real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
	return real_lock(m);
}

static struct vdisk *disk;
static struct vdisk_queue *queue;
static uint64_t base, got;
static struct tu_flag waiter;

/* Between the first resize's store of its count and its wake-up of the
 * waiters: a second resize completes, and a waiter registers with the count
 * that second resize set. */
static void second_resize(void)
{
	assert_int_equal(vdisk_resize(disk, base + 20), 0);
	assert_int_equal(vdisk_wait_resize(queue, base + 20, &got, tu_flag_cb, &waiter), 0);
}

static void test_racing_resizes(void **state)
{
	(void)state;
	disk = tu_open("ram:size=1M", 0);
	queue = vdisk_queue_create(disk, NULL);
	base = vdisk_sector_count(disk);
	hook_mutex = &disk->lock;
	lock_hook = second_resize;
	assert_int_equal(vdisk_resize(disk, base + 10), 0);
	assert_null(lock_hook);
	assert_int_equal(vdisk_sector_count(disk), base + 20);
	vdisk_queue_poll(queue);
	if (waiter.calls)
		fail_msg("a waiter for a change from %llu was told %llu; the disk has %llu",
		         (unsigned long long)(base + 20), (unsigned long long)got,
		         (unsigned long long)vdisk_sector_count(disk));
	/* the next resize wakes it with the right count */
	assert_int_equal(vdisk_resize(disk, base + 30), 0);
	while (!waiter.calls)
		vdisk_queue_wait(queue, -1);
	assert_int_equal(got, base + 30);
	vdisk_queue_destroy(queue);
	vdisk_unref(disk);
}

int main(void)
{
	real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
	if (!real_lock)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_racing_resizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
