/* The core's promises to and about drivers, with test drivers registered at run
 * time: emulations of optional operations, back-pressure, error mapping,
 * metadata validation, a pass-through decorator running the conformance suite,
 * secrets in inspect output, and drivers that break the completion contract. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conformance.h"
#include "testutil.h"
#include "vdisk/backend.h"

/* ---- "mini": a RAM disk with only open, read and write ------------------- */

struct mini {
	unsigned char *data;
	uint64_t size;
	unsigned writes;
	int eagain_left;         /* return -EAGAIN this many times first */
	int fail_errno;          /* fail every read with this errno */
	bool zeroes_unsupported; /* write_zeroes answers NOT_SUPPORTED */
};

static int mini_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"size", "sector-size",        "eagain", "fail",
	                                   "key",  "zeroes-unsupported", NULL};
	uint64_t size = 1 << 20, ss = 512, eagain = 0, fail = 0;
	bool zu = false;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_size(cfg, "size", &size) < 0 ||
	    vdisk_cfg_size(cfg, "sector-size", &ss) < 0 ||
	    vdisk_cfg_uint(cfg, "eagain", &eagain) < 0 || vdisk_cfg_uint(cfg, "fail", &fail) < 0 ||
	    vdisk_cfg_bool(cfg, "zeroes-unsupported", &zu) < 0)
		return -1;
	struct mini *m = calloc(1, sizeof *m);
	m->data = calloc(1, size);
	m->size = size;
	m->eagain_left = (int)eagain;
	m->fail_errno = (int)fail;
	m->zeroes_unsupported = zu;
	vdisk_set_priv(d, m);
	struct vdisk_meta *meta = vdisk_meta(d);
	meta->sector_size = (uint32_t)ss; /* validated by the core, not here */
	meta->sector_count = size / (ss ? ss : 512);
	meta->physical_sector_size = (uint32_t)ss;
	return 0;
}

static void mini_close(struct vdisk *d)
{
	struct mini *m = vdisk_priv(d);
	free(m->data);
	free(m);
}

static int mini_read(struct vdisk_req *r)
{
	struct mini *m = vdisk_priv(r->disk);
	if (m->eagain_left > 0) {
		m->eagain_left--;
		return -EAGAIN;
	}
	if (m->fail_errno)
		return -m->fail_errno;
	vdisk_iov_from_buf(r->iov, r->iovcnt, 0, m->data + r->sector * 512, r->len);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int mini_write(struct vdisk_req *r)
{
	struct mini *m = vdisk_priv(r->disk);
	vdisk_iov_to_buf(r->iov, r->iovcnt, 0, m->data + r->sector * 512, r->len);
	m->writes++;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int mini_write_zeroes(struct vdisk_req *r)
{
	vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
	return 0;
}

static const char *const mini_secrets[] = {"key", NULL};

static const struct vdisk_driver mini_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "mini",
    .description = "test: read and write only",
    .open = mini_open,
    .close = mini_close,
    .read = mini_read,
    .write = mini_write,
    .secret_keys = mini_secrets,
};

static const struct vdisk_driver mininz_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "mininz",
    .description = "test: write-zeroes that is never possible",
    .open = mini_open,
    .close = mini_close,
    .read = mini_read,
    .write = mini_write,
    .write_zeroes = mini_write_zeroes,
};

/* ---- "pass": a decorator that forwards everything ------------------------ */

static int pass_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", NULL};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	struct vdisk *inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!inner)
		return -1;
	vdisk_set_priv(d, inner);
	vdisk_meta_inherit(d, inner);
	return 0;
}

static int pass_fwd(struct vdisk_req *r)
{
	return vdisk_req_forward(r, vdisk_priv(r->disk));
}

static const struct vdisk_driver pass_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "pass",
    .description = "test: pass-through decorator",
    .open = pass_open,
    .read = pass_fwd,
    .write = pass_fwd,
    .flush = pass_fwd,
    .unmap = pass_fwd,
    .write_zeroes = pass_fwd,
    .extents = pass_fwd,
};

/* ---- "slow": reads done on the worker pool -------------------------------- */

static pthread_t queue_thread;
static bool wrong_thread;

static vdisk_status slow_work(struct vdisk_req *r)
{
	struct mini *m = vdisk_priv(r->disk);
	if (pthread_equal(pthread_self(), queue_thread))
		wrong_thread = true; /* the work must not run on the queue's thread */
	usleep(2000);
	vdisk_iov_from_buf(r->iov, r->iovcnt, 0, m->data + r->sector * 512, r->len);
	return vdisk_status_ok();
}

static int slow_read(struct vdisk_req *r)
{
	return vdisk_offload(r, slow_work);
}

static const struct vdisk_driver slow_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "slow",
    .description = "test: reads on the worker pool",
    .open = mini_open,
    .close = mini_close,
    .read = slow_read,
    .write = mini_write,
};

/* ---- "broken": breaks the completion contract on purpose ----------------- */

static int broken_read(struct vdisk_req *r)
{
	/* completes twice */
	vdisk_req_complete(r, vdisk_status_ok());
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int broken_write(struct vdisk_req *r)
{
	/* completes, then says it failed */
	vdisk_req_complete(r, vdisk_status_ok());
	return -EIO;
}

/* extent lists that break the contract, chosen by the request's sector */
static int broken_extents(struct vdisk_req *r)
{
	struct vdisk_extent *e = r->ext;
	uint64_t s = r->sector;
	unsigned n = 1;
	e[0] = (struct vdisk_extent){.sector = s, .count = r->count};
	switch (s) {
	case 0: e[0].sector = s + 1; break;       /* not from the request's sector */
	case 1: e[0].count = 0; break;            /* empty */
	case 2: e[0].count = r->count + 1; break; /* past the range */
	case 3: n = 0; break;                     /* nothing for a non-empty range */
	case 4:
		e[0].count = 1, e[1] = (struct vdisk_extent){.sector = s + 2, .count = 1}, n = 2;
		break;                     /* a gap */
	case 5: n = r->ext_max + 1; break; /* more than the array holds */
	default: break;                    /* right */
	}
	*r->ext_n = n;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static const struct vdisk_driver broken_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "broken",
    .description = "test: violates the completion contract",
    .open = mini_open,
    .close = mini_close,
    .read = broken_read,
    .write = broken_write,
    .extents = broken_extents,
};

static int setup_drivers(void **state)
{
	(void)state;
	static bool done;
	if (!done) {
		assert_int_equal(vdisk_register_driver(&mini_driver), 0);
		assert_int_equal(vdisk_register_driver(&mininz_driver), 0);
		assert_int_equal(vdisk_register_driver(&pass_driver), 0);
		assert_int_equal(vdisk_register_driver(&broken_driver), 0);
		assert_int_equal(vdisk_register_driver(&slow_driver), 0);
		done = true;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */

static void test_register_twice_fails(void **state)
{
	(void)state;
	assert_int_equal(vdisk_register_driver(&mini_driver), -1);
	assert_non_null(strstr(vdisk_errmsg(), "already exists"));
}

static void test_write_zeroes_emulated(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("mini:size=4M", 0);
	struct mini *m = vdisk_priv(d);
	assert_false(vdisk_caps(d) & VDISK_CAP_WRITE_ZEROES);
	memset(m->data, 0xEE, m->size);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	/* 3 MiB: more than one chunk of the emulation */
	assert_int_equal(tu_write_zeroes(q, 8, 6144, 0).kind, VDISK_OK);
	for (uint64_t i = 8 * 512; i < (8 + 6144) * 512; i++)
		if (m->data[i])
			fail_msg("byte %llu not zeroed", (unsigned long long)i);
	assert_int_equal(m->data[8 * 512 - 1], 0xEE);
	assert_int_equal(m->data[(8 + 6144) * 512], 0xEE);
	assert_true(m->writes >= 3);
	/* fast-only cannot be honoured by writing zeros */
	vdisk_status st = tu_write_zeroes(q, 0, 8, VDISK_ZERO_FAST_ONLY);
	assert_int_equal(st.kind, VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(m->data[0], 0xEE);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_write_zeroes_fallback(void **state)
{
	(void)state;
	/* a native write-zeroes answering not-supported falls back to writing zeros */
	struct vdisk *d = tu_open("mininz:size=1M", 0);
	struct mini *m = vdisk_priv(d);
	memset(m->data, 0xEE, m->size);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_write_zeroes(q, 1, 2, 0).kind, VDISK_OK);
	assert_int_equal(m->data[512], 0);
	assert_int_equal(m->data[3 * 512 - 1], 0);
	assert_int_equal(m->data[3 * 512], 0xEE);
	assert_int_equal(tu_write_zeroes(q, 5, 1, VDISK_ZERO_FAST_ONLY).kind,
	                 VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(m->data[5 * 512], 0xEE);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_defaults(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("mini:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct vdisk_extent e[2];
	unsigned n = 0;
	assert_int_equal(tu_extents(q, 10, 100, e, 2, &n).kind, VDISK_OK);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].sector, 10);
	assert_int_equal(e[0].count, 100);
	assert_int_equal(e[0].flags, 0);
	assert_int_equal(tu_flush(q).kind, VDISK_OK);
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_UNSPECIFIED);
	assert_int_equal(tu_unmap(q, 0, 1).kind, VDISK_OK);
	assert_int_equal(vdisk_optimal_unmap_sectors(d), 1);
	assert_int_equal(vdisk_physical_sector_size(d), 512);
	assert_false(vdisk_caps(d) & VDISK_CAP_EJECT);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static bool ej_done;
static vdisk_status ej_st;
static void ej_cb(void *o, vdisk_status st)
{
	(void)o;
	ej_done = true;
	ej_st = st;
}

static void test_eject_unsupported(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("mini:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_int_equal(vdisk_eject(q, ej_cb, NULL), 0);
	while (!ej_done)
		vdisk_queue_wait(q, -1);
	assert_int_equal(ej_st.kind, VDISK_ERR_UNSUPPORTED_EJECT);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

struct rctx {
	int *done;
	vdisk_status *st;
};

static void rcb(void *o, vdisk_status st)
{
	struct rctx *c = o;
	*c->st = st;
	(*c->done)++;
}

static void test_backpressure_is_retried(void **state)
{
	(void)state;
	/* the driver refuses 50 times with -EAGAIN; 8 reads in flight all succeed */
	struct vdisk *d = tu_open("mini:size=1M,eagain=50", 0);
	struct mini *m = vdisk_priv(d);
	memset(m->data, 0x42, m->size);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(8 * 512);
	int done = 0;
	vdisk_status sts[8];
	struct iovec iov[8];
	struct rctx cx[8];
	for (int i = 0; i < 8; i++) {
		iov[i] = (struct iovec){buf + i * 512, 512};
		cx[i] = (struct rctx){&done, &sts[i]};
		assert_int_equal(vdisk_readv(q, (uint64_t)i, &iov[i], 1, rcb, &cx[i]), 0);
	}
	for (int spins = 0; done < 8 && spins < 1000; spins++)
		vdisk_queue_poll(q);
	assert_int_equal(done, 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(sts[i].kind, VDISK_OK);
	assert_int_equal(buf[7 * 512], 0x42);
	assert_int_equal(m->eagain_left, 0);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

struct tcb {
	int n;
	bool on_queue_thread;
};

static void tcb_fn(void *o, vdisk_status st)
{
	struct tcb *t = o;
	assert_int_equal(st.kind, VDISK_OK);
	t->n++;
	t->on_queue_thread = pthread_equal(pthread_self(), queue_thread);
}

static void test_offload_completes_on_queue(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("slow:size=1M", 0);
	struct mini *m = vdisk_priv(d);
	memset(m->data, 0x61, m->size);
	queue_thread = pthread_self();
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(16 * 512);
	struct iovec iov[16];
	struct tcb t = {0};
	for (int i = 0; i < 16; i++) {
		iov[i] = (struct iovec){buf + i * 512, 512};
		assert_int_equal(vdisk_readv(q, (uint64_t)i, &iov[i], 1, tcb_fn, &t), 0);
	}
	/* blocking waits wake on completions from the pool */
	while (t.n < 16)
		assert_true(vdisk_queue_wait(q, 5000000000) > 0);
	assert_true(t.on_queue_thread);
	assert_false(wrong_thread);
	assert_int_equal(buf[15 * 512], 0x61);
	/* and so does the event-loop descriptor */
	int fd = vdisk_queue_fd(q);
	assert_int_equal(vdisk_readv(q, 0, &iov[0], 1, tcb_fn, &t), 0);
	struct pollfd p = {.fd = fd, .events = POLLIN};
	while (t.n < 17) {
		assert_int_equal(poll(&p, 1, 5000), 1);
		vdisk_queue_poll(q);
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	free(buf);
}

static void test_error_return_becomes_status(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("mini:size=1M,fail=28", 0); /* ENOSPC */
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	vdisk_status st = tu_read(q, 0, buf, 512);
	assert_int_equal(st.kind, VDISK_ERR_IO);
	assert_int_equal(st.errnum, ENOSPC);
	char msg[128];
	assert_non_null(strstr(vdisk_status_str(st, msg, sizeof msg), "ENOSPC"));
	assert_int_equal(vdisk_status_errno(st), ENOSPC);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_metadata_validated(void **state)
{
	(void)state;
	assert_null(vdisk_open("mini:size=1M,sector-size=1000", 0));
	assert_non_null(strstr(vdisk_errmsg(), "sector size 1000 is not a power of two"));
	assert_null(vdisk_open("mini:size=1M,sector-size=256", 0));
	assert_non_null(strstr(vdisk_errmsg(), "mini"));
	assert_null(vdisk_open("mini:size=1M,bogus=2", 0));
	assert_non_null(strstr(vdisk_errmsg(), "unknown key 'bogus'"));
}

static void test_decorator_conformance(void **state)
{
	(void)state;
	/* a decorator made only of vdisk_req_forward passes the whole suite, and
	 * its wait-for-resize follows the inner disk (inherit) */
	assert_int_equal(vdisk_conformance("{\"type\":\"pass\",\"inner\":\"ram:size=2M\"}", 0), 0);
	assert_int_equal(
	    vdisk_conformance("{\"type\":\"pass\",\"inner\":{\"type\":\"pass\",\"inner\":"
	                      "\"file:path=@TMP@/p.img,create=2M\"}}",
	                      0),
	    0);
}

static void test_child_error_names_path(void **state)
{
	(void)state;
	assert_null(vdisk_open("{\"type\":\"pass\",\"inner\":{\"type\":\"pass\",\"inner\":"
	                       "{\"type\":\"ram\"}}}",
	                       0));
	assert_non_null(strstr(vdisk_errmsg(), "inner.inner ram: size: required"));
	assert_null(vdisk_open("{\"type\":\"pass\"}", 0));
	assert_non_null(strstr(vdisk_errmsg(), "inner: missing"));
}

static void test_secrets_redacted(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("{\"type\":\"mini\",\"key\":\"s3cr3t-value\",\"id\":\"m\"}", 0);
	char *s = vdisk_inspect(d, VDISK_INSPECT_STATS | VDISK_INSPECT_PRETTY);
	assert_non_null(s);
	assert_null(strstr(s, "s3cr3t-value"));
	assert_non_null(strstr(s, "\"***\""));
	free(s);
	struct vdisk *m = vdisk_find(d, "m");
	assert_ptr_equal(m, d);
	vdisk_unref(m);
	assert_null(vdisk_find(d, "nope"));
	assert_non_null(strstr(vdisk_errmsg(), "no layer has id 'nope'"));
	assert_int_equal(vdisk_ctl(d, "crash", NULL, NULL), -1);
	assert_non_null(strstr(vdisk_errmsg(), "no control operations"));
	vdisk_unref(d);
}

static void test_queue_on_inner_layer(void **state)
{
	(void)state;
	/* I/O on a layer found by id bypasses the layers above it: here a write
	 * below a fault layer that fails every write */
	struct vdisk *d =
	    tu_open("{\"type\":\"pass\",\"inner\":{\"type\":\"mininz\",\"size\":\"1M\","
	            "\"id\":\"m\"}}",
	            0);
	struct vdisk *m = vdisk_find(d, "m");
	assert_non_null(m);
	assert_string_equal(vdisk_type(m), "mininz");
	struct vdisk_queue *q = vdisk_queue_create(m, NULL);
	assert_non_null(q);
	unsigned char buf[512];
	memset(buf, 0x4D, sizeof buf);
	assert_int_equal(tu_write(q, 3, buf, sizeof buf, 0).kind, VDISK_OK);
	vdisk_queue_destroy(q);
	struct mini *mm = vdisk_priv(m);
	assert_int_equal(mm->writes, 1);
	/* the synchronous API on the layer goes to the layer too */
	memset(buf, 0, sizeof buf);
	assert_int_equal(vdisk_pread(m, buf, sizeof buf, 3 * 512).kind, VDISK_OK);
	assert_int_equal(buf[0], 0x4D);
	assert_int_equal(vdisk_pwrite(m, buf, 10, 7, 0).kind, VDISK_OK);
	assert_int_equal(mm->writes, 2);
	/* and reads through the top see it */
	assert_int_equal(vdisk_pread(d, buf, sizeof buf, 3 * 512).kind, VDISK_OK);
	assert_int_equal(buf[0], 0x4D);
	vdisk_unref(m);
	/* sync queues left on the layer are cleaned up with the stack */
	vdisk_unref(d);
}

/* Run fn in a child process; it must die of SIGABRT with `text` on stderr. */
static void expect_abort(void (*fn)(void), const char *text)
{
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		fn();
		_exit(0);
	}
	close(pipefd[1]);
	char out[4096] = "";
	size_t got = 0;
	ssize_t n;
	while ((n = read(pipefd[0], out + got, sizeof out - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(pipefd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
		fail_msg("expected SIGABRT, got status %#x; stderr: %s", status, out);
	if (!strstr(out, text))
		fail_msg("stderr lacks '%s': %s", text, out);
}

static void do_double_completion(void)
{
	struct vdisk *d = vdisk_open("broken:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512];
	tu_read(q, 0, buf, 512);
}

static void do_complete_then_error(void)
{
	struct vdisk *d = vdisk_open("broken:size=1M", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char buf[512] = {0};
	tu_write(q, 0, buf, 512, 0);
}

static void do_extents_overrun(void)
{
	struct vdisk *d = vdisk_open("broken:size=1M", 0);
	struct vdisk_extent e[4];
	unsigned n;
	vdisk_extents_sync(d, 5, 8, e, 2, &n);
}

static void test_broken_driver_caught(void **state)
{
	(void)state;
	expect_abort(do_double_completion, "completed twice");
	expect_abort(do_complete_then_error, "returned -5 after completing the request");
	expect_abort(do_extents_overrun, "3 extents returned for an array of 2");
	/* a malformed extent list never reaches the caller: an I/O error instead */
	struct vdisk *d = tu_open("broken:size=1M", 0);
	struct vdisk_extent e[4];
	unsigned n;
	for (uint64_t s = 0; s <= 4; s++) {
		vdisk_status st = vdisk_extents_sync(d, s, 8, e, 4, &n);
		assert_int_equal(st.kind, VDISK_ERR_IO);
		assert_int_equal(st.errnum, EIO);
	}
	assert_true(vdisk_ok(vdisk_extents_sync(d, 6, 8, e, 4, &n)));
	assert_int_equal(n, 1);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_register_twice_fails),
	    cmocka_unit_test(test_write_zeroes_emulated),
	    cmocka_unit_test(test_write_zeroes_fallback),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_eject_unsupported),
	    cmocka_unit_test(test_backpressure_is_retried),
	    cmocka_unit_test(test_error_return_becomes_status),
	    cmocka_unit_test(test_offload_completes_on_queue),
	    cmocka_unit_test(test_metadata_validated),
	    cmocka_unit_test(test_decorator_conformance),
	    cmocka_unit_test(test_child_error_names_path),
	    cmocka_unit_test(test_secrets_redacted),
	    cmocka_unit_test(test_queue_on_inner_layer),
	    cmocka_unit_test(test_broken_driver_caught),
	};
	return cmocka_run_group_tests(tests, setup_drivers, NULL);
}
