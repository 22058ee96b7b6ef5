/* A bounce buffer that cannot be allocated fails the request with ENOMEM: it
 * is not back-pressure to be retried for ever (that spun the queue's thread and
 * never completed the request).  In a child process whose address space is
 * nearly spent. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#ifndef TU_SANITIZED
/* child: exit 0 if a 128 MiB request through spec fails with ENOMEM (or
 * succeeds, if the stack did not need a bounce buffer after all: exit 4) */
static int child(const char *spec, int write)
{
	enum { LEN = 128 << 20 };
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf =
	    mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 5;
	memset(buf, 1, LEN);
	struct rlimit lim;
	lim.rlim_cur = lim.rlim_max = tu_vm_size() + (32ull << 20);
	if (setrlimit(RLIMIT_AS, &lim) < 0)
		return 3;
	alarm(60); /* a request that never completes fails the test, not CI */
	vdisk_status st = write ? tu_write(q, 0, buf, LEN, 0) : tu_read(q, 0, buf, LEN);
	if (vdisk_ok(st))
		return 4;
	fprintf(stderr, "%s\n", tu_st(st));
	return st.kind == VDISK_ERR_IO && st.errnum == ENOMEM ? 0 : 1;
}
#endif

static void run(const char *spec, int write)
{
#ifdef TU_SANITIZED
	(void)spec;
	(void)write;
	skip(); /* sanitizers reserve terabytes of address space */
#else
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child(spec, write));
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("%s: child ended by signal %d", spec, WTERMSIG(status));
	assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

#define KEY                                                                \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" \
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

static void test_crypt_stage(void **state)
{
	(void)state;
	run("{\"type\":\"crypt\",\"key-hex\":\"" KEY "\",\"inner\":\"null:size=1G\"}", 1);
}

static void test_layered_read_cache(void **state)
{
	(void)state;
	run("{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"read-cache\":true},"
	    "{\"type\":\"disk\",\"disk\":\"null:size=1G\"}]}",
	    0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crypt_stage),
	    cmocka_unit_test(test_layered_read_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
