/* striped: RAID-0 over N disks.
 *
 * Mapping (the reference's): logical sector L is in chunk c = L / spc (spc =
 * sectors per chunk), on member c mod N, at member sector (c / N) * spc +
 * L mod spc.  Consecutive chunks of one member are adjacent on that member, so
 * the part of any request that falls on one member is one contiguous member
 * range: a request becomes at most one child per member, whose buffer is the
 * member's pieces of the caller's buffer, gathered into one iovec list.  The
 * children run concurrently and the request completes when all have, with the
 * first error found, of the kind the member reported (the reference turns all
 * of them into I/O errors).
 *
 * Members must agree on sector size, sector count and read-only.  The size is
 * fixed at open (members' resizes are not followed: they would move every
 * chunk).  Unmap behaviour: zeroes if every member zeroes, ignored if every
 * member ignores (the reference says unspecified there, which is a defect),
 * else unspecified.
 *
 * Extents: like unmap, one child per member over the member's contiguous
 * range, all in flight at once, each into its own slice of a buffer; when all
 * have answered, the request's chunk pieces are walked in order, each taking
 * its member's extents, and neighbours with the same flags are merged.  The
 * answer stops where a member's answer stops (members may cover a prefix) or
 * where the caller's max is reached, so it covers a prefix of the range as the
 * contract allows.
 *
 * Eject is refused (no hook): the members are not one medium, and ejecting
 * some of them when another fails would leave neither disk nor medium. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

#define MAX_MEMBERS 1024
#define BUF_CLASSES 32 /* free lists of buffers of 2^k bytes */
#define BUF_MIN_CLASS 8
/* Extents asked of the members of one request, all together, unless the
 * caller asks for fewer per member; at least EXT_MIN_PER_MEMBER each. */
#define EXT_BUDGET 4096
#define EXT_MIN_PER_MEMBER 8

struct stripe {
	unsigned n;
	struct vdisk **disks;
	uint64_t spc;        /* sectors per chunk */
	uint64_t chunk_size; /* bytes */
	uint32_t ss;
	unsigned shift;
};

/* Per queue: buffers for gathered pieces and members' extents (no malloc
 * once warm), and the per-member counters used while a request is split
 * (never across calls). */
struct stripe_q {
	void *free_buf[BUF_CLASSES];
	uint64_t *m_start; /* first member sector */
	uint64_t *m_count; /* sectors */
	unsigned *m_niov;  /* iovec entries */
	unsigned *m_pos;   /* next entry to fill */
	unsigned *touched; /* members in use, in the order first met */
};

struct stripe_ctx {
	unsigned pending;
	vdisk_status st;
	void *buf; /* read/write: the gathered iovecs; extents: struct ext_slots */
	unsigned buf_class;
};

/* The members' answers to one extents request: slot j is the member of the
 * request's j-th chunk (members are met in turn, so no member is met twice
 * before all k are), its extents at ext + j * per. */
struct ext_slot {
	unsigned n;    /* extents the member returned */
	unsigned i;    /* the next one to take */
	uint64_t used; /* sectors of extent i already taken */
};
struct ext_slots {
	unsigned k, per;
	struct vdisk_extent *ext;
	struct ext_slot slot[];
};

/* ------------------------------------------------------------------------- */
/* Open                                                                        */
/* ------------------------------------------------------------------------- */

static int striped_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"disks", "chunk-size", "sector-count", NULL};
	uint64_t chunk = 128 * 1024, want_count = 0;
	int have_count;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_size(cfg, "chunk-size", &chunk) < 0 ||
	    (have_count = vdisk_cfg_uint(cfg, "sector-count", &want_count)) < 0)
		return -1;
	json_t *disks = json_object_get(cfg, "disks");
	if (!disks)
		return vdisk_set_error("disks: required (an array of member specs)");
	if (!json_is_array(disks))
		return vdisk_set_error("disks: expected an array of member specs");
	size_t n = json_array_size(disks);
	if (n == 0)
		return vdisk_set_error("disks: empty (a stripe set needs at least one member)");
	if (n > MAX_MEMBERS)
		return vdisk_set_error("disks: %zu members; at most %d", n, MAX_MEMBERS);
	if (chunk == 0)
		return vdisk_set_error("chunk-size: must not be 0");

	struct stripe *s = calloc(1, sizeof *s);
	if (!s || !(s->disks = calloc(n, sizeof *s->disks))) {
		free(s);
		return vdisk_set_error_errno(ENOMEM, "striped");
	}
	s->n = (unsigned)n;
	s->chunk_size = chunk;
	struct vdisk_meta *m = vdisk_meta(d);
	for (size_t i = 0; i < n; i++) {
		char what[32];
		snprintf(what, sizeof what, "disks[%zu]", i);
		s->disks[i] = vdisk_open_child(d, json_array_get(disks, i), what, false);
		if (!s->disks[i])
			goto fail;
	}

	struct vdisk *d0 = s->disks[0];
	s->ss = vdisk_sector_size(d0);
	s->shift = (unsigned)__builtin_ctz(s->ss);
	if (chunk % s->ss) {
		vdisk_set_error("chunk-size: %" PRIu64 " is not a multiple of the members' %" PRIu32
		                "-byte sectors",
		                chunk, s->ss);
		goto fail;
	}
	s->spc = chunk / s->ss;
	uint64_t count0 = vdisk_sector_count(d0);
	bool ro0 = vdisk_read_only(d0);
	bool fua = true, zero = true, ignored = true, fast_zero = true, shared_flush = true;
	uint32_t phys = 0, opt = 1;
	for (unsigned i = 0; i < s->n; i++) {
		struct vdisk *di = s->disks[i];
		if (vdisk_sector_size(di) != s->ss) {
			vdisk_set_error("disks[%u]: %" PRIu32
			                "-byte sectors, but disks[0] has %" PRIu32,
			                i, vdisk_sector_size(di), s->ss);
			goto fail;
		}
		if (vdisk_sector_count(di) != count0) {
			vdisk_set_error("disks[%u]: %" PRIu64 " sectors, but disks[0] has %" PRIu64
			                " (members must be the same size)",
			                i, vdisk_sector_count(di), count0);
			goto fail;
		}
		if (vdisk_read_only(di) != ro0) {
			vdisk_set_error("disks[%u]: %s, but disks[0] is %s", i,
			                vdisk_read_only(di) ? "read-only" : "writable",
			                ro0 ? "read-only" : "writable");
			goto fail;
		}
		fua &= vdisk_fua_respected(di);
		enum vdisk_unmap_behavior u = vdisk_unmap_behavior(di);
		zero &= u == VDISK_UNMAP_ZEROES;
		ignored &= u == VDISK_UNMAP_IGNORED;
		fast_zero &= (vdisk_caps(di) & VDISK_CAP_FAST_ZERO) != 0;
		shared_flush &= (vdisk_caps(di) & VDISK_CAP_SHARED_FLUSH) != 0;
		if (vdisk_physical_sector_size(di) > phys)
			phys = vdisk_physical_sector_size(di);
		if (vdisk_optimal_unmap_sectors(di) > opt)
			opt = vdisk_optimal_unmap_sectors(di);
	}
	/* whole chunks of each member; always a multiple of n * spc */
	uint64_t total = count0 / s->spc * s->spc * s->n;
	if (total == 0) {
		vdisk_set_error("chunk-size: %" PRIu64 " bytes is larger than a member (%" PRIu64
		                " sectors)",
		                chunk, count0);
		goto fail;
	}
	uint64_t count = total;
	if (have_count) {
		if (want_count == 0 || want_count > total) {
			vdisk_set_error("sector-count: %" PRIu64 " is not in 1..%" PRIu64
			                " (the members' whole chunks)",
			                want_count, total);
			goto fail;
		}
		if (want_count % (s->spc * s->n)) {
			vdisk_set_error("sector-count: %" PRIu64
			                " is not a multiple of a stripe (%" PRIu64
			                " sectors: %u members x %" PRIu64 ")",
			                want_count, s->spc * s->n, s->n, s->spc);
			goto fail;
		}
		count = want_count;
	}

	vdisk_set_priv(d, s);
	m->sector_size = s->ss;
	m->physical_sector_size = phys;
	m->sector_count = count;
	m->fua = fua;
	m->read_only = ro0;
	m->unmap = zero      ? VDISK_UNMAP_ZEROES
	           : ignored ? VDISK_UNMAP_IGNORED
	                     : VDISK_UNMAP_UNSPECIFIED;
	m->optimal_unmap_sectors = opt;
	m->caps =
	    (fast_zero ? VDISK_CAP_FAST_ZERO : 0) | (shared_flush ? VDISK_CAP_SHARED_FLUSH : 0);
	m->req_ctx_size = sizeof(struct stripe_ctx);
	return 0;
fail:
	/* the members opened so far are closed by the core */
	free(s->disks);
	free(s);
	return -1;
}

static void striped_close(struct vdisk *d)
{
	struct stripe *s = vdisk_priv(d);
	free(s->disks);
	free(s);
}

static int striped_queue_init(struct vdisk *d, struct vdisk_queue *q, void **qstate)
{
	(void)q;
	struct stripe *s = vdisk_priv(d);
	struct stripe_q *sq = calloc(1, sizeof *sq);
	if (!sq)
		return vdisk_set_error_errno(ENOMEM, "striped queue");
	sq->m_start = calloc(s->n, sizeof *sq->m_start);
	sq->m_count = calloc(s->n, sizeof *sq->m_count);
	sq->m_niov = calloc(s->n, sizeof *sq->m_niov);
	sq->m_pos = calloc(s->n, sizeof *sq->m_pos);
	sq->touched = calloc(s->n, sizeof *sq->touched);
	if (!sq->m_start || !sq->m_count || !sq->m_niov || !sq->m_pos || !sq->touched) {
		free(sq->m_start);
		free(sq->m_count);
		free(sq->m_niov);
		free(sq->m_pos);
		free(sq->touched);
		free(sq);
		return vdisk_set_error_errno(ENOMEM, "striped queue");
	}
	*qstate = sq;
	return 0;
}

static void striped_queue_fini(struct vdisk *d, struct vdisk_queue *q, void *qstate)
{
	(void)d;
	(void)q;
	struct stripe_q *sq = qstate;
	for (unsigned c = 0; c < BUF_CLASSES; c++) {
		while (sq->free_buf[c]) {
			void *next = *(void **)sq->free_buf[c];
			free(sq->free_buf[c]);
			sq->free_buf[c] = next;
		}
	}
	free(sq->m_start);
	free(sq->m_count);
	free(sq->m_niov);
	free(sq->m_pos);
	free(sq->touched);
	free(sq);
}

/* ------------------------------------------------------------------------- */
/* Buffers of a request                                                        */
/* ------------------------------------------------------------------------- */

static void *buf_get(struct stripe_q *sq, size_t bytes, unsigned *cls)
{
	unsigned c = BUF_MIN_CLASS;
	while (c < 63 && ((size_t)1 << c) < bytes)
		c++;
	*cls = c;
	if (c < BUF_CLASSES && sq->free_buf[c]) {
		void *p = sq->free_buf[c];
		sq->free_buf[c] = *(void **)p;
		return p;
	}
	return c < 63 ? malloc((size_t)1 << c) : NULL;
}

static void buf_put(struct stripe_q *sq, void *buf, unsigned cls)
{
	if (cls < BUF_CLASSES) {
		*(void **)buf = sq->free_buf[cls];
		sq->free_buf[cls] = buf;
	} else {
		free(buf);
	}
}

/* A cursor over the caller's iovec list. */
struct cur {
	const struct iovec *iov;
	int cnt, i;
	size_t off;
};

/* Advance by len bytes; count the entries they span and, if out, describe
 * them there. */
static unsigned take(struct cur *c, size_t len, struct iovec *out)
{
	unsigned n = 0;
	while (len) {
		size_t avail = c->iov[c->i].iov_len - c->off;
		if (avail == 0) {
			c->i++;
			c->off = 0;
			continue;
		}
		size_t t = avail < len ? avail : len;
		if (out) {
			out[n].iov_base = (unsigned char *)c->iov[c->i].iov_base + c->off;
			out[n].iov_len = t;
		}
		n++;
		c->off += t;
		len -= t;
	}
	return n;
}

/* ------------------------------------------------------------------------- */
/* The data path                                                               */
/* ------------------------------------------------------------------------- */

static inline uint64_t member_sector(const struct stripe *s, uint64_t c, uint64_t in)
{
	return (c / s->n) * s->spc + in;
}

/* The chunk piece of a range ending at end that starts at logical sector l:
 * its chunk in *c; returns its length. */
static inline uint64_t next_piece(const struct stripe *s, uint64_t l, uint64_t end, uint64_t *c)
{
	uint64_t in = l % s->spc, len = s->spc - in;
	*c = l / s->spc;
	return len < end - l ? len : end - l;
}

/* Append [l, l+len) with flags to the answer, merged with the last extent when
 * they agree; false when that needs an extent beyond the caller's max. */
static bool ext_emit(struct vdisk_req *r, unsigned *n, uint64_t l, uint64_t len, uint32_t flags)
{
	if (*n && r->ext[*n - 1].flags == flags) {
		r->ext[*n - 1].count += len;
		return true;
	}
	if (*n == r->ext_max)
		return false;
	r->ext[*n] = (struct vdisk_extent){.sector = l, .count = len, .flags = flags};
	++*n;
	return true;
}

/* Build the answer of an extents request from its members' answers. */
static vdisk_status ext_merge(struct vdisk_req *r, struct ext_slots *es)
{
	const struct stripe *s = vdisk_priv(r->disk);
	uint64_t end = r->sector + r->count, c0 = r->sector / s->spc;
	unsigned n = 0;
	for (uint64_t l = r->sector, c; l < end;) {
		uint64_t len = next_piece(s, l, end, &c);
		unsigned j = (unsigned)((c - c0) % s->n);
		struct ext_slot *sl = &es->slot[j];
		const struct vdisk_extent *me = es->ext + (size_t)j * es->per;
		while (len) {
			if (sl->i >= sl->n)
				goto out; /* the member answered for less */
			uint64_t t = me[sl->i].count - sl->used;
			if (t > len)
				t = len;
			if (t && !ext_emit(r, &n, l, t, me[sl->i].flags))
				goto out;
			l += t;
			len -= t;
			sl->used += t;
			if (sl->used >= me[sl->i].count) {
				sl->i++;
				sl->used = 0;
			}
		}
	}
out:
	*r->ext_n = n;
	/* a member that answers nothing for a range it has breaks the contract */
	return n ? vdisk_status_ok() : vdisk_status_io(EIO);
}

static void piece_done(struct vdisk_req *child, vdisk_status st)
{
	struct vdisk_req *r = child->opaque;
	struct stripe_ctx *x = vdisk_req_ctx(r);
	if (!vdisk_ok(st) && vdisk_ok(x->st))
		x->st = st;
	if (--x->pending)
		return;
	if (r->op == VDISK_OP_EXTENTS && vdisk_ok(x->st))
		x->st = ext_merge(r, x->buf);
	if (x->buf) {
		buf_put(vdisk_req_qstate(r), x->buf, x->buf_class);
		x->buf = NULL;
	}
	vdisk_req_complete(r, x->st);
}

/* Split [sector, sector+count) into per-member ranges: sq->touched[0..k),
 * m_start, m_count.  If cur is given, also count each member's iovec entries
 * (m_niov) over the caller's buffer. */
static unsigned split(const struct stripe *s, struct stripe_q *sq, uint64_t sector, uint64_t count,
                      struct cur *cur)
{
	unsigned k = 0;
	uint64_t end = sector + count;
	for (uint64_t l = sector, c; l < end;) {
		uint64_t len = next_piece(s, l, end, &c);
		unsigned d = (unsigned)(c % s->n);
		if (sq->m_count[d] == 0) {
			sq->touched[k++] = d;
			sq->m_start[d] = member_sector(s, c, l % s->spc);
			sq->m_niov[d] = 0;
		}
		sq->m_count[d] += len;
		if (cur)
			sq->m_niov[d] += take(cur, (size_t)(len << s->shift), NULL);
		l += len;
	}
	return k;
}

/* Prepare the child of r for member d, the j-th member r touches (split()'s
 * touched[j], or every member for a flush). */
static void prep_child(struct vdisk_req *child, struct vdisk_req *r, struct stripe_q *sq,
                       unsigned d, unsigned j)
{
	struct stripe_ctx *x = vdisk_req_ctx(r);
	switch (r->op) {
	case VDISK_OP_FLUSH: vdisk_req_prep_flush(child); break;
	case VDISK_OP_READ:
	case VDISK_OP_WRITE: {
		const struct iovec *iov = x->buf;
		vdisk_req_prep_rw(child, (enum vdisk_op)r->op, sq->m_start[d],
		                  iov + (sq->m_pos[d] - sq->m_niov[d]), (int)sq->m_niov[d],
		                  r->flags);
		break;
	}
	case VDISK_OP_EXTENTS: {
		struct ext_slots *es = x->buf;
		vdisk_req_prep_extents(child, sq->m_start[d], sq->m_count[d],
		                       es->ext + (size_t)j * es->per, es->per, &es->slot[j].n);
		break;
	}
	default:
		vdisk_req_prep_range(child, (enum vdisk_op)r->op, sq->m_start[d], sq->m_count[d],
		                     r->flags);
	}
}

/* Submit one child per touched member (sq->touched[0..k) after split(); all
 * k members when sq is NULL).  pending is set first and trimmed if a child
 * cannot be had: completions come from the queue's poll, never inside a
 * submit.  Returns -ENOMEM if not even the first child could be had. */
static int fan_out(struct vdisk_req *r, const struct stripe *s, struct stripe_q *sq, unsigned k)
{
	struct stripe_ctx *x = vdisk_req_ctx(r);
	x->pending = k;
	for (unsigned j = 0; j < k; j++) {
		unsigned d = sq ? sq->touched[j] : j;
		struct vdisk_req *child = vdisk_req_alloc(r, s->disks[d]);
		if (!child) {
			if (j == 0)
				return -ENOMEM;
			x->st = vdisk_status_io(ENOMEM);
			x->pending = j;
			break;
		}
		prep_child(child, r, sq, d, j);
		child->done = piece_done;
		child->opaque = r;
		vdisk_req_submit(child);
	}
	return 0;
}

/* Clear the per-member counters split() left. */
static void split_reset(struct stripe_q *sq, unsigned k)
{
	for (unsigned j = 0; j < k; j++)
		sq->m_count[sq->touched[j]] = 0;
}

/* Submit the children of a request split() cut into k member ranges, and
 * clear its counters; the request's buffer goes back if nothing was
 * submitted. */
static int submit_split(struct vdisk_req *r, const struct stripe *s, struct stripe_q *sq,
                        unsigned k)
{
	struct stripe_ctx *x = vdisk_req_ctx(r);
	int rc = fan_out(r, s, sq, k);
	split_reset(sq, k);
	if (rc < 0 && x->buf) {
		buf_put(sq, x->buf, x->buf_class);
		x->buf = NULL;
	}
	return rc;
}

/* Start r with no error and no buffer; complete it at once if it asks for
 * nothing (then true). */
static bool start_empty(struct vdisk_req *r)
{
	struct stripe_ctx *x = vdisk_req_ctx(r);
	x->st = vdisk_status_ok();
	x->buf = NULL;
	bool extents = r->op == VDISK_OP_EXTENTS;
	if (r->count && (!extents || r->ext_max))
		return false;
	if (extents)
		*r->ext_n = 0;
	vdisk_req_complete(r, x->st);
	return true;
}

static int striped_rw(struct vdisk_req *r)
{
	struct stripe *s = vdisk_priv(r->disk);
	struct stripe_q *sq = vdisk_req_qstate(r);
	struct stripe_ctx *x = vdisk_req_ctx(r);
	if (start_empty(r))
		return 0;
	uint64_t c0 = r->sector / s->spc, c1 = (r->sector + r->count - 1) / s->spc;
	if (c0 == c1) {
		/* inside one chunk, the common case: one child on the caller's buffer */
		struct vdisk_req *child = vdisk_req_alloc(r, s->disks[c0 % s->n]);
		if (!child)
			return -ENOMEM;
		vdisk_req_prep_rw(child, (enum vdisk_op)r->op,
		                  member_sector(s, c0, r->sector % s->spc), r->iov, r->iovcnt,
		                  r->flags);
		x->pending = 1;
		child->done = piece_done;
		child->opaque = r;
		return vdisk_req_submit(child);
	}

	struct cur cur = {r->iov, r->iovcnt, 0, 0};
	unsigned k = split(s, sq, r->sector, r->count, &cur);
	size_t total = 0;
	for (unsigned j = 0; j < k; j++) {
		unsigned d = sq->touched[j];
		sq->m_pos[d] = (unsigned)total;
		total += sq->m_niov[d];
	}
	struct iovec *iov = x->buf = buf_get(sq, total * sizeof *iov, &x->buf_class);
	if (!iov) {
		split_reset(sq, k);
		return -ENOMEM;
	}
	/* gather: walk the request again, placing each piece in its member's list */
	cur = (struct cur){r->iov, r->iovcnt, 0, 0};
	uint64_t end = r->sector + r->count;
	for (uint64_t l = r->sector, c; l < end;) {
		uint64_t len = next_piece(s, l, end, &c);
		unsigned d = (unsigned)(c % s->n);
		sq->m_pos[d] += take(&cur, (size_t)(len << s->shift), iov + sq->m_pos[d]);
		l += len;
	}
	return submit_split(r, s, sq, k);
}

/* Unmap and write-zeroes: one range per member. */
static int striped_range(struct vdisk_req *r)
{
	struct stripe *s = vdisk_priv(r->disk);
	struct stripe_q *sq = vdisk_req_qstate(r);
	if (start_empty(r))
		return 0;
	return submit_split(r, s, sq, split(s, sq, r->sector, r->count, NULL));
}

/* Extents: one request per member into its slice of one buffer; piece_done
 * merges the answers. */
static int striped_extents(struct vdisk_req *r)
{
	struct stripe *s = vdisk_priv(r->disk);
	struct stripe_q *sq = vdisk_req_qstate(r);
	struct stripe_ctx *x = vdisk_req_ctx(r);
	if (start_empty(r))
		return 0;
	unsigned k = split(s, sq, r->sector, r->count, NULL);
	unsigned per = EXT_BUDGET / k;
	if (per < EXT_MIN_PER_MEMBER)
		per = EXT_MIN_PER_MEMBER;
	if (per > r->ext_max)
		per = r->ext_max;
	size_t head = sizeof(struct ext_slots) + k * sizeof(struct ext_slot);
	head = (head + _Alignof(struct vdisk_extent) - 1) & ~(_Alignof(struct vdisk_extent) - 1);
	struct ext_slots *es = x->buf =
	    buf_get(sq, head + (size_t)k * per * sizeof(struct vdisk_extent), &x->buf_class);
	if (!es) {
		split_reset(sq, k);
		return -ENOMEM;
	}
	es->k = k;
	es->per = per;
	es->ext = (struct vdisk_extent *)((unsigned char *)es + head);
	memset(es->slot, 0, k * sizeof *es->slot);
	return submit_split(r, s, sq, k);
}

static int striped_flush(struct vdisk_req *r)
{
	struct stripe *s = vdisk_priv(r->disk);
	struct stripe_ctx *x = vdisk_req_ctx(r);
	x->st = vdisk_status_ok();
	x->buf = NULL;
	return fan_out(r, s, NULL, s->n);
}

static int striped_inspect(struct vdisk *d, json_t *obj)
{
	struct stripe *s = vdisk_priv(d);
	json_object_set_new(obj, "members", json_integer(s->n));
	json_object_set_new(obj, "chunk_size", json_integer((json_int_t)s->chunk_size));
	return 0;
}

const struct vdisk_driver vdisk_driver_striped = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "striped",
    .description = "RAID-0 over several disks (disks, chunk-size, sector-count)",
    .open = striped_open,
    .close = striped_close,
    .queue_init = striped_queue_init,
    .queue_fini = striped_queue_fini,
    .read = striped_rw,
    .write = striped_rw,
    .flush = striped_flush,
    .unmap = striped_range,
    .write_zeroes = striped_range,
    .extents = striped_extents,
    .inspect = striped_inspect,
};
