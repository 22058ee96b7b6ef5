/* layered: a disk made of an ordered stack of layers (OpenVMM's LayeredDisk).
 *
 *   {"type":"layered","read-only":false,"layers":[L0, L1, ...]}   top layer first
 *
 * Each layer is {"type":"ram"|"sqlite"|"sqlite-cache"|"disk", "read-cache":bool,
 * "write-through":bool, ...}.  A read takes every sector from the topmost layer
 * that has it present and zeros where none has; writes, flushes and unmaps go to
 * layer 0 and on through the write-through layers below it; a read-cache layer
 * is filled, after a miss, with what the layers below returned.
 *
 * Semantics follow OpenVMM's LayeredDisk with these deliberate changes:
 *  - a read through a read-cache layer never returns stale data: a layer
 *    answers all of a request's runs before the private buffer comes into use,
 *    and every sector read into that buffer is copied back, not only the ones
 *    that populate a cache (the reference loses cache hits that land in the
 *    buffer after an earlier miss of the same request);
 *  - each run is clamped to what a lower layer can see, and the remaining runs
 *    still go to the layers below (the reference stops looking below for the
 *    whole request once one run starts beyond a layer's visible size);
 *  - writes and unmaps reach a write-through layer smaller than the disk only
 *    where it has sectors (the reference fails them with illegal-block,
 *    although the sectors are inside the disk);
 *  - a disk used as a layer forwards its optimal unmap granularity and, on top,
 *    its resizes and wait-for-resize.
 *
 * Requests carry a bitmap with one bit per sector ("supplied by a layer
 * above"); it lives in the request's context up to INLINE_WORDS * 64 sectors
 * and in a pooled buffer beyond.  The common cases skip the state machine: a
 * read that RAM layers on top answer completely, and a read of which they hold
 * nothing, which goes to the disk below whole, with the caller's buffers. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "layered.h"

#define INLINE_WORDS 32 /* 2048 sectors: 1 MiB of 512-byte sectors */

struct layered {
	struct vdisk *d;
	unsigned n;
	struct layer *layers;
	unsigned wp_end; /* the write path: layers [0, wp_end) */
	unsigned ncache; /* read-cache layers */
	uint8_t cache_slot[LAYERED_MAX_LAYERS];
	bool has_remote; /* some layer completes on another thread */
	bool read_only;
	uint32_t ss;
	unsigned shift;
};

enum phase {
	P_READ_LAYER, /* look at layer c->layer */
	P_READ_DONE,  /* layer c->layer answered */
	P_POPULATE,   /* fill the next missed cache */
	P_POPULATE_DONE,
	P_FINISH,
	P_PATH, /* write / unmap / flush: issue to c->layer */
	P_PATH_DONE,
	P_EXT_LAYER,
	P_EXT_DONE,
};

struct lreq {
	struct lio io;
	uint8_t phase;
	bool bounce_active;
	bool pooled; /* mem came from the queue's bounce pool (else malloc) */
	unsigned layer;
	uint64_t n;      /* sectors in the request */
	uint64_t missed; /* read caches to populate: bit per layer */
	uint64_t *bits;  /* marker */
	uint64_t *snap;  /* marker when the bounce buffer came into use */
	uint64_t *csnap; /* marker after each missed cache: ncache bitmaps */
	unsigned char *bounce;
	void *mem; /* pooled or malloc'd: bounce + bitmaps */
	size_t mem_len;
	struct iovec biov;
	/* extents */
	uint64_t ext_pos, ext_len;
	unsigned ext_n;
	uint64_t inline_bits[INLINE_WORDS];
};

static struct lreq *lreq_of(struct vdisk_req *r)
{
	return vdisk_req_ctx(r);
}
static struct lreq *lreq_of_io(struct lio *io)
{
	return (struct lreq *)((char *)io - offsetof(struct lreq, io));
}

int layered_layer_error(const struct layer *l, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return vdisk_set_error("layers[%u] (%s): %s", l->index, l->ops->name, msg);
}

/* Prefix the current control-path message with the layer. */
static int prefix_error(const struct layer *l)
{
	char msg[768];
	snprintf(msg, sizeof msg, "%s", vdisk_errmsg());
	return layered_layer_error(l, "%s", msg);
}

/* ------------------------------------------------------------------------- */
/* Completions from other threads                                              */
/* ------------------------------------------------------------------------- */

static void lq_cb(struct vdisk_uring_op *op, int res);

static void lq_arm(struct lq *lq);

static void lq_rearm_timer(struct vdisk_timer *t)
{
	struct lq *lq = (struct lq *)((char *)t - offsetof(struct lq, rearm));
	lq->rearm_pending = false;
	if (!lq->armed && lq->outstanding)
		lq_arm(lq);
}

/* Watch the eventfd through the queue's ring while work is out, so the
 * queue's wait wakes when a worker finishes. */
static void lq_arm(struct lq *lq)
{
	struct io_uring_sqe *sqe = vdisk_uring_sqe(lq->q, &lq->op);
	if (!sqe) {
		/* ring full even after a push: look again on the next poll */
		if (!lq->rearm_pending) {
			lq->rearm_pending = true;
			vdisk_timer_start(lq->q, &lq->rearm, vdisk_now_ns(), lq_rearm_timer);
		}
		return;
	}
	io_uring_prep_poll_add(sqe, lq->efd, POLLIN);
	lq->op.cb = lq_cb;
	lq->armed = true;
}

static void lq_cb(struct vdisk_uring_op *op, int res)
{
	(void)res;
	struct lq *lq = (struct lq *)((char *)op - offsetof(struct lq, op));
	uint64_t v;
	lq->armed = false;
	if (read(lq->efd, &v, sizeof v) < 0) {
		/* EAGAIN: nothing to take; the list below says what finished */
	}
	struct lio *list = atomic_exchange_explicit(&lq->finished, NULL, memory_order_acquire);
	struct lio *fifo = NULL;
	while (list) {
		struct lio *next = list->next;
		list->next = fifo;
		fifo = list;
		list = next;
	}
	while (fifo) {
		struct lio *io = fifo;
		fifo = io->next;
		io->next = NULL;
		lq->outstanding--;
		io->done(io);
	}
	if (lq->outstanding && !lq->armed)
		lq_arm(lq);
}

void layered_remote_begin(struct lio *io)
{
	struct lq *lq = vdisk_req_qstate(io->r);
	lq->outstanding++;
	if (!lq->armed)
		lq_arm(lq);
}

void layered_remote_finish(struct lio *io)
{
	/* io belongs to the queue's thread again once it is on the list: read
	 * what we need first */
	struct lq *lq = vdisk_req_qstate(io->r);
	struct lio *head = atomic_load_explicit(&lq->finished, memory_order_relaxed);
	do {
		io->next = head;
	} while (!atomic_compare_exchange_weak_explicit(
	    &lq->finished, &head, io, memory_order_release, memory_order_relaxed));
	if (!head) {
		uint64_t one = 1;
		ssize_t rc;
		do
			rc = write(lq->efd, &one, sizeof one);
		while (rc < 0 && errno == EINTR);
	}
}

/* ------------------------------------------------------------------------- */
/* Helpers                                                                     */
/* ------------------------------------------------------------------------- */

/* Sectors of the request that layer i may read: all for layer 0 (it range
 * checks itself, its size may change), those below the visible size for the
 * others. */
static uint64_t visible_lim(struct layered *ld, unsigned i, uint64_t sector, uint64_t n)
{
	if (i == 0)
		return n;
	uint64_t vis = ld->layers[i].visible;
	if (sector >= vis)
		return 0;
	return vis - sector < n ? vis - sector : n;
}

/* Last clear bit in [0, to), plus one; 0 if none. */
static uint64_t bits_last_clear(const uint64_t *b, uint64_t to)
{
	while (to) {
		uint64_t w = (to - 1) / 64;
		uint64_t word = ~b[w];
		unsigned top = (unsigned)((to - 1) % 64);
		if (top < 63)
			word &= (2ull << top) - 1;
		if (word)
			return w * 64 + 64 - (uint64_t)__builtin_clzll(word);
		to = w * 64;
	}
	return 0;
}

static void release_mem(struct vdisk_req *r, struct lreq *c)
{
	if (c->mem) {
		if (c->pooled)
			vdisk_bounce_put(r->q, c->mem, c->mem_len);
		else
			free(c->mem);
	}
	c->mem = NULL;
}

static void finish(struct vdisk_req *r, vdisk_status st)
{
	release_mem(r, lreq_of(r));
	vdisk_req_complete(r, st);
}

/* Start io on its layer; returns true if it finished inline. */
static bool issue(struct lreq *c, struct layer *l, void (*done)(struct lio *))
{
	c->io.l = l;
	c->io.done = done;
	c->io.st = vdisk_status_ok();
	return l->ops->submit(&c->io) == 1;
}

static void run(struct vdisk_req *r);

static void io_done(struct lio *io)
{
	struct lreq *c = lreq_of_io(io);
	run(vdisk_req_from_ctx(c));
}

/* ------------------------------------------------------------------------- */
/* Reads                                                                       */
/* ------------------------------------------------------------------------- */

static void prep_io(struct lreq *c, struct vdisk_req *r, uint8_t op, uint64_t sector,
                    uint64_t count)
{
	struct lio *io = &c->io;
	io->r = r;
	io->op = op;
	io->sector = sector;
	io->count = count;
	io->fua = false;
	io->next_is_zero = false;
	io->iov = r->iov;
	io->iovcnt = r->iovcnt;
	io->off = 0;
	io->bits = NULL;
	io->bits_base = 0;
	io->ext_len = 0;
	io->ext_kind = LEXT_ABSENT;
}

/* After layer i answered a read: a read cache that could not supply every
 * sector it can see gets, later, what the layers below return. */
static void after_read_layer(struct layered *ld, struct vdisk_req *r, struct lreq *c, unsigned i)
{
	struct layer *l = &ld->layers[i];
	if (!l->read_cache)
		return;
	uint64_t lim = visible_lim(ld, i, r->sector, c->n);
	if (bits_find(c->bits, 0, lim, false) >= lim)
		return;
	size_t words = bits_words(c->n);
	if (!c->bounce_active) {
		/* From here on layers read into the private buffer: a cache is filled
		 * from a copy the guest cannot change under us.  Everything not
		 * supplied so far is copied back to the guest at the end. */
		c->bounce_active = true;
		memcpy(c->snap, c->bits, words * 8);
		memset(c->bounce, 0, r->len);
	}
	memcpy(c->csnap + (size_t)ld->cache_slot[i] * words, c->bits, words * 8);
	c->missed |= 1ull << i;
}

static void read_step(struct layered *ld, struct vdisk_req *r, struct lreq *c)
{
	for (;;) {
		switch (c->phase) {
		case P_READ_LAYER: {
			if (c->layer >= ld->n || bits_find(c->bits, 0, c->n, false) >= c->n) {
				c->phase = P_POPULATE;
				c->layer = 0;
				continue;
			}
			struct layer *l = &ld->layers[c->layer];
			uint64_t lim = visible_lim(ld, c->layer, r->sector, c->n);
			uint64_t a = bits_find(c->bits, 0, lim, false);
			uint64_t e = a < lim ? bits_last_clear(c->bits, lim) : a;
			if (a >= lim || (l->ops->maybe_present && !l->meta.inline_io &&
			                 !l->ops->maybe_present(l, r->sector + a, e - a))) {
				after_read_layer(ld, r, c, c->layer);
				c->layer++;
				continue;
			}
			prep_io(c, r, LIO_READ, r->sector + a, e - a);
			if (c->bounce_active) {
				c->io.iov = &c->biov;
				c->io.iovcnt = 1;
			}
			c->io.off = (size_t)(a << ld->shift);
			c->io.bits = c->bits;
			c->io.bits_base = r->sector;
			c->phase = P_READ_DONE;
			if (!issue(c, l, io_done))
				return;
		}
		/* fall through */
		case P_READ_DONE:
			if (!vdisk_ok(c->io.st)) {
				finish(r, c->io.st);
				return;
			}
			after_read_layer(ld, r, c, c->layer);
			c->layer++;
			c->phase = P_READ_LAYER;
			continue;

		case P_POPULATE: {
			/* next missed cache, top-down */
			while (c->layer < ld->n && !(c->missed >> c->layer & 1))
				c->layer++;
			if (c->layer >= ld->n) {
				c->phase = P_FINISH;
				continue;
			}
			struct layer *l = &ld->layers[c->layer];
			uint64_t *cs =
			    c->csnap + (size_t)ld->cache_slot[c->layer] * bits_words(c->n);
			uint64_t lim = visible_lim(ld, c->layer, r->sector, c->n);
			uint64_t a = bits_find(cs, 0, lim, false);
			uint64_t e = bits_last_clear(cs, lim);
			prep_io(c, r, LIO_WRITE_NO_OVERWRITE, r->sector + a, e - a);
			c->io.iov = &c->biov;
			c->io.iovcnt = 1;
			c->io.off = (size_t)(a << ld->shift);
			c->io.bits = cs; /* only the sectors the cache missed */
			c->io.bits_base = r->sector;
			c->phase = P_POPULATE_DONE;
			if (!issue(c, l, io_done))
				return;
		}
		/* fall through */
		case P_POPULATE_DONE: {
			struct layer *l = &ld->layers[c->layer];
			/* a failed fill only costs a later miss: counted, not reported */
			if (vdisk_ok(c->io.st)) {
				uint64_t *cs =
				    c->csnap + (size_t)ld->cache_slot[c->layer] * bits_words(c->n);
				uint64_t filled = 0;
				for (uint64_t x = c->io.sector - r->sector;
				     x < c->io.sector - r->sector + c->io.count; x++)
					filled += !bits_test(cs, x);
				atomic_fetch_add_explicit(&l->populate_sectors, filled,
				                          memory_order_relaxed);
			} else {
				atomic_fetch_add_explicit(&l->populate_errors, 1,
				                          memory_order_relaxed);
			}
			c->layer++;
			c->phase = P_POPULATE;
			continue;
		}

		case P_FINISH: {
			const uint64_t *b = c->bounce_active ? c->snap : c->bits;
			uint64_t x = 0;
			while ((x = bits_find(b, x, c->n, false)) < c->n) {
				uint64_t y = bits_find(b, x, c->n, true);
				size_t off = (size_t)(x << ld->shift),
				       len = (size_t)((y - x) << ld->shift);
				if (c->bounce_active)
					vdisk_iov_from_buf(r->iov, r->iovcnt, off, c->bounce + off,
					                   len);
				else
					vdisk_iov_memset(r->iov, r->iovcnt, off, 0, len);
				x = y;
			}
			finish(r, vdisk_status_ok());
			return;
		}
		default: finish(r, vdisk_status_io(EINVAL)); return;
		}
	}
}

static void direct_done(struct vdisk_req *child, vdisk_status st)
{
	vdisk_req_complete(child->opaque, st);
}

static int layered_read(struct vdisk_req *r)
{
	struct layered *ld = vdisk_priv(r->disk);
	struct lreq *c = lreq_of(r);
	c->mem = NULL;
	if (r->count == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	uint64_t end = r->sector + r->count;
	/* The RAM diff that holds nothing of the range, over a disk: straight to
	 * the disk with the caller's buffers, before any bookkeeping.  Layer 0's
	 * size is checked again: it may have shrunk since the core's check. */
	unsigned k = 0;
	while (k < ld->n && ld->layers[k].ops->surely_absent && !ld->layers[k].read_cache &&
	       (k == 0 || end <= ld->layers[k].visible) &&
	       ld->layers[k].ops->surely_absent(&ld->layers[k], r->sector, r->count))
		k++;
	if (k > 0 && k < ld->n && ld->layers[k].meta.fully_present &&
	    end <= ld->layers[k].visible && end <= layer_sector_count(&ld->layers[0])) {
		struct vdisk_req *child = vdisk_req_alloc(r, ld->layers[k].priv);
		if (!child)
			return -ENOMEM;
		vdisk_req_prep_rw(child, VDISK_OP_READ, r->sector, r->iov, r->iovcnt, 0);
		child->done = direct_done;
		child->opaque = r;
		vdisk_req_submit(child);
		return 0;
	}

	c->n = r->count;
	c->missed = 0;
	c->bounce_active = false;
	size_t words = bits_words(c->n);
	if (ld->ncache) {
		/* bounce buffer, marker, its snapshot and one per cache, taken now so
		 * that a spent budget is back-pressure rather than a failure later */
		size_t len = r->len + (2 + (size_t)ld->ncache) * words * 8;
		c->mem = vdisk_bounce_get(r->q, len);
		if (!c->mem)
			return -errno;
		c->pooled = true;
		c->mem_len = len;
		c->bounce = c->mem;
		c->bits = (uint64_t *)(c->bounce + r->len);
		c->snap = c->bits + words;
		c->csnap = c->snap + words;
		c->biov.iov_base = c->bounce;
		c->biov.iov_len = r->len;
	} else if (words > INLINE_WORDS) {
		c->mem = vdisk_bounce_get(r->q, words * 8);
		if (!c->mem)
			return -errno;
		c->pooled = true;
		c->mem_len = words * 8;
		c->bits = c->mem;
	} else {
		c->bits = c->inline_bits;
	}
	memset(c->bits, 0, words * 8);

	/* The common shapes without the state machine: in-memory layers on top
	 * are read at once into the caller's buffers (an empty RAM layer answers
	 * without a lock); if they supplied everything the read is done, and if
	 * they supplied nothing and a disk comes next, the read goes to it
	 * whole, with the caller's buffers. */
	bool some = false;
	for (k = 0; k < ld->n; k++) {
		struct layer *l = &ld->layers[k];
		if (!l->meta.inline_io || l->read_cache || (k > 0 && end > l->visible))
			break;
		prep_io(c, r, LIO_READ, r->sector, r->count);
		c->io.bits = c->bits;
		c->io.bits_base = r->sector;
		issue(c, l, io_done);
		if (!vdisk_ok(c->io.st)) {
			finish(r, c->io.st);
			return 0;
		}
		uint64_t clear = bits_find(c->bits, 0, c->n, false);
		if (clear == c->n) {
			finish(r, vdisk_status_ok());
			return 0;
		}
		some = some || clear > 0 || bits_find(c->bits, clear, c->n, true) < c->n;
	}
	if (!some && k < ld->n && ld->layers[k].meta.fully_present &&
	    (k == 0 || end <= ld->layers[k].visible)) {
		struct vdisk_req *child = vdisk_req_alloc(r, ld->layers[k].priv);
		if (!child) {
			finish(r, vdisk_status_io(ENOMEM));
			return 0;
		}
		release_mem(r, c);
		vdisk_req_prep_rw(child, VDISK_OP_READ, r->sector, r->iov, r->iovcnt, 0);
		child->done = direct_done;
		child->opaque = r;
		vdisk_req_submit(child);
		return 0;
	}
	c->layer = k;
	c->phase = P_READ_LAYER;
	read_step(ld, r, c);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Writes, unmaps, flushes: down the write path                                */
/* ------------------------------------------------------------------------- */

static void path_step(struct layered *ld, struct vdisk_req *r, struct lreq *c)
{
	for (;;) {
		switch (c->phase) {
		case P_PATH: {
			if (c->layer >= ld->wp_end) {
				finish(r, vdisk_status_ok());
				return;
			}
			struct layer *l = &ld->layers[c->layer];
			uint64_t count = r->count;
			if (c->layer > 0 && r->op != VDISK_OP_FLUSH) {
				/* a write-through layer smaller than the disk keeps what it can
				 * hold; the reference fails the write instead, though the
				 * sectors are inside the disk */
				uint64_t lc = layer_sector_count(l);
				if (r->sector >= lc) {
					c->layer++;
					continue;
				}
				if (count > lc - r->sector)
					count = lc - r->sector;
			}
			switch (r->op) {
			case VDISK_OP_WRITE:
				prep_io(c, r, LIO_WRITE, r->sector, count);
				c->io.fua = r->flags & VDISK_IO_FUA;
				break;
			case VDISK_OP_UNMAP:
				prep_io(c, r, LIO_UNMAP, r->sector, count);
				/* the layer may leave holes where nothing below shows through */
				c->io.next_is_zero = c->layer + 1 >= ld->n ||
				                     r->sector >= ld->layers[c->layer + 1].visible;
				break;
			default: prep_io(c, r, LIO_FLUSH, 0, 0); break;
			}
			c->phase = P_PATH_DONE;
			if (!issue(c, l, io_done))
				return;
		}
		/* fall through */
		case P_PATH_DONE:
			/* an error stops here: the layers above keep what they took */
			if (!vdisk_ok(c->io.st)) {
				finish(r, c->io.st);
				return;
			}
			c->layer++;
			c->phase = P_PATH;
			continue;
		default: finish(r, vdisk_status_io(EINVAL)); return;
		}
	}
}

static int layered_path(struct vdisk_req *r)
{
	struct layered *ld = vdisk_priv(r->disk);
	struct lreq *c = lreq_of(r);
	c->mem = NULL;
	if (r->op != VDISK_OP_FLUSH && r->count == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	c->layer = 0;
	c->phase = P_PATH;
	path_step(ld, r, c);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Extents: per position, the first layer that has the sector decides          */
/* ------------------------------------------------------------------------- */

static uint32_t ext_flags(uint8_t kind)
{
	switch (kind) {
	case LEXT_ZERO: return VDISK_EXTENT_ZERO;
	case LEXT_HOLE: return VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO;
	default: return 0;
	}
}

/* Append [pos, pos+len) with flags, merging with the previous extent.
 * Returns false when the array is full. */
static bool ext_emit(struct vdisk_req *r, struct lreq *c, uint64_t len, uint32_t flags)
{
	if (c->ext_n && r->ext[c->ext_n - 1].flags == flags) {
		r->ext[c->ext_n - 1].count += len;
	} else {
		if (c->ext_n >= r->ext_max)
			return false;
		r->ext[c->ext_n].sector = c->ext_pos;
		r->ext[c->ext_n].count = len;
		r->ext[c->ext_n].flags = flags;
		r->ext[c->ext_n].reserved = 0;
		c->ext_n++;
	}
	c->ext_pos += len;
	return true;
}

static void ext_step(struct layered *ld, struct vdisk_req *r, struct lreq *c)
{
	uint64_t end = r->sector + r->count;
	for (;;) {
		switch (c->phase) {
		case P_EXT_LAYER: {
			if (c->ext_pos >= end) {
				*r->ext_n = c->ext_n;
				finish(r, vdisk_status_ok());
				return;
			}
			if (c->layer == 0)
				c->ext_len = end - c->ext_pos;
			if (c->layer >= ld->n ||
			    (c->layer > 0 && c->ext_pos >= ld->layers[c->layer].visible)) {
				/* absent everywhere it can be seen: reads as zeros */
				if (!ext_emit(r, c, c->ext_len,
				              VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO)) {
					*r->ext_n = c->ext_n;
					finish(r, vdisk_status_ok());
					return;
				}
				c->layer = 0;
				continue;
			}
			struct layer *l = &ld->layers[c->layer];
			if (c->layer > 0 && c->ext_pos + c->ext_len > l->visible)
				c->ext_len = l->visible - c->ext_pos;
			if (l->ops->maybe_present &&
			    !l->ops->maybe_present(l, c->ext_pos, c->ext_len)) {
				c->layer++;
				continue;
			}
			prep_io(c, r, LIO_EXTENT, c->ext_pos, c->ext_len);
			c->phase = P_EXT_DONE;
			if (!issue(c, l, io_done))
				return;
		}
		/* fall through */
		case P_EXT_DONE:
			c->phase = P_EXT_LAYER;
			if (!vdisk_ok(c->io.st)) {
				finish(r, c->io.st);
				return;
			}
			if (c->io.ext_len == 0 || c->io.ext_len > c->ext_len) {
				/* a layer that answers nothing would loop forever */
				finish(r, vdisk_status_io(EIO));
				return;
			}
			c->ext_len = c->io.ext_len;
			if (c->io.ext_kind == LEXT_ABSENT) {
				c->layer++;
				continue;
			}
			if (!ext_emit(r, c, c->ext_len, ext_flags(c->io.ext_kind))) {
				*r->ext_n = c->ext_n;
				finish(r, vdisk_status_ok());
				return;
			}
			c->layer = 0;
			continue;
		default: finish(r, vdisk_status_io(EINVAL)); return;
		}
	}
}

static int layered_extents(struct vdisk_req *r)
{
	struct layered *ld = vdisk_priv(r->disk);
	struct lreq *c = lreq_of(r);
	c->mem = NULL;
	c->ext_pos = r->sector;
	c->ext_n = 0;
	c->layer = 0;
	c->phase = P_EXT_LAYER;
	*r->ext_n = 0;
	if (r->count == 0 || r->ext_max == 0) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	ext_step(ld, r, c);
	return 0;
}

static void run(struct vdisk_req *r)
{
	struct layered *ld = vdisk_priv(r->disk);
	struct lreq *c = lreq_of(r);
	switch (r->op) {
	case VDISK_OP_READ: read_step(ld, r, c); break;
	case VDISK_OP_EXTENTS: ext_step(ld, r, c); break;
	default: path_step(ld, r, c); break;
	}
}

/* ------------------------------------------------------------------------- */
/* Open: parse, attach bottom-up, validate as the reference does               */
/* ------------------------------------------------------------------------- */

static const struct layer_ops *layer_type(const char *name)
{
	static const struct layer_ops *const all[] = {&layered_ram_ops, &layered_sqlite_ops,
	                                              &layered_sqlite_cache_ops, &layered_disk_ops};
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}

static void layered_free(struct layered *ld)
{
	if (!ld)
		return;
	for (unsigned i = 0; i < ld->n; i++) {
		struct layer *l = &ld->layers[i];
		if (l->ops && l->ops->close && (l->priv || l->ops == &layered_disk_ops))
			l->ops->close(l);
		json_decref(l->cfg);
	}
	free(ld->layers);
	free(ld);
}

/* The layer's own keys, with the common ones taken out. */
static int parse_layer(struct layer *l, json_t *spec, json_t **own)
{
	*own = NULL;
	if (!json_is_object(spec))
		return vdisk_set_error("layers[%u]: expected an object with a \"type\"", l->index);
	json_t *t = json_object_get(spec, "type");
	if (!json_is_string(t))
		return vdisk_set_error(
		    "layers[%u]: missing \"type\" (ram, sqlite, sqlite-cache or disk)", l->index);
	l->ops = layer_type(json_string_value(t));
	if (!l->ops)
		return vdisk_set_error(
		    "layers[%u]: unknown layer type '%s' (ram, sqlite, sqlite-cache "
		    "or disk)",
		    l->index, json_string_value(t));
	json_t *cfg = json_deep_copy(spec);
	if (!cfg)
		return vdisk_set_error_errno(ENOMEM, "layers[%u]", l->index);
	if (vdisk_cfg_bool(cfg, "read-cache", &l->read_cache) < 0 ||
	    vdisk_cfg_bool(cfg, "write-through", &l->write_through) < 0) {
		json_decref(cfg);
		return prefix_error(l);
	}
	json_object_del(cfg, "type");
	json_object_del(cfg, "read-cache");
	json_object_del(cfg, "write-through");
	*own = cfg;
	return 0;
}

static const char *unmap_name(uint8_t u)
{
	return vdisk_unmap_behavior_name((enum vdisk_unmap_behavior)u);
}

static int layered_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"layers", NULL};
	struct layered *ld = NULL;
	json_t **own = NULL;
	int rc = -1;
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	json_t *arr = json_object_get(cfg, "layers");
	if (!arr)
		return vdisk_set_error("layers: required (a list of layers, top first)");
	if (!json_is_array(arr))
		return vdisk_set_error("layers: expected a list of layers, top first");
	size_t n = json_array_size(arr);
	if (n == 0)
		return vdisk_set_error("layers: at least one layer is required");
	if (n > LAYERED_MAX_LAYERS)
		return vdisk_set_error("layers: %zu layers; at most %u are supported", n,
		                       LAYERED_MAX_LAYERS);

	ld = calloc(1, sizeof *ld);
	own = calloc(n, sizeof *own);
	if (!ld || !own || !(ld->layers = calloc(n, sizeof *ld->layers))) {
		vdisk_set_error_errno(ENOMEM, "layered");
		goto out;
	}
	ld->d = d;
	ld->n = (unsigned)n;
	ld->read_only = vdisk_read_only_requested(d);
	for (unsigned i = 0; i < n; i++) {
		struct layer *l = &ld->layers[i];
		l->index = i;
		l->disk = d;
		atomic_init(&l->populate_sectors, 0);
		atomic_init(&l->populate_errors, 0);
		if (parse_layer(l, json_array_get(arr, i), &own[i]) < 0)
			goto out;
		l->cfg = json_deep_copy(json_array_get(arr, i));
	}

	/* Which layers are opened for reading only (the reference's resolver):
	 * the write path follows the disk, caches are always writable, and
	 * everything below the write path is read-only. */
	bool ro = ld->read_only;
	for (unsigned i = 0; i < n; i++) {
		struct layer *l = &ld->layers[i];
		l->open_read_only = ro && !l->read_cache;
		if (!l->write_through)
			ro = true;
	}

	/* Disks first and top-down, so they appear in the stack in spec order;
	 * then every layer attaches bottom-up, each seeing the one below. */
	for (unsigned i = 0; i < n; i++) {
		struct layer *l = &ld->layers[i];
		if (l->ops == &layered_disk_ops && layered_disk_preopen(l, own[i]) < 0)
			goto out;
	}
	uint32_t bottom_ss = 0;
	for (int i = (int)n - 1; i >= 0; i--) {
		struct layer *l = &ld->layers[i];
		const struct layer_meta *below = i + 1 < (int)n ? &ld->layers[i + 1].meta : NULL;
		if (l->ops->open(l, own[i], below) < 0) {
			if (l->ops != &layered_disk_ops)
				prefix_error(l);
			goto out;
		}
		if (l->read_cache && !l->meta.can_no_overwrite) {
			layered_layer_error(
			    l, "read-cache: this layer cannot be filled without "
			       "overwriting (use a ram, sqlite or sqlite-cache layer)");
			goto out;
		}
		uint32_t ss = l->meta.sector_size;
		if (ss < 512 || (ss & (ss - 1))) {
			layered_layer_error(
			    l, "sector size %" PRIu32 " is not a power of two >= 512", ss);
			goto out;
		}
		if (!bottom_ss)
			bottom_ss = ss;
		if (ss != bottom_ss) {
			layered_layer_error(
			    l, "sector size %" PRIu32 " differs from the bottom layer's %" PRIu32,
			    ss, bottom_ss);
			goto out;
		}
		if (l->meta.sector_count == 0) {
			layered_layer_error(l, "has no sectors");
			goto out;
		}
	}

	/* The write path: layer 0 and each layer below a write-through one. */
	unsigned wp_end = 1;
	while (wp_end < n && ld->layers[wp_end - 1].write_through)
		wp_end++;
	ld->wp_end = wp_end;
	bool fua = true, shared_flush = true, must_zero = false;
	uint8_t unmap = VDISK_UNMAP_ZEROES;
	uint32_t optimal = 1;
	for (unsigned i = 0; i < wp_end; i++) {
		struct layer *l = &ld->layers[i];
		if (!ld->read_only && l->meta.read_only) {
			layered_layer_error(
			    l, "read-only, but it is in the write path of a writable disk "
			       "(open the disk read-only, or put a writable layer above it)");
			goto out;
		}
		fua = fua && l->meta.fua;
		shared_flush = shared_flush && l->meta.shared_flush;
		if (l->meta.optimal_unmap_sectors > optimal)
			optimal = l->meta.optimal_unmap_sectors;
		/* with write-through, every copy must unmap alike or none may */
		must_zero = must_zero || l->write_through;
		if (unmap == VDISK_UNMAP_ZEROES && l->meta.unmap == VDISK_UNMAP_ZEROES)
			unmap = VDISK_UNMAP_ZEROES;
		else if (must_zero)
			unmap = VDISK_UNMAP_IGNORED;
		else if (unmap == VDISK_UNMAP_IGNORED || l->meta.unmap == VDISK_UNMAP_IGNORED)
			unmap = VDISK_UNMAP_IGNORED;
		else
			unmap = VDISK_UNMAP_UNSPECIFIED;
	}
	for (unsigned i = 0; i < n; i++) {
		struct layer *l = &ld->layers[i];
		if (!l->write_through)
			continue;
		if (i + 1 == n) {
			layered_layer_error(
			    l, "write-through on the bottom layer has no effect (nothing "
			       "below it to write to)");
			goto out;
		}
		if (i > 0 && !ld->layers[i - 1].write_through) {
			layered_layer_error(l,
			                    "write-through has no effect: writes never reach it, "
			                    "because layers[%u] above it is not write-through",
			                    i - 1);
			goto out;
		}
	}

	uint64_t vis = UINT64_MAX;
	for (unsigned i = 0; i < n; i++) {
		struct layer *l = &ld->layers[i];
		if (l->meta.sector_count < vis)
			vis = l->meta.sector_count;
		l->visible = vis;
		if (l->read_cache)
			ld->cache_slot[i] = (uint8_t)ld->ncache++;
		if (l->ops == &layered_sqlite_ops || l->ops == &layered_sqlite_cache_ops)
			ld->has_remote = true;
	}

	struct layer *top = &ld->layers[0];
	struct vdisk_meta *m = vdisk_meta(d);
	if (top->ops == &layered_disk_ops) {
		/* the size follows the disk on top, resizes and all */
		vdisk_meta_inherit(d, top->priv);
	}
	m->sector_count = top->meta.sector_count;
	m->sector_size = top->meta.sector_size;
	m->physical_sector_size = top->meta.physical_sector_size;
	m->has_disk_id = false;
	for (unsigned i = 0; i < n; i++)
		if (ld->layers[i].meta.has_disk_id) {
			m->has_disk_id = true;
			memcpy(m->disk_id, ld->layers[i].meta.disk_id, 16);
			break;
		}
	m->fua = fua;
	m->read_only = ld->read_only;
	m->unmap = unmap;
	m->optimal_unmap_sectors = optimal;
	m->caps = shared_flush ? VDISK_CAP_SHARED_FLUSH : 0;
	/* resizable when the layer on top is: a disk that says so, or a writable
	 * in-memory or SQLite layer */
	if (top->ops->resize && !ld->read_only &&
	    (top->ops != &layered_disk_ops || (vdisk_caps(top->priv) & VDISK_CAP_RESIZE)))
		m->caps |= VDISK_CAP_RESIZE;
	m->has_pr = false;
	m->req_ctx_size = sizeof(struct lreq);
	ld->ss = top->meta.sector_size;
	ld->shift = (unsigned)__builtin_ctz(ld->ss);
	vdisk_set_priv(d, ld);
	rc = 0;
out:
	if (own)
		for (size_t i = 0; i < n; i++)
			json_decref(own[i]);
	free(own);
	if (rc < 0)
		layered_free(ld);
	return rc;
}

static void layered_close(struct vdisk *d)
{
	layered_free(vdisk_priv(d));
}

static int layered_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	struct layered *ld = vdisk_priv(d);
	struct lq *lq = calloc(1, sizeof *lq);
	if (!lq)
		return vdisk_set_error_errno(ENOMEM, "layered queue");
	lq->q = q;
	lq->efd = -1;
	atomic_init(&lq->finished, NULL);
	if (ld->has_remote) {
		if (!vdisk_queue_uring(q)) {
			free(lq);
			return -1;
		}
		lq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (lq->efd < 0) {
			free(lq);
			return vdisk_set_error_errno(errno, "layered queue: eventfd");
		}
	}
	*qstate = lq;
	return 0;
}

static void layered_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	(void)d;
	struct lq *lq = qstate;
	vdisk_timer_cancel(q, &lq->rearm);
	if (lq->efd >= 0)
		close(lq->efd);
	free(lq);
}

static int layered_resize(struct vdisk *d, uint64_t count)
{
	struct layered *ld = vdisk_priv(d);
	struct layer *top = &ld->layers[0];
	if (!top->ops->resize)
		return vdisk_set_error("resize: the top layer (layers[0], %s) cannot be resized",
		                       top->ops->name);
	if (top->ops->resize(top, count) < 0)
		return -1;
	if (top->ops != &layered_disk_ops)
		vdisk_set_sector_count(d, count);
	return 0;
}

static int layered_inspect(struct vdisk *d, json_t *obj)
{
	struct layered *ld = vdisk_priv(d);
	json_t *stack = json_array();
	for (unsigned i = 0; i < ld->n; i++) {
		struct layer *l = &ld->layers[i];
		json_t *o = json_object();
		json_object_set_new(o, "index", json_integer(i));
		json_object_set_new(o, "type", json_string(l->ops->name));
		json_object_set_new(o, "read_cache", json_boolean(l->read_cache));
		json_object_set_new(o, "write_through", json_boolean(l->write_through));
		json_object_set_new(o, "write_path", json_boolean(i < ld->wp_end));
		json_object_set_new(o, "opened_read_only", json_boolean(l->open_read_only));
		json_object_set_new(o, "logically_read_only", json_boolean(l->meta.read_only));
		json_object_set_new(o, "sector_count",
		                    json_integer((json_int_t)layer_sector_count(l)));
		json_object_set_new(o, "visible_sectors", json_integer((json_int_t)l->visible));
		json_object_set_new(o, "unmap_behavior", json_string(unmap_name(l->meta.unmap)));
		json_object_set_new(o, "fua", json_boolean(l->meta.fua));
		if (l->read_cache) {
			json_object_set_new(
			    o, "populated_sectors",
			    json_integer((json_int_t)atomic_load(&l->populate_sectors)));
			json_object_set_new(
			    o, "populate_errors",
			    json_integer((json_int_t)atomic_load(&l->populate_errors)));
		}
		if (l->ops->inspect)
			l->ops->inspect(l, o);
		json_array_append_new(stack, o);
	}
	json_object_set_new(obj, "stack", stack);
	/* a disk layer's spec is shown as its own layer of the tree; keep the
	 * others' in the configuration */
	json_t *cfg = json_object_get(obj, "config");
	if (json_is_object(cfg)) {
		json_t *specs = json_array();
		for (unsigned i = 0; i < ld->n; i++) {
			json_t *s = json_deep_copy(ld->layers[i].cfg);
			if (ld->layers[i].ops == &layered_disk_ops && json_is_object(s)) {
				char ref[64];
				snprintf(ref, sizeof ref, "(layers[%u].disk)", i);
				json_object_set_new(s, "disk", json_string(ref));
			}
			json_array_append_new(specs, s ? s : json_null());
		}
		json_object_set_new(cfg, "layers", specs);
	}
	return 0;
}

static int layered_check(struct vdisk *d, struct vdisk_check *chk)
{
	struct layered *ld = vdisk_priv(d);
	for (unsigned i = 0; i < ld->n; i++)
		if (ld->layers[i].ops->check && ld->layers[i].ops->check(&ld->layers[i], chk) < 0)
			return -1;
	return 0;
}

const struct vdisk_driver vdisk_driver_layered = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "layered",
    .description = "stack of layers, top first: ram, sqlite, sqlite-cache, disk (layers)",
    .open = layered_open,
    .close = layered_close,
    .queue_init = layered_queue_init,
    .queue_fini = layered_queue_fini,
    .read = layered_read,
    .write = layered_path,
    .flush = layered_path,
    .unmap = layered_path,
    .extents = layered_extents,
    .resize = layered_resize,
    .inspect = layered_inspect,
    .check = layered_check,
};
