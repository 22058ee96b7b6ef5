/* ram layer: a sparse layer in memory with per-sector presence.
 *
 * The sectors live where the ram backend keeps them: at their own offset in
 * an anonymous mapping, so a copy needs no lookup of where a page went.  The
 * disk is cut into chunks of 1 GiB, each its own mapping reserved without
 * backing (MAP_NORESERVE) when first written, no longer than the layer (a
 * layer of 64 MiB maps 64 MiB: strict overcommit charges every byte mapped;
 * a resize moves a short chunk's pages to a longer mapping); the kernel
 * supplies memory a 4 KiB page at a time as sectors are written, and a radix
 * tree over the chunk index (512 entries a node, as many levels as the size
 * needs; one for up to 512 GiB) finds a chunk.  Each chunk has a bitmap with
 * a bit per sector (present or not) and one per 4 KiB page (backed by memory
 * or not), just before its data.  Once 64 of the 512 pages of an
 * aligned 2 MiB region are backed, the region is collapsed into a
 * transparent huge page (MADV_COLLAPSE): random copies run faster from huge
 * pages, and 4 KiB page faults, dear in a virtual machine, stop; sparse
 * writes still cost 4 KiB each, and a region costs at most 8 times what was
 * written to it.  An unmap gives back the pages of which no
 * sector is left.
 *
 * zero_after (the reference's watermark): an absent sector at or beyond it
 * reads as zeros and counts as present, hiding the layers below.  It starts at
 * the sector count and only goes down, on a shrink or on an unmap that reaches
 * it; so a shrunk-then-grown disk reads zeros in the regrown part.
 *
 * Locking: a reader/writer lock.  Reads and normal writes take it shared:
 * writers install chunks with compare-and-swap and publish sector bits with
 * a release OR after the copy, so concurrent readers see either the old state
 * or complete data.  Writes that must look before they write (no-overwrite
 * cache fills), unmaps and resizes take it exclusive.  The empty layer answers
 * "nothing here" without touching the lock, which keeps a read through an
 * unused RAM diff as cheap as a read of the disk below. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "layered.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define FANOUT 512
#define FANOUT_SHIFT 9
#define CHUNK_SHIFT 30 /* bytes of a chunk */
#define CHUNK_BYTES ((size_t)1 << CHUNK_SHIFT)
#define PAGE_SHIFT 12
#define CHUNK_PAGES ((size_t)1 << (CHUNK_SHIFT - PAGE_SHIFT))
#define REGION_SHIFT 21 /* a transparent huge page */
#define REGION_PAGES (1u << (REGION_SHIFT - PAGE_SHIFT))
#define CHUNK_REGIONS ((size_t)1 << (CHUNK_SHIFT - REGION_SHIFT))
#define COLLAPSE_PAGES 64 /* backed pages that make a region a huge page */

typedef _Atomic uint64_t aword;

struct chunk {
	unsigned char *data; /* data_len bytes, aligned to a huge page */
	aword *present;      /* bit per sector */
	aword *backed;       /* bit per 4 KiB page of data that has memory */
	void *map;           /* the mapping: bitmaps, then data */
	size_t map_len;
	size_t data_len; /* CHUNK_BYTES, or less (a multiple of 2 MiB) for a layer
	                    that ends inside the chunk; grown with the layer */
	_Atomic uint32_t region_pages[CHUNK_REGIONS]; /* backed pages per 2 MiB */
};

struct ram_layer {
	pthread_rwlock_t lock;
	uint32_t ss;
	unsigned shift;
	unsigned cs_shift; /* log2(sectors per chunk) */
	uint64_t count;    /* sector count; changed under the exclusive lock */
	_Atomic uint64_t count_pub;
	_Atomic uint64_t zero_after;
	void *root;               /* chunk directory; changed under the exclusive lock */
	unsigned height;          /* levels; leaves are level 1 */
	_Atomic uint64_t present; /* present sectors: 0 means the layer is empty */
	_Atomic uint64_t pages;   /* backed 4 KiB pages, for inspect */
};

static inline uint64_t chunk_of(const struct ram_layer *m, uint64_t sector)
{
	return sector >> m->cs_shift;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------------------------------- */
/* Bitmaps shared with other threads                                           */
/* ------------------------------------------------------------------------- */

static inline bool abit(const aword *b, uint64_t i)
{
	return atomic_load_explicit(&b[i / 64], memory_order_acquire) >> (i % 64) & 1;
}

static inline uint64_t abits_find(const aword *b, uint64_t from, uint64_t to, bool v)
{
	return bits_find_in(NULL, b, from, to, v);
}

/* Set (set true) or clear the bits [from, to); returns how many changed.
 * Where all are as wanted already (an overwrite) no locked instruction is
 * taken: one would wait here for the copy's stores to drain (it cost a
 * quarter of a 4 KiB write). */
static uint64_t abits_change(aword *b, uint64_t from, uint64_t to, bool set)
{
	uint64_t changed = 0;
	for (; from < to; from = (from | 63) + 1) {
		uint64_t mask = bits_word_mask(from, to), want = set ? mask : 0;
		uint64_t old = atomic_load_explicit(&b[from / 64], memory_order_relaxed);
		if ((old & mask) == want)
			continue;
		old = set ? atomic_fetch_or_explicit(&b[from / 64], mask, memory_order_release)
		          : atomic_fetch_and_explicit(&b[from / 64], ~mask, memory_order_release);
		changed += (uint64_t)__builtin_popcountll((set ? ~old : old) & mask);
	}
	return changed;
}

/* ------------------------------------------------------------------------- */
/* Chunks                                                                      */
/* ------------------------------------------------------------------------- */

/* Bytes of data chunk ci needs for a layer of count sectors: all of it, or
 * up to the layer's end rounded up to a huge page.  Under strict overcommit
 * every byte mapped is charged, so a small layer must not map 1 GiB. */
static size_t chunk_need(const struct ram_layer *m, uint64_t ci, uint64_t count)
{
	uint64_t base = ci << m->cs_shift, align = (uint64_t)1 << REGION_SHIFT;
	if (count - base >= (uint64_t)1 << m->cs_shift)
		return CHUNK_BYTES;
	return (size_t)((((count - base) << m->shift) + align - 1) & ~(align - 1));
}

/* Bytes of the bitmaps, which lie in the mapping just before the data:
 * a bit per sector, then a bit per page, rounded up to a page. */
static size_t bits_bytes(const struct ram_layer *m)
{
	size_t n = ((size_t)1 << m->cs_shift) / 8 + CHUNK_PAGES / 8;
	return (n + ((size_t)1 << PAGE_SHIFT) - 1) & ~(((size_t)1 << PAGE_SHIFT) - 1);
}

/* A mapping, reserved without backing, for front bytes and then len bytes
 * of data aligned to a huge page; *data is where the data starts. */
static void *map_chunk(size_t front, size_t len, size_t *map_len, unsigned char **data)
{
	size_t align = (size_t)1 << REGION_SHIFT;
	*map_len = front + len + align;
	void *map = mmap(NULL, *map_len, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED)
		return NULL;
	*data = (unsigned char *)(((uintptr_t)map + front + align - 1) & ~(uintptr_t)(align - 1));
	return map;
}

/* Chunk ci of a layer of m->count sectors.  Under the lock. */
static struct chunk *chunk_new(struct ram_layer *m, uint64_t ci)
{
	struct chunk *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	size_t front = bits_bytes(m);
	c->data_len = chunk_need(m, ci, m->count);
	c->map = map_chunk(front, c->data_len, &c->map_len, &c->data);
	if (!c->map) {
		free(c);
		return NULL;
	}
	c->present = (aword *)(c->data - front);
	c->backed = (aword *)(c->data - front + ((size_t)1 << m->cs_shift) / 8);
	return c;
}

/* Make chunk c's data len bytes long: its bitmaps and pages move (not
 * copied) to a new mapping, in one step that fails whole or not at all;
 * -1 when out of memory.  Exclusive lock. */
static int chunk_grow(struct ram_layer *m, struct chunk *c, size_t len)
{
	size_t front = bits_bytes(m), map_len;
	unsigned char *data;
	void *map = map_chunk(front, len, &map_len, &data);
	if (!map)
		return -1;
	unsigned char *from = c->data - front;
	if (mremap(from, front + c->data_len, front + c->data_len, MREMAP_MAYMOVE | MREMAP_FIXED,
	           data - front) == MAP_FAILED) {
		munmap(map, map_len);
		return -1;
	}
	/* what is left of the old mapping: the slack on either side (not the
	 * hole the move left, which another thread may have mapped by now) */
	unsigned char *map0 = c->map, *end = c->data + c->data_len;
	if (from > map0)
		munmap(map0, (size_t)(from - map0));
	if (map0 + c->map_len > end)
		munmap(end, (size_t)(map0 + c->map_len - end));
	c->map = map;
	c->map_len = map_len;
	c->present = (aword *)(data - front);
	c->backed = (aword *)(data - front + ((size_t)1 << m->cs_shift) / 8);
	c->data = data;
	c->data_len = len;
	return 0;
}

static void chunk_free(struct chunk *c)
{
	if (!c)
		return;
	munmap(c->map, c->map_len);
	free(c);
}

/* A region whose pages are now all backed (after a collapse). */
static void back_region(struct ram_layer *m, struct chunk *c, size_t r)
{
	uint64_t added = 0;
	for (size_t w = r * REGION_PAGES / 64; w < (r + 1) * REGION_PAGES / 64; w++)
		added += (uint64_t)__builtin_popcountll(
		    ~atomic_fetch_or_explicit(&c->backed[w], ~0ull, memory_order_relaxed));
	atomic_fetch_add_explicit(&c->region_pages[r], (uint32_t)added, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->pages, added, memory_order_relaxed);
}

/* Pages [first, last] of c hold data now (after the copy, before the sector
 * bits say so, so that a present sector is always on a backed page).  A 2 MiB
 * region with COLLAPSE_PAGES of its pages backed becomes one huge page. */
static void back_pages(struct ram_layer *m, struct chunk *c, uint64_t first, uint64_t last)
{
	for (uint64_t p = first; p <= last; p++) {
		uint64_t bit = 1ull << (p % 64);
		if (atomic_load_explicit(&c->backed[p / 64], memory_order_relaxed) & bit)
			continue;
		if (atomic_fetch_or_explicit(&c->backed[p / 64], bit, memory_order_relaxed) & bit)
			continue;
		atomic_fetch_add_explicit(&m->pages, 1, memory_order_relaxed);
		size_t r = (size_t)(p / REGION_PAGES);
		uint32_t n =
		    atomic_fetch_add_explicit(&c->region_pages[r], 1, memory_order_relaxed) + 1;
		/* again at 128, 256 and 512 if the kernel could not (pages pinned
		 * by I/O, no huge page free) */
		if (n >= COLLAPSE_PAGES && !(n & (n - 1)) &&
		    madvise(c->data + (r << REGION_SHIFT), (size_t)1 << REGION_SHIFT,
		            MADV_COLLAPSE) == 0)
			back_region(m, c, r);
	}
}

/* Whether no sector on page p of c is present. */
static bool page_empty(const struct ram_layer *m, const struct chunk *c, uint64_t p)
{
	if (m->shift > PAGE_SHIFT)
		return !abit(c->present, p >> (m->shift - PAGE_SHIFT));
	uint64_t s0 = p << (PAGE_SHIFT - m->shift), s1 = (p + 1) << (PAGE_SHIFT - m->shift);
	return abits_find(c->present, s0, s1, true) == s1;
}

/* Give back pages [*run, p) of c, if *run says there are some. */
static void give_back(struct chunk *c, uint64_t *run, uint64_t p)
{
	if (*run < p)
		madvise(c->data + (*run << PAGE_SHIFT), (size_t)(p - *run) << PAGE_SHIFT,
		        MADV_DONTNEED);
	*run = UINT64_MAX;
}

/* Give back the pages in [first, last] of which no sector is present.
 * Exclusive lock. */
static void release_pages(struct ram_layer *m, struct chunk *c, uint64_t first, uint64_t last)
{
	uint64_t run = UINT64_MAX; /* first page of a run to give back */
	for (uint64_t p = first; p <= last; p++) {
		if (p % 64 == 0 && p + 63 <= last &&
		    atomic_load_explicit(&c->backed[p / 64], memory_order_relaxed) == 0) {
			give_back(c, &run, p);
			p += 63; /* none of these has memory */
			continue;
		}
		if (!abit(c->backed, p) || !page_empty(m, c, p)) {
			give_back(c, &run, p);
			continue;
		}
		if (run == UINT64_MAX)
			run = p;
		atomic_fetch_and_explicit(&c->backed[p / 64], ~(1ull << (p % 64)),
		                          memory_order_relaxed);
		atomic_fetch_sub_explicit(&c->region_pages[p / REGION_PAGES], 1,
		                          memory_order_relaxed);
		atomic_fetch_sub_explicit(&m->pages, 1, memory_order_relaxed);
	}
	give_back(c, &run, last + 1);
}

/* ------------------------------------------------------------------------- */
/* The chunk directory                                                         */
/* ------------------------------------------------------------------------- */

typedef _Atomic(struct chunk *) cslot_t;

static unsigned height_for(uint64_t chunks)
{
	unsigned h = 1;
	while (h < 7 && chunks > (1ull << (FANOUT_SHIFT * h)))
		h++;
	return h;
}

/* The directory entry of chunk ci, creating the path to it if create is set
 * (then NULL means out of memory).  Under the lock, shared or exclusive. */
static cslot_t *chunk_slot(struct ram_layer *m, uint64_t ci, bool create)
{
	_Atomic(void *) *link = (_Atomic(void *) *)&m->root;
	for (unsigned level = m->height; level >= 1; level--) {
		void *node = atomic_load_explicit(link, memory_order_acquire);
		if (!node) {
			if (!create)
				return NULL;
			void *fresh = calloc(FANOUT, sizeof(void *));
			if (!fresh)
				return NULL;
			void *expect = NULL;
			if (atomic_compare_exchange_strong_explicit(
			        link, &expect, fresh, memory_order_acq_rel, memory_order_acquire)) {
				node = fresh;
			} else {
				free(fresh);
				node = expect;
			}
		}
		unsigned idx = (unsigned)(ci >> (FANOUT_SHIFT * (level - 1))) & (FANOUT - 1);
		if (level == 1)
			return &((cslot_t *)node)[idx];
		link = &((_Atomic(void *) *)node)[idx];
	}
	return NULL;
}

static struct chunk *chunk_find(struct ram_layer *m, uint64_t ci)
{
	cslot_t *slot = chunk_slot(m, ci, false);
	return slot ? atomic_load_explicit(slot, memory_order_acquire) : NULL;
}

/* Chunk ci, made if missing; NULL when out of memory.  Shared lock. */
static struct chunk *chunk_get(struct ram_layer *m, uint64_t ci)
{
	cslot_t *slot = chunk_slot(m, ci, true);
	if (!slot)
		return NULL;
	struct chunk *c = atomic_load_explicit(slot, memory_order_acquire);
	if (c)
		return c;
	struct chunk *fresh = chunk_new(m, ci);
	if (!fresh)
		return NULL;
	if (atomic_compare_exchange_strong_explicit(slot, &c, fresh, memory_order_acq_rel,
	                                            memory_order_acquire))
		return fresh;
	chunk_free(fresh);
	return c;
}

/* First chunk index in [from, to) that exists, under the lock.  Skips
 * missing subtrees whole. */
static bool scan(void *node, unsigned level, uint64_t base, uint64_t from, uint64_t to,
                 uint64_t *ci, struct chunk **out)
{
	uint64_t span = 1ull << (FANOUT_SHIFT * (level - 1));
	unsigned i = from > base ? (unsigned)((from - base) / span) : 0;
	for (; i < FANOUT; i++) {
		uint64_t cbase = base + (uint64_t)i * span;
		if (cbase >= to)
			return false;
		if (level == 1) {
			struct chunk *c =
			    atomic_load_explicit(&((cslot_t *)node)[i], memory_order_acquire);
			if (c) {
				*ci = cbase;
				*out = c;
				return true;
			}
		} else {
			void *child = atomic_load_explicit(&((_Atomic(void *) *)node)[i],
			                                   memory_order_acquire);
			if (child && scan(child, level - 1, cbase, from, to, ci, out))
				return true;
		}
	}
	return false;
}

static bool next_chunk(struct ram_layer *m, uint64_t from, uint64_t to, uint64_t *ci,
                       struct chunk **c)
{
	void *root = atomic_load_explicit((_Atomic(void *) *)&m->root, memory_order_acquire);
	if (!root || from >= to)
		return false;
	return scan(root, m->height, 0, from, to, ci, c);
}

static void free_tree(void *node, unsigned level)
{
	if (!node)
		return;
	for (unsigned i = 0; i < FANOUT; i++) {
		void *child = atomic_load(&((_Atomic(void *) *)node)[i]);
		if (level > 1)
			free_tree(child, level - 1);
		else
			chunk_free(child);
	}
	free(node);
}

/* ------------------------------------------------------------------------- */
/* Presence across chunks                                                      */
/* ------------------------------------------------------------------------- */

/* Calls fn for the part [x, y) (sectors from the chunk's first, base) of
 * each 2 MiB region in [from, to) that has a backed page, in order, until fn
 * returns true; returns whether one did.  A region without a backed page
 * holds no present sector.  Under the lock. */
typedef bool region_fn(struct ram_layer *m, struct chunk *c, uint64_t base, uint64_t x, uint64_t y,
                       void *arg);
static bool each_region(struct ram_layer *m, uint64_t from, uint64_t to, region_fn *fn, void *arg)
{
	uint64_t ci;
	struct chunk *c;
	unsigned rs_shift = REGION_SHIFT - m->shift; /* sectors are at most 64 KiB */
	while (from < to && next_chunk(m, chunk_of(m, from), chunk_of(m, to - 1) + 1, &ci, &c)) {
		uint64_t base = ci << m->cs_shift;
		uint64_t x = from > base ? from - base : 0;
		uint64_t lim = min_u64(to - base, (uint64_t)1 << m->cs_shift);
		while (x < lim) {
			uint64_t rend = min_u64(lim, ((x >> rs_shift) + 1) << rs_shift);
			if (atomic_load_explicit(&c->region_pages[x >> rs_shift],
			                         memory_order_relaxed) &&
			    fn(m, c, base, x, rend, arg))
				return true;
			x = rend;
		}
		from = base + ((uint64_t)1 << m->cs_shift);
	}
	return false;
}

static bool find_present(struct ram_layer *m, struct chunk *c, uint64_t base, uint64_t x,
                         uint64_t y, void *arg)
{
	(void)m;
	uint64_t i = abits_find(c->present, x, y, true);
	*(uint64_t *)arg = base + i;
	return i < y;
}

/* First present sector in [from, to), or to.  Under the lock. */
static uint64_t next_present(struct ram_layer *m, uint64_t from, uint64_t to)
{
	uint64_t at;
	return each_region(m, from, to, find_present, &at) ? at : to;
}

/* First absent sector in [from, to), or to.  Under the lock. */
static uint64_t next_absent(struct ram_layer *m, uint64_t from, uint64_t to)
{
	while (from < to) {
		uint64_t ci = chunk_of(m, from), base = ci << m->cs_shift;
		struct chunk *c = chunk_find(m, ci);
		if (!c)
			return from;
		uint64_t lim = min_u64(to - base, (uint64_t)1 << m->cs_shift);
		uint64_t y = abits_find(c->present, from - base, lim, false);
		if (y < lim)
			return base + y;
		from = base + lim;
	}
	return to;
}

static bool drop_region(struct ram_layer *m, struct chunk *c, uint64_t base, uint64_t x, uint64_t y,
                        void *arg)
{
	(void)base;
	(void)arg;
	uint64_t gone = abits_change(c->present, x, y, false);
	atomic_fetch_sub_explicit(&m->present, gone, memory_order_relaxed);
	release_pages(m, c, (x << m->shift) >> PAGE_SHIFT, ((y << m->shift) - 1) >> PAGE_SHIFT);
	return false;
}

/* Make [from, to) absent and give back the pages left empty.  Exclusive
 * lock. */
static void drop_range(struct ram_layer *m, uint64_t from, uint64_t to)
{
	each_region(m, from, to, drop_region, NULL);
}

/* ------------------------------------------------------------------------- */
/* Operations                                                                  */
/* ------------------------------------------------------------------------- */

static vdisk_status illegal(void)
{
	return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
}

/* Take the lock, exclusive or shared, for io; false, with the lock not held,
 * if io's range does not lie inside the layer. */
static bool lock_range(struct ram_layer *m, const struct lio *io, bool exclusive)
{
	if (exclusive)
		pthread_rwlock_wrlock(&m->lock);
	else
		pthread_rwlock_rdlock(&m->lock);
	if (io->sector + io->count <= m->count)
		return true;
	pthread_rwlock_unlock(&m->lock);
	return false;
}

static bool ram_maybe_present(struct layer *l, uint64_t sector, uint64_t count)
{
	struct ram_layer *m = l->priv;
	if (count == 0)
		return false;
	if (sector + count > atomic_load_explicit(&m->zero_after, memory_order_acquire))
		return true;
	if (atomic_load_explicit(&m->present, memory_order_acquire) == 0)
		return false;
	pthread_rwlock_rdlock(&m->lock);
	bool any = next_present(m, sector, sector + count) < sector + count;
	pthread_rwlock_unlock(&m->lock);
	return any;
}

static bool ram_surely_absent(struct layer *l, uint64_t sector, uint64_t count)
{
	struct ram_layer *m = l->priv;
	return atomic_load_explicit(&m->present, memory_order_acquire) == 0 &&
	       sector + count <= atomic_load_explicit(&m->zero_after, memory_order_acquire);
}

/* Copy sectors [x, y) into the request from src (NULL: zeros) and mark them
 * supplied; *at is the sector the cursor points at. */
static void supply(struct ram_layer *m, struct lio *io, struct iov_cur *cur, uint64_t *at,
                   uint64_t x, uint64_t y, const unsigned char *src)
{
	iov_cur_skip(cur, (size_t)((x - *at) << m->shift));
	iov_cur_copy(cur, (void *)src, (size_t)((y - x) << m->shift), true);
	bits_set_range(io->bits, x - io->bits_base, y - io->bits_base);
	*at = y;
}

static vdisk_status ram_read(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	/* an empty layer (the usual RAM diff over a disk, before writes): nothing
	 * to take the lock for; the checks race with a resize or a write only as
	 * a read issued just before them would */
	if (atomic_load_explicit(&m->present, memory_order_acquire) == 0 &&
	    end <= atomic_load_explicit(&m->zero_after, memory_order_acquire))
		return end <= atomic_load_explicit(&m->count_pub, memory_order_acquire) ? st
		                                                                        : illegal();
	if (!lock_range(m, io, false))
		return illegal();
	uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
	const uint64_t bb = io->bits_base;
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	uint64_t at = s; /* the sector the cursor points at */
	while (s < end) {
		uint64_t ci = chunk_of(m, s), base = ci << m->cs_shift;
		uint64_t ce = min_u64(end, base + ((uint64_t)1 << m->cs_shift));
		struct chunk *c = chunk_find(m, ci);
		uint64_t x = s;
		while (x < ce) {
			/* a run of sectors no layer above supplied */
			x = bits_find(io->bits, x - bb, ce - bb, false) + bb;
			uint64_t y = bits_find(io->bits, x - bb, ce - bb, true) + bb;
			while (x < y) {
				/* split it where presence changes */
				bool here = c && abit(c->present, x - base);
				uint64_t z =
				    c ? abits_find(c->present, x - base, y - base, !here) + base
				      : y;
				if (here)
					supply(m, io, &cur, &at, x, z,
					       c->data + ((x - base) << m->shift));
				else if (z > za) /* absent, but at or past the watermark: zeros */
					supply(m, io, &cur, &at, x > za ? x : za, z, NULL);
				x = z;
			}
		}
		s = ce;
	}
	pthread_rwlock_unlock(&m->lock);
	return st;
}

/* Copy sectors [x, y) of chunk c (base: its first sector) from the request
 * and make them present; *at is the sector the cursor points at. */
static void store(struct ram_layer *m, struct chunk *c, uint64_t base, struct iov_cur *cur,
                  uint64_t *at, uint64_t x, uint64_t y)
{
	size_t off = (size_t)((x - base) << m->shift), len = (size_t)((y - x) << m->shift);
	iov_cur_skip(cur, (size_t)((x - *at) << m->shift));
	iov_cur_copy(cur, c->data + off, len, false);
	*at = y;
	back_pages(m, c, off >> PAGE_SHIFT, (off + len - 1) >> PAGE_SHIFT);
	uint64_t added = abits_change(c->present, x - base, y - base, true);
	if (added)
		atomic_fetch_add_explicit(&m->present, added, memory_order_release);
}

/* A write (no_overwrite false, under the shared lock: see the locking note at
 * the top), or a cache fill (true, exclusive, because it must look and write
 * as one step): only sectors absent now, so data read from below never
 * replaces a newer write, and only those the marker bits leave to fill. */
static vdisk_status ram_write(struct ram_layer *m, struct lio *io, bool no_overwrite)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	if (!lock_range(m, io, no_overwrite))
		return illegal();
	uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	uint64_t at = s;
	while (s < end) {
		uint64_t ci = chunk_of(m, s), base = ci << m->cs_shift;
		uint64_t ce = min_u64(end, base + ((uint64_t)1 << m->cs_shift));
		struct chunk *c = chunk_get(m, ci);
		if (!c) {
			st = vdisk_status_io(ENOMEM);
			break;
		}
		if (!no_overwrite) {
			store(m, c, base, &cur, &at, s, ce);
			s = ce;
			continue;
		}
		/* beyond zero_after an absent sector already reads (present) zero */
		const uint64_t bb = io->bits_base;
		uint64_t lim = min_u64(ce, za > s ? za : s), x = s;
		while (x < lim) {
			x = abits_find(c->present, x - base, lim - base, false) + base;
			if (x < lim && io->bits && bits_test(io->bits, x - bb)) {
				/* a set marker bit means "not to be filled" */
				x = bits_find(io->bits, x - bb, lim - bb, false) + bb;
				continue;
			}
			uint64_t y = abits_find(c->present, x - base, lim - base, true) + base;
			if (io->bits)
				y = bits_find(io->bits, x - bb, y - bb, true) + bb;
			if (x < y)
				store(m, c, base, &cur, &at, x, y);
			x = y;
		}
		s = ce;
	}
	pthread_rwlock_unlock(&m->lock);
	return st;
}

static vdisk_status ram_unmap(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	if (!lock_range(m, io, true))
		return illegal();
	if (!io->next_is_zero) {
		uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
		/* what lies below shows through an absent sector, so a hole that reads
		 * as zeros cannot be made here unless it reaches zero_after */
		if (end < za)
			goto out;
		if (s < za)
			atomic_store_explicit(&m->zero_after, s, memory_order_release);
	}
	drop_range(m, s, end);
out:
	pthread_rwlock_unlock(&m->lock);
	return vdisk_status_ok();
}

static vdisk_status ram_extent(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	io->ext_len = 0;
	io->ext_kind = LEXT_ABSENT;
	if (io->count == 0)
		return vdisk_status_ok();
	if (!lock_range(m, io, false))
		return illegal();
	uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
	uint64_t first_present = next_present(m, s, s + 1);
	if (first_present == s) {
		io->ext_kind = LEXT_DATA;
		io->ext_len = next_absent(m, s, end) - s;
	} else if (s >= za) {
		io->ext_kind = LEXT_HOLE;
		io->ext_len = next_present(m, s, end) - s;
	} else {
		uint64_t lim = end < za ? end : za;
		io->ext_kind = LEXT_ABSENT;
		io->ext_len = next_present(m, s, lim) - s;
	}
	pthread_rwlock_unlock(&m->lock);
	return vdisk_status_ok();
}

static int ram_submit(struct lio *io)
{
	struct ram_layer *m = io->l->priv;
	switch (io->op) {
	case LIO_READ: io->st = ram_read(m, io); break;
	case LIO_WRITE: io->st = ram_write(m, io, false); break;
	case LIO_WRITE_NO_OVERWRITE: io->st = ram_write(m, io, true); break;
	case LIO_UNMAP: io->st = ram_unmap(m, io); break;
	case LIO_EXTENT: io->st = ram_extent(m, io); break;
	case LIO_FLUSH: io->st = vdisk_status_ok(); break;
	default: io->st = vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL); break;
	}
	return 1;
}

static int ram_resize(struct layer *l, uint64_t count)
{
	struct ram_layer *m = l->priv;
	if (count == 0)
		return layered_layer_error(l, "resize: 0 sectors");
	pthread_rwlock_wrlock(&m->lock);
	unsigned h = height_for(chunk_of(m, count - 1) + 1);
	while (m->height < h) {
		/* grow upwards: the old tree becomes the first child of a new root */
		if (m->root) {
			void **node = calloc(FANOUT, sizeof(void *));
			if (!node) {
				pthread_rwlock_unlock(&m->lock);
				return layered_layer_error(l, "resize: out of memory");
			}
			node[0] = m->root;
			atomic_store_explicit((_Atomic(void *) *)&m->root, (void *)node,
			                      memory_order_release);
		}
		m->height++;
	}
	/* chunks mapped short for a smaller layer get the room the new size needs */
	uint64_t ci, from = 0, last = chunk_of(m, count - 1) + 1;
	struct chunk *c;
	while (count > m->count && next_chunk(m, from, last, &ci, &c)) {
		size_t need = chunk_need(m, ci, count);
		if (c->data_len < need && chunk_grow(m, c, need) < 0) {
			pthread_rwlock_unlock(&m->lock);
			return layered_layer_error(l, "resize: out of memory");
		}
		from = ci + 1;
	}
	if (count < m->count)
		drop_range(m, count, m->count);
	if (atomic_load_explicit(&m->zero_after, memory_order_relaxed) > count)
		atomic_store_explicit(&m->zero_after, count, memory_order_release);
	m->count = count;
	atomic_store_explicit(&m->count_pub, count, memory_order_release);
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static uint64_t ram_sector_count(struct layer *l)
{
	struct ram_layer *m = l->priv;
	return atomic_load_explicit(&m->count_pub, memory_order_acquire);
}

static void ram_free(struct ram_layer *m)
{
	free_tree(m->root, m->height);
	pthread_rwlock_destroy(&m->lock);
	free(m);
}

static int ram_open(struct layer *l, json_t *cfg, const struct layer_meta *below)
{
	static const char *const keys[] = {"size", "sector-size", NULL};
	uint64_t size = 0, ss = below ? below->sector_size : 512;
	int have_size;
	if (vdisk_cfg_check(cfg, keys) < 0 ||
	    (have_size = vdisk_cfg_size(cfg, "size", &size)) < 0 ||
	    vdisk_cfg_size(cfg, "sector-size", &ss) < 0)
		return -1;
	if (ss < 512 || ss > 65536 || (ss & (ss - 1)))
		return vdisk_set_error("sector-size: %" PRIu64 " is not a power of two in 512..64k",
		                       ss);
	if (!have_size) {
		if (!below)
			return vdisk_set_error(
			    "size: required for a ram layer with nothing below it");
		if (below->sector_count > UINT64_MAX / ss)
			return vdisk_set_error("size: the layer below is too large");
		size = below->sector_count * below->sector_size;
	}
	if (size == 0 || size % ss)
		return vdisk_set_error("size: %" PRIu64 " is not a non-zero multiple of the sector "
		                       "size %" PRIu64,
		                       size, ss);
	if (size > (uint64_t)INT64_MAX)
		return vdisk_set_error("size: %" PRIu64 " is larger than 2^63 - 1 bytes", size);

	struct ram_layer *m = calloc(1, sizeof *m);
	if (!m)
		return vdisk_set_error_errno(ENOMEM, "ram layer");
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	/* a stream of reads from other queues must not starve a cache fill */
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&m->lock, &a);
	pthread_rwlockattr_destroy(&a);
	m->ss = (uint32_t)ss;
	m->shift = (unsigned)__builtin_ctzll(ss);
	m->cs_shift = CHUNK_SHIFT - m->shift;
	m->count = size / ss;
	atomic_init(&m->count_pub, m->count);
	atomic_init(&m->zero_after, m->count);
	m->height = height_for(chunk_of(m, m->count - 1) + 1);
	l->priv = m;

	struct layer_meta *lm = &l->meta;
	lm->sector_count = m->count;
	lm->sector_size = (uint32_t)ss;
	lm->physical_sector_size = (uint32_t)ss;
	lm->fua = true;
	lm->read_only = false;
	lm->can_no_overwrite = true;
	lm->inline_io = true;
	lm->unmap = VDISK_UNMAP_UNSPECIFIED; /* zeroes only where the layer below does */
	lm->optimal_unmap_sectors = 1;
	lm->shared_flush = true;
	return 0;
}

static void ram_close(struct layer *l)
{
	if (l->priv)
		ram_free(l->priv);
	l->priv = NULL;
}

static void ram_inspect(struct layer *l, json_t *obj)
{
	struct ram_layer *m = l->priv;
	json_object_set_new(obj, "present_sectors",
	                    json_integer((json_int_t)atomic_load(&m->present)));
	json_object_set_new(obj, "allocated_bytes",
	                    json_integer((json_int_t)(atomic_load(&m->pages) << PAGE_SHIFT)));
	json_object_set_new(obj, "zero_after",
	                    json_integer((json_int_t)atomic_load(&m->zero_after)));
}

const struct layer_ops layered_ram_ops = {
    .name = "ram",
    .open = ram_open,
    .close = ram_close,
    .maybe_present = ram_maybe_present,
    .surely_absent = ram_surely_absent,
    .submit = ram_submit,
    .resize = ram_resize,
    .sector_count = ram_sector_count,
    .inspect = ram_inspect,
};
