/* The transmission phase: request headers are parsed from the input buffer,
 * checked (command, flags, alignment, range, size, read-only) and handed to the
 * worker's vdisk queue; completions turn into replies on the connection's
 * output queue.  Reads go from the disk straight into the buffer the reply is
 * sent from; a write's payload is read straight into the buffer the disk writes
 * from (see plain_read in conn.c).
 *
 * Every request has one reply, sent once the disk has answered, in whatever
 * order the disk answers.  Errors never become success: a status other than
 * VDISK_OK always gives an error reply. */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/server.h"

#define FREE_REQS_MAX 64

static struct nbd_req *req_get(struct nbd_conn *c)
{
	struct nbd_req *r = c->free_reqs;
	if (r) {
		c->free_reqs = r->next;
		c->nfree_reqs--;
	} else {
		r = malloc(sizeof *r);
		if (!r)
			return NULL;
	}
	r->conn = c;
	r->next = NULL;
	r->data = NULL;
	r->payload = NULL;
	r->scratch = NULL;
	r->head = 0;
	r->locked = false;
	r->step = 0;
	r->flush_after = false;
	r->charged = 0;
	r->done = 0;
	r->iovcnt = 0;
	c->inflight++;
	return r;
}

void nbd_req_free(struct nbd_conn *c, struct nbd_req *r)
{
	if (r->data)
		nbd_buf_put(&c->w->pool, r->data, r->buf_cls);
	if (r->scratch)
		nbd_buf_put(&c->w->pool, r->scratch, r->scratch_cls);
	if (r->locked)
		nbd_rlock_release(c->w, &r->lk);
	c->inflight--;
	c->inflight_bytes -= r->charged;
	if (c->nfree_reqs < FREE_REQS_MAX) {
		r->next = c->free_reqs;
		c->free_reqs = r;
		c->nfree_reqs++;
	} else {
		free(r);
	}
	if (NBD_UNLIKELY(c->state >= CS_CLOSING))
		c->w->reap_pending = true;
	else if (c->stalled && c->state == CS_TRANSMISSION && nbd_tx_room(c)) {
		c->stalled = false;
		c->resume_input = true;
		nbd_conn_mark_dirty(c);
	}
}

void nbd_conn_free_reqs(struct nbd_conn *c)
{
	while (c->free_reqs) {
		struct nbd_req *r = c->free_reqs;
		c->free_reqs = r->next;
		free(r);
	}
	c->nfree_reqs = 0;
}

static bool req_buf(struct nbd_conn *c, struct nbd_req *r, size_t len)
{
	r->data = nbd_buf_get(&c->w->pool, len ? len : 1, &r->buf_cls);
	if (!r->data)
		return false;
	r->charged += len;
	c->inflight_bytes += len;
	return true;
}

/* ------------------------------------------------------------------------- */
/* Sectors: a request of a client that negotiated no block sizes may start and */
/* end anywhere; the disk is asked for the sectors that cover it.              */
/* ------------------------------------------------------------------------- */

static uint64_t sector_mask(const struct nbd_conn *c)
{
	return ((uint64_t)1 << c->srv->shift) - 1;
}

static bool req_aligned(const struct nbd_conn *c, const struct nbd_req *r)
{
	return ((r->offset | r->len) & sector_mask(c)) == 0;
}

static uint64_t cover_first(const struct nbd_conn *c, const struct nbd_req *r)
{
	return r->offset >> c->srv->shift;
}

/* the sector after the last one the request touches */
static uint64_t cover_end(const struct nbd_conn *c, const struct nbd_req *r)
{
	return (r->offset + r->len + sector_mask(c)) >> c->srv->shift;
}

static size_t cover_bytes(const struct nbd_conn *c, const struct nbd_req *r)
{
	return (size_t)((cover_end(c, r) - cover_first(c, r)) << c->srv->shift);
}

/* A buffer for the covering sectors; the payload (read or written) is at
 * data + head. */
static bool req_cover_buf(struct nbd_conn *c, struct nbd_req *r)
{
	r->head = (uint32_t)(r->offset & sector_mask(c));
	if (!req_buf(c, r, r->len && !req_aligned(c, r) ? cover_bytes(c, r) : r->len))
		return false;
	r->payload = r->data + r->head;
	return true;
}

/* ------------------------------------------------------------------------- */
/* Replies                                                                     */
/* ------------------------------------------------------------------------- */

static void queue_reply(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	if (c->state == CS_DEAD) {
		nbd_req_free(c, r);
		return;
	}
	r->next = NULL;
	*c->out_tail = r;
	c->out_tail = &r->next;
	nbd_conn_mark_dirty(c);
}

static unsigned char *chunk_header(struct nbd_req *r, uint16_t type, uint32_t len)
{
	unsigned char *p = r->hdr;
	p = nbd_put32(p, NBD_STRUCT_MAGIC);
	p = nbd_put16(p, NBD_REPLY_FLAG_DONE);
	p = nbd_put16(p, type);
	p = nbd_put64(p, r->cookie);
	return nbd_put32(p, len);
}

static void reply_simple(struct nbd_req *r, uint32_t err)
{
	unsigned char *p = r->hdr;
	p = nbd_put32(p, NBD_SIMPLE_MAGIC);
	p = nbd_put32(p, err);
	nbd_put64(p, r->cookie);
	r->iov[0].iov_base = r->hdr;
	r->iov[0].iov_len = NBD_SIMPLE_SIZE;
	r->iovcnt = 1;
	queue_reply(r);
}

static void reply_error(struct nbd_req *r, uint32_t err, const char *msg)
{
	if (!r->conn->structured) {
		reply_simple(r, err);
		return;
	}
	size_t ml = strlen(msg);
	size_t room = sizeof r->hdr - NBD_CHUNK_SIZE - 6;
	if (ml > room)
		ml = room;
	unsigned char *p = chunk_header(r, NBD_REPLY_TYPE_ERROR, (uint32_t)(6 + ml));
	p = nbd_put32(p, err);
	p = nbd_put16(p, (uint16_t)ml);
	nbd_putmem(p, msg, ml);
	r->iov[0].iov_base = r->hdr;
	r->iov[0].iov_len = NBD_CHUNK_SIZE + 6 + ml;
	r->iovcnt = 1;
	queue_reply(r);
}

static void reply_read(struct nbd_req *r)
{
	r->iov[0].iov_base = r->hdr;
	if (r->conn->structured) {
		if (r->len == 0) {
			chunk_header(r, NBD_REPLY_TYPE_NONE, 0);
			r->iov[0].iov_len = NBD_CHUNK_SIZE;
			r->iovcnt = 1;
		} else {
			nbd_put64(chunk_header(r, NBD_REPLY_TYPE_OFFSET_DATA, 8 + r->len),
			          r->offset);
			r->iov[0].iov_len = NBD_CHUNK_SIZE + 8;
			r->iov[1].iov_base = r->payload;
			r->iov[1].iov_len = r->len;
			r->iovcnt = 2;
		}
		queue_reply(r);
		return;
	}
	unsigned char *p = r->hdr;
	p = nbd_put32(p, NBD_SIMPLE_MAGIC);
	p = nbd_put32(p, 0);
	nbd_put64(p, r->cookie);
	r->iov[0].iov_len = NBD_SIMPLE_SIZE;
	r->iov[1].iov_base = r->payload;
	r->iov[1].iov_len = r->len;
	r->iovcnt = r->len ? 2 : 1;
	queue_reply(r);
}

/* The NBD error for a disk status, per the protocol's list: writes past the
 * end are ENOSPC, reads and trims past it EINVAL, read-only EPERM.  ENOTSUP
 * is for a fast zero alone: the protocol forbids it for a plain write-zeroes
 * once NBD_FLAG_SEND_FAST_ZERO is offered. */
static uint32_t nbd_error_of(vdisk_status st, const struct nbd_req *r)
{
	uint16_t type = r->type;
	switch (st.kind) {
	case VDISK_ERR_ILLEGAL_BLOCK:
		return type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
		                                                             : NBD_EINVAL;
	case VDISK_ERR_INVALID_INPUT: return NBD_EINVAL;
	case VDISK_ERR_READ_ONLY:
	case VDISK_ERR_RESERVATION_CONFLICT: return NBD_EPERM;
	case VDISK_ERR_NOT_SUPPORTED:
		return type == NBD_CMD_WRITE_ZEROES && (r->flags & NBD_CMD_FLAG_FAST_ZERO)
		           ? NBD_ENOTSUP
		           : NBD_EINVAL;
	case VDISK_ERR_IO:
	case VDISK_ERR_MEDIUM:
		switch (st.errnum) {
		case ENOSPC:
		case EDQUOT:
		case EFBIG: return NBD_ENOSPC;
		case ENOMEM: return NBD_ENOMEM;
		case EROFS:
		case EPERM:
		case EACCES: return NBD_EPERM;
		default: return NBD_EIO;
		}
	default: return NBD_EIO;
	}
}

static void reply_status(struct nbd_req *r, vdisk_status st)
{
	char msg[64];
	reply_error(r, nbd_error_of(st, r), vdisk_status_str(st, msg, sizeof msg));
}

/* ------------------------------------------------------------------------- */
/* Completions                                                                 */
/* ------------------------------------------------------------------------- */

static void req_done(void *opaque, vdisk_status st);
static void reply_read_scanned(struct nbd_req *r);

/* May this read's reply carry holes?  Structured replies, no DF (one data
 * chunk), and large enough to be worth it. */
static bool read_may_hole(const struct nbd_conn *c, const struct nbd_req *r)
{
	return c->structured && !(r->flags & NBD_CMD_FLAG_DF) && r->len >= NBD_SPARSE_READ_MIN;
}

static void submit_failed(struct nbd_req *r, int rc)
{
	if (r->locked) { /* not held while the reply waits for the client */
		r->locked = false;
		nbd_rlock_release(r->conn->w, &r->lk);
	}
	reply_error(r, rc == -ENOMEM ? NBD_ENOMEM : NBD_EIO,
	            rc == -ENOMEM ? "out of memory" : "request refused by the disk");
}

static int submit_cache_chunk(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	uint64_t left = r->len - r->done;
	size_t n = left < NBD_CACHE_CHUNK ? (size_t)left : NBD_CACHE_CHUNK;
	r->iov[1].iov_base = r->data;
	r->iov[1].iov_len = n;
	return vdisk_readv(c->w->q, (r->offset + r->done) >> c->srv->shift, &r->iov[1], 1, req_done,
	                   r);
}

static void reply_extents(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	const struct vdisk_extent *ext = (const struct vdisk_extent *)r->data;
	unsigned char *desc = r->data + NBD_MAX_EXTENTS * sizeof(struct vdisk_extent);
	unsigned char *p = desc;
	unsigned shift = c->srv->shift;
	uint64_t at = r->offset, end = r->offset + r->len;
	unsigned n = 0;
	uint32_t prev_flags = 0;
	for (unsigned i = 0; i < r->next_ext && at < end; i++) {
		/* the sectors' bytes, clipped to the request (which may start and
		 * end inside a sector) */
		uint64_t ext_end = (ext[i].sector + ext[i].count) << shift;
		if (ext_end > end)
			ext_end = end;
		if (ext_end <= at)
			continue;
		uint64_t bytes = ext_end - at;
		uint32_t flags = ext[i].flags & (NBD_STATE_HOLE | NBD_STATE_ZERO);
		if (n && flags == prev_flags) {
			/* lengths are below r->len, a 32-bit value, so the sum fits */
			nbd_put32(p - 8, (uint32_t)(nbd_get32(p - 8) + bytes));
		} else {
			p = nbd_put32(p, (uint32_t)bytes);
			p = nbd_put32(p, flags);
			n++;
			prev_flags = flags;
		}
		at += bytes;
		if (r->flags & NBD_CMD_FLAG_REQ_ONE)
			break;
	}
	if (n == 0) {
		/* the disk said nothing: "allocated" is always a safe answer */
		p = nbd_put32(p, r->len);
		p = nbd_put32(p, 0);
		n = 1;
	}
	nbd_put32(chunk_header(r, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n), NBD_META_ALLOC_ID);
	r->iov[0].iov_base = r->hdr;
	r->iov[0].iov_len = NBD_CHUNK_SIZE + 4;
	r->iov[1].iov_base = desc;
	r->iov[1].iov_len = 8u * n;
	r->iovcnt = 2;
	queue_reply(r);
}

static void req_done(void *opaque, vdisk_status st)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->conn;
	if (r->locked) {
		/* the data is written: what follows (a flush, the reply) needs
		 * no lock */
		r->locked = false;
		nbd_rlock_release(c->w, &r->lk);
	}
	if (c->state == CS_DEAD) {
		nbd_req_free(c, r);
		return;
	}
	if (!vdisk_ok(st)) {
		reply_status(r, st);
		return;
	}
	if (r->flush_after) {
		r->flush_after = false;
		int rc = vdisk_flush(c->w->q, req_done, r);
		if (rc < 0)
			submit_failed(r, rc);
		return;
	}
	switch (r->type) {
	case NBD_CMD_READ:
		if (read_may_hole(c, r))
			reply_read_scanned(r);
		else
			reply_read(r);
		return;
	case NBD_CMD_BLOCK_STATUS: reply_extents(r); return;
	case NBD_CMD_CACHE:
		r->done += r->iov[1].iov_len;
		if (r->done < r->len) {
			int rc = submit_cache_chunk(r);
			if (rc < 0)
				submit_failed(r, rc);
			return;
		}
		break;
	default: break;
	}
	reply_simple(r, 0);
}

/* ------------------------------------------------------------------------- */
/* Requests                                                                    */
/* ------------------------------------------------------------------------- */

/* 0 if r may go to the disk, else the NBD error and *msg why. */
static uint32_t validate(const struct nbd_conn *c, const struct nbd_req *r, const char **msg)
{
	const struct nbd_server *s = c->srv;
	uint16_t allowed = (c->eflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;
	bool ro = c->eflags & NBD_FLAG_READ_ONLY;
	switch (r->type) {
	case NBD_CMD_READ:
		if (c->eflags & NBD_FLAG_SEND_DF)
			allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_CACHE: break;
	case NBD_CMD_TRIM:
		if (!ro && !(c->eflags & NBD_FLAG_SEND_TRIM)) {
			*msg = "trim is not supported by this export";
			return NBD_EINVAL;
		}
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE;
		if (c->eflags & NBD_FLAG_SEND_FAST_ZERO)
			allowed |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_FLUSH:
		if (r->flags & ~allowed) {
			*msg = "flag not valid for this command";
			return NBD_EINVAL;
		}
		if (r->offset || r->len) {
			*msg = "flush with an offset or length";
			return NBD_EINVAL;
		}
		return 0;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		if (!c->meta_alloc) {
			*msg = "no metadata context was negotiated";
			return NBD_EINVAL;
		}
		if (r->len == 0) {
			*msg = "block status of zero bytes";
			return NBD_EINVAL;
		}
		break;
	default: *msg = "unknown command"; return NBD_EINVAL;
	}
	if (r->flags & ~allowed) {
		*msg = "flag not valid for this command";
		return NBD_EINVAL;
	}
	if (ro && (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
	           r->type == NBD_CMD_WRITE_ZEROES)) {
		*msg = "the export is read-only";
		return NBD_EPERM;
	}
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->len > s->max_payload) {
		*msg = "payload larger than the maximum block size the server advertised";
		return r->type == NBD_CMD_READ && c->structured ? NBD_EOVERFLOW : NBD_EINVAL;
	}
	if (c->strict && ((r->offset | r->len) & (s->min_block - 1))) {
		*msg = "offset or length not a multiple of the minimum block size";
		return NBD_EINVAL;
	}
	if (r->offset > c->export_size || r->len > c->export_size - r->offset) {
		*msg = "beyond the end of the export";
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
		                                                                   : NBD_EINVAL;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Read-modify-write of partial sectors (unaligned writes and write-zeroes)    */
/* ------------------------------------------------------------------------- */

enum { RMW_READ = 1, RMW_WRITE, SPARSE_EXTENTS, SPARSE_READS };

static void rmw_done(void *opaque, vdisk_status st);

/* Where a partial first and last sector are; the same sector counts as the
 * first only. */
struct rmw_shape {
	uint64_t first, end;     /* covering sectors [first, end) */
	uint32_t ss, head, tail; /* tail: bytes of the last sector inside; 0: whole */
	bool first_partial, last_partial;
};

static struct rmw_shape rmw_shape(const struct nbd_conn *c, const struct nbd_req *r)
{
	struct rmw_shape sh;
	sh.first = cover_first(c, r);
	sh.end = cover_end(c, r);
	sh.ss = 1u << c->srv->shift;
	sh.head = (uint32_t)(r->offset & sector_mask(c));
	sh.tail = (uint32_t)((r->offset + r->len) & sector_mask(c));
	bool single = sh.end - sh.first == 1;
	sh.first_partial = sh.head || (single && sh.tail);
	sh.last_partial = sh.tail && !single;
	return sh;
}

static void rmw_issued(struct nbd_req *r, int rc)
{
	if (rc == 0) {
		r->pending++;
	} else if (vdisk_ok(r->rmw_st)) {
		r->rmw_st = (vdisk_status){.kind = VDISK_ERR_IO, .errnum = -rc};
	}
}

static void rmw_write(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct nbd_server *s = c->srv;
	struct vdisk_queue *q = c->w->q;
	struct rmw_shape sh = rmw_shape(c, r);
	bool fua = (r->flags & NBD_CMD_FLAG_FUA) && !s->emulate_fua;
	unsigned char *last_old = r->scratch + sh.ss;
	r->step = RMW_WRITE;
	r->pending = 1; /* dropped below, once everything is issued */
	if (r->type == NBD_CMD_WRITE) {
		/* the old bytes around the payload, then the covering sectors at once */
		if (sh.first_partial) {
			memcpy(r->data, r->scratch, sh.head);
			if (sh.end - sh.first == 1 && sh.tail)
				memcpy(r->data + sh.tail, r->scratch + sh.tail, sh.ss - sh.tail);
		}
		if (sh.last_partial) {
			size_t last = (size_t)(sh.end - 1 - sh.first) << s->shift;
			memcpy(r->data + last + sh.tail, last_old + sh.tail, sh.ss - sh.tail);
		}
		r->iov[0].iov_base = r->data;
		r->iov[0].iov_len = cover_bytes(c, r);
		rmw_issued(r, vdisk_writev(q, sh.first, &r->iov[0], 1, fua ? VDISK_IO_FUA : 0,
		                           rmw_done, r));
	} else {
		/* write-zeroes: the partial sectors zeroed in part, the rest whole */
		if (sh.first_partial) {
			uint32_t stop = sh.end - sh.first == 1 && sh.tail ? sh.tail : sh.ss;
			memset(r->scratch + sh.head, 0, stop - sh.head);
			r->iov[0].iov_base = r->scratch;
			r->iov[0].iov_len = sh.ss;
			rmw_issued(r, vdisk_writev(q, sh.first, &r->iov[0], 1,
			                           fua ? VDISK_IO_FUA : 0, rmw_done, r));
		}
		if (sh.last_partial) {
			memset(last_old, 0, sh.tail);
			r->iov[1].iov_base = last_old;
			r->iov[1].iov_len = sh.ss;
			rmw_issued(r, vdisk_writev(q, sh.end - 1, &r->iov[1], 1,
			                           fua ? VDISK_IO_FUA : 0, rmw_done, r));
		}
		uint64_t from = sh.first + sh.first_partial, to = sh.end - sh.last_partial;
		if (to > from) {
			unsigned flags = fua ? VDISK_IO_FUA : 0;
			if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
				flags |= VDISK_ZERO_MAY_UNMAP;
			rmw_issued(r, vdisk_write_zeroes(q, from, to - from, flags, rmw_done, r));
		}
	}
	rmw_done(r, (vdisk_status){0});
}

static void rmw_done(void *opaque, vdisk_status st)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->conn;
	if (!vdisk_ok(st) && vdisk_ok(r->rmw_st))
		r->rmw_st = st;
	if (--r->pending)
		return;
	if (c->state == CS_DEAD) {
		nbd_req_free(c, r);
		return;
	}
	if (r->step == RMW_READ && vdisk_ok(r->rmw_st)) {
		rmw_write(r);
		return;
	}
	r->step = 0;
	req_done(r, r->rmw_st); /* releases the lock, flushes for FUA, replies */
}

/* Read the partial sectors, then write.  The range lock is held. */
static void rmw_start(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct rmw_shape sh = rmw_shape(c, r);
	r->scratch = nbd_buf_get(&c->w->pool, 2 * (size_t)sh.ss, &r->scratch_cls);
	if (!r->scratch) {
		req_done(r, (vdisk_status){.kind = VDISK_ERR_IO, .errnum = ENOMEM});
		return;
	}
	r->charged += 2 * (size_t)sh.ss;
	c->inflight_bytes += 2 * (size_t)sh.ss;
	r->rmw_st = (vdisk_status){0};
	r->step = RMW_READ;
	r->pending = 1;
	struct vdisk_queue *q = c->w->q;
	if (sh.first_partial) {
		r->iov[0].iov_base = r->scratch;
		r->iov[0].iov_len = sh.ss;
		rmw_issued(r, vdisk_readv(q, sh.first, &r->iov[0], 1, rmw_done, r));
	}
	if (sh.last_partial) {
		r->iov[1].iov_base = r->scratch + sh.ss;
		r->iov[1].iov_len = sh.ss;
		rmw_issued(r, vdisk_readv(q, sh.end - 1, &r->iov[1], 1, rmw_done, r));
	}
	rmw_done(r, (vdisk_status){0});
}

/* ------------------------------------------------------------------------- */
/* Sparse reads.  Zeros are sent as NBD_REPLY_TYPE_OFFSET_HOLE chunks, found    */
/* two ways.  A read is done as ever (straight into the reply's buffer) and    */
/* its 4 KiB blocks of zeros are found by looking: for data that stops at the  */
/* first non-zero byte of each block, so data reads keep their speed.  Once a  */
/* connection's reads meet zeros, and the disk knows its extents, its next    */
/* large reads ask the disk first and do not read what it reports as zeros;    */
/* an answer of "all data" turns that off again, since the extents query      */
/* costs a round through the queue that dense reads should not pay.           */
/* ------------------------------------------------------------------------- */

static void sparse_done(void *opaque, vdisk_status st);

static void read_whole(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	r->step = 0;
	r->iov[1].iov_base = r->data;
	r->iov[1].iov_len = cover_bytes(c, r);
	int rc = vdisk_readv(c->w->q, cover_first(c, r), &r->iov[1], 1, req_done, r);
	if (rc < 0)
		submit_failed(r, rc);
}

/* The extents, clipped to the request, as runs of data and holes in bytes
 * (sector: offset, count: length, flags: 1 for a hole), in place. */
static unsigned sparse_runs(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	unsigned shift = c->srv->shift;
	uint64_t at = r->offset, end = r->offset + r->len;
	unsigned n = 0;
	for (unsigned i = 0; i < r->next_ext && at < end; i++) {
		uint64_t e_end = (r->ext[i].sector + r->ext[i].count) << shift;
		uint32_t hole = (r->ext[i].flags & VDISK_EXTENT_ZERO) ? 1 : 0;
		if (e_end > end)
			e_end = end;
		if (e_end <= at)
			continue;
		if (n && r->ext[n - 1].flags == hole) {
			r->ext[n - 1].count += e_end - at;
		} else {
			r->ext[n] =
			    (struct vdisk_extent){.sector = at, .count = e_end - at, .flags = hole};
			n++;
		}
		at = e_end;
	}
	if (at < end) { /* past what the disk described: data */
		if (n && r->ext[n - 1].flags == 0)
			r->ext[n - 1].count += end - at;
		else
			r->ext[n++] = (struct vdisk_extent){.sector = at, .count = end - at};
	}
	return n;
}

static void reply_sparse(struct nbd_req *r)
{
	int v = 0;
	for (unsigned k = 0; k < r->next_ext; k++) {
		const struct vdisk_extent *run = &r->ext[k];
		unsigned char *p = r->chdr[k];
		bool last = k + 1 == r->next_ext;
		p = nbd_put32(p, NBD_STRUCT_MAGIC);
		p = nbd_put16(p, last ? NBD_REPLY_FLAG_DONE : 0);
		p = nbd_put16(p,
		              run->flags ? NBD_REPLY_TYPE_OFFSET_HOLE : NBD_REPLY_TYPE_OFFSET_DATA);
		p = nbd_put64(p, r->cookie);
		/* runs are inside the request, whose length is 32 bits */
		p = nbd_put32(p, run->flags ? 12 : (uint32_t)(8 + run->count));
		p = nbd_put64(p, run->sector);
		r->iov[v].iov_base = r->chdr[k];
		if (run->flags) {
			nbd_put32(p, (uint32_t)run->count);
			r->iov[v++].iov_len = NBD_CHUNK_SIZE + 12;
		} else {
			r->iov[v++].iov_len = NBD_CHUNK_SIZE + 8;
			r->iov[v].iov_base = r->payload + (run->sector - r->offset);
			r->iov[v++].iov_len = (size_t)run->count;
		}
	}
	r->iovcnt = v;
	queue_reply(r);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

/* The read's data as runs of data and zero blocks (bytes, as sparse_runs()),
 * at most NBD_READ_RUNS + 1 of them: the rest after that is data. */
static unsigned scan_runs(struct nbd_req *r)
{
	uint64_t at = r->offset, end = r->offset + r->len;
	unsigned n = 0;
	while (at < end) {
		uint64_t next = (at / NBD_ZERO_GRAIN + 1) * NBD_ZERO_GRAIN;
		uint32_t hole = 0;
		if (n >= NBD_READ_RUNS || next > end)
			next = end;
		if (n < NBD_READ_RUNS)
			hole = all_zero(r->payload + (at - r->offset), (size_t)(next - at));
		if (n && r->ext[n - 1].flags == hole)
			r->ext[n - 1].count += next - at;
		else
			r->ext[n++] =
			    (struct vdisk_extent){.sector = at, .count = next - at, .flags = hole};
		at = next;
	}
	return n;
}

/* After a sparse read: the zero blocks inside the data the disk reported
 * (extents may be coarser than what was written) become holes too.  When the
 * runs run out, the rest goes as data, with the holes that were not read
 * zeroed. */
static unsigned refine_runs(struct nbd_req *r, unsigned n)
{
	struct vdisk_extent in[NBD_READ_RUNS + 1];
	memcpy(in, r->ext, n * sizeof in[0]);
	unsigned m = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t at = in[i].sector, end = at + in[i].count;
		while (at < end) {
			uint64_t next = end;
			uint32_t hole = in[i].flags;
			if (m >= NBD_READ_RUNS) {
				if (hole)
					memset(r->payload + (at - r->offset), 0,
					       (size_t)(end - at));
				hole = 0;
			} else if (!hole) {
				next = (at / NBD_ZERO_GRAIN + 1) * NBD_ZERO_GRAIN;
				if (next > end)
					next = end;
				hole = all_zero(r->payload + (at - r->offset), (size_t)(next - at));
			}
			if (m && r->ext[m - 1].flags == hole)
				r->ext[m - 1].count += next - at;
			else
				r->ext[m++] = (struct vdisk_extent){
				    .sector = at, .count = next - at, .flags = hole};
			at = next;
		}
	}
	return m;
}

static void reply_read_scanned(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	unsigned n = scan_runs(r);
	if (n == 1 && r->ext[0].flags == 0) {
		reply_read(r);
		return;
	}
	if (c->srv->sparse_reads)
		c->sparse_hint = true;
	r->next_ext = n;
	reply_sparse(r);
}

static void sparse_done(void *opaque, vdisk_status st)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->conn;
	if (r->step == SPARSE_READS) {
		if (!vdisk_ok(st) && vdisk_ok(r->rmw_st))
			r->rmw_st = st;
		if (--r->pending)
			return;
	}
	if (c->state == CS_DEAD) {
		nbd_req_free(c, r);
		return;
	}
	if (r->step == SPARSE_READS) {
		r->step = 0;
		if (!vdisk_ok(r->rmw_st)) {
			reply_status(r, r->rmw_st);
			return;
		}
		r->next_ext = refine_runs(r, r->next_ext);
		reply_sparse(r);
		return;
	}
	/* the extents: a disk that cannot tell is read whole */
	unsigned n = vdisk_ok(st) ? sparse_runs(r) : 1;
	if (n == 1 && (!vdisk_ok(st) || r->ext[0].flags == 0)) {
		c->sparse_hint = false; /* data here: read the next ones at once */
		read_whole(r);
		return;
	}
	r->next_ext = n;
	r->step = SPARSE_READS;
	r->rmw_st = (vdisk_status){0};
	r->pending = 1; /* dropped below, once every read is issued */
	unsigned shift = c->srv->shift;
	uint64_t base = cover_first(c, r) << shift;
	for (unsigned k = 0; k < n; k++) {
		if (r->ext[k].flags)
			continue;
		uint64_t from = r->ext[k].sector >> shift;
		uint64_t to = (r->ext[k].sector + r->ext[k].count + sector_mask(c)) >> shift;
		struct iovec *iov = &r->iov[k];
		iov->iov_base = r->data + ((from << shift) - base);
		iov->iov_len = (size_t)((to - from) << shift);
		rmw_issued(r, vdisk_readv(c->w->q, from, iov, 1, sparse_done, r));
	}
	sparse_done(r, (vdisk_status){0});
}

/* A read: the disk is asked for its extents first where that may pay. */
static void submit_read(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	if (!c->sparse_hint || !c->srv->sparse_reads || !read_may_hole(c, r)) {
		read_whole(r);
		return;
	}
	r->step = SPARSE_EXTENTS;
	uint64_t first = cover_first(c, r);
	int rc = vdisk_extents(c->w->q, first, cover_end(c, r) - first, r->ext, NBD_READ_RUNS,
	                       &r->next_ext, sparse_done, r);
	if (rc < 0)
		read_whole(r);
}

/* ------------------------------------------------------------------------- */
/* Submission                                                                  */
/* ------------------------------------------------------------------------- */

/* A request that changes the disk, once it holds its range lock. */
static void submit_locked(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct nbd_server *s = c->srv;
	struct vdisk_queue *q = c->w->q;
	bool fua = r->flags & NBD_CMD_FLAG_FUA;
	int rc = 0;
	if (r->lk.rmw) {
		r->flush_after = fua && s->emulate_fua;
		rmw_start(r);
		return;
	}
	uint64_t sector = r->lk.start, count = r->lk.end - r->lk.start;
	switch (r->type) {
	case NBD_CMD_WRITE:
		r->flush_after = fua && s->emulate_fua;
		r->iov[1].iov_base = r->data;
		r->iov[1].iov_len = r->len;
		rc = vdisk_writev(q, sector, &r->iov[1], 1,
		                  fua && !s->emulate_fua ? VDISK_IO_FUA : 0, req_done, r);
		break;
	case NBD_CMD_TRIM:
		r->flush_after = fua; /* unmap has no FUA of its own */
		rc = vdisk_unmap(q, sector, count, 0, req_done, r);
		break;
	case NBD_CMD_WRITE_ZEROES: {
		unsigned flags = 0;
		if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
			flags |= VDISK_ZERO_MAY_UNMAP;
		if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
			flags |= VDISK_ZERO_FAST_ONLY;
		if (fua && !s->emulate_fua)
			flags |= VDISK_IO_FUA;
		r->flush_after = fua && s->emulate_fua;
		rc = vdisk_write_zeroes(q, sector, count, flags, req_done, r);
		break;
	}
	}
	if (rc < 0)
		submit_failed(r, rc);
}

static void lock_granted(struct nbd_rlock *l)
{
	struct nbd_req *r = (struct nbd_req *)((char *)l - offsetof(struct nbd_req, lk));
	if (r->conn->state == CS_DEAD) {
		nbd_req_free(r->conn, r); /* releases the lock */
		return;
	}
	submit_locked(r);
}

/* Take the range lock of a request that changes sectors [start, end). */
static void submit_write(struct nbd_req *r, uint64_t start, uint64_t end, bool rmw)
{
	r->lk.start = start;
	r->lk.end = end;
	r->lk.rmw = rmw;
	r->lk.go = lock_granted;
	r->locked = true;
	if (nbd_rlock_acquire(r->conn->w, &r->lk))
		submit_locked(r);
}

static void submit(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct nbd_server *s = c->srv;
	struct vdisk_queue *q = c->w->q;
	uint64_t sector = cover_first(c, r);
	uint64_t count = cover_end(c, r) - sector;
	bool aligned = req_aligned(c, r);
	int rc = 0;
	switch (r->type) {
	case NBD_CMD_READ:
		if (r->len == 0) {
			reply_read(r);
			return;
		}
		if (!req_cover_buf(c, r)) {
			reply_error(r, NBD_ENOMEM, "out of memory");
			return;
		}
		submit_read(r);
		return;
	case NBD_CMD_WRITE:
	case NBD_CMD_WRITE_ZEROES:
		if (r->len == 0) {
			reply_simple(r, 0);
			return;
		}
		if (!aligned && r->type == NBD_CMD_WRITE_ZEROES &&
		    (r->flags & NBD_CMD_FLAG_FAST_ZERO)) {
			reply_error(r, NBD_ENOTSUP, "a fast zero cannot write partial sectors");
			return;
		}
		submit_write(r, sector, sector + count, !aligned);
		return;
	case NBD_CMD_FLUSH: rc = vdisk_flush(q, req_done, r); break;
	case NBD_CMD_TRIM: {
		/* only whole sectors: what a trim leaves in the rest is unspecified */
		uint64_t from = (r->offset + sector_mask(c)) >> s->shift;
		uint64_t to = (r->offset + r->len) >> s->shift;
		if (to <= from) {
			reply_simple(r, 0);
			return;
		}
		submit_write(r, from, to, false);
		return;
	}
	case NBD_CMD_BLOCK_STATUS:
		if (!req_buf(c, r, NBD_MAX_EXTENTS * (sizeof(struct vdisk_extent) + 8))) {
			reply_error(r, NBD_ENOMEM, "out of memory");
			return;
		}
		rc = vdisk_extents(q, sector, count, (struct vdisk_extent *)r->data,
		                   NBD_MAX_EXTENTS, &r->next_ext, req_done, r);
		break;
	case NBD_CMD_CACHE:
		if (r->len == 0) {
			reply_simple(r, 0);
			return;
		}
		/* the reply names neither: cache the covering sectors */
		r->offset = sector << s->shift;
		r->len = (uint32_t)(count << s->shift);
		if (!req_buf(c, r, r->len < NBD_CACHE_CHUNK ? r->len : NBD_CACHE_CHUNK)) {
			reply_error(r, NBD_ENOMEM, "out of memory");
			return;
		}
		rc = submit_cache_chunk(r);
		break;
	}
	if (rc < 0)
		submit_failed(r, rc);
}

/* A write's payload has arrived in full. */
void nbd_tx_payload_done(struct nbd_conn *c)
{
	struct nbd_req *r = c->rx;
	c->rx = NULL;
	c->rx_have = 0;
	submit(r);
}

bool nbd_tx_parse(struct nbd_conn *c)
{
	for (;;) {
		size_t avail = c->in_end - c->in_start;
		if (c->discard) {
			size_t take = avail < c->discard ? avail : (size_t)c->discard;
			c->in_start += take;
			c->discard -= take;
			if (c->discard)
				return true;
			continue;
		}
		if (c->rx) {
			size_t take = c->rx->len - c->rx_have;
			if (take > avail)
				take = avail;
			memcpy(c->rx->payload + c->rx_have, c->in + c->in_start, take);
			c->rx_have += (uint32_t)take;
			c->in_start += take;
			if (c->rx_have < c->rx->len)
				return true;
			nbd_tx_payload_done(c);
			continue;
		}
		if (c->state != CS_TRANSMISSION)
			return true;
		if (!nbd_tx_room(c)) {
			c->stalled = true;
			return true;
		}
		if (avail < NBD_REQUEST_SIZE)
			return true;
		const unsigned char *p = c->in + c->in_start;
		if (nbd_get32(p) != NBD_REQUEST_MAGIC) {
			nbd_conn_fail(c, "bad request magic 0x%08" PRIx32, nbd_get32(p));
			return false;
		}
		uint16_t type = nbd_get16(p + 6);
		if (type == NBD_CMD_DISC) {
			c->in_start += NBD_REQUEST_SIZE;
			nbd_conn_close(c, "client sent NBD_CMD_DISC");
			return true;
		}
		struct nbd_req *r = req_get(c);
		if (!r) {
			nbd_conn_fail(c, "out of memory for a request");
			return false;
		}
		r->flags = nbd_get16(p + 4);
		r->type = type;
		r->cookie = nbd_get64(p + 8);
		r->offset = nbd_get64(p + 16);
		r->len = nbd_get32(p + 24);
		c->in_start += NBD_REQUEST_SIZE;
		avail -= NBD_REQUEST_SIZE;

		const char *msg = NULL;
		uint32_t err = validate(c, r, &msg);
		if (type == NBD_CMD_WRITE) {
			if (err == 0 && r->len && !req_cover_buf(c, r)) {
				err = NBD_ENOMEM;
				msg = "out of memory";
			}
			if (err) {
				/* the payload follows whatever we think of the header */
				c->discard = r->len;
				reply_error(r, err, msg);
				continue;
			}
			size_t take = avail < r->len ? avail : r->len;
			if (take)
				memcpy(r->payload, c->in + c->in_start, take);
			c->in_start += take;
			if (take < r->len) {
				c->rx = r;
				c->rx_have = (uint32_t)take;
				return true;
			}
			submit(r);
			continue;
		}
		if (err) {
			reply_error(r, err, msg);
			continue;
		}
		submit(r);
	}
}
