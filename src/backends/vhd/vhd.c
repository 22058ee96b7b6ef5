/* vhd: Microsoft's Virtual Hard Disk (v1) images: fixed, dynamic and
 * differencing, on a container disk (see ../image/image.h).
 *
 * The format (all integers big-endian):
 *  - a 512-byte footer at the end of the file (cookie "conectix", disk type 2
 *    fixed, 3 dynamic, 4 differencing; checksum the ones' complement of the
 *    byte sum); dynamic and differencing images keep a copy of it at offset 0;
 *  - fixed: the data at offset 0, then the footer;
 *  - dynamic: a 1 KiB header ("cxsparse") at the footer's data_offset naming
 *    the block size and the block allocation table (BAT): one 32-bit sector
 *    number per block, 0xFFFFFFFF for a block never written; a block is a
 *    sector bitmap (one bit per sector, padded to 512 bytes) and its data;
 *  - differencing: a dynamic image whose bitmap says which sectors it holds;
 *    the rest is read from the parent, named by the header's parent unique id,
 *    time stamp, UTF-16 name and up to 8 parent locators.
 *
 * Size: qemu and Virtual PC take the size from the CHS geometry unless the
 * creator is one that uses current_size ("win ", "qem2", "d2v ", "CTXS",
 * "tap\0") or the geometry is the largest one; Hyper-V uses current_size.  We
 * read every image the way qemu does, so both agree; the images we make say
 * "vdsk" and carry a geometry that describes current_size exactly, or the
 * largest geometry when none does, so qemu, Hyper-V and we agree on them.
 *
 * Which footer: the one at the end when it is valid (a fixed image's sector 0
 * is guest data and must never change how the host reads the file); else the
 * copy at offset 0, which only a dynamic or differencing image has.
 *
 * Allocation (the only metadata change): under the image's lock, the block is
 * placed where the end footer is (its data 4 KiB-aligned), the container
 * grows, the block's bitmap (all ones for a dynamic image, as qemu writes it;
 * kept in memory for a differencing one) and the new end footer are written,
 * and the BAT entry is set in memory and marked dirty.  The container grows
 * with zeros, so until data is written the block reads as before.  A flush
 * first flushes the container, then writes the dirty bitmaps and BAT sectors
 * with FUA (so no metadata sector can be torn), so a BAT entry or bitmap bit
 * reaches the medium only after the data it covers.  A crash at any point
 * leaves an image that opens (from the footer copy at 0 if the end footer was
 * being written) and holds every write a completed flush covered; space
 * allocated after the last flush may be leaked at the end of the file.
 *
 * Unmap is ignored: freeing a block would need the file to shrink or a hole
 * in the middle that qemu and Hyper-V do not expect. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../image/image.h"
#include "vdisk/backend.h"

#define FOOTER 512
#define DYNHDR 1024
#define BAT_FREE 0xffffffffu
#define VHD_EPOCH 946684800 /* 2000-01-01 00:00:00 UTC */
#define MAX_GEOMETRY (65535ull * 16 * 255)
#define MAX_SECTORS 0xff000000ull /* qemu's limit, 2040 GiB */
#define MAX_BLOCK (256u << 20)
#define SLICE_MAX 16
#define CHAIN_MAX 16

enum { T_FIXED = 2, T_DYNAMIC = 3, T_DIFF = 4 };

struct vhd {
	struct img_container ct;
	struct vdisk *parent;
	uint64_t parent_sectors;
	int type;
	uint64_t size;                       /* virtual bytes */
	_Alignas(64) uint8_t footer[FOOTER]; /* as written at the end */
	uint8_t hdr[DYNHDR];
	uint64_t hdr_off, bat_off;
	uint32_t entries, block_size, block_sectors, bitmap_bytes;
	unsigned bshift; /* log2(block_sectors) */
	_Atomic uint32_t *bat;
	uint8_t **bitmaps; /* differencing: per allocated block */
	uint8_t *ones;     /* bitmap_bytes of 0xff */
	pthread_mutex_t lock;
	pthread_mutex_t rmw_lock;   /* see rmw_group() */
	pthread_mutex_t flush_lock; /* see sync_meta() */
	uint64_t footer_pos;        /* the end footer: where the next block goes */
	/* dirty metadata: a version per BAT sector and per bitmap, and the
	 * version last written of each (under lock) */
	uint32_t *bat_ver, *bat_done;
	uint32_t *bm_ver, *bm_done;
	uint32_t ver;
	_Atomic uint32_t meta_ver, meta_synced;
	char creator[5];
	char *parent_name;
	bool from_copy; /* the end footer was not valid */
};

enum { OP_READ, OP_WRITE };

struct vhd_ctx {
	struct vdisk_req *r;
	vdisk_status st;
	uint64_t done; /* bytes */
	uint64_t plen; /* bytes of the piece in flight */
	uint32_t pblock;
	uint32_t pfirst, pcount; /* sectors in the block (bits to set) */
	bool setbits;
	bool running, again;
	bool submitted; /* a child was submitted: errors complete the request */
	bool need_sync; /* a FUA write that changed metadata */
	uint8_t op;
	void *bounce;
	size_t blen;
	struct iovec slice[SLICE_MAX];
	struct iovec miov;
};

static void vhd_run(struct vhd_ctx *c);

/* ------------------------------------------------------------------------- */
/* Format helpers                                                              */
/* ------------------------------------------------------------------------- */

static bool creator_uses_size(const uint8_t *f)
{
	static const char *const list[] = {"win ", "qem2", "d2v ", "CTXS"};
	for (unsigned i = 0; i < 4; i++)
		if (memcmp(f + 28, list[i], 4) == 0)
			return true;
	return memcmp(f + 28, "tap\0", 4) == 0;
}

static uint64_t footer_chs(const uint8_t *f)
{
	return (uint64_t)img_be16(f + 56) * f[58] * f[59];
}

/* The disk size as qemu reads it (see the top). */
static uint64_t footer_size(const uint8_t *f)
{
	uint64_t chs = footer_chs(f), cur = img_be64(f + 48);
	if (!creator_uses_size(f) && chs != MAX_GEOMETRY)
		return chs * 512;
	return cur;
}

/* The geometry of the VHD specification's appendix for `sectors`. */
static void geometry(uint64_t sectors, unsigned *cyl, unsigned *heads, unsigned *spt)
{
	uint64_t cth;
	unsigned h, s;
	if (sectors > MAX_GEOMETRY)
		sectors = MAX_GEOMETRY;
	if (sectors >= 65535ull * 16 * 63) {
		s = 255;
		h = 16;
		cth = sectors / s;
	} else {
		s = 17;
		cth = sectors / s;
		h = (unsigned)((cth + 1023) / 1024);
		if (h < 4)
			h = 4;
		if (cth >= (uint64_t)h * 1024 || h > 16) {
			s = 31;
			h = 16;
			cth = sectors / s;
		}
		if (cth >= (uint64_t)h * 1024) {
			s = 63;
			h = 16;
			cth = sectors / s;
		}
	}
	*cyl = (unsigned)(cth / h);
	*heads = h;
	*spt = s;
}

/* A footer for a new image of `size` bytes. */
static int make_footer(uint8_t f[FOOTER], int type, uint64_t size)
{
	unsigned c, h, s;
	memset(f, 0, FOOTER);
	memcpy(f, "conectix", 8);
	img_put_be32(f + 8, 2);
	img_put_be32(f + 12, 0x00010000);
	img_put_be64(f + 16, type == T_FIXED ? UINT64_MAX : FOOTER);
	time_t now = time(NULL);
	img_put_be32(f + 24, now > VHD_EPOCH ? (uint32_t)(now - VHD_EPOCH) : 0);
	memcpy(f + 28, "vdsk", 4);
	img_put_be32(f + 32, 0x00010000);
	memcpy(f + 36, "Wi2k", 4);
	img_put_be64(f + 40, size);
	img_put_be64(f + 48, size);
	geometry(size / 512, &c, &h, &s);
	if ((uint64_t)c * h * s != size / 512) {
		/* no geometry says this size: the largest tells qemu to use
		 * current_size */
		c = 65535;
		h = 16;
		s = 255;
	}
	img_put_be16(f + 56, (uint16_t)c);
	f[58] = (uint8_t)h;
	f[59] = (uint8_t)s;
	img_put_be32(f + 60, (uint32_t)type);
	if (img_guid_random(f + 68) < 0)
		return -1;
	img_put_be32(f + 64, img_checksum_ones(f, FOOTER, 64, 4));
	return 0;
}

/* What is wrong with a footer, or NULL. */
static const char *footer_problem(const uint8_t *f, char *buf, size_t len)
{
	if (memcmp(f, "conectix", 8) != 0)
		return "cookie: not \"conectix\"";
	uint32_t want = img_checksum_ones(f, FOOTER, 64, 4), have = img_be32(f + 64);
	if (want != have) {
		snprintf(buf, len, "checksum: 0x%08" PRIx32 ", the footer sums to 0x%08" PRIx32,
		         have, want);
		return buf;
	}
	if (img_be32(f + 12) >> 16 != 1) {
		snprintf(buf, len, "file_format_version: 0x%08" PRIx32 " is not 1.x",
		         img_be32(f + 12));
		return buf;
	}
	uint32_t t = img_be32(f + 60);
	if (t != T_FIXED && t != T_DYNAMIC && t != T_DIFF) {
		snprintf(buf, len,
		         "disk_type: %" PRIu32 " is not 2 (fixed), 3 (dynamic) or 4 "
		         "(differencing)",
		         t);
		return buf;
	}
	if (img_be64(f + 48) % 512) {
		snprintf(buf, len, "current_size: %" PRIu64 " is not a multiple of 512",
		         img_be64(f + 48));
		return buf;
	}
	return NULL;
}

static bool bit_get(const uint8_t *bm, uint32_t i)
{
	return (bm[i >> 3] >> (7 - (i & 7))) & 1;
}

/* ------------------------------------------------------------------------- */
/* Open                                                                        */
/* ------------------------------------------------------------------------- */

/* Read and choose the footer (see the top).  Returns 0 or -1 with an error. */
static int read_footer(struct vhd *v, uint64_t cbytes)
{
	uint8_t end[FOOTER], copy[FOOTER];
	char b1[160], b2[160];
	const char *pe, *pc = "not read";
	if (cbytes < FOOTER)
		return vdisk_set_error("the container holds %" PRIu64 " bytes, less than a footer",
		                       cbytes);
	if (img_pread(&v->ct, end, FOOTER, cbytes - FOOTER, "footer") < 0)
		return -1;
	pe = footer_problem(end, b1, sizeof b1);
	if (!pe) {
		memcpy(v->footer, end, FOOTER);
		return 0;
	}
	if (cbytes >= 2 * FOOTER + DYNHDR) {
		if (img_pread(&v->ct, copy, FOOTER, 0, "footer copy") < 0)
			return -1;
		pc = footer_problem(copy, b2, sizeof b2);
		if (!pc && img_be32(copy + 60) == T_FIXED)
			pc = "disk_type: fixed, which has no copy at offset 0";
		if (!pc) {
			memcpy(v->footer, copy, FOOTER);
			v->from_copy = true;
			return 0;
		}
	}
	if (memcmp(end, "conectix", 8) != 0 && memcmp(copy, "conectix", 8) != 0)
		return vdisk_set_error("not a VHD image: no footer (cookie \"conectix\") at the "
		                       "end or at offset 0");
	return vdisk_set_error("footer at offset %" PRIu64 ": %s; copy at offset 0: %s",
	                       cbytes - FOOTER, pe, pc);
}

struct region {
	uint64_t start, end;
	long what; /* -1 footer copy, -2 header, -3 BAT, -4..-11 locators, >= 0 block */
};

static int region_cmp(const void *a, const void *b)
{
	const struct region *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static void region_name(const struct region *g, char *buf, size_t len)
{
	if (g->what >= 0)
		snprintf(buf, len, "block %ld (BAT entry at sector %" PRIu64 ")", g->what,
		         g->start / 512);
	else if (g->what == -1)
		snprintf(buf, len, "the footer copy");
	else if (g->what == -2)
		snprintf(buf, len, "the dynamic header");
	else if (g->what == -3)
		snprintf(buf, len, "the BAT");
	else
		snprintf(buf, len, "parent locator %ld's data", -g->what - 4);
}

typedef void problem_fn(void *arg, const char *fmt, ...);

/* Check the layout of a dynamic image: every block inside the file, nothing
 * overlapping anything.  Reports each problem; returns their number. */
static unsigned check_layout(struct vhd *v, uint64_t cbytes, problem_fn *problem, void *arg,
                             unsigned max)
{
	unsigned n = 0, nr = 0;
	uint64_t limit = cbytes - FOOTER;
	size_t cap = (size_t)v->entries + 11;
	struct region *g = malloc(cap * sizeof *g);
	if (!g) {
		problem(arg, "out of memory");
		return 1;
	}
	g[nr++] = (struct region){0, FOOTER, -1};
	g[nr++] = (struct region){v->hdr_off, v->hdr_off + DYNHDR, -2};
	g[nr++] = (struct region){v->bat_off,
	                          v->bat_off + (((uint64_t)v->entries * 4 + 511) & ~511ull), -3};
	for (unsigned i = 0; i < 8; i++) {
		const uint8_t *l = v->hdr + 576 + 24 * i;
		if (img_be32(l) == 0)
			continue;
		uint64_t off = img_be64(l + 16), dlen = img_be32(l + 8);
		if (dlen == 0)
			continue;
		g[nr++] = (struct region){off, off + dlen, -4 - (long)i};
	}
	uint64_t bbytes = (uint64_t)v->bitmap_bytes + v->block_size;
	for (uint32_t i = 0; i < v->entries && n < max; i++) {
		uint32_t e = atomic_load_explicit(&v->bat[i], memory_order_relaxed);
		if (e == BAT_FREE)
			continue;
		uint64_t off = (uint64_t)e * 512;
		if (off + bbytes > limit) {
			problem(arg,
			        "BAT entry %" PRIu32 ": block at offset %" PRIu64 " (%" PRIu64
			        " bytes) ends past the data area, which ends at %" PRIu64,
			        i, off, bbytes, limit);
			n++;
			continue;
		}
		g[nr++] = (struct region){off, off + bbytes, (long)i};
	}
	qsort(g, nr, sizeof *g, region_cmp);
	uint64_t reach = 0;
	size_t at = 0;
	for (size_t i = 0; i < nr && n < max; i++) {
		if (g[i].what < 0 && g[i].what != -3 && g[i].end > limit + FOOTER) {
			char a[96];
			region_name(&g[i], a, sizeof a);
			problem(arg, "%s: at offset %" PRIu64 ", past the end of the file", a,
			        g[i].start);
			n++;
		}
		if (i && g[i].start < reach) {
			char a[96], b[96];
			region_name(&g[at], a, sizeof a);
			region_name(&g[i], b, sizeof b);
			problem(arg, "%s overlaps %s (offsets %" PRIu64 " and %" PRIu64 ")", b, a,
			        g[i].start, g[at].start);
			n++;
		}
		if (g[i].end > reach) {
			reach = g[i].end;
			at = i;
		}
	}
	free(g);
	return n;
}

struct first_problem {
	char msg[512];
	unsigned n;
};

static void first_problem(void *arg, const char *fmt, ...)
{
	struct first_problem *p = arg;
	if (p->n++)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof p->msg, fmt, ap);
	va_end(ap);
}

/* The dynamic header and the BAT. */
static int read_dynamic(struct vhd *v, uint64_t cbytes)
{
	v->hdr_off = img_be64(v->footer + 16);
	if (v->hdr_off % 512 || v->hdr_off < FOOTER || cbytes < 2 * FOOTER + DYNHDR ||
	    v->hdr_off > cbytes - FOOTER - DYNHDR)
		return vdisk_set_error("footer data_offset: %" PRIu64 " is not the 512-aligned "
		                       "offset of a dynamic header inside the %" PRIu64
		                       "-byte file",
		                       v->hdr_off, cbytes);
	if (img_pread(&v->ct, v->hdr, DYNHDR, v->hdr_off, "dynamic header") < 0)
		return -1;
	const uint8_t *h = v->hdr;
	if (memcmp(h, "cxsparse", 8) != 0)
		return vdisk_set_error("dynamic header: cookie is not \"cxsparse\"");
	uint32_t want = img_checksum_ones(h, DYNHDR, 36, 4);
	if (img_be32(h + 36) != want)
		return vdisk_set_error("dynamic header: checksum 0x%08" PRIx32
		                       ", the header sums to 0x%08" PRIx32,
		                       img_be32(h + 36), want);
	if (img_be32(h + 24) >> 16 != 1)
		return vdisk_set_error("dynamic header: header_version 0x%08" PRIx32 " is not 1.x",
		                       img_be32(h + 24));
	v->block_size = img_be32(h + 32);
	if (v->block_size < 512 || v->block_size > MAX_BLOCK ||
	    (v->block_size & (v->block_size - 1)))
		return vdisk_set_error("dynamic header: block_size %" PRIu32
		                       " is not a power of two from 512 to %u",
		                       v->block_size, MAX_BLOCK);
	v->block_sectors = v->block_size / 512;
	v->bshift = (unsigned)__builtin_ctz(v->block_sectors);
	v->bitmap_bytes = ((v->block_sectors + 7) / 8 + 511) & ~511u;
	v->entries = img_be32(h + 28);
	uint64_t need = (v->size + v->block_size - 1) / v->block_size;
	if (v->entries < need)
		return vdisk_set_error("dynamic header: max_table_entries %" PRIu32
		                       " blocks of %" PRIu32
		                       " bytes cannot hold the disk's %" PRIu64 " bytes",
		                       v->entries, v->block_size, v->size);
	v->bat_off = img_be64(h + 16);
	uint64_t bat_bytes = ((uint64_t)v->entries * 4 + 511) & ~511ull;
	if (v->bat_off % 512 || v->bat_off > cbytes || bat_bytes > cbytes - v->bat_off)
		return vdisk_set_error("dynamic header: the BAT (table_offset %" PRIu64
		                       ", max_table_entries %" PRIu32
		                       ") does not fit in the %" PRIu64 "-byte file",
		                       v->bat_off, v->entries, cbytes);
	for (unsigned i = 0; i < 8; i++) {
		const uint8_t *l = h + 576 + 24 * i;
		uint64_t off = img_be64(l + 16), dlen = img_be32(l + 8);
		if (img_be32(l) == 0 || dlen == 0)
			continue;
		if (off % 512 || off > cbytes || dlen > cbytes - off)
			return vdisk_set_error(
			    "dynamic header: parent locator %u (data at offset %" PRIu64
			    ", %" PRIu64 " bytes) lies past the end of the file",
			    i, off, dlen);
	}
	uint8_t *raw = malloc(bat_bytes);
	v->bat = malloc((size_t)v->entries * sizeof *v->bat + 1);
	if (!raw || !v->bat) {
		free(raw);
		return vdisk_set_error_errno(ENOMEM, "BAT: %" PRIu32 " entries", v->entries);
	}
	if (img_pread(&v->ct, raw, (size_t)bat_bytes, v->bat_off, "BAT") < 0) {
		free(raw);
		return -1;
	}
	for (uint32_t i = 0; i < v->entries; i++)
		atomic_init(&v->bat[i], img_be32(raw + 4 * (size_t)i));
	free(raw);
	struct first_problem fp = {.n = 0};
	check_layout(v, cbytes, first_problem, &fp, 1);
	if (fp.n)
		return vdisk_set_error("%s", fp.msg);
	size_t nsec = ((size_t)v->entries + 127) / 128;
	v->bat_ver = calloc(nsec, sizeof *v->bat_ver);
	v->bat_done = calloc(nsec, sizeof *v->bat_done);
	v->ones = malloc(v->bitmap_bytes);
	if (!v->bat_ver || !v->bat_done || !v->ones)
		return vdisk_set_error_errno(ENOMEM, "BAT");
	memset(v->ones, 0xff, v->bitmap_bytes);
	v->footer_pos = cbytes - FOOTER;
	return 0;
}

/* Differencing: every allocated block's bitmap, in memory. */
static int read_bitmaps(struct vhd *v)
{
	v->bitmaps = calloc(v->entries ? v->entries : 1, sizeof *v->bitmaps);
	v->bm_ver = calloc(v->entries ? v->entries : 1, sizeof *v->bm_ver);
	v->bm_done = calloc(v->entries ? v->entries : 1, sizeof *v->bm_done);
	if (!v->bitmaps || !v->bm_ver || !v->bm_done)
		return vdisk_set_error_errno(ENOMEM, "bitmaps");
	for (uint32_t i = 0; i < v->entries; i++) {
		uint32_t e = atomic_load_explicit(&v->bat[i], memory_order_relaxed);
		if (e == BAT_FREE)
			continue;
		v->bitmaps[i] = malloc(v->bitmap_bytes);
		if (!v->bitmaps[i])
			return vdisk_set_error_errno(ENOMEM, "bitmaps");
		if (img_pread(&v->ct, v->bitmaps[i], v->bitmap_bytes, (uint64_t)e * 512,
		              "sector bitmap") < 0)
			return -1;
	}
	return 0;
}

/* ---- parents ------------------------------------------------------------- */

static bool is_vhd(struct vdisk *d)
{
	const char *t = vdisk_type(d);
	return t && (strcmp(t, "vhd") == 0 || strcmp(t, "vhd1") == 0);
}

/* The parent's names from the locators: W2ru first, then W2ku, then the
 * header's unicode name.  Returns how many were put in names[]; a name that
 * is not valid UTF-16 is noted in bad. */
static unsigned parent_names(struct vhd *v, char names[10][1024], char *bad, size_t badlen)
{
	unsigned n = 0;
	static const char *const order[] = {"W2ru", "W2ku"};
	for (unsigned o = 0; o < 2; o++)
		for (unsigned i = 0; i < 8 && n < 9; i++) {
			const uint8_t *l = v->hdr + 576 + 24 * i;
			uint32_t dlen = img_be32(l + 8);
			if (memcmp(l, order[o], 4) != 0 || dlen == 0 || dlen > 4096)
				continue;
			uint8_t buf[4096 + 512];
			uint64_t off = img_be64(l + 16);
			size_t rlen = (dlen + 511) & ~511u;
			if (off + rlen > img_container_bytes(&v->ct))
				rlen = dlen; /* checked to fit at open */
			if (rlen % 512 || img_pread(&v->ct, buf, rlen, off, "parent locator") < 0)
				continue;
			if (img_utf16_to_utf8(buf, dlen, false, false, names[n], 1024) == 0) {
				if (names[n][0])
					n++;
			} else {
				size_t l = strlen(bad);
				snprintf(bad + l, badlen - l, "%slocator %u (%s): not valid UTF-16",
				         l ? "; " : "", i, order[o]);
			}
		}
	if (img_utf16_to_utf8(v->hdr + 64, 512, true, false, names[n], 1024) == 0) {
		if (names[n][0])
			n++;
	} else {
		size_t l = strlen(bad);
		snprintf(bad + l, badlen - l, "%sparent_unicode_name: not valid UTF-16",
		         l ? "; " : "");
	}
	return n;
}

static int open_parent(struct vdisk *d, struct vhd *v, json_t *cfg, bool allow, json_t *chain)
{
	json_t *spec = json_object_get(cfg, "parent");
	char why_all[1024] = "";
	if (spec) {
		v->parent = vdisk_open_child(d, spec, "parent", true);
		if (!v->parent)
			return -1;
	} else {
		char names[10][1024];
		unsigned n = parent_names(v, names, why_all, sizeof why_all);
		if (!n)
			return vdisk_set_error(
			    "parent: the image names no parent (%s); give one with "
			    "\"parent\"",
			    why_all[0] ? why_all : "no locator and no parent_unicode_name");
		for (unsigned i = 0; i < n && !v->parent; i++) {
			const char *why = NULL;
			char *p = v->ct.dir || allow
			              ? img_parent_path(v->ct.dir, names[i], allow, &why)
			              : NULL;
			if (!p && !why)
				why = "the child has no directory (it is not opened by path)";
			struct stat st;
			if (p && stat(p, &st) != 0)
				why = "no such file";
			if (!why) {
				json_t *ps =
				    json_pack("{s:s, s:s, s:b, s:O}", "type", "vhd", "path", p,
				              "allow-parent-paths", allow, "chain", chain);
				v->parent = ps ? vdisk_open_child(d, ps, "parent", true) : NULL;
				json_decref(ps);
				free(p);
				if (!v->parent)
					return -1;
				free(v->parent_name);
				v->parent_name = strdup(names[i]);
				break;
			}
			free(p);
			size_t l = strlen(why_all);
			snprintf(why_all + l, sizeof why_all - l, "%s'%s': %s", l ? "; " : "",
			         names[i], why);
		}
		if (!v->parent)
			return vdisk_set_error(
			    "parent: not found from the image's names (%s); give "
			    "it with \"parent\"",
			    why_all);
	}
	uint64_t pbytes = vdisk_sector_count(v->parent) * vdisk_sector_size(v->parent);
	if (vdisk_sector_size(v->parent) != 512)
		return vdisk_set_error("parent: has %" PRIu32 "-byte sectors, not 512",
		                       vdisk_sector_size(v->parent));
	if (pbytes != v->size)
		return vdisk_set_error("parent: its size %" PRIu64
		                       " differs from the child's %" PRIu64,
		                       pbytes, v->size);
	uint8_t id[16];
	char a[37], b[37];
	if (vdisk_disk_id(v->parent, id) && memcmp(id, v->hdr + 40, 16) != 0) {
		img_guid_str(id, a);
		img_guid_str(v->hdr + 40, b);
		return vdisk_set_error("parent: its unique id %s is not the child's "
		                       "parent_unique_id %s",
		                       a, b);
	}
	if (is_vhd(v->parent)) {
		struct vhd *pv = vdisk_priv(v->parent);
		if (memcmp(pv->footer + 24, v->hdr + 56, 4) != 0)
			return vdisk_set_error("parent: its time_stamp %" PRIu32
			                       " is not the child's "
			                       "parent_time_stamp %" PRIu32 " (the parent changed)",
			                       img_be32(pv->footer + 24), img_be32(v->hdr + 56));
	}
	v->parent_sectors = vdisk_sector_count(v->parent);
	return 0;
}

/* ---- creating ------------------------------------------------------------ */

struct create_opts {
	uint64_t size;
	bool fixed, adopt, want;
	uint32_t block_size;
};

static int write_new(struct vhd *v, int type, uint64_t size, uint32_t bs, struct vdisk *parent,
                     const char *parent_path)
{
	uint8_t *f = v->footer;
	if (make_footer(f, type, size) < 0)
		return -1;
	if (type == T_FIXED)
		return img_pwrite(&v->ct, f, FOOTER, size, "footer") < 0 ? -1 : img_flush(&v->ct);

	uint32_t entries = (uint32_t)((size + bs - 1) / bs);
	uint64_t bat_bytes = ((uint64_t)entries * 4 + 511) & ~511ull;
	uint8_t *h = v->hdr;
	memset(h, 0, DYNHDR);
	memcpy(h, "cxsparse", 8);
	img_put_be64(h + 8, UINT64_MAX);
	img_put_be64(h + 16, FOOTER + DYNHDR);
	img_put_be32(h + 24, 0x00010000);
	img_put_be32(h + 28, entries);
	img_put_be32(h + 32, bs);
	uint64_t pos = FOOTER + DYNHDR + bat_bytes;
	uint8_t loc[2][4096];
	size_t loclen[2] = {0, 0};
	if (parent) {
		uint8_t id[16] = {0};
		vdisk_disk_id(parent, id);
		memcpy(h + 40, id, 16);
		if (is_vhd(parent))
			memcpy(h + 56, ((struct vhd *)vdisk_priv(parent))->footer + 24, 4);
		char *abs = parent_path ? realpath(parent_path, NULL) : NULL;
		char *cdir = v->ct.dir ? realpath(v->ct.dir, NULL) : NULL;
		if (abs) {
			const char *base = strrchr(abs, '/') ? strrchr(abs, '/') + 1 : abs;
			char rel[1024];
			img_utf8_to_utf16(abs, true, h + 64, 510);
			long n = img_utf8_to_utf16(abs, false, loc[1], sizeof loc[1]);
			loclen[1] = n > 0 ? (size_t)n : 0;
			size_t dl = strlen(abs) - strlen(base) - 1;
			if (cdir && strlen(cdir) == dl && strncmp(cdir, abs, dl) == 0) {
				snprintf(rel, sizeof rel, ".\\%s", base);
				n = img_utf8_to_utf16(rel, false, loc[0], sizeof loc[0]);
				loclen[0] = n > 0 ? (size_t)n : 0;
			}
		}
		free(abs);
		free(cdir);
		static const char codes[2][5] = {"W2ru", "W2ku"};
		unsigned li = 0;
		for (unsigned k = 0; k < 2; k++) {
			if (!loclen[k])
				continue;
			uint8_t *l = h + 576 + 24 * li++;
			uint32_t space = (uint32_t)((loclen[k] + 511) & ~(size_t)511);
			memcpy(l, codes[k], 4);
			img_put_be32(l + 4, space);
			img_put_be32(l + 8, (uint32_t)loclen[k]);
			img_put_be64(l + 16, pos);
			int g = img_container_grow(&v->ct, pos + space + FOOTER);
			if (g < 0)
				return vdisk_set_error_errno(-g, "growing the new image");
			if (img_pwrite(&v->ct, loc[k], space, pos, "parent locator") < 0)
				return -1;
			pos += space;
		}
	}
	img_put_be32(h + 36, img_checksum_ones(h, DYNHDR, 36, 4));
	int grc = img_container_grow(&v->ct, pos + FOOTER);
	if (grc < 0)
		return vdisk_set_error_errno(-grc, "growing the new image to %" PRIu64 " bytes",
		                             pos + FOOTER);
	uint8_t *bat = malloc(bat_bytes);
	if (!bat)
		return vdisk_set_error_errno(ENOMEM, "BAT");
	memset(bat, 0xff, bat_bytes);
	int rc = img_pwrite(&v->ct, f, FOOTER, 0, "footer copy") < 0 ||
	                 img_pwrite(&v->ct, h, DYNHDR, FOOTER, "dynamic header") < 0 ||
	                 img_pwrite(&v->ct, bat, bat_bytes, FOOTER + DYNHDR, "BAT") < 0 ||
	                 img_pwrite(&v->ct, f, FOOTER, pos, "footer") < 0
	             ? -1
	             : img_flush(&v->ct);
	free(bat);
	return rc;
}

/* The container's size for a new image: everything but the blocks. */
static uint64_t new_container_bytes(int type, uint64_t size, uint32_t bs, const char *parent_path)
{
	if (type == T_FIXED)
		return size + FOOTER;
	uint64_t entries = (size + bs - 1) / bs;
	(void)parent_path; /* write_new grows the file for the locators */
	return FOOTER + DYNHDR + ((entries * 4 + 511) & ~511ull) + FOOTER;
}

/* ------------------------------------------------------------------------- */
/* Open / close                                                                */
/* ------------------------------------------------------------------------- */

static void vhd_free(struct vhd *v)
{
	if (!v)
		return;
	if (v->bitmaps)
		for (uint32_t i = 0; i < v->entries; i++)
			free(v->bitmaps[i]);
	free(v->bitmaps);
	free(v->bm_ver);
	free(v->bm_done);
	free(v->bat_ver);
	free(v->bat_done);
	free((void *)v->bat);
	free(v->ones);
	free(v->parent_name);
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->rmw_lock);
	pthread_mutex_destroy(&v->flush_lock);
	free(v);
}

static int parse_create(json_t *cfg, struct create_opts *co)
{
	json_t *c = json_object_get(cfg, "create");
	uint64_t bs = 2u << 20;
	memset(co, 0, sizeof *co);
	if (c && json_is_true(c)) {
		co->want = true;
	} else if (c && !json_is_false(c)) {
		if (vdisk_cfg_size(cfg, "create", &co->size) < 0)
			return -1;
		co->want = true;
		if (co->size == 0 || co->size % 512)
			return vdisk_set_error(
			    "create: %" PRIu64 " is not a non-zero multiple of 512", co->size);
		if (co->size / 512 > MAX_SECTORS)
			return vdisk_set_error(
			    "create: %" PRIu64 " bytes is more than a VHD's 2040 GiB", co->size);
	}
	if (vdisk_cfg_bool(cfg, "fixed", &co->fixed) < 0 ||
	    vdisk_cfg_bool(cfg, "adopt", &co->adopt) < 0 ||
	    vdisk_cfg_size(cfg, "block-size", &bs) < 0)
		return -1;
	if (bs < 512 || bs > MAX_BLOCK || (bs & (bs - 1)))
		return vdisk_set_error(
		    "block-size: %" PRIu64 " is not a power of two from 512 to %u", bs, MAX_BLOCK);
	co->block_size = (uint32_t)bs;
	if (co->adopt && (!co->fixed || co->want))
		return vdisk_set_error("adopt: turns an existing raw file into a fixed VHD: needs "
		                       "fixed=true and no create");
	if (!co->want && !co->adopt &&
	    (json_object_get(cfg, "fixed") || json_object_get(cfg, "block-size")))
		return vdisk_set_error("fixed, block-size: only with create");
	return 0;
}

/* Turn the raw file of the container into a fixed VHD (append a footer). */
static int adopt(struct vhd *v)
{
	struct stat st;
	if (!v->ct.path || stat(v->ct.path, &st) < 0)
		return vdisk_set_error("adopt: needs path (an existing raw file)");
	uint64_t len = (uint64_t)st.st_size;
	if (len % 512 || len == 0)
		return vdisk_set_error("adopt: '%s' holds %" PRIu64
		                       " bytes, not a non-zero multiple "
		                       "of 512",
		                       v->ct.path, len);
	if (len / 512 > MAX_SECTORS)
		return vdisk_set_error("adopt: '%s' is larger than a VHD's 2040 GiB", v->ct.path);
	uint8_t tail[FOOTER];
	char b[160];
	if (img_pread(&v->ct, tail, FOOTER, len - FOOTER, "adopt") < 0)
		return -1;
	if (!footer_problem(tail, b, sizeof b))
		return vdisk_set_error("adopt: '%s' already ends with a VHD footer", v->ct.path);
	int rc = img_container_grow(&v->ct, len + FOOTER);
	if (rc < 0)
		return vdisk_set_error_errno(-rc, "adopt: growing '%s' by a footer", v->ct.path);
	return write_new(v, T_FIXED, len, 0, NULL, NULL);
}

static int vhd_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"path",  "inner",  "parent", "allow-parent-paths",
	                                   "chain", "create", "fixed",  "block-size",
	                                   "adopt", NULL};
	struct create_opts co;
	bool allow = false;
	json_t *chain = json_object_get(cfg, "chain");
	if (vdisk_cfg_check(cfg, keys) < 0 || parse_create(cfg, &co) < 0 ||
	    vdisk_cfg_bool(cfg, "allow-parent-paths", &allow) < 0)
		return -1;
	if (chain && !json_is_array(chain))
		return vdisk_set_error("chain: not an array of paths");
	bool ro = vdisk_read_only_requested(d);
	if ((co.want || co.adopt) && ro)
		return vdisk_set_error("create: cannot make a read-only image");
	json_t *pspec = json_object_get(cfg, "parent");
	if (co.want && !co.size && !pspec)
		return vdisk_set_error("create: a size (or true, with parent, for a differencing "
		                       "image)");
	if (co.want && pspec && co.fixed)
		return vdisk_set_error("fixed: a differencing image cannot be fixed");

	struct vhd *v = calloc(1, sizeof *v);
	if (!v)
		return vdisk_set_error_errno(ENOMEM, "vhd");
	pthread_mutex_init(&v->lock, NULL);
	pthread_mutex_init(&v->rmw_lock, NULL);
	pthread_mutex_init(&v->flush_lock, NULL);
	json_t *mychain = NULL;

	/* a differencing image to create: its parent first (for its size) */
	const char *ppath = NULL;
	if (co.want && pspec) {
		v->parent = vdisk_open_child(d, pspec, "parent", true);
		if (!v->parent)
			goto fail;
		uint64_t pb = vdisk_sector_count(v->parent) * vdisk_sector_size(v->parent);
		if (co.size && co.size != pb) {
			vdisk_set_error("create: %" PRIu64 " bytes, but the parent holds %" PRIu64,
			                co.size, pb);
			goto fail;
		}
		co.size = pb;
		if (is_vhd(v->parent))
			ppath = ((struct vhd *)vdisk_priv(v->parent))->ct.path;
	}
	int ctype = co.fixed ? T_FIXED : pspec ? T_DIFF : T_DYNAMIC;
	if (img_container_open(d, cfg, &v->ct,
	                       co.want ? new_container_bytes(ctype, co.size, co.block_size, ppath)
	                               : 0) < 0)
		goto fail;
	if (co.want && write_new(v, ctype, co.size, co.block_size, v->parent, ppath) < 0)
		goto fail;
	if (co.adopt && adopt(v) < 0)
		goto fail;

	/* open what is there */
	if (v->ct.path && !co.want) {
		char *real = realpath(v->ct.path, NULL);
		size_t i;
		json_t *p;
		json_array_foreach (chain, i, p) {
			if (real && json_is_string(p) && strcmp(json_string_value(p), real) == 0) {
				vdisk_set_error("parent: a loop: '%s' is its own ancestor",
				                v->ct.path);
				free(real);
				goto fail;
			}
		}
		if (json_array_size(chain) >= CHAIN_MAX) {
			vdisk_set_error("parent: a chain longer than %d images", CHAIN_MAX);
			free(real);
			goto fail;
		}
		mychain = chain ? json_copy(chain) : json_array();
		if (mychain && real)
			json_array_append_new(mychain, json_string(real));
		free(real);
	}
	if (!mychain)
		mychain = json_array();
	uint64_t cbytes = img_container_bytes(&v->ct);
	if (read_footer(v, cbytes) < 0)
		goto fail;
	v->type = (int)img_be32(v->footer + 60);
	v->size = footer_size(v->footer);
	memcpy(v->creator, v->footer + 28, 4);
	if (v->size / 512 > MAX_SECTORS) {
		vdisk_set_error("footer: a disk of %" PRIu64 " bytes is more than a VHD's 2040 GiB",
		                v->size);
		goto fail;
	}
	if (v->size == 0) {
		vdisk_set_error("footer: the disk size is 0 (current_size %" PRIu64
		                ", geometry %" PRIu64 " sectors)",
		                img_be64(v->footer + 48), footer_chs(v->footer));
		goto fail;
	}
	if (v->type == T_FIXED) {
		if (cbytes % 512 || v->size > cbytes - FOOTER) {
			vdisk_set_error("footer current_size: %" PRIu64
			                " bytes do not fit before the "
			                "footer of the %" PRIu64 "-byte file",
			                v->size, cbytes);
			goto fail;
		}
		if (pspec) {
			vdisk_set_error("parent: a fixed image has no parent");
			goto fail;
		}
	} else {
		if (read_dynamic(v, cbytes) < 0)
			goto fail;
		if (v->type == T_DIFF && read_bitmaps(v) < 0)
			goto fail;
		if (v->type == T_DYNAMIC && pspec) {
			vdisk_set_error("parent: a dynamic image has no parent");
			goto fail;
		}
		if (v->type == T_DIFF && !v->parent && open_parent(d, v, cfg, allow, mychain) < 0)
			goto fail;
		if (v->type == T_DIFF && v->parent)
			v->parent_sectors = vdisk_sector_count(v->parent);
		if (v->from_copy && !vdisk_read_only(v->ct.disk) &&
		    img_pwrite(&v->ct, v->footer, FOOTER, v->footer_pos, "footer") < 0)
			goto fail;
	}

	vdisk_set_priv(d, v);
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_count = v->size / 512;
	m->sector_size = 512;
	m->physical_sector_size = 512;
	m->has_disk_id = true;
	memcpy(m->disk_id, v->footer + 68, 16);
	m->fua = vdisk_fua_respected(v->ct.disk);
	m->read_only = ro || vdisk_read_only(v->ct.disk);
	m->unmap = VDISK_UNMAP_IGNORED;
	m->optimal_unmap_sectors = v->type == T_FIXED ? 1 : v->block_sectors;
	m->caps = vdisk_caps(v->ct.disk) & VDISK_CAP_SHARED_FLUSH;
	m->req_ctx_size = sizeof(struct vhd_ctx);
	json_decref(mychain);
	return 0;
fail:
	if (v->ct.path) {
		/* name the file: a chain has several */
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", vdisk_errmsg());
		if (!strstr(msg, v->ct.path))
			vdisk_set_error("'%s': %s", v->ct.path, msg);
	}
	json_decref(mychain);
	img_container_close(&v->ct, true);
	vhd_free(v);
	return -1;
}

/* ------------------------------------------------------------------------- */
/* Data path: fixed images forward to the container (the data is at offset 0  */
/* and the core keeps requests inside current_size, so the footer is never   */
/* reached).  Dynamic and differencing requests are a sequence of pieces, one */
/* child request at a time, each inside one block and one source (zeros, the  */
/* container, the parent).                                                    */
/* ------------------------------------------------------------------------- */

static void finish(struct vhd_ctx *c)
{
	vdisk_req_complete(c->r, c->st);
}

static void child_done(struct vdisk_req *child, vdisk_status st)
{
	struct vhd_ctx *c = child->opaque;
	struct vhd *v = vdisk_priv(c->r->disk);
	if (!vdisk_ok(st) && vdisk_ok(c->st))
		c->st = st;
	if (vdisk_ok(st)) {
		if (c->bounce && c->op == OP_READ)
			vdisk_iov_from_buf(c->r->iov, c->r->iovcnt, (size_t)c->done, c->bounce,
			                   (size_t)c->plen);
		if (c->setbits) {
			uint8_t *bm = v->bitmaps[c->pblock];
			pthread_mutex_lock(&v->lock);
			for (uint32_t i = c->pfirst; i < c->pfirst + c->pcount; i++)
				bm[i >> 3] |= (uint8_t)(0x80 >> (i & 7));
			v->bm_ver[c->pblock] = ++v->ver;
			atomic_fetch_add(&v->meta_ver, 1);
			pthread_mutex_unlock(&v->lock);
			c->need_sync = (c->r->flags & VDISK_IO_FUA) != 0;
		}
		c->done += c->plen;
	}
	if (c->bounce) {
		vdisk_bounce_put(c->r->q, c->bounce, c->blen);
		c->bounce = NULL;
	}
	c->setbits = false;
	vhd_run(c);
}

/* Submit one child rw of bytes [c->done, c->done + len) of the request. */
static int submit_rw(struct vhd_ctx *c, struct vdisk *disk, enum vdisk_op op, uint64_t sector,
                     uint64_t len, uint32_t flags)
{
	struct vdisk_req *r = c->r;
	const struct iovec *iov = c->slice;
	int n =
	    vdisk_iov_slice(r->iov, r->iovcnt, (size_t)c->done, (size_t)len, c->slice, SLICE_MAX);
	if (n < 0) {
		c->bounce = vdisk_bounce_get(r->q, (size_t)len);
		if (!c->bounce)
			return errno == EAGAIN ? -EAGAIN : -ENOMEM;
		c->blen = (size_t)len;
		if (op == VDISK_OP_WRITE)
			vdisk_iov_to_buf(r->iov, r->iovcnt, (size_t)c->done, c->bounce,
			                 (size_t)len);
		c->miov = (struct iovec){c->bounce, (size_t)len};
		iov = &c->miov;
		n = 1;
	}
	struct vdisk_req *child = vdisk_req_alloc(r, disk);
	if (!child) {
		if (c->bounce)
			vdisk_bounce_put(r->q, c->bounce, c->blen);
		c->bounce = NULL;
		return -ENOMEM;
	}
	c->plen = len;
	c->submitted = true;
	vdisk_req_prep_rw(child, op, sector, iov, n, flags);
	child->done = child_done;
	child->opaque = c;
	return vdisk_req_submit(child);
}

/* A differencing write that sets the bits of part of a bitmap byte: libvhdi
 * (and so, probably, other readers) takes a byte with any bit set as wholly
 * present in the child, so the whole group of (up to) 8 sectors is made
 * present: its sectors not yet in the child are written with what they read
 * now (the parent's data), the caller's over them.  Rare (the first partial
 * write to a group), so done synchronously under rmw_lock, which keeps two
 * such writes to one group from undoing each other.  Returns 0 or -errno. */
static int rmw_group(struct vhd_ctx *c, uint32_t b, uint32_t e, uint32_t g0, uint32_t gs,
                     uint32_t first, uint32_t n)
{
	struct vdisk_req *r = c->r;
	struct vhd *v = vdisk_priv(r->disk);
	uint8_t buf[8 * 512];
	uint64_t vsec = ((uint64_t)b << v->bshift) + g0;
	uint64_t at = (uint64_t)e + v->bitmap_bytes / 512 + g0;
	int rc = 0;
	pthread_mutex_lock(&v->rmw_lock);
	memset(buf, 0, sizeof buf);
	if (vsec < v->parent_sectors) {
		uint64_t cnt = vsec + gs > v->parent_sectors ? v->parent_sectors - vsec : gs;
		vdisk_status st = vdisk_pread(v->parent, buf, (size_t)cnt * 512, vsec * 512);
		if (!vdisk_ok(st)) {
			rc = -(st.errnum ? st.errnum : EIO);
			goto out;
		}
	}
	vdisk_iov_to_buf(r->iov, r->iovcnt, (size_t)c->done, buf + (size_t)(first - g0) * 512,
	                 (size_t)n * 512);
	const uint8_t *bm = v->bitmaps[b];
	for (uint32_t i = 0; i < gs;) {
		/* runs of sectors to write: absent from the child, or the caller's */
		bool mine = (i >= first - g0 && i < first - g0 + n) || !bit_get(bm, g0 + i);
		uint32_t k = i + 1;
		if (!mine) {
			i = k;
			continue;
		}
		while (k < gs && ((k >= first - g0 && k < first - g0 + n) || !bit_get(bm, g0 + k)))
			k++;
		vdisk_status st =
		    vdisk_pwrite(v->ct.disk, buf + (size_t)i * 512, (size_t)(k - i) * 512,
		                 (at + i) * 512, r->flags & VDISK_IO_FUA);
		if (!vdisk_ok(st)) {
			rc = -(st.errnum ? st.errnum : EIO);
			goto out;
		}
		i = k;
	}
	pthread_mutex_lock(&v->lock);
	for (uint32_t i = g0; i < g0 + gs; i++)
		v->bitmaps[b][i >> 3] |= (uint8_t)(0x80 >> (i & 7));
	v->bm_ver[b] = ++v->ver;
	atomic_fetch_add(&v->meta_ver, 1);
	pthread_mutex_unlock(&v->lock);
	c->need_sync |= (r->flags & VDISK_IO_FUA) != 0;
	c->done += (uint64_t)n * 512;
out:
	pthread_mutex_unlock(&v->rmw_lock);
	return rc;
}

/* Allocate block b (see the top).  Returns its BAT entry, or a negative errno. */
static int64_t allocate(struct vhd *v, uint32_t b)
{
	int64_t rc;
	pthread_mutex_lock(&v->lock);
	uint32_t e = atomic_load_explicit(&v->bat[b], memory_order_acquire);
	if (e != BAT_FREE) {
		pthread_mutex_unlock(&v->lock);
		return e;
	}
	uint64_t data = (v->footer_pos + v->bitmap_bytes + 4095) & ~4095ull;
	uint64_t bpos = data - v->bitmap_bytes, nfoot = data + v->block_size;
	if (bpos / 512 >= BAT_FREE) {
		rc = -EFBIG;
		goto out;
	}
	rc = img_container_grow(&v->ct, nfoot + FOOTER);
	if (rc < 0)
		goto out;
	uint8_t *bm = NULL;
	if (v->type == T_DIFF) {
		bm = calloc(1, v->bitmap_bytes);
		if (!bm) {
			rc = -ENOMEM;
			goto out;
		}
	}
	vdisk_status st = vdisk_pwrite(v->ct.disk, bm ? bm : v->ones, v->bitmap_bytes, bpos, 0);
	if (vdisk_ok(st))
		st = vdisk_pwrite(v->ct.disk, v->footer, FOOTER, nfoot, 0);
	if (!vdisk_ok(st)) {
		free(bm);
		rc = -(st.errnum ? st.errnum : EIO);
		goto out;
	}
	if (bm) {
		v->bitmaps[b] = bm;
		v->bm_ver[b] = ++v->ver;
	}
	v->footer_pos = nfoot;
	v->bat_ver[b / 128] = ++v->ver;
	atomic_fetch_add(&v->meta_ver, 1);
	atomic_store_explicit(&v->bat[b], (uint32_t)(bpos / 512), memory_order_release);
	rc = (int64_t)(bpos / 512);
out:
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* The next piece of a read or write at c->done; returns 1 when a child was
 * submitted, 0 when the piece was done inline, or a negative errno. */
static int step_rw(struct vhd_ctx *c)
{
	struct vdisk_req *r = c->r;
	struct vhd *v = vdisk_priv(r->disk);
	uint64_t sector = r->sector + c->done / 512;
	uint64_t left = (r->len - c->done) / 512;
	uint32_t b = (uint32_t)(sector >> v->bshift);
	uint32_t first = (uint32_t)(sector & (v->block_sectors - 1));
	uint32_t n = v->block_sectors - first;
	if (n > left)
		n = (uint32_t)left;
	uint32_t e = atomic_load_explicit(&v->bat[b], memory_order_acquire);
	bool write = c->op == OP_WRITE;
	if (e == BAT_FREE && write) {
		int64_t a = allocate(v, b);
		if (a < 0)
			return (int)a;
		e = (uint32_t)a;
		c->need_sync |= (r->flags & VDISK_IO_FUA) != 0;
	}
	if (e == BAT_FREE) {
		if (v->type != T_DIFF) {
			vdisk_iov_memset(r->iov, r->iovcnt, (size_t)c->done, 0, (size_t)n * 512);
			c->done += (uint64_t)n * 512;
			return 0;
		}
		goto parent;
	}
	uint64_t at = (uint64_t)e + v->bitmap_bytes / 512 + first;
	if (v->type == T_DIFF) {
		const uint8_t *bm = v->bitmaps[b];
		bool set = bit_get(bm, first);
		uint32_t k = 1;
		while (k < n && bit_get(bm, first + k) == set)
			k++;
		if (write) {
			uint32_t gs = v->block_sectors < 8 ? v->block_sectors : 8;
			uint32_t g0 = first & ~(gs - 1);
			if (!set && (first != g0 || k < gs)) {
				uint32_t end = g0 + gs < first + k ? g0 + gs : first + k;
				int rc = rmw_group(c, b, e, g0, gs, first, end - first);
				return rc < 0 ? rc : 0;
			}
			if (!set)
				k &= ~(gs - 1);
			/* a run of sectors that all need their bit, or none */
			c->setbits = !set;
			c->pblock = b;
			c->pfirst = first;
			c->pcount = k;
			int rc = submit_rw(c, v->ct.disk, VDISK_OP_WRITE, at, (uint64_t)k * 512,
			                   r->flags & VDISK_IO_FUA);
			return rc < 0 ? rc : 1;
		}
		n = k;
		if (!set)
			goto parent;
	}
	{
		int rc = submit_rw(c, v->ct.disk, write ? VDISK_OP_WRITE : VDISK_OP_READ, at,
		                   (uint64_t)n * 512, write ? (r->flags & VDISK_IO_FUA) : 0);
		return rc < 0 ? rc : 1;
	}
parent:
	if (sector >= v->parent_sectors) {
		vdisk_iov_memset(r->iov, r->iovcnt, (size_t)c->done, 0, (size_t)n * 512);
		c->done += (uint64_t)n * 512;
		return 0;
	}
	if (sector + n > v->parent_sectors)
		n = (uint32_t)(v->parent_sectors - sector);
	{
		int rc = submit_rw(c, v->parent, VDISK_OP_READ, sector, (uint64_t)n * 512, 0);
		return rc < 0 ? rc : 1;
	}
}

/* One step: 1 a child is in flight, 0 progress was made inline, 2 the
 * request is finished, or a negative errno. */
static int step(struct vhd_ctx *c)
{
	if (c->done < c->r->len)
		return step_rw(c);
	return 2;
}

static vdisk_status flush_work(struct vdisk_req *r);

static void release(struct vhd_ctx *c)
{
	if (c->bounce) {
		vdisk_bounce_put(c->r->q, c->bounce, c->blen);
		c->bounce = NULL;
	}
}

/* Run c until a child is in flight or the request is done.  A child that
 * completes before vdisk_req_submit returns re-enters here: the loop takes
 * over instead of recursing. */
static void vhd_run(struct vhd_ctx *c)
{
	if (c->running) {
		c->again = true;
		return;
	}
	c->running = true;
	for (;;) {
		c->again = false;
		int rc = vdisk_ok(c->st) ? step(c) : 2;
		if (rc < 0) {
			c->st = vdisk_status_io(-rc);
			continue;
		}
		if (rc == 2) {
			c->running = false;
			release(c);
			/* a FUA write that changed metadata: make that durable too */
			if (vdisk_ok(c->st) && c->need_sync) {
				int orc = vdisk_offload(c->r, flush_work);
				if (orc == 0)
					return;
				c->st = vdisk_status_io(-orc);
			}
			finish(c);
			return;
		}
		if (rc == 1 && !c->again)
			break;
	}
	c->running = false;
}

static int start(struct vdisk_req *r, uint8_t op)
{
	struct vhd_ctx *c = vdisk_req_ctx(r);
	memset(c, 0, offsetof(struct vhd_ctx, slice));
	c->r = r;
	c->op = op;
	c->st = vdisk_status_ok();
	/* the first step runs here, so that back-pressure (-EAGAIN) and a
	 * failure before anything was done are returned at submission */
	c->running = true;
	int rc = step(c);
	c->running = false;
	if (rc < 0 && !c->submitted && c->done == 0) {
		release(c);
		return rc;
	}
	if (rc < 0)
		c->st = vdisk_status_io(-rc);
	if (rc == 1 && !c->again)
		return 0;
	vhd_run(c);
	return 0;
}

static int vhd_read(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (v->type == T_FIXED)
		return vdisk_req_forward(r, v->ct.disk);
	return start(r, OP_READ);
}

static int vhd_write(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (v->type == T_FIXED)
		return vdisk_req_forward(r, v->ct.disk);
	return start(r, OP_WRITE);
}

static int vhd_flush(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (v->type == T_FIXED || atomic_load(&v->meta_synced) == atomic_load(&v->meta_ver))
		return vdisk_req_forward(r, v->ct.disk);
	/* metadata to write: blocking work, on the worker pool */
	return vdisk_offload(r, flush_work);
}

static int vhd_write_zeroes(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (v->type == T_FIXED)
		return vdisk_req_forward(r, v->ct.disk);
	/* a dynamic image's unallocated blocks already read as zeros */
	if (v->type == T_DYNAMIC) {
		bool all_free = true;
		for (uint64_t s = r->sector; s < r->sector + r->count && all_free;
		     s = ((s >> v->bshift) + 1) << v->bshift)
			all_free = atomic_load_explicit(&v->bat[s >> v->bshift],
			                                memory_order_acquire) == BAT_FREE;
		if (all_free) {
			vdisk_req_complete(r, vdisk_status_ok());
			return 0;
		}
	}
	vdisk_req_complete(r, vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP));
	return 0;
}

static int vhd_extents(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (v->type == T_FIXED)
		return vdisk_req_forward(r, v->ct.disk);
	unsigned n = 0;
	uint64_t s = r->sector, end = r->sector + r->count;
	while (s < end && n <= r->ext_max) {
		uint64_t next = ((s >> v->bshift) + 1) << v->bshift;
		if (next > end)
			next = end;
		bool hole =
		    v->type == T_DYNAMIC &&
		    atomic_load_explicit(&v->bat[s >> v->bshift], memory_order_acquire) == BAT_FREE;
		uint32_t fl = hole ? VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO : 0;
		if (n && r->ext[n - 1].flags == fl) {
			r->ext[n - 1].count += next - s;
		} else {
			if (n == r->ext_max)
				break;
			r->ext[n] =
			    (struct vdisk_extent){.sector = s, .count = next - s, .flags = fl};
			n++;
		}
		s = next;
	}
	*r->ext_n = n;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}
/* ------------------------------------------------------------------------- */
/* Control path                                                                */
/* ------------------------------------------------------------------------- */

/* A flush with metadata to write (see the top): under flush_lock, copy what
 * is dirty (BAT sectors, bitmaps) as it is now, flush the container (which
 * makes durable all data those copies describe: a bit or entry is set only
 * after its data was written), then write the copies with FUA (or write them
 * and flush again).  Blocking: from the worker pool, or at close. */
static int sync_meta(struct vhd *v)
{
	struct item {
		uint64_t off;
		uint32_t idx, ver;
		bool bm;
	} *items = NULL;
	uint8_t *stage = NULL;
	size_t n = 0, cap = 0, slen = 0;
	int rc = -1;
	if (vdisk_read_only(v->ct.disk))
		return 0;
	pthread_mutex_lock(&v->flush_lock);
	pthread_mutex_lock(&v->lock);
	uint32_t mv = atomic_load(&v->meta_ver);
	size_t nsec = ((size_t)v->entries + 127) / 128;
	for (int pass = 0; pass < 2; pass++) {
		/* pass 0 counts, pass 1 copies */
		n = 0;
		slen = 0;
		for (uint32_t i = 0; v->type == T_DIFF && i < v->entries; i++)
			if (v->bm_ver[i] != v->bm_done[i]) {
				if (pass) {
					items[n] =
					    (struct item){(uint64_t)atomic_load(&v->bat[i]) * 512,
					                  i, v->bm_ver[i], true};
					memcpy(stage + slen, v->bitmaps[i], v->bitmap_bytes);
				}
				n++;
				slen += v->bitmap_bytes;
			}
		for (uint32_t sct = 0; sct < nsec; sct++)
			if (v->bat_ver[sct] != v->bat_done[sct]) {
				if (pass) {
					items[n] = (struct item){v->bat_off + (uint64_t)sct * 512,
					                         sct, v->bat_ver[sct], false};
					for (uint32_t k = 0; k < 128; k++) {
						uint64_t e = (uint64_t)sct * 128 + k;
						img_put_be32(stage + slen + 4 * k,
						             e < v->entries
						                 ? atomic_load(&v->bat[e])
						                 : BAT_FREE);
					}
				}
				n++;
				slen += 512;
			}
		if (!pass) {
			cap = n;
			items = malloc((cap ? cap : 1) * sizeof *items);
			stage = malloc(slen ? slen : 1);
			if (!items || !stage) {
				pthread_mutex_unlock(&v->lock);
				vdisk_set_error_errno(ENOMEM, "flush: staging metadata");
				goto out;
			}
		}
	}
	pthread_mutex_unlock(&v->lock);
	if (img_flush(&v->ct) < 0)
		goto out;
	bool fua = vdisk_fua_respected(v->ct.disk);
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = items[i].bm ? v->bitmap_bytes : 512;
		vdisk_status st =
		    vdisk_pwrite(v->ct.disk, stage + at, len, items[i].off, fua ? VDISK_IO_FUA : 0);
		if (!vdisk_ok(st)) {
			char msg[160];
			vdisk_set_error("flush: writing %s at offset %" PRIu64 ": %s",
			                items[i].bm ? "a sector bitmap" : "the BAT", items[i].off,
			                vdisk_status_str(st, msg, sizeof msg));
			goto out;
		}
		at += len;
	}
	if (n && !fua && img_flush(&v->ct) < 0)
		goto out;
	pthread_mutex_lock(&v->lock);
	for (size_t i = 0; i < n; i++) {
		uint32_t *dn = items[i].bm ? &v->bm_done[items[i].idx] : &v->bat_done[items[i].idx];
		if ((int32_t)(items[i].ver - *dn) > 0)
			*dn = items[i].ver;
	}
	if ((int32_t)(mv - atomic_load(&v->meta_synced)) > 0)
		atomic_store(&v->meta_synced, mv);
	pthread_mutex_unlock(&v->lock);
	rc = 0;
out:
	pthread_mutex_unlock(&v->flush_lock);
	free(items);
	free(stage);
	return rc;
}

static vdisk_status flush_work(struct vdisk_req *r)
{
	struct vhd *v = vdisk_priv(r->disk);
	if (sync_meta(v) < 0)
		return vdisk_status_io(EIO);
	return vdisk_status_ok();
}

static void vhd_close(struct vdisk *d)
{
	struct vhd *v = vdisk_priv(d);
	if (v->type != T_FIXED && atomic_load(&v->meta_synced) != atomic_load(&v->meta_ver) &&
	    sync_meta(v) < 0)
		fprintf(stderr, "vhd: %s: %s\n", v->ct.path ? v->ct.path : "inner", vdisk_errmsg());
	img_container_close(&v->ct, false);
	vhd_free(v);
}

static const char *kind_name(int t)
{
	return t == T_FIXED ? "fixed" : t == T_DYNAMIC ? "dynamic" : "differencing";
}

static int vhd_inspect(struct vdisk *d, json_t *obj)
{
	struct vhd *v = vdisk_priv(d);
	json_t *im = json_object();
	char creator[5], host[5], id[37];
	for (unsigned i = 0; i < 4; i++) {
		creator[i] = v->footer[28 + i] >= 32 && v->footer[28 + i] < 127
		                 ? (char)v->footer[28 + i]
		                 : '.';
		host[i] = v->footer[36 + i] >= 32 && v->footer[36 + i] < 127
		              ? (char)v->footer[36 + i]
		              : '.';
	}
	creator[4] = host[4] = 0;
	char cv[64];
	snprintf(cv, sizeof cv, "%s %u.%u (%s)", creator, img_be16(v->footer + 32),
	         img_be16(v->footer + 34), host);
	img_guid_str(v->footer + 68, id);
	json_object_set_new(im, "format", json_string("vhd"));
	json_object_set_new(im, "kind", json_string(kind_name(v->type)));
	json_object_set_new(im, "creator", json_string(cv));
	json_object_set_new(im, "unique_id", json_string(id));
	json_object_set_new(im, "current_size", json_integer((json_int_t)img_be64(v->footer + 48)));
	char geo[48];
	snprintf(geo, sizeof geo, "%u/%u/%u", img_be16(v->footer + 56), v->footer[58],
	         v->footer[59]);
	json_object_set_new(im, "geometry", json_string(geo));
	if (v->type != T_FIXED) {
		uint32_t used = 0;
		for (uint32_t i = 0; i < v->entries; i++)
			used += atomic_load_explicit(&v->bat[i], memory_order_relaxed) != BAT_FREE;
		json_object_set_new(im, "block_size", json_integer(v->block_size));
		json_object_set_new(im, "blocks", json_integer(v->entries));
		json_object_set_new(im, "blocks_allocated", json_integer(used));
		if (v->from_copy)
			json_object_set_new(im, "footer", json_string("from the copy at offset 0"));
	}
	if (v->type == T_DIFF) {
		char name[1024];
		img_guid_str(v->hdr + 40, id);
		json_object_set_new(im, "parent_unique_id", json_string(id));
		if (v->parent_name)
			json_object_set_new(im, "parent", json_string(v->parent_name));
		else if (img_utf16_to_utf8(v->hdr + 64, 512, true, false, name, sizeof name) == 0)
			json_object_set_new(im, "parent", json_string(name));
	}
	json_object_set_new(obj, "image", im);
	return 0;
}

struct check_arg {
	struct vdisk_check *chk;
};

static void check_problem(void *arg, const char *fmt, ...)
{
	struct check_arg *a = arg;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	vdisk_check_problem(a->chk, "%s", msg);
}

static int vhd_check(struct vdisk *d, struct vdisk_check *chk)
{
	struct vhd *v = vdisk_priv(d);
	uint64_t cbytes = img_container_bytes(&v->ct);
	uint8_t f[FOOTER];
	char b[160];
	const char *why;
	if (img_pread(&v->ct, f, FOOTER, cbytes - FOOTER, "footer") < 0)
		return -1;
	if ((why = footer_problem(f, b, sizeof b)))
		vdisk_check_problem(chk, "footer at offset %" PRIu64 ": %s", cbytes - FOOTER, why);
	else if (memcmp(f, v->footer, FOOTER) != 0)
		vdisk_check_problem(chk, "footer at offset %" PRIu64 " differs from the one in use",
		                    cbytes - FOOTER);
	if (v->type == T_FIXED) {
		if (v->size > cbytes - FOOTER)
			vdisk_check_problem(chk, "current_size %" PRIu64 " runs into the footer",
			                    v->size);
		return 0;
	}
	if (img_pread(&v->ct, f, FOOTER, 0, "footer copy") < 0)
		return -1;
	if ((why = footer_problem(f, b, sizeof b)))
		vdisk_check_problem(chk, "footer copy at offset 0: %s", why);
	else if (memcmp(f, v->footer, FOOTER) != 0)
		vdisk_check_problem(chk,
		                    "the footer copy at offset 0 and the footer at the end differ");
	uint8_t h[DYNHDR];
	if (img_pread(&v->ct, h, DYNHDR, v->hdr_off, "dynamic header") < 0)
		return -1;
	if (memcmp(h, "cxsparse", 8) != 0)
		vdisk_check_problem(chk, "dynamic header: cookie is not \"cxsparse\"");
	if (img_be32(h + 36) != img_checksum_ones(h, DYNHDR, 36, 4))
		vdisk_check_problem(chk, "dynamic header: checksum 0x%08" PRIx32 " is wrong",
		                    img_be32(h + 36));
	/* the BAT on the medium, against the layout rules */
	uint64_t bat_bytes = ((uint64_t)v->entries * 4 + 511) & ~511ull;
	uint8_t *raw = malloc(bat_bytes);
	if (!raw)
		return vdisk_set_error_errno(ENOMEM, "BAT");
	if (img_pread(&v->ct, raw, (size_t)bat_bytes, v->bat_off, "BAT") < 0) {
		free(raw);
		return -1;
	}
	uint32_t differ = 0;
	for (uint32_t i = 0; i < v->entries; i++)
		differ += img_be32(raw + 4 * (size_t)i) != atomic_load(&v->bat[i]);
	free(raw);
	if (differ)
		vdisk_check_problem(chk,
		                    "BAT: %" PRIu32 " entries on the medium differ from the "
		                    "table in use",
		                    differ);
	struct check_arg a = {chk};
	check_layout(v, cbytes, check_problem, &a, 100);
	return 0;
}

const struct vdisk_driver vdisk_driver_vhd = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "vhd",
    .description = "VHD image: fixed, dynamic or differencing (path or inner, parent, "
                   "allow-parent-paths, create, fixed, block-size, adopt)",
    .open = vhd_open,
    .close = vhd_close,
    .read = vhd_read,
    .write = vhd_write,
    .flush = vhd_flush,
    .write_zeroes = vhd_write_zeroes,
    .extents = vhd_extents,
    .inspect = vhd_inspect,
    .check = vhd_check,
};

/* The reference's name for the same driver. */
const struct vdisk_driver vdisk_driver_vhd1 = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "vhd1",
    .description = "the vhd type under its other name",
    .open = vhd_open,
    .close = vhd_close,
    .read = vhd_read,
    .write = vhd_write,
    .flush = vhd_flush,
    .write_zeroes = vhd_write_zeroes,
    .extents = vhd_extents,
    .inspect = vhd_inspect,
    .check = vhd_check,
};
