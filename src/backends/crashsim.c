/* crashsim: a crash simulator in the manner of SQLite's crash VFS.
 *
 * Writes since the last flush are volatile.  vdisk_ctl(d, "crash",
 * {"seed":N}) simulates a power cut: each volatile write, in the order they
 * were issued, is independently kept, dropped, or torn (each atomic-sector
 * unit of it kept, left as it was, or replaced by garbage).  FUA writes,
 * unmaps and write-zeroes, and writes that completed before a flush completed
 * are durable and always survive.  After a crash every request fails with an
 * I/O error until vdisk_ctl(d, "restart") (a power on), and the disk below
 * holds the post-crash image: it can be reopened on its own.
 *
 * How: writes go through to the disk below at once (so reads are plain
 * forwards and a close loses nothing), and the layer remembers, until the
 * next flush with nothing volatile left, a copy of each write and the content
 * each sector had before its first write (read from below before that write is
 * issued).  A crash computes the post-crash content of every sector written
 * since from those, in memory, and writes it down.  The crash call does that
 * I/O with a flush of this layer (vdisk_flush_sync on it): that flush writes
 * the post-crash image and flushes the disk below.  Layers above see a dead
 * disk from the crash on.
 *
 * This is a test tool: it allocates per write (the copies) and serialises the
 * bookkeeping under one mutex. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

#define RUN_MAX (1u << 20) /* bytes per recovery write */

struct cs_rec {
	struct cs_rec *next;
	uint64_t seq;
	uint64_t sector, count;
	uint64_t done_at; /* completion event number; 0 while in flight */
	bool zero;        /* unmap / write-zeroes */
	bool durable;
	bool failed;
	unsigned char data[];
};

/* Sector -> its content before the first write since the log was empty. */
struct smap {
	uint64_t *keys; /* UINT64_MAX: empty slot */
	unsigned char **vals;
	size_t cap, n;
	struct blk *blocks; /* the memory vals point into */
};

struct blk {
	struct blk *next;
	unsigned char data[];
};

struct run {
	uint64_t sector, count;
	unsigned char *data;
};

struct crashsim {
	struct vdisk *inner;
	uint32_t ss;
	unsigned shift;
	uint32_t atomic;
	pthread_mutex_t lock;
	struct cs_rec *head, **tail;
	uint64_t seq, events;
	unsigned inflight;
	struct smap base;
	bool crashed;
	/* the post-crash image, waiting for the flush that writes it */
	struct run *runs;
	size_t nruns;
	bool recovery_pending, recovery_running;
	vdisk_status recovery_st;
	/* statistics */
	uint64_t crashes, kept, dropped, torn, recovered_sectors;
};

enum { K_WRITE, K_PRE, K_ZERO, K_FLUSH, K_RECOVER, K_RECOVER_FLUSH };

struct cs_ctx {
	struct cs_rec *rec;
	struct blk *pre;
	uint64_t mark; /* flush: the completion event number when it was issued */
	size_t run;    /* recovery: the run being written */
	int step;      /* K_*: what the child in flight does */
	struct iovec iov;
};

/* ------------------------------------------------------------------------- */
/* The sector map                                                              */
/* ------------------------------------------------------------------------- */

static size_t smap_slot(const struct smap *m, uint64_t key)
{
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 17) & (m->cap - 1);
}

static unsigned char *smap_get(const struct smap *m, uint64_t key)
{
	if (!m->cap)
		return NULL;
	for (size_t i = smap_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == key)
			return m->vals[i];
		if (m->keys[i] == UINT64_MAX)
			return NULL;
	}
}

static int smap_grow(struct smap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1024;
	struct smap nm = {malloc(cap * sizeof(uint64_t)), malloc(cap * sizeof(void *)), cap, 0,
	                  m->blocks};
	if (!nm.keys || !nm.vals) {
		free(nm.keys);
		free(nm.vals);
		return -1;
	}
	memset(nm.keys, 0xff, cap * sizeof(uint64_t));
	for (size_t i = 0; i < m->cap; i++) {
		if (m->keys[i] == UINT64_MAX)
			continue;
		size_t j = smap_slot(&nm, m->keys[i]);
		while (nm.keys[j] != UINT64_MAX)
			j = (j + 1) & (cap - 1);
		nm.keys[j] = m->keys[i];
		nm.vals[j] = m->vals[i];
		nm.n++;
	}
	free(m->keys);
	free(m->vals);
	*m = nm;
	return 0;
}

/* Insert unless present. */
static int smap_add(struct smap *m, uint64_t key, unsigned char *val)
{
	if ((m->n + 1) * 2 > m->cap && smap_grow(m) < 0)
		return -1;
	size_t i = smap_slot(m, key);
	while (m->keys[i] != UINT64_MAX) {
		if (m->keys[i] == key)
			return 0;
		i = (i + 1) & (m->cap - 1);
	}
	m->keys[i] = key;
	m->vals[i] = val;
	m->n++;
	return 0;
}

static void smap_clear(struct smap *m)
{
	free(m->keys);
	free(m->vals);
	while (m->blocks) {
		struct blk *b = m->blocks->next;
		free(m->blocks);
		m->blocks = b;
	}
	memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------- */
/* The log                                                                     */
/* ------------------------------------------------------------------------- */

static void log_clear(struct crashsim *c)
{
	while (c->head) {
		struct cs_rec *n = c->head->next;
		free(c->head);
		c->head = n;
	}
	c->tail = &c->head;
	smap_clear(&c->base);
}

/* Once nothing volatile is left, nothing needs remembering. */
static void maybe_clear(struct crashsim *c)
{
	if (c->inflight)
		return;
	for (struct cs_rec *r = c->head; r; r = r->next)
		if (!r->durable)
			return;
	log_clear(c);
}

static void log_unlink(struct crashsim *c, struct cs_rec *rec)
{
	for (struct cs_rec **pp = &c->head; *pp; pp = &(*pp)->next)
		if (*pp == rec) {
			*pp = rec->next;
			if (c->tail == &rec->next)
				c->tail = pp;
			break;
		}
	free(rec);
}

/* ------------------------------------------------------------------------- */
/* Open, close                                                                 */
/* ------------------------------------------------------------------------- */

static int crashsim_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", "atomic-sector", NULL};
	uint64_t atomic = 0;
	int have;
	if (vdisk_cfg_check(cfg, keys) < 0 ||
	    (have = vdisk_cfg_size(cfg, "atomic-sector", &atomic)) < 0)
		return -1;
	if (have && (atomic < 512 || atomic > (1u << 20) || (atomic & (atomic - 1))))
		return vdisk_set_error(
		    "atomic-sector: %" PRIu64 " is not a power of two in 512..1M", atomic);
	struct crashsim *c = calloc(1, sizeof *c);
	if (!c)
		return vdisk_set_error_errno(ENOMEM, "crashsim");
	c->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!c->inner) {
		free(c);
		return -1;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->tail = &c->head;
	vdisk_set_priv(d, c);
	struct vdisk_meta *m = vdisk_meta(d);
	m->req_ctx_size = sizeof(struct cs_ctx);
	vdisk_meta_inherit(d, c->inner);
	c->ss = m->sector_size;
	c->shift = (unsigned)__builtin_ctz(c->ss);
	c->atomic = have ? (uint32_t)atomic : c->ss;
	/* FUA is durable against the crashes this layer makes */
	m->fua = true;
	return 0;
}

static void free_runs(struct crashsim *c)
{
	for (size_t i = 0; i < c->nruns; i++)
		free(c->runs[i].data);
	free(c->runs);
	c->runs = NULL;
	c->nruns = 0;
}

static void crashsim_close(struct vdisk *d)
{
	struct crashsim *c = vdisk_priv(d);
	log_clear(c);
	free_runs(c);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ------------------------------------------------------------------------- */
/* The data path                                                               */
/* ------------------------------------------------------------------------- */

static vdisk_status dead(void)
{
	return vdisk_status_io(EIO);
}

static bool crashed(struct crashsim *c)
{
	pthread_mutex_lock(&c->lock);
	bool x = c->crashed;
	pthread_mutex_unlock(&c->lock);
	return x;
}

static void child_done(struct vdisk_req *ch, vdisk_status st);

/* Issue the child for step `kind` of request r. */
static int submit_child(struct vdisk_req *r, int kind)
{
	struct crashsim *c = vdisk_priv(r->disk);
	struct cs_ctx *x = vdisk_req_ctx(r);
	x->step = kind;
	struct vdisk_req *ch = vdisk_req_alloc(r, c->inner);
	if (!ch)
		return -ENOMEM;
	switch (kind) {
	case K_WRITE:
		vdisk_req_prep_rw(ch, VDISK_OP_WRITE, r->sector, r->iov, r->iovcnt, r->flags);
		break;
	case K_PRE:
		x->iov.iov_base = x->pre->data;
		x->iov.iov_len = r->len;
		vdisk_req_prep_rw(ch, VDISK_OP_READ, r->sector, &x->iov, 1, 0);
		break;
	case K_ZERO:
		vdisk_req_prep_range(ch, (enum vdisk_op)r->op, r->sector, r->count, r->flags);
		break;
	case K_RECOVER: {
		struct run *run = &c->runs[x->run];
		x->iov.iov_base = run->data;
		x->iov.iov_len = (size_t)(run->count << c->shift);
		vdisk_req_prep_rw(ch, VDISK_OP_WRITE, run->sector, &x->iov, 1, 0);
		break;
	}
	default: vdisk_req_prep_flush(ch); break;
	}
	ch->done = child_done;
	ch->opaque = r;
	return vdisk_req_submit(ch);
}

/* A logged operation that never reached the disk below. */
static void forget(struct crashsim *c, struct cs_ctx *x)
{
	pthread_mutex_lock(&c->lock);
	log_unlink(c, x->rec);
	c->inflight--;
	maybe_clear(c);
	pthread_mutex_unlock(&c->lock);
	free(x->pre);
	x->pre = NULL;
	x->rec = NULL;
}

/* Make r's record: of a write, with a copy of its data, or of an unmap or
 * write-zeroes; NULL when memory runs out. */
static struct cs_rec *rec_new(struct vdisk_req *r)
{
	struct cs_ctx *x = vdisk_req_ctx(r);
	bool zero = r->op != VDISK_OP_WRITE;
	struct cs_rec *rec = malloc(sizeof *rec + (zero ? 0 : r->len));
	if (!rec)
		return NULL;
	memset(rec, 0, sizeof *rec);
	rec->sector = r->sector;
	rec->count = r->count;
	rec->zero = zero;
	/* unmap and write-zeroes always survive */
	rec->durable = zero || (r->flags & VDISK_IO_FUA) != 0;
	if (!zero)
		vdisk_iov_to_buf(r->iov, r->iovcnt, 0, rec->data, r->len);
	x->rec = rec;
	x->pre = NULL;
	return rec;
}

/* Log r's record as in flight; unless the disk has crashed: then free the
 * record, complete r dead and return false.  For a write, *need_pre says
 * whether a sector of it has no saved old content yet. */
static bool rec_log(struct crashsim *c, struct vdisk_req *r, bool *need_pre)
{
	struct cs_rec *rec = ((struct cs_ctx *)vdisk_req_ctx(r))->rec;
	pthread_mutex_lock(&c->lock);
	if (c->crashed) {
		pthread_mutex_unlock(&c->lock);
		free(rec);
		vdisk_req_complete(r, dead());
		return false;
	}
	for (uint64_t s = r->sector; need_pre && s < r->sector + r->count && !*need_pre; s++)
		*need_pre = !smap_get(&c->base, s);
	rec->seq = ++c->seq;
	*c->tail = rec;
	c->tail = &rec->next;
	c->inflight++;
	pthread_mutex_unlock(&c->lock);
	return true;
}

static int crashsim_write(struct vdisk_req *r)
{
	struct crashsim *c = vdisk_priv(r->disk);
	struct cs_ctx *x = vdisk_req_ctx(r);
	if (r->len == 0)
		return vdisk_req_forward(r, c->inner);
	if (!rec_new(r))
		return -ENOMEM;
	bool need_pre = false;
	if (!rec_log(c, r, &need_pre))
		return 0;
	int rc = -ENOMEM;
	if (need_pre) {
		x->pre = malloc(sizeof *x->pre + r->len);
		if (x->pre)
			rc = submit_child(r, K_PRE);
	} else {
		rc = submit_child(r, K_WRITE);
	}
	if (rc < 0)
		forget(c, x);
	return rc;
}

static int crashsim_zero(struct vdisk_req *r)
{
	struct crashsim *c = vdisk_priv(r->disk);
	struct cs_ctx *x = vdisk_req_ctx(r);
	if (!rec_new(r))
		return -ENOMEM;
	if (!rec_log(c, r, NULL))
		return 0;
	int rc = submit_child(r, K_ZERO);
	if (rc < 0)
		forget(c, x);
	return rc;
}

static int crashsim_flush(struct vdisk_req *r)
{
	struct crashsim *c = vdisk_priv(r->disk);
	struct cs_ctx *x = vdisk_req_ctx(r);
	pthread_mutex_lock(&c->lock);
	if (c->crashed) {
		bool recover = c->recovery_pending && !c->recovery_running;
		if (recover)
			c->recovery_running = true;
		pthread_mutex_unlock(&c->lock);
		if (!recover) {
			vdisk_req_complete(r, dead());
			return 0;
		}
		/* this flush carries the post-crash image down */
		x->run = 0;
		int rc = c->nruns ? submit_child(r, K_RECOVER) : submit_child(r, K_RECOVER_FLUSH);
		if (rc < 0) {
			pthread_mutex_lock(&c->lock);
			c->recovery_running = false;
			pthread_mutex_unlock(&c->lock);
		}
		return rc;
	}
	x->mark = c->events;
	pthread_mutex_unlock(&c->lock);
	return submit_child(r, K_FLUSH);
}

/* Reads, extents and eject: passed down until a crash. */
static int crashsim_forward(struct vdisk_req *r)
{
	struct crashsim *c = vdisk_priv(r->disk);
	if (crashed(c)) {
		vdisk_req_complete(r, dead());
		return 0;
	}
	return vdisk_req_forward(r, c->inner);
}

static void recovery_end(struct crashsim *c, vdisk_status st)
{
	pthread_mutex_lock(&c->lock);
	c->recovery_st = st;
	c->recovery_running = false;
	if (vdisk_ok(st)) {
		c->recovery_pending = false;
		free_runs(c);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Each child's completion: the next step of its parent. */
static void child_done(struct vdisk_req *ch, vdisk_status st)
{
	struct vdisk_req *r = ch->opaque;
	struct crashsim *c = vdisk_priv(r->disk);
	struct cs_ctx *x = vdisk_req_ctx(r);
	int rc = 0;
	switch (x->step) {
	case K_PRE: {
		struct blk *pre = x->pre;
		bool fail = !vdisk_ok(st);
		x->pre = NULL;
		pthread_mutex_lock(&c->lock);
		if (!fail) {
			/* base now points into this block, even if a later insert fails */
			pre->next = c->base.blocks;
			c->base.blocks = pre;
			pre = NULL;
		}
		for (uint64_t i = 0; i < r->count && !fail; i++)
			fail = smap_add(&c->base, r->sector + i,
			                c->base.blocks->data + (i << c->shift)) < 0;
		pthread_mutex_unlock(&c->lock);
		if (fail) {
			/* nothing was written; and without the old content a crash
			 * could not be computed: forget the write */
			x->pre = pre;
			forget(c, x);
			vdisk_req_complete(r, vdisk_ok(st) ? vdisk_status_io(ENOMEM) : st);
			return;
		}
		rc = submit_child(r, K_WRITE);
		break;
	}
	case K_WRITE:
	case K_ZERO:
		pthread_mutex_lock(&c->lock);
		x->rec->done_at = ++c->events;
		x->rec->failed = !vdisk_ok(st);
		c->inflight--;
		maybe_clear(c);
		pthread_mutex_unlock(&c->lock);
		vdisk_req_complete(r, st);
		return;
	case K_FLUSH:
		pthread_mutex_lock(&c->lock);
		if (vdisk_ok(st)) {
			/* what had completed when the flush was issued is durable now */
			for (struct cs_rec *rec = c->head; rec; rec = rec->next)
				if (rec->done_at && rec->done_at <= x->mark)
					rec->durable = true;
			maybe_clear(c);
		}
		pthread_mutex_unlock(&c->lock);
		vdisk_req_complete(r, st);
		return;
	case K_RECOVER:
		if (vdisk_ok(st)) {
			rc = ++x->run < c->nruns ? submit_child(r, K_RECOVER)
			                         : submit_child(r, K_RECOVER_FLUSH);
			break;
		}
		recovery_end(c, st);
		vdisk_req_complete(r, st);
		return;
	default: /* K_RECOVER_FLUSH */
		recovery_end(c, st);
		vdisk_req_complete(r, st);
		return;
	}
	if (rc < 0) {
		if (x->step == K_RECOVER || x->step == K_RECOVER_FLUSH)
			recovery_end(c, vdisk_status_io(-rc));
		if (x->step == K_WRITE)
			forget(c, x);
		vdisk_req_complete(r, vdisk_status_io(-rc));
	}
}

/* ------------------------------------------------------------------------- */
/* The crash                                                                   */
/* ------------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

enum { KEEP, DROP, TEAR };

/* Put bytes [off, off+len) of the disk, from src (or zeros), into the image
 * of the sectors that have one (those written since the log was empty). */
static void image_put(struct crashsim *c, uint64_t off, uint64_t len, const unsigned char *src)
{
	while (len) {
		uint64_t s = off >> c->shift, in = off & (c->ss - 1);
		uint64_t n = c->ss - in < len ? c->ss - in : len;
		unsigned char *img = smap_get(&c->base, s);
		if (img) {
			if (src)
				memcpy(img + in, src, (size_t)n);
			else
				memset(img + in, 0, (size_t)n);
		}
		if (src)
			src += n;
		off += n;
		len -= n;
	}
}

static void image_garbage(struct crashsim *c, uint64_t off, uint64_t len, uint64_t *rng)
{
	unsigned char buf[4096];
	while (len) {
		size_t n = len < sizeof buf ? (size_t)len : sizeof buf;
		for (size_t i = 0; i < n; i += 8) {
			uint64_t v = splitmix(rng);
			memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
		}
		image_put(c, off, n, buf);
		off += n;
		len -= n;
	}
}

/* Apply one logged operation to the image, whole or torn. */
static void apply(struct crashsim *c, struct cs_rec *rec, int fate, uint64_t *rng)
{
	uint64_t start = rec->sector << c->shift, len = rec->count << c->shift;
	if (rec->zero) {
		if (fate != DROP)
			image_put(c, start, len, NULL);
		return;
	}
	if (fate == KEEP) {
		image_put(c, start, len, rec->data);
		return;
	}
	if (fate == DROP)
		return;
	/* torn: unit by unit, units aligned on the disk */
	for (uint64_t off = start; off < start + len;) {
		uint64_t end = (off / c->atomic + 1) * c->atomic;
		if (end > start + len)
			end = start + len;
		switch (splitmix(rng) % 3) {
		case 0: image_put(c, off, end - off, rec->data + (off - start)); break;
		case 1: break;
		default: image_garbage(c, off, end - off, rng); break;
		}
		off = end;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The post-crash content of every sector written since the log was empty, as
 * runs of consecutive sectors.  Under c->lock. */
static int build_runs(struct crashsim *c)
{
	uint64_t *keys = malloc((c->base.n ? c->base.n : 1) * sizeof *keys);
	if (!keys)
		return -1;
	size_t n = 0;
	for (size_t i = 0; i < c->base.cap; i++)
		if (c->base.keys[i] != UINT64_MAX)
			keys[n++] = c->base.keys[i];
	qsort(keys, n, sizeof *keys, cmp_u64);
	size_t max_run = RUN_MAX >> c->shift ? RUN_MAX >> c->shift : 1;
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && keys[j] == keys[j - 1] + 1 && j - i < max_run)
			j++;
		struct run *nr = realloc(c->runs, (c->nruns + 1) * sizeof *nr);
		if (!nr)
			goto fail;
		c->runs = nr;
		struct run *run = &c->runs[c->nruns];
		run->sector = keys[i];
		run->count = j - i;
		run->data = malloc((size_t)(run->count << c->shift));
		if (!run->data)
			goto fail;
		c->nruns++;
		for (size_t k = i; k < j; k++)
			memcpy(run->data + ((k - i) << c->shift), smap_get(&c->base, keys[k]),
			       c->ss);
		i = j;
	}
	free(keys);
	return 0;
fail:
	free(keys);
	free_runs(c);
	return -1;
}

static int do_crash(struct vdisk *d, struct crashsim *c, json_t *args, json_t **result)
{
	uint64_t seed = 0;
	const char *mode = "random";
	static const char *const keys[] = {"seed", "mode", NULL};
	if (!json_is_object(args))
		return vdisk_set_error("expected an object such as {\"seed\":1}");
	if (vdisk_cfg_check(args, keys) < 0 || vdisk_cfg_uint(args, "seed", &seed) < 0 ||
	    vdisk_cfg_string(args, "mode", &mode) < 0)
		return -1;
	int forced = -1;
	if (strcmp(mode, "keep") == 0)
		forced = KEEP;
	else if (strcmp(mode, "drop") == 0)
		forced = DROP;
	else if (strcmp(mode, "tear") == 0)
		forced = TEAR;
	else if (strcmp(mode, "random") != 0)
		return vdisk_set_error("mode: '%s' is not one of random, keep, drop, tear", mode);

	pthread_mutex_lock(&c->lock);
	if (c->crashed) {
		pthread_mutex_unlock(&c->lock);
		return vdisk_set_error("already crashed; restart first");
	}
	if (c->inflight) {
		unsigned n = c->inflight;
		pthread_mutex_unlock(&c->lock);
		return vdisk_set_error("%u writes in flight; a crash needs a quiet disk", n);
	}
	uint64_t rng = seed ^ 0x5DEECE66Dull;
	uint64_t kept = 0, dropped = 0, torn = 0;
	/* the image starts as the content before the first write; operations are
	 * applied in the order they were issued */
	for (struct cs_rec *rec = c->head; rec; rec = rec->next) {
		int fate = KEEP;
		if (!rec->durable || rec->failed)
			fate = forced >= 0 ? forced : (int)(splitmix(&rng) % 3);
		if (!rec->durable || rec->failed) {
			kept += fate == KEEP;
			dropped += fate == DROP;
			torn += fate == TEAR;
		}
		apply(c, rec, fate, &rng);
	}
	if (build_runs(c) < 0) {
		pthread_mutex_unlock(&c->lock);
		return vdisk_set_error_errno(ENOMEM, "crash");
	}
	uint64_t sectors = 0;
	for (size_t i = 0; i < c->nruns; i++)
		sectors += c->runs[i].count;
	log_clear(c);
	c->crashed = true;
	c->recovery_pending = true;
	c->crashes++;
	c->kept += kept;
	c->dropped += dropped;
	c->torn += torn;
	c->recovered_sectors += sectors;
	pthread_mutex_unlock(&c->lock);

	/* the I/O: a flush of this layer writes the image down */
	vdisk_status fst = vdisk_flush_sync(d);
	pthread_mutex_lock(&c->lock);
	bool pending = c->recovery_pending;
	vdisk_status rst = c->recovery_st;
	pthread_mutex_unlock(&c->lock);
	if (pending) {
		char buf[128];
		vdisk_status st = vdisk_ok(rst) ? fst : rst;
		return vdisk_set_error("the post-crash image could not be written below: %s (call "
		                       "crash-apply to retry)",
		                       vdisk_status_str(st, buf, sizeof buf));
	}
	*result =
	    json_pack("{s:I,s:I,s:I,s:I}", "kept", (json_int_t)kept, "dropped", (json_int_t)dropped,
	              "torn", (json_int_t)torn, "sectors-rewritten", (json_int_t)sectors);
	return 0;
}

static json_t *status_json(struct crashsim *c)
{
	unsigned vol = 0, recs = 0;
	for (struct cs_rec *r = c->head; r; r = r->next) {
		recs++;
		vol += !r->durable;
	}
	return json_pack("{s:b,s:b,s:i,s:i,s:I,s:i,s:I,s:I,s:I,s:I,s:I}", "crashed", c->crashed,
	                 "recovery-pending", c->recovery_pending, "volatile-writes", vol,
	                 "logged-operations", recs, "remembered-sectors", (json_int_t)c->base.n,
	                 "atomic-sector", (int)c->atomic, "crashes", (json_int_t)c->crashes, "kept",
	                 (json_int_t)c->kept, "dropped", (json_int_t)c->dropped, "torn",
	                 (json_int_t)c->torn, "sectors-rewritten",
	                 (json_int_t)c->recovered_sectors);
}

static int crashsim_ctl(struct vdisk *d, const char *op, json_t *args, json_t **result)
{
	struct crashsim *c = vdisk_priv(d);
	if (strcmp(op, "crash") == 0)
		return do_crash(d, c, args, result);
	if (strcmp(op, "crash-apply") == 0) {
		pthread_mutex_lock(&c->lock);
		bool pending = c->recovery_pending;
		pthread_mutex_unlock(&c->lock);
		if (!pending)
			return vdisk_set_error("nothing to apply");
		vdisk_status st = vdisk_flush_sync(d);
		pthread_mutex_lock(&c->lock);
		pending = c->recovery_pending;
		pthread_mutex_unlock(&c->lock);
		if (pending) {
			char buf[128];
			return vdisk_set_error(
			    "the post-crash image could not be written below: %s",
			    vdisk_status_str(st, buf, sizeof buf));
		}
		return 0;
	}
	if (strcmp(op, "restart") == 0) {
		pthread_mutex_lock(&c->lock);
		int rc = 0;
		if (c->recovery_pending)
			rc = vdisk_set_error(
			    "the post-crash image is not written yet (crash-apply)");
		else
			c->crashed = false;
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	if (strcmp(op, "status") == 0) {
		pthread_mutex_lock(&c->lock);
		*result = status_json(c);
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	return vdisk_set_error("unknown operation (known: crash, crash-apply, restart, status)");
}

static int crashsim_inspect(struct vdisk *d, json_t *obj)
{
	struct crashsim *c = vdisk_priv(d);
	pthread_mutex_lock(&c->lock);
	json_object_set_new(obj, "crashsim", status_json(c));
	pthread_mutex_unlock(&c->lock);
	return 0;
}

const struct vdisk_driver vdisk_driver_crashsim = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "crashsim",
    .description = "crash simulator: unflushed writes kept, dropped or torn on a crash (inner, "
                   "atomic-sector)",
    .open = crashsim_open,
    .close = crashsim_close,
    .read = crashsim_forward,
    .write = crashsim_write,
    .flush = crashsim_flush,
    .unmap = crashsim_zero,
    .write_zeroes = crashsim_zero,
    .extents = crashsim_forward,
    .eject = crashsim_forward,
    .inspect = crashsim_inspect,
    .ctl = crashsim_ctl,
};
