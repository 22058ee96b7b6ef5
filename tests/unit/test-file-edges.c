/* The file backend at its edges: an open that fails after create= made the file
 * removes it again, and requests of more iovecs than IOV_MAX. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

static struct vdisk *open_fmt(const char *fmt, const char *path)
{
	char spec[1024];
	snprintf(spec, sizeof spec, fmt, path);
	return vdisk_open(spec, 0);
}

static void test_failed_create_leaves_no_file(void **state)
{
	(void)state;
	/* tmpfs does not report its O_DIRECT alignment, so the backend assumes
	 * 4096 and refuses 512-byte sectors (or the kernel refuses O_DIRECT):
	 * either way after the file was created */
	char dir[] = "/dev/shm/vdisk-test.XXXXXX";
	if (!mkdtemp(dir))
		skip();
	char p[64];
	snprintf(p, sizeof p, "%s/d.img", dir);
	assert_null(open_fmt("file:path=%s,create=1M,direct=on", p));
	bool left = access(p, F_OK) == 0;
	unlink(p);
	rmdir(dir);
	if (left)
		fail_msg("the failed open left %s behind (%s)", p, vdisk_errmsg());
}

static void test_more_iovecs_than_iov_max(void **state)
{
	(void)state;
	enum { N = IOV_MAX * 2 + 5 };
	static const char *const specs[] = {"file:path=%s,create=4M",
	                                    "file:path=%s,create=4M,write-mode=uring",
	                                    "file:path=%s,create=4M,direct=on"};
	char *p;
	if (asprintf(&p, "%s/iov.img", tu_tmpdir()) < 0)
		abort();
	unsigned char *want = tu_alloc((size_t)N * 512), *got = tu_alloc((size_t)N * 512);
	static struct iovec iov[N];
	for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
		unlink(p);
		struct vdisk *d = open_fmt(specs[s], p);
		assert_non_null(d);
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		tu_pattern(want, (size_t)N * 512, 3, 512, s + 1);
		for (int i = 0; i < N; i++)
			iov[i] = (struct iovec){want + (size_t)i * 512, 512};
		assert_int_equal(tu_writev(q, 3, iov, N, 0).kind, VDISK_OK);
		memset(got, 0, (size_t)N * 512);
		for (int i = 0; i < N; i++)
			iov[i] = (struct iovec){got + (size_t)i * 512, 512};
		assert_int_equal(tu_readv(q, 3, iov, N).kind, VDISK_OK);
		assert_memory_equal(got, want, (size_t)N * 512);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	}
	free(want);
	free(got);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_failed_create_leaves_no_file),
	    cmocka_unit_test(test_more_iovecs_than_iov_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
