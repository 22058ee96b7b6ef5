/* The layered disk's internal layer interface (OpenVMM's LayerIo, in C).
 *
 * A layered disk is an ordered stack of layers, index 0 on top.  Each layer is
 * a sector store in which every sector is either present or absent; a read
 * takes each sector from the topmost layer that has it, and sectors absent
 * everywhere read as zeros.  Only the "layered" driver is public: the layer
 * types below (ram, sqlite, sqlite-cache, disk) are reached through its spec.
 *
 * Layer operations are asynchronous.  A layer's submit function either
 * finishes the operation before returning (it sets io->st and returns 1; the
 * done hook is not called) or accepts it (returns 0) and calls io->done(io)
 * exactly once later, on the queue's thread, from the queue's poll.  Inline
 * completion lets the in-memory layer cost no more than a function call, and
 * the caller runs its state machine in a loop instead of recursing.
 *
 * The range contract of the reference holds for every layer: a request that
 * touches a sector at or beyond the layer's current sector count fails with
 * VDISK_ERR_ILLEGAL_BLOCK, and (sector + count) * sector_size <= INT64_MAX is
 * guaranteed by the caller (the layered disk never moves a request up).
 */
#ifndef VDISK_LAYERED_H
#define VDISK_LAYERED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "vdisk/backend.h"

#define LAYERED_MAX_LAYERS 64

struct layer;
struct lio;
struct lq;

enum lio_op {
	LIO_READ = 0,           /* fill the sectors whose marker bit is clear; set the bits of
	                      those filled */
	LIO_WRITE,              /* make the sectors present with the data */
	LIO_WRITE_NO_OVERWRITE, /* the same, only for sectors now absent (cache fill) */
	LIO_UNMAP,              /* next_is_zero: everything below reads zero here */
	LIO_FLUSH,
	LIO_EXTENT, /* the first run at sector: length and kind, see below */
};

/* Kinds a layer reports for LIO_EXTENT. */
enum lext_kind {
	LEXT_ABSENT = 0, /* not present: look below */
	LEXT_DATA,       /* present, allocated */
	LEXT_ZERO,       /* present, reads as zeros, storage allocated */
	LEXT_HOLE,       /* present, reads as zeros, no storage (VDISK_EXTENT_HOLE|ZERO) */
};

/* One operation on one layer.  Lives in the layered request's context, so no
 * layer allocates per I/O. */
struct lio {
	struct layer *l;
	struct vdisk_req *r; /* the layered request: its queue, qstate, children */
	uint8_t op;          /* enum lio_op */
	bool fua;
	bool next_is_zero;
	uint64_t sector; /* first sector (absolute) */
	uint64_t count;  /* sectors */

	/* Data: bytes [off, off + count * sector_size) of iov.  Reads write into
	 * it, writes read from it. */
	const struct iovec *iov;
	int iovcnt;
	size_t off;

	/* LIO_READ and LIO_WRITE_NO_OVERWRITE: bit (s - bits_base) of bits stands
	 * for sector s; set means "leave that sector alone" (a read: a layer above
	 * supplied it; a cache fill: the cache did not miss it).  NULL for
	 * LIO_WRITE_NO_OVERWRITE: every sector of the range. */
	uint64_t *bits;
	uint64_t bits_base;

	/* LIO_EXTENT result: [sector, sector + ext_len) has kind ext_kind. */
	uint64_t ext_len;
	uint8_t ext_kind;
	struct vdisk_extent ext; /* disk: the answer of the disk */
	unsigned ext_n;

	vdisk_status st;
	void (*done)(struct lio *io);

	/* layer-private scratch */
	struct lio *next; /* sqlite: job lists */
	void *scratch;    /* disk: a bounce buffer */
	size_t scratch_len;
	uint64_t span_first, span_end; /* disk: the sectors a bounced read covers */
	struct iovec slice[8];
};

/* What a layer reports once attached (and what the layer below it reported,
 * when it attaches). */
struct layer_meta {
	uint64_t sector_count; /* at attach time; live value: layer_sector_count() */
	uint32_t sector_size;
	uint32_t physical_sector_size;
	bool has_disk_id;
	uint8_t disk_id[16];
	bool fua;
	bool read_only;        /* logically read-only: no normal writes */
	bool can_no_overwrite; /* supports LIO_WRITE_NO_OVERWRITE: may be a read cache */
	bool fully_present;    /* every sector present (a disk): reads go straight to it */
	bool inline_io;        /* always finishes inline: asking first costs more than doing */
	uint8_t unmap;         /* enum vdisk_unmap_behavior */
	uint32_t optimal_unmap_sectors;
	bool shared_flush; /* VDISK_CAP_SHARED_FLUSH */
};

struct layer_ops {
	const char *name;
	/* Parse cfg (common keys already removed) and open.  below is the
	 * metadata of the layer underneath, NULL for the bottom layer.  Fill
	 * l->meta.  Return 0, or -1 after vdisk_set_error(). */
	int (*open)(struct layer *l, json_t *cfg, const struct layer_meta *below);
	void (*close)(struct layer *l);
	/* Cheap check without I/O: false only if no sector of [sector, sector+count)
	 * is present.  NULL: unknown (always ask the layer). */
	bool (*maybe_present)(struct layer *l, uint64_t sector, uint64_t count);
	/* Lock-free: true only if certainly no sector of the range is present
	 * (may say false when unsure).  NULL: never sure. */
	bool (*surely_absent)(struct layer *l, uint64_t sector, uint64_t count);
	int (*submit)(struct lio *io); /* 1: finished inline (io->st set); 0: later */
	/* Control path: change the sector count.  NULL: not resizable. */
	int (*resize)(struct layer *l, uint64_t new_count);
	/* Live sector count; NULL: the count of the metadata never changes. */
	uint64_t (*sector_count)(struct layer *l);
	/* Add diagnostics to an inspect object. */
	void (*inspect)(struct layer *l, json_t *obj);
	/* Look for damage (vdisk_check()); report with vdisk_check_problem().  0,
	 * or -1 after vdisk_set_error() if the check could not run. */
	int (*check)(struct layer *l, struct vdisk_check *chk);
	/* Per-queue state (sqlite needs none; kept for symmetry with drivers). */
};

struct layer {
	const struct layer_ops *ops;
	void *priv;
	struct vdisk *disk; /* the layered disk */
	unsigned index;
	bool read_cache;
	bool write_through;
	bool open_read_only; /* opened for reading only (resolver rule) */
	struct layer_meta meta;
	uint64_t visible; /* min of the sector counts of layers 0..index at open */
	json_t *cfg;      /* the layer's spec, for inspect */
	/* statistics, shown by inspect */
	_Atomic uint64_t populate_sectors;
	_Atomic uint64_t populate_errors;
};

static inline uint64_t layer_sector_count(struct layer *l)
{
	return l->ops->sector_count ? l->ops->sector_count(l) : l->meta.sector_count;
}

/* The layer types.  A disk layer opens its disk before the others attach, so
 * disks take their places in the stack in spec order. */
int layered_disk_preopen(struct layer *l, json_t *cfg);
/* The layer types. */
extern const struct layer_ops layered_ram_ops;
extern const struct layer_ops layered_sqlite_ops;
extern const struct layer_ops layered_sqlite_cache_ops;
extern const struct layer_ops layered_disk_ops;

/* Per-queue state of a layered disk: the channel on which SQLite layers'
 * workers hand finished operations back to the queue's thread (an eventfd
 * read on the queue's io_uring). */
struct lq {
	struct vdisk_queue *q;
	int efd;
	bool armed;
	unsigned outstanding;
	uint64_t efd_val;
	struct vdisk_uring_op op;
	struct vdisk_timer rearm;
	bool rearm_pending;
	_Atomic(struct lio *) finished; /* pushed by workers, LIFO */
};

/* For layer implementations that complete on another thread: count io as
 * outstanding on its queue (queue thread, at submit) and, from the worker,
 * hand it back; io->done then runs on the queue's thread. */
void layered_remote_begin(struct lio *io);
void layered_remote_finish(struct lio *io);

/* An error message for the control path, with the layer named. */
int layered_layer_error(const struct layer *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------- */
/* Bitmaps of sectors of one request                                           */
/* ------------------------------------------------------------------------- */

static inline bool bits_test(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

/* The bits of [from, to) in the word that holds bit from. */
static inline uint64_t bits_word_mask(uint64_t from, uint64_t to)
{
	uint64_t bit = from % 64, n = 64 - bit < to - from ? 64 - bit : to - from;
	return n == 64 ? ~0ull : ((1ull << n) - 1) << bit;
}

static inline void bits_set_range(uint64_t *b, uint64_t from, uint64_t to)
{
	for (; from < to; from = (from | 63) + 1)
		b[from / 64] |= bits_word_mask(from, to);
}

/* First index in [from, to) whose bit equals v, or to, in plain, or (plain
 * NULL) in shared, a bitmap other threads change, read with acquire loads. */
static inline uint64_t bits_find_in(const uint64_t *plain, const _Atomic uint64_t *shared,
                                    uint64_t from, uint64_t to, bool v)
{
	for (; from < to; from = (from | 63) + 1) {
		uint64_t w = plain ? plain[from / 64]
		                   : atomic_load_explicit(&shared[from / 64], memory_order_acquire);
		w = (v ? w : ~w) & (~0ull << (from % 64));
		if (w) {
			uint64_t i = from / 64 * 64 + (uint64_t)__builtin_ctzll(w);
			return i < to ? i : to;
		}
	}
	return to;
}

static inline uint64_t bits_find(const uint64_t *b, uint64_t from, uint64_t to, bool v)
{
	return bits_find_in(b, NULL, from, to, v);
}

static inline size_t bits_words(uint64_t n)
{
	return (size_t)((n + 63) / 64);
}

/* ------------------------------------------------------------------------- */
/* A cursor over an iovec list, for copies that walk a request in order         */
/* ------------------------------------------------------------------------- */

struct iov_cur {
	const struct iovec *iov;
	int cnt;
	int i;
	size_t in; /* offset inside iov[i] */
};

static inline void iov_cur_init(struct iov_cur *c, const struct iovec *iov, int cnt, size_t off)
{
	c->iov = iov;
	c->cnt = cnt;
	c->i = 0;
	c->in = 0;
	while (c->i < cnt && off >= iov[c->i].iov_len) {
		off -= iov[c->i].iov_len;
		c->i++;
	}
	c->in = off;
}

static inline void iov_cur_skip(struct iov_cur *c, size_t n)
{
	while (n && c->i < c->cnt) {
		size_t left = c->iov[c->i].iov_len - c->in;
		if (n < left) {
			c->in += n;
			return;
		}
		n -= left;
		c->i++;
		c->in = 0;
	}
}

/* Copy n bytes from buf into the iov at the cursor (to = true), or from the
 * iov into buf; a NULL buf with to = true writes zeros. */
static inline void iov_cur_copy(struct iov_cur *c, void *buf, size_t n, bool to)
{
	unsigned char *p = buf;
	while (n && c->i < c->cnt) {
		size_t left = c->iov[c->i].iov_len - c->in;
		size_t k = n < left ? n : left;
		unsigned char *base = (unsigned char *)c->iov[c->i].iov_base + c->in;
		if (to) {
			if (p)
				memcpy(base, p, k);
			else
				memset(base, 0, k);
		} else {
			memcpy(p, base, k);
		}
		if (p)
			p += k;
		n -= k;
		c->in += k;
		if (c->in == c->iov[c->i].iov_len) {
			c->i++;
			c->in = 0;
		}
	}
}

#endif
