/* The queue's services for drivers that are told of completions by something
 * other than io_uring: descriptors watched from the queue (vdisk_watch_*) and
 * completions handed back from another thread (vdisk_req_complete_remote).
 * Test drivers registered at run time use each, through the blocking wait,
 * the event-loop descriptor and plain polling. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define SECTORS 64

/* Every sector reads as its own number in each byte (mod 256). */
static void fill(struct vdisk_req *r)
{
	for (uint64_t i = 0; i < r->count; i++) {
		unsigned char b[512];
		memset(b, (int)((r->sector + i) & 0xff), sizeof b);
		vdisk_iov_from_buf(r->iov, r->iovcnt, i * 512, b, sizeof b);
	}
}

static int small_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {NULL};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = m->physical_sector_size = 512;
	m->sector_count = SECTORS;
	m->read_only = true;
	return 0;
}

/* ---- "sockdisk": a read is a message to a server thread over a socketpair;
 * its answer, a millisecond later, is taken by a watch on the queue's end ---- */

struct sockq {
	int fd[2]; /* the queue's end, the server's end */
	pthread_t server;
	struct vdisk_watch w;
};

static void *sock_server(void *arg)
{
	struct sockq *s = arg;
	struct vdisk_req *r;
	while (read(s->fd[1], &r, sizeof r) == (ssize_t)sizeof r) {
		usleep(1000);
		if (write(s->fd[1], &r, sizeof r) != (ssize_t)sizeof r)
			break;
	}
	return NULL;
}

static void sock_ready(struct vdisk_watch *w, unsigned revents)
{
	struct sockq *s = (struct sockq *)((char *)w - offsetof(struct sockq, w));
	struct vdisk_req *r;
	while (read(s->fd[0], &r, sizeof r) == (ssize_t)sizeof r) {
		fill(r);
		vdisk_req_complete(r, vdisk_status_ok());
	}
}

static int sock_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	struct sockq *s = calloc(1, sizeof *s);
	if (!s || socketpair(AF_UNIX, SOCK_STREAM, 0, s->fd) < 0) {
		free(s);
		return vdisk_set_error("sockdisk: socketpair");
	}
	if (fcntl(s->fd[0], F_SETFL, O_NONBLOCK) < 0 ||
	    pthread_create(&s->server, NULL, sock_server, s) != 0) {
		close(s->fd[0]);
		close(s->fd[1]);
		free(s);
		return vdisk_set_error("sockdisk: server");
	}
	int rc = vdisk_watch_start(q, &s->w, s->fd[0], POLLIN, sock_ready);
	if (rc < 0) {
		shutdown(s->fd[0], SHUT_RDWR);
		pthread_join(s->server, NULL);
		close(s->fd[0]);
		close(s->fd[1]);
		free(s);
		return vdisk_set_error_errno(-rc, "sockdisk: watch");
	}
	*qstate = s;
	return 0;
}

static void sock_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	struct sockq *s = qstate;
	vdisk_watch_stop(q, &s->w);
	shutdown(s->fd[0], SHUT_RDWR);
	pthread_join(s->server, NULL);
	close(s->fd[0]);
	close(s->fd[1]);
	free(s);
}

static int sock_read(struct vdisk_req *r)
{
	struct sockq *s = vdisk_req_qstate(r);
	if (write(s->fd[0], &r, sizeof r) != (ssize_t)sizeof r)
		return -EIO;
	return 0;
}

static const struct vdisk_driver sock_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "sockdisk",
    .open = small_open,
    .queue_init = sock_queue_init,
    .queue_fini = sock_queue_fini,
    .read = sock_read,
};

/* ---- "thrdisk": each read is completed by a thread of its own ---------------- */

static void *thr_main(void *arg)
{
	struct vdisk_req *r = arg;
	usleep(2000);
	fill(r);
	vdisk_req_complete_remote(r, vdisk_status_ok());
	return NULL;
}

static int thr_read(struct vdisk_req *r)
{
	pthread_t t;
	vdisk_req_remote_begin(r);
	if (pthread_create(&t, NULL, thr_main, r) != 0)
		vdisk_req_complete_remote(r, vdisk_status_io(EAGAIN)); /* counted as a failure */
	else
		pthread_detach(t);
	return 0;
}

static const struct vdisk_driver thr_driver = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "thrdisk",
    .open = small_open,
    .read = thr_read,
};

static int setup(void **state)
{
	static bool done;
	if (!done) {
		assert_int_equal(vdisk_register_driver(&sock_driver), 0);
		assert_int_equal(vdisk_register_driver(&thr_driver), 0);
		done = true;
	}
	return 0;
}

struct counter {
	unsigned ok, failed;
};

static void count_cb(void *opaque, vdisk_status st)
{
	struct counter *c = opaque;
	if (st.kind == VDISK_OK)
		c->ok++;
	else
		c->failed++;
}

/* Submit a read of every sector, each into its own buffer. */
static void submit_all(struct vdisk_queue *q, unsigned char (*bufs)[512], struct iovec *iov,
                       struct counter *c)
{
	for (unsigned i = 0; i < SECTORS; i++) {
		memset(bufs[i], 0xee, 512);
		iov[i] = (struct iovec){bufs[i], 512};
		assert_int_equal(vdisk_readv(q, i, &iov[i], 1, count_cb, c), 0);
	}
}

static void check_all(unsigned char (*bufs)[512], const struct counter *c)
{
	assert_int_equal(c->ok, SECTORS);
	assert_int_equal(c->failed, 0);
	for (unsigned i = 0; i < SECTORS; i++)
		for (unsigned b = 0; b < 512; b++)
			assert_int_equal(bufs[i][b], i & 0xff);
}

static void run_blocking(const char *spec)
{
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	static unsigned char bufs[SECTORS][512];
	struct iovec iov[SECTORS];
	struct counter c = {0};
	submit_all(q, bufs, iov, &c);
	/* The answers take about 64 ms in all.  A wait that does not wake for
	 * them sleeps its whole 30 s timeout each time: bound the total far
	 * below that and far above any load. */
	uint64_t t0 = vdisk_now_ns();
	while (vdisk_queue_inflight(q))
		assert_true(vdisk_queue_wait(q, 30ll * 1000000000) >= 0);
	assert_true(vdisk_now_ns() - t0 < 15ull * 1000000000);
	check_all(bufs, &c);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void watch_blocking_wait(void **state)
{
	run_blocking("sockdisk:");
}

static void remote_blocking_wait(void **state)
{
	run_blocking("thrdisk:");
}

/* An event loop sleeps in epoll on vdisk_queue_fd() and must wake for what the
 * watched descriptor or the other thread delivers. */
static void run_event_loop(const char *spec)
{
	struct vdisk *d = tu_open(spec, 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	int qfd = vdisk_queue_fd(q);
	assert_true(qfd >= 0);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN};
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, qfd, &ev), 0);
	static unsigned char bufs[SECTORS][512];
	struct iovec iov[SECTORS];
	struct counter c = {0};
	submit_all(q, bufs, iov, &c);
	unsigned sleeps = 0;
	while (vdisk_queue_inflight(q)) {
		int n = epoll_wait(ep, &ev, 1, 10000);
		assert_true(n == 1); /* a timeout here is a lost wake-up */
		sleeps++;
		vdisk_queue_poll(q);
	}
	assert_true(sleeps >= 1);
	check_all(bufs, &c);
	close(ep);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void watch_event_loop(void **state)
{
	run_event_loop("sockdisk:");
}

static void remote_event_loop(void **state)
{
	run_event_loop("thrdisk:");
}

/* Two watches ready at once; the first to run stops and frees the other (as a
 * driver tearing down a connection does).  Under AddressSanitizer a use of the
 * freed watch fails the test. */
struct pairw {
	struct vdisk_watch w;
	struct pairw *other;
	struct vdisk_queue *q;
	int fd[2];
	unsigned *runs;
};

static struct pairw *pair_survivor;

static void pair_ready(struct vdisk_watch *w, unsigned revents)
{
	struct pairw *p = (struct pairw *)w;
	(*p->runs)++;
	pair_survivor = p;
	if (p->other) {
		vdisk_watch_stop(p->q, &p->other->w);
		close(p->other->fd[0]);
		close(p->other->fd[1]);
		free(p->other);
		p->other = NULL;
	}
	vdisk_watch_stop(p->q, &p->w);
}

static void watch_stop_other_in_callback(void **state)
{
	struct vdisk *d = tu_open("sockdisk:", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_non_null(q);
	unsigned runs = 0;
	struct pairw *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a->fd), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b->fd), 0);
	a->q = b->q = q;
	a->runs = b->runs = &runs;
	a->other = b;
	b->other = a;
	assert_int_equal(vdisk_watch_start(q, &a->w, a->fd[1], POLLIN, pair_ready), 0);
	assert_int_equal(vdisk_watch_start(q, &b->w, b->fd[1], POLLIN, pair_ready), 0);
	assert_int_equal(write(a->fd[0], "x", 1), 1);
	assert_int_equal(write(b->fd[0], "x", 1), 1);
	vdisk_queue_poll(q);
	assert_int_equal(runs, 1); /* the second one was stopped before its turn */
	struct pairw *left = pair_survivor;
	assert_non_null(left);
	close(left->fd[0]);
	close(left->fd[1]);
	free(left);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

/* POLLOUT is reported when asked for, and modify takes it away again. */
static void outw_ready(struct vdisk_watch *w, unsigned revents)
{
	unsigned *seen = (unsigned *)((char *)w + sizeof *w);
	*seen |= revents;
}

static void watch_modify_events(void **state)
{
	struct vdisk *d = tu_open("sockdisk:", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	struct {
		struct vdisk_watch w;
		unsigned seen;
	} o = {0};
	int fd[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
	assert_int_equal(vdisk_watch_start(q, &o.w, fd[1], POLLIN, outw_ready), 0);
	vdisk_queue_poll(q);
	assert_int_equal(o.seen, 0);
	assert_int_equal(vdisk_watch_modify(q, &o.w, POLLIN | POLLOUT), 0);
	vdisk_queue_poll(q);
	assert_true(o.seen & POLLOUT);
	assert_false(o.seen & POLLIN);
	o.seen = 0;
	assert_int_equal(vdisk_watch_modify(q, &o.w, POLLIN), 0);
	close(fd[0]);
	vdisk_queue_poll(q);
	assert_true(o.seen & POLLHUP);
	assert_false(o.seen & POLLOUT);
	vdisk_watch_stop(q, &o.w);
	assert_int_equal(o.w.fd, -1);
	close(fd[1]);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(watch_blocking_wait, setup),
	    cmocka_unit_test_setup(remote_blocking_wait, setup),
	    cmocka_unit_test_setup(watch_event_loop, setup),
	    cmocka_unit_test_setup(remote_event_loop, setup),
	    cmocka_unit_test_setup(watch_stop_other_in_callback, setup),
	    cmocka_unit_test_setup(watch_modify_events, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
