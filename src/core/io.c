/* The data path: request pools, validation, dispatch to drivers, completion and
 * delivery, child requests, and the core's emulations of optional operations.
 *
 * A request's life: vd_req_get (PREP) -> vd_submit validates and hands it to
 * the driver (SUBMITTED) -> the driver completes it (DONE, appended to the
 * queue's done list) -> vdisk_queue_poll delivers it (callback, then FREE).
 * Completions are never delivered inside a submit call, so a callback never
 * runs on a stack that is still inside a driver. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define POOL_SLAB 32
#define ZERO_CHUNK (1u << 20)

static const unsigned char zero_buf[ZERO_CHUNK] __attribute__((aligned(4096)));

/* ------------------------------------------------------------------------- */
/* Pools: one per (queue, layer), sized for that layer's context at build time. */
/* ------------------------------------------------------------------------- */

static int pool_grow(struct vd_pool *p, uint16_t index)
{
	size_t hdr = 64;
	unsigned char *slab = aligned_alloc(64, hdr + POOL_SLAB * p->req_size);
	if (!slab)
		return -1;
	*(void **)slab = p->slabs;
	p->slabs = slab;
	for (int i = POOL_SLAB - 1; i >= 0; i--) {
		struct vdisk_req *r = (struct vdisk_req *)(slab + hdr + (size_t)i * p->req_size);
		r->internal.state = VD_REQ_FREE;
		r->internal.pool = index;
		r->internal.next = p->free;
		p->free = r;
	}
	return 0;
}

/* Grow layer index's pool of q until it holds at least n requests, so that n
 * requests in flight at once allocate nothing (vdisk_queue_opts.depth). */
int vd_pool_reserve(struct vdisk_queue *q, unsigned index, unsigned n)
{
	struct vd_pool *p = &q->pools[index];
	for (unsigned have = 0; have < n; have += POOL_SLAB)
		if (pool_grow(p, (uint16_t)index) < 0)
			return -1;
	return 0;
}

void vd_pool_free_all(struct vd_pool *p)
{
	while (p->slabs) {
		void *next = *(void **)p->slabs;
		free(p->slabs);
		p->slabs = next;
	}
	p->free = NULL;
}

struct vdisk_req *vd_req_get(struct vdisk_queue *q, struct vdisk *d)
{
	struct vd_pool *p = &q->pools[d->index];
	struct vdisk_req *r = p->free;
	if (VD_UNLIKELY(!r)) {
		if (pool_grow(p, (uint16_t)d->index) < 0)
			return NULL;
		r = p->free;
	}
	p->free = r->internal.next;
	r->disk = d;
	r->q = q;
	r->qstate = q->qstate[d->index];
	r->sector = 0;
	r->count = 0;
	r->len = 0;
	r->iov = NULL;
	r->iovcnt = 0;
	r->flags = 0;
	r->ext = NULL;
	r->ext_max = 0;
	r->ext_n = NULL;
	r->internal.state = VD_REQ_PREP;
	r->internal.origin = VD_ORIGIN_CHILD;
	r->internal.emul = 0;
	r->done = NULL;
	r->opaque = NULL;
	r->internal.user_done = NULL;
	r->internal.next = NULL;
	r->internal.scratch = NULL;
	return r;
}

/* Guest-mode iovec arrays: small ones from a per-queue free list. */
struct iovblk {
	struct iovblk *next;
	int cap;
	struct iovec iov[];
};
#define IOVBLK_SMALL 16

static struct iovblk *iovblk_get(struct vdisk_queue *q, int need)
{
	struct iovblk *b;
	if (need <= IOVBLK_SMALL && q->iov_blocks) {
		b = q->iov_blocks;
		q->iov_blocks = b->next;
		return b;
	}
	int cap = need <= IOVBLK_SMALL ? IOVBLK_SMALL : need;
	b = malloc(sizeof *b + (size_t)cap * sizeof(struct iovec));
	if (b)
		b->cap = cap;
	return b;
}

static void iovblk_put(struct vdisk_queue *q, struct iovblk *b)
{
	if (b->cap == IOVBLK_SMALL) {
		b->next = q->iov_blocks;
		q->iov_blocks = b;
	} else {
		free(b);
	}
}

void vd_req_put(struct vdisk_req *r)
{
	struct vdisk_queue *q = r->q;
	struct vd_pool *p = &q->pools[r->internal.pool];
	if (r->internal.scratch) {
		iovblk_put(q, r->internal.scratch);
		r->internal.scratch = NULL;
	}
	r->internal.state = VD_REQ_FREE;
	r->internal.next = p->free;
	p->free = r;
}

/* ------------------------------------------------------------------------- */
/* Completion                                                                  */
/* ------------------------------------------------------------------------- */

static inline void done_push(struct vdisk_queue *q, struct vdisk_req *r)
{
	r->internal.next = NULL;
	*q->done_tail = r;
	q->done_tail = &r->internal.next;
}

static inline void finish(struct vdisk_req *r, vdisk_status st)
{
	struct vdisk_queue *q = r->q;
	r->internal.status = st;
	r->internal.state = VD_REQ_DONE;
	bool was_empty = q->done_head == NULL;
	done_push(q, r);
	if (VD_UNLIKELY(q->fd_used && was_empty && !q->in_poll))
		vd_queue_kick(q);
}

VD_EXPORT void vdisk_req_complete(struct vdisk_req *r, vdisk_status st)
{
	if (VD_UNLIKELY(r->internal.state != VD_REQ_SUBMITTED))
		vd_bug("%s: %s request completed %s (state %u)", r->disk->drv->name,
		       vdisk_op_name((enum vdisk_op)r->op),
		       r->internal.state == VD_REQ_DONE ? "twice" : "when not in flight",
		       r->internal.state);
	finish(r, st);
}

/* From any thread (worker pool, resize): hand r back to its queue. */
void vd_complete_remote(struct vdisk_req *r, vdisk_status st)
{
	struct vdisk_queue *q = r->q;
	if (VD_UNLIKELY(r->internal.state != VD_REQ_SUBMITTED &&
	                r->internal.state != VD_REQ_WAITING))
		vd_bug("%s: %s request completed twice (state %u)", r->disk->drv->name,
		       vdisk_op_name((enum vdisk_op)r->op), r->internal.state);
	r->internal.status = st;
	r->internal.state = VD_REQ_DONE;
	struct vdisk_req *head = atomic_load_explicit(&q->remote, memory_order_relaxed);
	do {
		r->internal.next = head;
	} while (!atomic_compare_exchange_weak_explicit(&q->remote, &head, r, memory_order_release,
	                                                memory_order_relaxed));
	if (!head)
		vd_queue_kick(q);
}

VD_EXPORT void vdisk_req_remote_begin(struct vdisk_req *r)
{
	if (VD_UNLIKELY(r->internal.state != VD_REQ_SUBMITTED))
		vd_bug("%s: %s request handed to another thread when not in flight (state %u)",
		       r->disk->drv->name, vdisk_op_name((enum vdisk_op)r->op), r->internal.state);
	r->q->remote_expected++;
}

VD_EXPORT void vdisk_req_complete_remote(struct vdisk_req *r, vdisk_status st)
{
	vd_complete_remote(r, st);
}

static unsigned hist_bucket(uint64_t ticks)
{
	unsigned b = ticks ? 64u - (unsigned)__builtin_clzll(ticks) : 0;
	return b < VD_HIST_BUCKETS ? b : VD_HIST_BUCKETS - 1;
}

static void write_zeroes_emulate(struct vdisk_req *r);

/* An extent list as the contract has it: at most max extents, contiguous from
 * the request's sector, none empty, inside the range, at least one for a
 * non-empty range.  More than max has already written past the caller's
 * array: a bug to stop at.  Any other flaw becomes an I/O error rather than a
 * wrong map for the caller (an NBD client, a converter skipping "holes"). */
static vdisk_status check_extents(struct vdisk_req *r)
{
	unsigned n = *r->ext_n;
	if (VD_UNLIKELY(n > r->ext_max))
		vd_bug("%s: extents: %u extents returned for an array of %u", r->disk->drv->name, n,
		       r->ext_max);
	uint64_t next = r->sector, end = r->sector + r->count;
	for (unsigned i = 0; i < n; i++) {
		const struct vdisk_extent *e = &r->ext[i];
		if (e->sector != next || e->count == 0 || e->count > end - next)
			goto bad;
		next += e->count;
	}
	if (n == 0 && r->count && r->ext_max)
		goto bad;
	return vdisk_status_ok();
bad:
	return vdisk_status_io(EIO);
}

void vd_deliver(struct vdisk_req *r)
{
	struct vdisk_queue *q = r->q;
	vdisk_status st = r->internal.status;
	unsigned op = r->op;

	/* a native write-zeroes that cannot do it: fall back to writing zeros */
	if (VD_UNLIKELY(op == VDISK_OP_WRITE_ZEROES && st.kind == VDISK_ERR_NOT_SUPPORTED &&
	                !(r->flags & VDISK_ZERO_FAST_ONLY) && !r->internal.emul)) {
		r->internal.state = VD_REQ_SUBMITTED;
		write_zeroes_emulate(r);
		return;
	}

	if (VD_UNLIKELY(op == VDISK_OP_EXTENTS) && st.kind == VDISK_OK)
		st = check_extents(r);

	struct vd_stats *s = &q->stats[r->internal.pool];
	uint64_t bytes = op <= VDISK_OP_WRITE ? r->len
	                 : (op == VDISK_OP_UNMAP || op == VDISK_OP_WRITE_ZEROES)
	                     ? r->count << r->disk->shift
	                     : 0;
	vd_stat_add(&s->ops[op], 1);
	vd_stat_add(&s->bytes[op], bytes);
	if (VD_UNLIKELY(st.kind != VDISK_OK))
		vd_stat_add(&s->errors[op], 1);
	vd_stat_add(&s->hist[op][hist_bucket(vd_ticks() - r->internal.t_start)], 1);

	if (r->internal.origin == VD_ORIGIN_USER) {
		vdisk_done_fn *done = r->internal.user_done;
		void *opaque = r->internal.user_opaque;
		vd_req_put(r);
		q->inflight--;
		q->ncomplete++;
		done(opaque, st);
	} else {
		r->done(r, st);
		vd_req_put(r);
	}
}

/* ------------------------------------------------------------------------- */
/* Validation and dispatch                                                     */
/* ------------------------------------------------------------------------- */

/* The contract of the core: representable, inside the disk, not a write to a
 * read-only disk, whole sectors. */
static inline vdisk_status validate(struct vdisk_req *r)
{
	struct vdisk *d = r->disk;
	uint64_t end;
	switch (r->op) {
	case VDISK_OP_READ:
	case VDISK_OP_WRITE:
		if (VD_UNLIKELY(r->len & (d->meta.sector_size - 1)))
			return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
		r->count = r->len >> d->shift;
		/* fall through */
	case VDISK_OP_UNMAP:
	case VDISK_OP_WRITE_ZEROES:
	case VDISK_OP_EXTENTS:
		if (VD_UNLIKELY(__builtin_add_overflow(r->sector, r->count, &end) ||
		                end > d->max_sector || end > vd_sector_count(d)))
			return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
		if (r->op != VDISK_OP_READ && r->op != VDISK_OP_EXTENTS &&
		    VD_UNLIKELY(d->meta.read_only))
			return vdisk_status_make(VDISK_ERR_READ_ONLY, 0);
		break;
	default: break;
	}
	return vdisk_status_ok();
}

static int emulate_extents(struct vdisk_req *r)
{
	if (r->count && r->ext_max) {
		r->ext[0].sector = r->sector;
		r->ext[0].count = r->count;
		r->ext[0].flags = 0;
		r->ext[0].reserved = 0;
		*r->ext_n = 1;
	} else {
		*r->ext_n = 0;
	}
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

static int dispatch(struct vdisk_req *r)
{
	const struct vdisk_driver *drv = r->disk->drv;
	struct vdisk_queue *q = r->q;
	int (*fn)(struct vdisk_req *) = NULL;
	int rc;

	r->internal.state = VD_REQ_SUBMITTED;
	switch (r->op) {
	case VDISK_OP_READ: fn = drv->read; break;
	case VDISK_OP_WRITE:
		fn = drv->write;
		if (!fn) {
			finish(r, vdisk_status_make(VDISK_ERR_READ_ONLY, 0));
			return 0;
		}
		break;
	case VDISK_OP_FLUSH: fn = drv->flush; break;
	case VDISK_OP_UNMAP:
		if (r->disk->meta.unmap == VDISK_UNMAP_IGNORED || r->count == 0)
			fn = NULL;
		else
			fn = drv->unmap;
		break;
	case VDISK_OP_WRITE_ZEROES:
		fn = drv->write_zeroes;
		if (!fn || r->count == 0) {
			if (r->count == 0)
				finish(r, vdisk_status_ok());
			else
				write_zeroes_emulate(r);
			return 0;
		}
		break;
	case VDISK_OP_EXTENTS: fn = drv->extents ? drv->extents : emulate_extents; break;
	case VDISK_OP_EJECT:
		fn = r->disk->meta.caps & VDISK_CAP_EJECT ? drv->eject : NULL;
		if (!fn) {
			finish(r, vdisk_status_make(VDISK_ERR_UNSUPPORTED_EJECT, 0));
			return 0;
		}
		break;
	default: vd_bug("dispatch: bad op %u", r->op);
	}
	if (!fn) {
		finish(r, vdisk_status_ok());
		return 0;
	}
	q->in_submit++;
	rc = fn(r);
	q->in_submit--;
	if (VD_LIKELY(rc == 0))
		return 0;
	if (VD_UNLIKELY(r->internal.state != VD_REQ_SUBMITTED))
		vd_bug("%s: %s returned %d after completing the request", drv->name,
		       vdisk_op_name((enum vdisk_op)r->op), rc);
	if (rc == -EAGAIN) {
		r->internal.state = VD_REQ_RETRY;
		r->internal.next = NULL;
		*q->retry_tail = r;
		q->retry_tail = &r->internal.next;
		/* retries happen in poll: an event loop must come to it even when
		 * nothing in flight will wake it */
		if (VD_UNLIKELY(q->fd_used && !q->in_poll))
			vd_queue_kick(q);
		return 0;
	}
	finish(r, vdisk_status_io(rc < 0 ? -rc : EIO));
	return 0;
}

int vd_submit(struct vdisk_req *r)
{
	r->internal.t_start = vd_ticks();
	vdisk_status st = validate(r);
	if (VD_UNLIKELY(st.kind != VDISK_OK)) {
		r->internal.state = VD_REQ_SUBMITTED;
		finish(r, st);
		return 0;
	}
	return dispatch(r);
}

/* Resubmit requests that met back-pressure, in order, until one meets it again. */
void vd_queue_retry(struct vdisk_queue *q)
{
	struct vdisk_req *list = q->retry_head;
	if (!list)
		return;
	q->retry_head = NULL;
	q->retry_tail = &q->retry_head;
	while (list) {
		struct vdisk_req *r = list;
		list = r->internal.next;
		r->internal.next = NULL;
		dispatch(r);
		if (r->internal.state == VD_REQ_RETRY) {
			/* still no room: keep the rest behind it, in order */
			*q->retry_tail = list;
			while (*q->retry_tail)
				q->retry_tail = &(*q->retry_tail)->internal.next;
			return;
		}
	}
}

/* ------------------------------------------------------------------------- */
/* Write-zeroes emulation: unmap where that zeroes, else zeros written in       */
/* chunks, one chunk in flight.                                                */
/* ------------------------------------------------------------------------- */

static void wz_chunk(struct vdisk_req *r);
static void wz_child_done(struct vdisk_req *c, vdisk_status st);

/* An unmap is not durable by itself: FUA asks for a flush after it. */
static void wz_flush(struct vdisk_req *r)
{
	struct vdisk_req *c = vdisk_req_alloc(r, r->disk);
	if (!c) {
		vdisk_req_complete(r, vdisk_status_io(ENOMEM));
		return;
	}
	vdisk_req_prep_flush(c);
	c->done = wz_child_done;
	c->opaque = r;
	vdisk_req_submit(c);
}

static void wz_child_done(struct vdisk_req *c, vdisk_status st)
{
	struct vdisk_req *r = c->opaque;
	if (st.kind == VDISK_OK && c->op == VDISK_OP_UNMAP && (r->flags & VDISK_IO_FUA)) {
		wz_flush(r);
		return;
	}
	if (st.kind != VDISK_OK || r->internal.zero_next >= r->sector + r->count) {
		vdisk_req_complete(r, st);
		return;
	}
	wz_chunk(r);
}

static void wz_chunk(struct vdisk_req *r)
{
	struct vdisk *d = r->disk;
	uint64_t next = r->internal.zero_next;
	uint64_t left = r->sector + r->count - next;
	uint64_t max = ZERO_CHUNK >> d->shift;
	uint64_t n = left < max ? left : max;
	struct vdisk_req *c = vdisk_req_alloc(r, d);
	if (!c) {
		vdisk_req_complete(r, vdisk_status_io(ENOMEM));
		return;
	}
	r->internal.iov.iov_base = (void *)zero_buf;
	r->internal.iov.iov_len = (size_t)(n << d->shift);
	vdisk_req_prep_rw(c, VDISK_OP_WRITE, next, &r->internal.iov, 1, r->flags & VDISK_IO_FUA);
	c->done = wz_child_done;
	c->opaque = r;
	r->internal.zero_next = next + n;
	vdisk_req_submit(c);
}

static void write_zeroes_emulate(struct vdisk_req *r)
{
	struct vdisk *d = r->disk;
	r->internal.emul = 1;
	r->internal.state = VD_REQ_SUBMITTED;
	if ((r->flags & VDISK_ZERO_MAY_UNMAP) && d->meta.unmap == VDISK_UNMAP_ZEROES &&
	    d->drv->unmap) {
		struct vdisk_req *c = vdisk_req_alloc(r, d);
		if (!c) {
			vdisk_req_complete(r, vdisk_status_io(ENOMEM));
			return;
		}
		vdisk_req_prep_range(c, VDISK_OP_UNMAP, r->sector, r->count, 0);
		c->done = wz_child_done;
		c->opaque = r;
		r->internal.zero_next = r->sector + r->count;
		vdisk_req_submit(c);
		return;
	}
	if (r->flags & VDISK_ZERO_FAST_ONLY) {
		vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
		return;
	}
	r->internal.zero_next = r->sector;
	wz_chunk(r);
}

/* ------------------------------------------------------------------------- */
/* Child requests                                                              */
/* ------------------------------------------------------------------------- */

VD_EXPORT struct vdisk_req *vdisk_req_alloc(struct vdisk_req *parent, struct vdisk *inner)
{
	return vd_req_get(parent->q, inner);
}

VD_EXPORT void vdisk_req_prep_rw(struct vdisk_req *r, enum vdisk_op op, uint64_t sector,
                                 const struct iovec *iov, int iovcnt, uint32_t flags)
{
	r->op = (uint8_t)op;
	r->sector = sector;
	r->iov = iov;
	r->iovcnt = iovcnt;
	r->flags = flags;
	r->len = vdisk_iov_length(iov, iovcnt);
}

VD_EXPORT void vdisk_req_prep_range(struct vdisk_req *r, enum vdisk_op op, uint64_t sector,
                                    uint64_t count, uint32_t flags)
{
	r->op = (uint8_t)op;
	r->sector = sector;
	r->count = count;
	r->flags = flags;
}

VD_EXPORT void vdisk_req_prep_flush(struct vdisk_req *r)
{
	r->op = VDISK_OP_FLUSH;
}

VD_EXPORT void vdisk_req_prep_extents(struct vdisk_req *r, uint64_t sector, uint64_t count,
                                      struct vdisk_extent *ext, unsigned max, unsigned *n)
{
	r->op = VDISK_OP_EXTENTS;
	r->sector = sector;
	r->count = count;
	r->ext = ext;
	r->ext_max = max;
	r->ext_n = n;
	*n = 0;
}

VD_EXPORT int vdisk_req_submit(struct vdisk_req *r)
{
	if (VD_UNLIKELY(r->internal.state != VD_REQ_PREP || !r->done))
		vd_bug("vdisk_req_submit: request not prepared or without a done hook");
	return vd_submit(r);
}

static void forward_done(struct vdisk_req *c, vdisk_status st)
{
	vdisk_req_complete(c->opaque, st);
}

VD_EXPORT int vdisk_req_forward(struct vdisk_req *r, struct vdisk *inner)
{
	struct vdisk_req *c = vd_req_get(r->q, inner);
	if (!c)
		return -ENOMEM;
	c->op = r->op;
	c->sector = r->sector;
	c->count = r->count;
	c->len = r->len;
	c->iov = r->iov;
	c->iovcnt = r->iovcnt;
	c->flags = r->flags;
	c->ext = r->ext;
	c->ext_max = r->ext_max;
	c->ext_n = r->ext_n;
	c->done = forward_done;
	c->opaque = r;
	return vd_submit(c);
}

/* ------------------------------------------------------------------------- */
/* The public submit calls                                                     */
/* ------------------------------------------------------------------------- */

static inline struct vdisk_req *user_req(struct vdisk_queue *q, enum vdisk_op op,
                                         vdisk_done_fn *done, void *opaque)
{
	struct vdisk_req *r = vd_req_get(q, q->top);
	if (VD_UNLIKELY(!r))
		return NULL;
	r->op = (uint8_t)op;
	r->internal.origin = VD_ORIGIN_USER;
	r->internal.user_done = done;
	r->internal.user_opaque = opaque;
	q->inflight++;
	return r;
}

static inline void after_submit(struct vdisk_queue *q)
{
	if (q->sq_pending && !q->in_poll && !q->plugged)
		vd_uring_flush(q);
}

static int submit_rw(struct vdisk_queue *q, enum vdisk_op op, uint64_t sector,
                     const struct iovec *iov, int iovcnt, unsigned flags, vdisk_done_fn *done,
                     void *opaque)
{
	if (VD_UNLIKELY(!q || !done || iovcnt < 0 || (iovcnt && !iov) || (flags & ~VDISK_IO_FUA)))
		return -EINVAL;
	/* lengths that wrap around would pass for a short request while drivers
	 * copy the real ones */
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++)
		if (VD_UNLIKELY(__builtin_add_overflow(len, iov[i].iov_len, &len)))
			return -EINVAL;
	struct vdisk_req *r = user_req(q, op, done, opaque);
	if (VD_UNLIKELY(!r))
		return -ENOMEM;
	r->sector = sector;
	r->iov = iov;
	r->iovcnt = iovcnt;
	r->flags = flags;
	r->len = len;
	vd_submit(r);
	after_submit(q);
	return 0;
}

VD_EXPORT int vdisk_readv(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov,
                          int iovcnt, vdisk_done_fn *done, void *opaque)
{
	return submit_rw(q, VDISK_OP_READ, sector, iov, iovcnt, 0, done, opaque);
}

VD_EXPORT int vdisk_writev(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov,
                           int iovcnt, unsigned flags, vdisk_done_fn *done, void *opaque)
{
	return submit_rw(q, VDISK_OP_WRITE, sector, iov, iovcnt, flags, done, opaque);
}

static int submit_range(struct vdisk_queue *q, enum vdisk_op op, uint64_t sector, uint64_t count,
                        unsigned flags, vdisk_done_fn *done, void *opaque)
{
	if (VD_UNLIKELY(!q || !done))
		return -EINVAL;
	struct vdisk_req *r = user_req(q, op, done, opaque);
	if (VD_UNLIKELY(!r))
		return -ENOMEM;
	r->sector = sector;
	r->count = count;
	r->flags = flags;
	vd_submit(r);
	after_submit(q);
	return 0;
}

VD_EXPORT int vdisk_flush(struct vdisk_queue *q, vdisk_done_fn *done, void *opaque)
{
	return submit_range(q, VDISK_OP_FLUSH, 0, 0, 0, done, opaque);
}

VD_EXPORT int vdisk_unmap(struct vdisk_queue *q, uint64_t sector, uint64_t count, unsigned flags,
                          vdisk_done_fn *done, void *opaque)
{
	if (flags & ~VDISK_UNMAP_BLOCK_LEVEL_ONLY)
		return -EINVAL;
	return submit_range(q, VDISK_OP_UNMAP, sector, count, flags, done, opaque);
}

VD_EXPORT int vdisk_write_zeroes(struct vdisk_queue *q, uint64_t sector, uint64_t count,
                                 unsigned flags, vdisk_done_fn *done, void *opaque)
{
	if (flags & ~(unsigned)(VDISK_IO_FUA | VDISK_ZERO_MAY_UNMAP | VDISK_ZERO_FAST_ONLY))
		return -EINVAL;
	return submit_range(q, VDISK_OP_WRITE_ZEROES, sector, count, flags, done, opaque);
}

VD_EXPORT int vdisk_eject(struct vdisk_queue *q, vdisk_done_fn *done, void *opaque)
{
	return submit_range(q, VDISK_OP_EJECT, 0, 0, 0, done, opaque);
}

VD_EXPORT int vdisk_extents(struct vdisk_queue *q, uint64_t sector, uint64_t count,
                            struct vdisk_extent *ext, unsigned max, unsigned *n,
                            vdisk_done_fn *done, void *opaque)
{
	if (!q || !done || !n || (max && !ext))
		return -EINVAL;
	struct vdisk_req *r = user_req(q, VDISK_OP_EXTENTS, done, opaque);
	if (!r)
		return -ENOMEM;
	vdisk_req_prep_extents(r, sector, count, ext, max, n);
	vd_submit(r);
	after_submit(q);
	return 0;
}

VD_EXPORT int vdisk_wait_resize(struct vdisk_queue *q, uint64_t old_count, uint64_t *new_count,
                                vdisk_done_fn *done, void *opaque)
{
	if (!q || !done || !new_count)
		return -EINVAL;
	struct vdisk_req *r = user_req(q, VDISK_OP_READ, done, opaque);
	if (!r)
		return -ENOMEM;
	struct vdisk *d = q->top;
	r->op = VD_OP_WAIT_RESIZE;
	r->internal.resize_out = new_count;
	r->internal.resize_old = old_count;
	r->internal.t_start = vd_ticks();
	pthread_mutex_lock(&d->lock);
	uint64_t cur = vd_sector_count(d);
	if (cur != old_count) {
		*new_count = cur;
		r->internal.state = VD_REQ_SUBMITTED;
		finish(r, vdisk_status_ok());
	} else {
		r->internal.state = VD_REQ_WAITING;
		r->internal.next = d->waiters;
		d->waiters = r;
		q->remote_expected++;
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* Guest-memory requests: translate the ranges into an iovec array owned by the
 * request. */
static int submit_guest(struct vdisk_queue *q, enum vdisk_op op, uint64_t sector,
                        const struct vdisk_guest_mem *mem, const struct vdisk_guest_range *ranges,
                        int nranges, unsigned flags, vdisk_done_fn *done, void *opaque)
{
	if (!q || !done || !mem || !mem->translate || nranges < 0 || (nranges && !ranges) ||
	    (flags & ~VDISK_IO_FUA))
		return -EINVAL;
	struct vdisk_req *r = user_req(q, op, done, opaque);
	if (!r)
		return -ENOMEM;
	struct iovblk *b = iovblk_get(q, nranges);
	if (!b) {
		vd_req_put(r);
		q->inflight--;
		return -ENOMEM;
	}
	r->internal.scratch = b;
	r->sector = sector;
	r->flags = flags;
	int n = 0;
	size_t len = 0;
	bool fault = false;
	for (int i = 0; i < nranges && !fault; i++) {
		uint64_t gpa = ranges[i].gpa, left = ranges[i].len;
		while (left) {
			void *host;
			int64_t got =
			    mem->translate(mem->ctx, gpa, left, op == VDISK_OP_READ, &host);
			if (got <= 0 || (uint64_t)got > left) {
				fault = true;
				break;
			}
			if (n == b->cap) {
				/* more pieces than ranges: grow to a private block */
				struct iovblk *nb =
				    malloc(sizeof *nb + (size_t)b->cap * 2 * sizeof(struct iovec));
				if (!nb) {
					fault = true;
					break;
				}
				nb->cap = b->cap * 2;
				memcpy(nb->iov, b->iov, (size_t)n * sizeof(struct iovec));
				iovblk_put(q, b);
				b = nb;
				r->internal.scratch = b;
			}
			b->iov[n].iov_base = host;
			b->iov[n].iov_len = (size_t)got;
			n++;
			len += (size_t)got;
			gpa += (uint64_t)got;
			left -= (uint64_t)got;
		}
	}
	r->iov = b->iov;
	r->iovcnt = n;
	r->len = len;
	if (fault) {
		r->internal.t_start = vd_ticks();
		r->internal.state = VD_REQ_SUBMITTED;
		finish(r, vdisk_status_make(VDISK_ERR_MEMORY_ACCESS, EFAULT));
	} else {
		vd_submit(r);
	}
	after_submit(q);
	return 0;
}

VD_EXPORT int vdisk_read_guest(struct vdisk_queue *q, uint64_t sector,
                               const struct vdisk_guest_mem *mem,
                               const struct vdisk_guest_range *ranges, int nranges,
                               vdisk_done_fn *done, void *opaque)
{
	return submit_guest(q, VDISK_OP_READ, sector, mem, ranges, nranges, 0, done, opaque);
}

VD_EXPORT int vdisk_write_guest(struct vdisk_queue *q, uint64_t sector,
                                const struct vdisk_guest_mem *mem,
                                const struct vdisk_guest_range *ranges, int nranges, unsigned flags,
                                vdisk_done_fn *done, void *opaque)
{
	return submit_guest(q, VDISK_OP_WRITE, sector, mem, ranges, nranges, flags, done, opaque);
}
