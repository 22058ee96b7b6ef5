/* The queue's io_uring: one ring per queue, shared by every layer of the stack
 * that does kernel I/O, created on first use.  SQEs are batched: they go to the
 * kernel at the end of a poll, of a submit call made outside a callback, or of a
 * plug section. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "internal.h"

#define RING_ENTRIES 256
#define FIXED_FILES 64
#define REAP_BATCH 64

VD_EXPORT struct io_uring *vdisk_queue_uring(struct vdisk_queue *q)
{
	if (q->ring_ready)
		return &q->ring;
	if (q->ring_failed) {
		vdisk_set_error("io_uring is not available");
		return NULL;
	}
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	p.flags = IORING_SETUP_CLAMP;
	int rc = io_uring_queue_init_params(RING_ENTRIES, &q->ring, &p);
	if (rc < 0) {
		q->ring_failed = true;
		vdisk_set_error_errno(-rc, "io_uring_queue_init");
		return NULL;
	}
	q->ring_ready = true;
	q->fixed_files_used = calloc(FIXED_FILES, 1);
	if (q->fixed_files_used && io_uring_register_files_sparse(&q->ring, FIXED_FILES) == 0)
		q->nfixed = FIXED_FILES;
	if (q->epfd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN};
		ev.data.fd = q->ring.ring_fd;
		epoll_ctl(q->epfd, EPOLL_CTL_ADD, q->ring.ring_fd, &ev);
	}
	return &q->ring;
}

VD_EXPORT struct io_uring_sqe *vdisk_uring_sqe(struct vdisk_queue *q, struct vdisk_uring_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	if (!sqe) {
		vd_uring_flush(q);
		sqe = io_uring_get_sqe(&q->ring);
		if (!sqe)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	q->sq_pending++;
	q->ring_inflight++;
	return sqe;
}

VD_EXPORT int vdisk_uring_register_fd(struct vdisk_queue *q, int fd)
{
	for (unsigned i = 0; i < q->nfixed; i++) {
		if (q->fixed_files_used[i])
			continue;
		if (io_uring_register_files_update(&q->ring, i, &fd, 1) != 1)
			return -1;
		q->fixed_files_used[i] = 1;
		return (int)i;
	}
	return -1;
}

VD_EXPORT void vdisk_uring_unregister_fd(struct vdisk_queue *q, int index)
{
	if (index < 0 || (unsigned)index >= q->nfixed || !q->fixed_files_used[index])
		return;
	int none = -1;
	io_uring_register_files_update(&q->ring, (unsigned)index, &none, 1);
	q->fixed_files_used[index] = 0;
}

int vd_uring_flush(struct vdisk_queue *q)
{
	if (!q->sq_pending)
		return 0;
	int rc = io_uring_submit(&q->ring);
	if (rc > 0)
		q->sq_pending = (unsigned)rc >= q->sq_pending ? 0 : q->sq_pending - (unsigned)rc;
	else if (rc == 0)
		q->sq_pending = io_uring_sq_ready(&q->ring);
	/* -EBUSY / -EAGAIN: completions must be reaped first; they stay queued */
	return rc;
}

/* Completions beyond the size of the completion ring wait in the kernel's
 * overflow list until a system call asks for events; reading the ring alone
 * never sees them, while the ring's descriptor stays readable.  So once the
 * ring is empty, an overflow is flushed into it, as long as that brings some. */
int vd_uring_reap(struct vdisk_queue *q)
{
	struct vdisk_uring_op *ops[REAP_BATCH];
	int res[REAP_BATCH];
	int total = 0;
	bool got = true; /* since the last flush of the overflow */
	for (;;) {
		unsigned head, n = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe (&q->ring, head, cqe) {
			ops[n] = io_uring_cqe_get_data(cqe);
			res[n] = cqe->res;
			if (++n == REAP_BATCH)
				break;
		}
		if (n) {
			io_uring_cq_advance(&q->ring, n);
			q->ring_inflight -= n;
			for (unsigned i = 0; i < n; i++)
				ops[i]->cb(ops[i], res[i]);
			total += (int)n;
			got = true;
			if (n == REAP_BATCH)
				continue;
		}
		if (!got || !io_uring_cq_has_overflow(&q->ring) ||
		    io_uring_get_events(&q->ring) < 0)
			break;
		got = false;
	}
	return total;
}

void vd_uring_fini(struct vdisk_queue *q)
{
	if (q->ring_ready) {
		if (q->ring_inflight)
			vd_bug("vdisk_queue_destroy: %u kernel requests still in flight",
			       q->ring_inflight);
		io_uring_queue_exit(&q->ring);
		q->ring_ready = false;
	}
	free(q->fixed_files_used);
	q->fixed_files_used = NULL;
}
