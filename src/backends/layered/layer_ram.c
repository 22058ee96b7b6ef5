/* ram layer: a sparse layer in memory with per-sector presence.
 *
 * Sectors live in pages of max(4096, sector size) bytes, found through a radix
 * tree over the page index (512 entries a node, as many levels as the size
 * needs).  A leaf entry is one word: the page's address with, in its low bits,
 * the presence mask of the page's sectors (at most 8 of them).  So presence and
 * data are published together and a reader needs one load per page.
 *
 * zero_after (the reference's watermark): an absent sector at or beyond it
 * reads as zeros and counts as present, hiding the layers below.  It starts at
 * the sector count and only goes down, on a shrink or on an unmap that reaches
 * it; so a shrunk-then-grown disk reads zeros in the regrown part.
 *
 * Locking: a reader/writer lock.  Reads and normal writes take it shared:
 * writers install nodes and pages with compare-and-swap and publish sector
 * bits with a release OR after the copy, so concurrent readers see either the
 * old state or complete data.  Writes that must look before they write
 * (no-overwrite cache fills), unmaps and resizes take it exclusive.  The empty
 * layer answers "nothing here" without touching the lock, which keeps a read
 * through an unused RAM diff as cheap as a read of the disk below. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "layered.h"

#define FANOUT 512
#define FANOUT_SHIFT 9
#define MASK_BITS 0xffu
#define ARENA_BYTES (2u << 20)

struct ram_layer {
	pthread_rwlock_t lock;
	uint32_t ss;
	unsigned shift;
	uint32_t unit;      /* bytes per page */
	unsigned spp_shift; /* log2(sectors per page) */
	uint64_t count;     /* sector count; changed under the exclusive lock */
	_Atomic uint64_t count_pub;
	_Atomic uint64_t zero_after;
	void *root;               /* changed under the exclusive lock */
	unsigned height;          /* levels; leaves are level 1 */
	_Atomic uint64_t pages;   /* pages in the tree (conservative emptiness test) */
	_Atomic uint64_t present; /* present sectors, for inspect */

	pthread_mutex_t alloc_lock;
	void **free_pages;
	size_t nfree, free_cap;
	unsigned char *arena;
	size_t arena_used, arena_size;
	void **arenas;
	size_t narenas, arenas_cap;
};

static inline uint64_t page_of(struct ram_layer *m, uint64_t sector)
{
	return sector >> m->spp_shift;
}
static inline uint64_t spp(struct ram_layer *m)
{
	return 1ull << m->spp_shift;
}

/* ------------------------------------------------------------------------- */
/* Pages                                                                       */
/* ------------------------------------------------------------------------- */

static void *page_alloc(struct ram_layer *m)
{
	void *p = NULL;
	pthread_mutex_lock(&m->alloc_lock);
	if (m->nfree) {
		p = m->free_pages[--m->nfree];
		goto out;
	}
	if (!m->arena || m->arena_used + m->unit > m->arena_size) {
		if (m->narenas == m->arenas_cap) {
			size_t cap = m->arenas_cap ? m->arenas_cap * 2 : 16;
			void **a = realloc(m->arenas, cap * sizeof *a);
			if (!a)
				goto out;
			m->arenas = a;
			m->arenas_cap = cap;
		}
		size_t size = m->unit * 16 > ARENA_BYTES ? (size_t)m->unit * 16 : ARENA_BYTES;
		void *a =
		    mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (a == MAP_FAILED)
			goto out;
		/* random 4K copies run about 30% faster from huge pages here */
		madvise(a, size, MADV_HUGEPAGE);
		m->arenas[m->narenas++] = a;
		m->arena = a;
		m->arena_size = size;
		m->arena_used = 0;
	}
	p = m->arena + m->arena_used;
	m->arena_used += m->unit;
out:
	pthread_mutex_unlock(&m->alloc_lock);
	return p;
}

static void page_free(struct ram_layer *m, void *p)
{
	pthread_mutex_lock(&m->alloc_lock);
	if (m->nfree == m->free_cap) {
		size_t cap = m->free_cap ? m->free_cap * 2 : 256;
		void **f = realloc(m->free_pages, cap * sizeof *f);
		if (!f) {
			/* keep the page allocated for good rather than fail an unmap */
			pthread_mutex_unlock(&m->alloc_lock);
			return;
		}
		m->free_pages = f;
		m->free_cap = cap;
	}
	m->free_pages[m->nfree++] = p;
	pthread_mutex_unlock(&m->alloc_lock);
}

/* ------------------------------------------------------------------------- */
/* The tree                                                                    */
/* ------------------------------------------------------------------------- */

typedef _Atomic uintptr_t slot_t;

static unsigned height_for(uint64_t pages)
{
	unsigned h = 1;
	while (h < 7 && pages > (1ull << (FANOUT_SHIFT * h)))
		h++;
	return h;
}

/* The leaf entry of page p, creating the path to it if create is set (then
 * NULL means out of memory).  Under the lock, shared or exclusive. */
static slot_t *leaf_slot(struct ram_layer *m, uint64_t p, bool create)
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
		unsigned idx = (unsigned)(p >> (FANOUT_SHIFT * (level - 1))) & (FANOUT - 1);
		if (level == 1)
			return &((slot_t *)node)[idx];
		link = &((_Atomic(void *) *)node)[idx];
	}
	return NULL;
}

/* First page in [from, to) with any present sector, under the lock.  Skips
 * missing subtrees whole. */
static bool scan(void *node, unsigned level, uint64_t base, uint64_t from, uint64_t to,
                 uint64_t *pi, uintptr_t *val)
{
	uint64_t span = 1ull << (FANOUT_SHIFT * (level - 1));
	unsigned i = from > base ? (unsigned)((from - base) / span) : 0;
	for (; i < FANOUT; i++) {
		uint64_t cbase = base + (uint64_t)i * span;
		if (cbase >= to)
			return false;
		if (level == 1) {
			uintptr_t v =
			    atomic_load_explicit(&((slot_t *)node)[i], memory_order_acquire);
			if (v & MASK_BITS) {
				*pi = cbase;
				*val = v;
				return true;
			}
		} else {
			void *child = atomic_load_explicit(&((_Atomic(void *) *)node)[i],
			                                   memory_order_acquire);
			if (child && scan(child, level - 1, cbase, from, to, pi, val))
				return true;
		}
	}
	return false;
}

static bool next_page(struct ram_layer *m, uint64_t from, uint64_t to, uint64_t *pi, uintptr_t *val)
{
	void *root = atomic_load_explicit((_Atomic(void *) *)&m->root, memory_order_acquire);
	if (!root || from >= to)
		return false;
	return scan(root, m->height, 0, from, to, pi, val);
}

/* First present sector in [from, to), or to.  Under the lock. */
static uint64_t next_present(struct ram_layer *m, uint64_t from, uint64_t to)
{
	uint64_t p = page_of(m, from);
	uint64_t pend = page_of(m, to - 1) + 1;
	uintptr_t v;
	while (from < to && next_page(m, p, pend, &p, &v)) {
		uint64_t first = p << m->spp_shift;
		unsigned mask = (unsigned)(v & MASK_BITS);
		for (uint64_t s = first > from ? first : from; s < first + spp(m) && s < to; s++)
			if (mask >> (s - first) & 1)
				return s;
		p++;
		from = p << m->spp_shift;
	}
	return to;
}

/* First absent sector in [from, to), or to.  Under the lock. */
static uint64_t next_absent(struct ram_layer *m, uint64_t from, uint64_t to)
{
	while (from < to) {
		slot_t *slot = leaf_slot(m, page_of(m, from), false);
		unsigned mask =
		    slot ? (unsigned)(atomic_load_explicit(slot, memory_order_acquire) & MASK_BITS)
		         : 0;
		uint64_t first = page_of(m, from) << m->spp_shift;
		for (uint64_t s = from; s < first + spp(m) && s < to; s++)
			if (!(mask >> (s - first) & 1))
				return s;
		from = first + spp(m);
	}
	return to;
}

static void free_tree(void *node, unsigned level)
{
	if (!node)
		return;
	if (level > 1)
		for (unsigned i = 0; i < FANOUT; i++)
			free_tree(atomic_load(&((_Atomic(void *) *)node)[i]), level - 1);
	free(node);
}

/* Make [from, to) absent.  Under the exclusive lock. */
static void drop_range(struct ram_layer *m, uint64_t from, uint64_t to)
{
	uint64_t p = page_of(m, from), pend = to ? page_of(m, to - 1) + 1 : 0;
	uintptr_t v;
	while (from < to && next_page(m, p, pend, &p, &v)) {
		uint64_t first = p << m->spp_shift;
		unsigned clear = 0;
		for (uint64_t s = first; s < first + spp(m); s++)
			if (s >= from && s < to)
				clear |= 1u << (s - first);
		slot_t *slot = leaf_slot(m, p, false);
		unsigned mask = (unsigned)(v & MASK_BITS);
		unsigned left = mask & ~clear;
		atomic_fetch_sub_explicit(&m->present, (uint64_t)__builtin_popcount(mask & clear),
		                          memory_order_relaxed);
		if (left) {
			atomic_store_explicit(slot, (v & ~(uintptr_t)MASK_BITS) | left,
			                      memory_order_release);
		} else {
			atomic_store_explicit(slot, 0, memory_order_release);
			page_free(m, (void *)(v & ~(uintptr_t)MASK_BITS));
			atomic_fetch_sub_explicit(&m->pages, 1, memory_order_relaxed);
		}
		p++;
	}
}

/* ------------------------------------------------------------------------- */
/* Operations                                                                  */
/* ------------------------------------------------------------------------- */

static vdisk_status illegal(void)
{
	return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
}

static bool ram_maybe_present(struct layer *l, uint64_t sector, uint64_t count)
{
	struct ram_layer *m = l->priv;
	if (count == 0)
		return false;
	if (sector + count > atomic_load_explicit(&m->zero_after, memory_order_acquire))
		return true;
	if (atomic_load_explicit(&m->pages, memory_order_acquire) == 0)
		return false;
	pthread_rwlock_rdlock(&m->lock);
	/* the first page decides most calls without a walk of the tree */
	slot_t *slot = leaf_slot(m, page_of(m, sector), false);
	uintptr_t v = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
	uint64_t first = page_of(m, sector) << m->spp_shift;
	bool any = (v >> (sector - first)) & MASK_BITS;
	if (!any)
		any = next_present(m, sector, sector + count) < sector + count;
	pthread_rwlock_unlock(&m->lock);
	return any;
}

/* Fill, in the page holding sector pos, the sectors of [pos, end) that are
 * present (or read as zeros at or beyond za) and not yet supplied by a layer
 * above; copy contiguous runs at once. */
static void read_page(struct ram_layer *m, struct lio *io, struct iov_cur *cur, uint64_t *at,
                      uint64_t pos, uint64_t end, uint64_t za)
{
	uint64_t first = page_of(m, pos) << m->spp_shift;
	uint64_t stop = first + spp(m) < end ? first + spp(m) : end;
	slot_t *slot = leaf_slot(m, page_of(m, pos), false);
	uintptr_t v = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
	unsigned char *page = (unsigned char *)(v & ~(uintptr_t)MASK_BITS);
	uint64_t x = pos;
	while (x < stop) {
		bool here = v >> (x - first) & 1;
		if ((!here && x < za) || bits_test(io->bits, x - io->bits_base)) {
			x++;
			continue;
		}
		uint64_t y = x + 1;
		while (y < stop && (bool)(v >> (y - first) & 1) == here && (here || y >= za) &&
		       !bits_test(io->bits, y - io->bits_base))
			y++;
		iov_cur_skip(cur, (size_t)((x - *at) << m->shift));
		iov_cur_copy(cur, here ? page + ((x - first) << m->shift) : NULL,
		             (size_t)((y - x) << m->shift), true);
		bits_set_range(io->bits, x - io->bits_base, y - io->bits_base);
		*at = y;
		x = y;
	}
}

static bool ram_surely_absent(struct layer *l, uint64_t sector, uint64_t count)
{
	struct ram_layer *m = l->priv;
	return atomic_load_explicit(&m->pages, memory_order_acquire) == 0 &&
	       sector + count <= atomic_load_explicit(&m->zero_after, memory_order_acquire);
}

static vdisk_status ram_read(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	/* an empty layer (the usual RAM diff over a disk, before writes): nothing
	 * to take the lock for; the checks race with a resize or a write only as
	 * a read issued just before them would */
	if (atomic_load_explicit(&m->pages, memory_order_acquire) == 0 &&
	    end <= atomic_load_explicit(&m->zero_after, memory_order_acquire))
		return end <= atomic_load_explicit(&m->count_pub, memory_order_acquire) ? st
		                                                                        : illegal();
	pthread_rwlock_rdlock(&m->lock);
	if (end > m->count) {
		st = illegal();
		goto out;
	}
	uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	uint64_t at = s; /* the sector the cursor points at */
	uint64_t pos = s;
	while (pos < end) {
		if (pos < za) {
			/* below the watermark only present sectors count: skip to one,
			 * unless this page has some (the common case: no tree walk) */
			slot_t *slot = leaf_slot(m, page_of(m, pos), false);
			uintptr_t v = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
			if ((v >> (pos - (page_of(m, pos) << m->spp_shift))) & MASK_BITS) {
				read_page(m, io, &cur, &at, pos, end, za);
				pos = (page_of(m, pos) + 1) << m->spp_shift;
				continue;
			}
			uint64_t lim = end < za ? end : za;
			uint64_t next = next_present(m, pos, lim);
			if (next == lim) {
				if (lim == end)
					break;
				pos = za;
				continue;
			}
			pos = next;
		}
		read_page(m, io, &cur, &at, pos, end, za);
		pos = (page_of(m, pos) + 1) << m->spp_shift;
	}
out:
	pthread_rwlock_unlock(&m->lock);
	return st;
}

/* Normal write, under the shared lock: see the locking note at the top. */
static vdisk_status ram_write(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	pthread_rwlock_rdlock(&m->lock);
	if (end > m->count) {
		st = illegal();
		goto out;
	}
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	while (s < end) {
		uint64_t p = page_of(m, s), first = p << m->spp_shift;
		uint64_t stop = first + spp(m) < end ? first + spp(m) : end;
		slot_t *slot = leaf_slot(m, p, true);
		if (!slot) {
			st = vdisk_status_io(ENOMEM);
			break;
		}
		uintptr_t v = atomic_load_explicit(slot, memory_order_acquire);
		if (!(v & ~(uintptr_t)MASK_BITS)) {
			void *page = page_alloc(m);
			if (!page) {
				st = vdisk_status_io(ENOMEM);
				break;
			}
			uintptr_t expect = 0;
			if (atomic_compare_exchange_strong_explicit(slot, &expect, (uintptr_t)page,
			                                            memory_order_acq_rel,
			                                            memory_order_acquire)) {
				v = (uintptr_t)page;
				atomic_fetch_add_explicit(&m->pages, 1, memory_order_relaxed);
			} else {
				page_free(m, page);
				v = expect;
			}
		}
		unsigned char *page = (unsigned char *)(v & ~(uintptr_t)MASK_BITS);
		iov_cur_copy(&cur, page + ((s - first) << m->shift),
		             (size_t)((stop - s) << m->shift), false);
		unsigned bits = 0;
		for (uint64_t x = s; x < stop; x++)
			bits |= 1u << (x - first);
		/* An overwrite of present sectors publishes nothing new: no locked
		 * instruction, which would wait here for the copy's stores to drain
		 * (it cost a quarter of a 4 KiB write). */
		if ((v & bits) != bits) {
			uintptr_t old = atomic_fetch_or_explicit(slot, bits, memory_order_release);
			atomic_fetch_add_explicit(
			    &m->present, (uint64_t)__builtin_popcount(bits & ~(unsigned)old),
			    memory_order_relaxed);
		}
		s = stop;
	}
out:
	pthread_rwlock_unlock(&m->lock);
	return st;
}

/* Cache fill: only sectors absent now, so data read from below never replaces
 * a newer write.  Exclusive, because it must look and write as one step. */
static vdisk_status ram_write_no_overwrite(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	pthread_rwlock_wrlock(&m->lock);
	if (end > m->count) {
		st = illegal();
		goto out;
	}
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	uint64_t za = atomic_load_explicit(&m->zero_after, memory_order_relaxed);
	while (s < end) {
		uint64_t p = page_of(m, s), first = p << m->spp_shift;
		uint64_t stop = first + spp(m) < end ? first + spp(m) : end;
		slot_t *slot = leaf_slot(m, p, true);
		if (!slot) {
			st = vdisk_status_io(ENOMEM);
			break;
		}
		uintptr_t v = atomic_load_explicit(slot, memory_order_relaxed);
		unsigned bits = 0;
		for (uint64_t x = s; x < stop; x++)
			/* beyond zero_after an absent sector already reads (present)
			 * zero; a set marker bit means "not to be filled" */
			if (!(v >> (x - first) & 1) && x < za &&
			    !(io->bits && bits_test(io->bits, x - io->bits_base)))
				bits |= 1u << (x - first);
		if (bits && !(v & ~(uintptr_t)MASK_BITS)) {
			void *page = page_alloc(m);
			if (!page) {
				st = vdisk_status_io(ENOMEM);
				break;
			}
			v = (uintptr_t)page;
			atomic_fetch_add_explicit(&m->pages, 1, memory_order_relaxed);
		}
		unsigned char *page = (unsigned char *)(v & ~(uintptr_t)MASK_BITS);
		for (uint64_t x = s; x < stop; x++) {
			if (bits >> (x - first) & 1)
				iov_cur_copy(&cur, page + ((x - first) << m->shift), m->ss, false);
			else
				iov_cur_skip(&cur, m->ss);
		}
		if (bits) {
			atomic_store_explicit(slot, v | bits, memory_order_release);
			atomic_fetch_add_explicit(&m->present, (uint64_t)__builtin_popcount(bits),
			                          memory_order_relaxed);
		}
		s = stop;
	}
out:
	pthread_rwlock_unlock(&m->lock);
	return st;
}

static vdisk_status ram_unmap(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	pthread_rwlock_wrlock(&m->lock);
	if (end > m->count) {
		st = illegal();
		goto out;
	}
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
	return st;
}

static vdisk_status ram_extent(struct ram_layer *m, struct lio *io)
{
	uint64_t s = io->sector, end = s + io->count;
	vdisk_status st = vdisk_status_ok();
	pthread_rwlock_rdlock(&m->lock);
	if (end > m->count || io->count == 0) {
		st = io->count ? illegal() : st;
		io->ext_len = 0;
		io->ext_kind = LEXT_ABSENT;
		goto out;
	}
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
out:
	pthread_rwlock_unlock(&m->lock);
	return st;
}

static int ram_submit(struct lio *io)
{
	struct ram_layer *m = io->l->priv;
	switch (io->op) {
	case LIO_READ: io->st = ram_read(m, io); break;
	case LIO_WRITE: io->st = ram_write(m, io); break;
	case LIO_WRITE_NO_OVERWRITE: io->st = ram_write_no_overwrite(m, io); break;
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
	uint64_t pages = page_of(m, count - 1) + 1;
	pthread_rwlock_wrlock(&m->lock);
	unsigned h = height_for(pages);
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
	for (size_t i = 0; i < m->narenas; i++)
		munmap(m->arenas[i],
		       m->unit * 16 > ARENA_BYTES ? (size_t)m->unit * 16 : ARENA_BYTES);
	free(m->arenas);
	free(m->free_pages);
	pthread_rwlock_destroy(&m->lock);
	pthread_mutex_destroy(&m->alloc_lock);
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
	pthread_mutex_init(&m->alloc_lock, NULL);
	m->ss = (uint32_t)ss;
	m->shift = (unsigned)__builtin_ctzll(ss);
	m->unit = ss > 4096 ? (uint32_t)ss : 4096;
	m->spp_shift = (unsigned)__builtin_ctz(m->unit) - m->shift;
	m->count = size / ss;
	atomic_init(&m->count_pub, m->count);
	atomic_init(&m->zero_after, m->count);
	m->height = height_for(page_of(m, m->count - 1) + 1);
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
	                    json_integer((json_int_t)(atomic_load(&m->pages) * m->unit)));
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
