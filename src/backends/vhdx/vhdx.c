/* vhdx: Microsoft's VHDX images (fixed, dynamic and differencing), read-only,
 * on a container disk (see ../image/image.h and vhdx.h for the layout).
 *
 * Open checks every structure it uses and names the structure and field it
 * refuses.  A dirty log (a non-zero log GUID in the current header) is
 * replayed in memory: the writes of its active sequence are kept and laid over
 * every read of the container, metadata and data alike, so the image reads as
 * it would after a replay while the file is not touched.
 *
 * Memory does not grow with the virtual size: the BAT and the sector bitmaps
 * are read through a cache of 4 KiB pages (4 MiB at most).  A page missing
 * from the cache is read synchronously on the thread of the request that needs
 * it; a page holds 512 BAT entries, so that is one read per 512 blocks.
 *
 * The data path splits a request into pieces, each inside one block and one
 * source (the container, the parent, zeros), and runs them one after the
 * other on the request's queue. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vhdx.h"

#define CACHE_SLOTS 1024u
#define PAGE 4096u
#define SLICE_MAX 16

static const uint8_t GUID_BAT[16] = {0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                                     0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08};
static const uint8_t GUID_META[16] = {0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
                                      0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e};
static const uint8_t GUID_FILE_PARAMS[16] = {0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
                                             0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b};
static const uint8_t GUID_DISK_SIZE[16] = {0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
                                           0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8};
static const uint8_t GUID_PAGE83[16] = {0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
                                        0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46};
static const uint8_t GUID_LOGICAL_SS[16] = {0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
                                            0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f};
static const uint8_t GUID_PHYSICAL_SS[16] = {0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
                                             0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56};
static const uint8_t GUID_PARENT_LOC[16] = {0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
                                            0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c};
static const uint8_t GUID_LOC_VHDX[16] = {0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
                                          0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13};

struct cslot {
	uint64_t off; /* UINT64_MAX: empty */
	uint8_t *buf;
};

struct region {
	uint64_t off, len;
	const char *what;
};

struct vhdx {
	struct img_container ct;
	struct vdisk *parent;
	uint64_t cbytes; /* the container's size at open */
	uint64_t size;   /* virtual bytes */
	uint32_t lss, pss, block_size;
	uint64_t spb; /* sectors per block */
	uint64_t chunk_ratio;
	uint64_t data_blocks, bat_entries;
	uint64_t bat_off, bat_len, meta_off, meta_len, log_off, log_len;
	bool has_parent, leave_allocated;
	uint8_t page83[16];
	uint8_t header[VHDX_HEADER_SIZE]; /* the current one */
	int header_slot;
	char creator[128];
	struct vhdx_replay rp;
	struct {
		char *linkage, *linkage2, *relative, *volume, *absolute;
	} loc;
	char *parent_path;
	pthread_mutex_t lock; /* the cache */
	struct cslot cache[CACHE_SLOTS];
};

struct vhdx_ctx {
	struct vdisk_req *r;
	vdisk_status st;
	uint64_t done; /* bytes */
	uint64_t plen; /* of the piece in flight */
	uint64_t foff; /* its offset in the container, or UINT64_MAX */
	void *bounce;
	size_t blen;
	struct iovec slice[SLICE_MAX];
	struct iovec biov;
	struct vdisk_timer retry; /* a piece refused for back-pressure */
	bool running, again;
};

/* ------------------------------------------------------------------------- */
/* Reading the container: through the replayed log                            */
/* ------------------------------------------------------------------------- */

/* Lay the log's writes over bytes [off, off+len) of the container held at
 * byte `at` of iov (or of buf when iov is NULL). */
static void overlay(const struct vhdx *v, uint64_t off, uint64_t len, void *buf,
                    const struct iovec *iov, int iovcnt, size_t at)
{
	for (size_t i = 0; i < v->rp.n; i++) {
		const struct vhdx_write *w = &v->rp.w[i];
		uint64_t a = w->off > off ? w->off : off;
		uint64_t b = w->off + w->len < off + len ? w->off + w->len : off + len;
		if (a >= b)
			continue;
		size_t dst = at + (size_t)(a - off);
		if (iov) {
			if (w->data)
				vdisk_iov_from_buf(iov, iovcnt, dst, w->data + (a - w->off),
				                   (size_t)(b - a));
			else
				vdisk_iov_memset(iov, iovcnt, dst, 0, (size_t)(b - a));
		} else if (w->data) {
			memcpy((uint8_t *)buf + dst, w->data + (a - w->off), (size_t)(b - a));
		} else {
			memset((uint8_t *)buf + dst, 0, (size_t)(b - a));
		}
	}
}

/* Metadata read (control path or a cache miss): the file's bytes, zeros past
 * its end up to the size the log leaves, and the log's writes over them. */
static int meta_read(struct vhdx *v, void *buf, size_t len, uint64_t off, const char *what)
{
	uint64_t have = off < v->cbytes ? v->cbytes - off : 0;
	size_t from_file = have < len ? (size_t)have : len;
	if (off + len > v->cbytes && off + len > v->rp.last_bytes)
		return vdisk_set_error("%s: %zu bytes at offset %" PRIu64
		                       " are past the end of the "
		                       "%" PRIu64 "-byte file",
		                       what, len, off, v->cbytes);
	if (from_file && img_pread(&v->ct, buf, from_file, off, what) < 0)
		return -1;
	memset((uint8_t *)buf + from_file, 0, len - from_file);
	overlay(v, off, len, buf, NULL, 0, 0);
	return 0;
}

/* The 4 KiB page of metadata at `page` (aligned), through the cache: copies
 * `len` bytes at `at` within it into out.  Returns 0 or -1 with an error set. */
static int cache_read(struct vhdx *v, uint64_t page, size_t at, void *out, size_t len)
{
	struct cslot *s = &v->cache[(page / PAGE) % CACHE_SLOTS];
	pthread_mutex_lock(&v->lock);
	if (s->off == page && s->buf) {
		memcpy(out, s->buf + at, len);
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	pthread_mutex_unlock(&v->lock);
	uint8_t *fresh = aligned_alloc(PAGE, PAGE);
	if (!fresh)
		return vdisk_set_error_errno(ENOMEM, "metadata cache");
	if (meta_read(v, fresh, PAGE, page, "metadata page") < 0) {
		free(fresh);
		return -1;
	}
	memcpy(out, fresh + at, len);
	pthread_mutex_lock(&v->lock);
	uint8_t *old = s->buf;
	s->buf = fresh;
	s->off = page;
	pthread_mutex_unlock(&v->lock);
	free(old);
	return 0;
}

static int bat_get(struct vhdx *v, uint64_t index, uint64_t *entry)
{
	uint64_t off = v->bat_off + index * 8;
	uint8_t b[8];
	if (cache_read(v, off & ~(uint64_t)(PAGE - 1), off & (PAGE - 1), b, 8) < 0)
		return -1;
	*entry = vhdx_le64(b);
	return 0;
}

static inline uint64_t payload_index(const struct vhdx *v, uint64_t block)
{
	return block + block / v->chunk_ratio;
}

static inline uint64_t entry_offset(uint64_t e)
{
	return (e >> 20) << 20;
}

/* How many of the n sectors from `sector` (all in one block of a partially
 * present block's chunk) share the presence of the first; *present says it. */
static int bitmap_run(struct vhdx *v, uint64_t sector, uint64_t n, bool *present)
{
	uint64_t chunk_sectors = v->chunk_ratio * v->spb;
	uint64_t chunk = sector / chunk_sectors;
	uint64_t e;
	if (bat_get(v, chunk * (v->chunk_ratio + 1) + v->chunk_ratio, &e) < 0)
		return -1;
	if ((e & 7) != VHDX_SB_PRESENT)
		return vdisk_set_error("BAT: the sector bitmap of chunk %" PRIu64
		                       " is not present (state %u) though a block of it is "
		                       "partially present",
		                       chunk, (unsigned)(e & 7));
	uint64_t base = entry_offset(e);
	uint64_t bit = sector - chunk * chunk_sectors;
	uint64_t run = 0;
	uint8_t page[PAGE];
	uint64_t have_page = UINT64_MAX;
	while (run < n) {
		uint64_t b = bit + run;
		uint64_t byte_off = base + b / 8;
		uint64_t pg = byte_off & ~(uint64_t)(PAGE - 1);
		if (pg != have_page) {
			if (cache_read(v, pg, 0, page, PAGE) < 0)
				return -1;
			have_page = pg;
		}
		bool p = (page[byte_off - pg] >> (b % 8)) & 1;
		if (run == 0)
			*present = p;
		else if (p != *present)
			break;
		run++;
	}
	return (int)(run > INT32_MAX ? INT32_MAX : run);
}

/* ------------------------------------------------------------------------- */
/* Data path                                                                   */
/* ------------------------------------------------------------------------- */

static void vhdx_run(struct vhdx_ctx *c);

static void child_done(struct vdisk_req *child, vdisk_status st)
{
	struct vhdx_ctx *c = child->opaque;
	struct vhdx *v = vdisk_priv(c->r->disk);
	struct vdisk_req *r = c->r;
	if (!vdisk_ok(st)) {
		c->st = st;
	} else {
		if (c->bounce)
			vdisk_iov_from_buf(r->iov, r->iovcnt, (size_t)c->done, c->bounce,
			                   (size_t)c->plen);
		if (c->foff != UINT64_MAX && v->rp.n)
			overlay(v, c->foff, c->plen, NULL, r->iov, r->iovcnt, (size_t)c->done);
		c->done += c->plen;
	}
	if (c->bounce) {
		vdisk_bounce_put(r->q, c->bounce, c->blen);
		c->bounce = NULL;
	}
	vhdx_run(c);
}

/* Read bytes [c->done, +len) of the request from `disk` at `sector`. */
static int submit_read(struct vhdx_ctx *c, struct vdisk *disk, uint64_t sector, uint64_t len)
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
		c->biov = (struct iovec){c->bounce, (size_t)len};
		iov = &c->biov;
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
	vdisk_req_prep_rw(child, VDISK_OP_READ, sector, iov, n, 0);
	child->done = child_done;
	child->opaque = c;
	return vdisk_req_submit(child);
}

static vdisk_status io_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static vdisk_status io_error(int err, const char *fmt, ...)
{
	/* the message goes to the control-path error of this thread, for tools
	 * that print it; the request carries the kind and errno */
	va_list ap;
	char msg[256];
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	vdisk_set_error("%s", msg);
	return vdisk_status_io(err);
}

/* One piece: returns 1 if a child is in flight, 0 if the piece was done here,
 * -EAGAIN / -ENOMEM for the core, or sets c->st and returns 0 on failure. */
static int step(struct vhdx_ctx *c)
{
	struct vdisk_req *r = c->r;
	struct vhdx *v = vdisk_priv(r->disk);
	uint64_t sector = r->sector + c->done / v->lss;
	uint64_t left = (r->len - c->done) / v->lss;
	uint64_t block = sector / v->spb, in = sector % v->spb;
	uint64_t n = v->spb - in < left ? v->spb - in : left;
	uint64_t e;
	if (bat_get(v, payload_index(v, block), &e) < 0) {
		c->st = vdisk_status_io(EIO);
		return 0;
	}
	unsigned state = (unsigned)(e & 7);
	bool from_file = false, from_parent = false;
	switch (state) {
	case VHDX_PAYLOAD_FULLY_PRESENT: from_file = true; break;
	case VHDX_PAYLOAD_PARTIALLY_PRESENT: {
		if (!v->has_parent) {
			c->st = io_error(EIO,
			                 "BAT: block %" PRIu64 " is partially present in an image "
			                 "without a parent",
			                 block);
			return 0;
		}
		bool present = false;
		int run = bitmap_run(v, sector, n, &present);
		if (run < 0) {
			c->st = vdisk_status_io(EIO);
			return 0;
		}
		n = (uint64_t)run;
		from_file = present;
		from_parent = !present;
		break;
	}
	case VHDX_PAYLOAD_NOT_PRESENT: from_parent = v->has_parent; break;
	case VHDX_PAYLOAD_ZERO:
	case VHDX_PAYLOAD_UNMAPPED:
	case VHDX_PAYLOAD_UNDEFINED: break;
	default:
		c->st =
		    io_error(EIO, "BAT: block %" PRIu64 " has the invalid state %u", block, state);
		return 0;
	}
	uint64_t len = n * v->lss;
	c->foff = UINT64_MAX;
	if (from_file) {
		uint64_t off = entry_offset(e) + in * v->lss;
		if (entry_offset(e) < VHDX_MiB || off + len > v->cbytes) {
			c->st = io_error(EIO,
			                 "BAT: block %" PRIu64 " at file offset %" PRIu64
			                 " is outside the %" PRIu64 "-byte file",
			                 block, entry_offset(e), v->cbytes);
			return 0;
		}
		c->foff = off;
		int rc = submit_read(c, v->ct.disk, off / 512, len);
		return rc < 0 ? rc : 1;
	}
	if (from_parent) {
		int rc = submit_read(c, v->parent, sector, len);
		return rc < 0 ? rc : 1;
	}
	vdisk_iov_memset(r->iov, r->iovcnt, (size_t)c->done, 0, (size_t)len);
	c->done += len;
	return 0;
}

/* Run pieces until one is in flight or the request is done.  Re-entered from
 * a child's completion (which may come before submit returns): `running` and
 * `again` keep that a loop instead of a recursion. */
static void retry_fired(struct vdisk_timer *t)
{
	vhdx_run((struct vhdx_ctx *)((char *)t - offsetof(struct vhdx_ctx, retry)));
}

static void vhdx_run(struct vhdx_ctx *c)
{
	if (c->running) {
		c->again = true;
		return;
	}
	c->running = true;
	do {
		c->again = false;
		while (vdisk_ok(c->st) && c->done < c->r->len) {
			int rc = step(c);
			if (rc == -EAGAIN) {
				/* no bounce buffer now: try again shortly (the budget is
				 * given back by other requests' completions) */
				vdisk_timer_start(c->r->q, &c->retry, vdisk_now_ns() + 20000,
				                  retry_fired);
				c->running = false;
				return;
			}
			if (rc < 0) {
				c->st = vdisk_status_io(-rc);
				break;
			}
			if (rc > 0)
				break;
		}
	} while (c->again);
	c->running = false;
	if (!vdisk_ok(c->st) || c->done == c->r->len) {
		/* a child in flight has completed (again is false), so nothing else
		 * will run this request */
		vdisk_req_complete(c->r, c->st);
	}
}

static int vhdx_read(struct vdisk_req *r)
{
	struct vhdx_ctx *c = vdisk_req_ctx(r);
	*c = (struct vhdx_ctx){.r = r, .st = vdisk_status_ok()};
	if (r->len == 0) { /* nothing to look up */
		vdisk_req_complete(r, c->st);
		return 0;
	}
	/* the first piece may ask for back-pressure: report it before anything
	 * is in flight, so the core can submit the request again */
	int rc = step(c);
	if (rc == -EAGAIN || rc == -ENOMEM)
		return rc;
	if (rc < 0)
		c->st = vdisk_status_io(-rc);
	if (rc <= 0)
		vhdx_run(c);
	return 0;
}

static int vhdx_extents(struct vdisk_req *r)
{
	struct vhdx *v = vdisk_priv(r->disk);
	unsigned n = 0;
	uint64_t s = r->sector, end = r->sector + r->count;
	while (s < end) {
		uint64_t block = s / v->spb;
		uint64_t next = (block + 1) * v->spb;
		if (next > end)
			next = end;
		uint64_t e;
		if (bat_get(v, payload_index(v, block), &e) < 0)
			return -EIO;
		unsigned state = (unsigned)(e & 7);
		uint32_t fl = 0;
		if (state == VHDX_PAYLOAD_ZERO || state == VHDX_PAYLOAD_UNMAPPED ||
		    state == VHDX_PAYLOAD_UNDEFINED ||
		    (state == VHDX_PAYLOAD_NOT_PRESENT && !v->has_parent))
			fl = VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO;
		if (n && r->ext[n - 1].flags == fl) {
			r->ext[n - 1].count += next - s;
		} else {
			if (n == r->ext_max)
				break;
			r->ext[n++] =
			    (struct vdisk_extent){.sector = s, .count = next - s, .flags = fl};
		}
		s = next;
	}
	*r->ext_n = n;
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Open                                                                        */
/* ------------------------------------------------------------------------- */

static bool guid_zero(const uint8_t *g)
{
	static const uint8_t z[16];
	return memcmp(g, z, 16) == 0;
}

/* Header at slot i (0 or 1): valid or not, with the reason. */
static const char *header_problem(const uint8_t *h)
{
	static _Thread_local char why[128];
	if (memcmp(h, "head", 4) != 0)
		return "signature is not 'head'";
	uint8_t tmp[VHDX_HEADER_SIZE];
	memcpy(tmp, h, sizeof tmp);
	memset(tmp + 4, 0, 4);
	if (vdisk_crc32c(0, tmp, sizeof tmp) != img_le32(h + 4))
		return "checksum does not match";
	if (vhdx_le16(h + 66) != 1) {
		snprintf(why, sizeof why, "version %u (only 1 is known)", vhdx_le16(h + 66));
		return why;
	}
	if (vhdx_le16(h + 64) != 0) {
		snprintf(why, sizeof why, "log version %u (only 0 is known)", vhdx_le16(h + 64));
		return why;
	}
	uint32_t log_len = img_le32(h + 68);
	uint64_t log_off = vhdx_le64(h + 72);
	if (log_len % VHDX_MiB || log_off % VHDX_MiB || log_off < VHDX_MiB)
		return "log offset or length is not a multiple of 1 MiB past the first MiB";
	return NULL;
}

static int read_headers(struct vhdx *v)
{
	uint8_t id[8];
	if (meta_read(v, id, 8, 0, "file identifier") < 0)
		return -1;
	if (memcmp(id, "vhdxfile", 8) != 0)
		return vdisk_set_error("file identifier: the signature is not 'vhdxfile'");
	uint8_t creator[512];
	if (meta_read(v, creator, 512, 8, "file identifier") < 0)
		return -1;
	if (img_utf16_to_utf8(creator, 512, false, false, v->creator, sizeof v->creator) < 0)
		snprintf(v->creator, sizeof v->creator, "(not UTF-16)");

	_Alignas(64) static _Thread_local uint8_t h[2][VHDX_HEADER_SIZE];
	const char *why[2];
	for (int i = 0; i < 2; i++) {
		if (meta_read(v, h[i], VHDX_HEADER_SIZE, (uint64_t)(i + 1) * 65536,
		              i ? "header 2" : "header 1") < 0)
			return -1;
		why[i] = header_problem(h[i]);
	}
	if (why[0] && why[1])
		return vdisk_set_error("headers: neither is valid (header 1: %s; header 2: %s)",
		                       why[0], why[1]);
	int cur;
	if (why[0] || why[1]) {
		cur = why[0] ? 1 : 0;
	} else {
		uint64_t s0 = vhdx_le64(h[0] + 8), s1 = vhdx_le64(h[1] + 8);
		if (s0 == s1 && memcmp(h[0], h[1], VHDX_HEADER_SIZE) != 0)
			return vdisk_set_error(
			    "headers: both have sequence number %" PRIu64 " but differ", s0);
		cur = s1 > s0 ? 1 : 0;
	}
	memcpy(v->header, h[cur], VHDX_HEADER_SIZE);
	v->header_slot = cur;
	v->log_len = img_le32(v->header + 68);
	v->log_off = vhdx_le64(v->header + 72);
	return 0;
}

static int replay_log(struct vhdx *v)
{
	const uint8_t *guid = v->header + 48;
	if (guid_zero(guid))
		return 0;
	if (v->log_len == 0)
		return vdisk_set_error("header: a log GUID but a log of 0 bytes");
	if (v->log_len > VHDX_LOG_MAX)
		return vdisk_set_error("header: the log is %" PRIu64 " bytes, more than the %llu "
		                       "this reader replays",
		                       v->log_len, VHDX_LOG_MAX);
	if (v->log_off + v->log_len > v->cbytes)
		return vdisk_set_error("header: the log (%" PRIu64 " bytes at %" PRIu64
		                       ") is past the end of the %" PRIu64 "-byte file",
		                       v->log_len, v->log_off, v->cbytes);
	uint8_t *log = malloc(v->log_len);
	if (!log)
		return vdisk_set_error_errno(ENOMEM, "log");
	int rc = img_pread(&v->ct, log, v->log_len, v->log_off, "log");
	if (rc == 0)
		rc = vhdx_log_parse(log, v->log_len, guid, &v->rp);
	free(log);
	if (rc < 0)
		return -1;
	if (v->rp.entries && v->rp.flushed_bytes > v->cbytes) {
		vdisk_set_error("log: the file is %" PRIu64 " bytes, shorter than the %" PRIu64
		                " its log says were flushed: the file lost its end",
		                v->cbytes, v->rp.flushed_bytes);
		return -1;
	}
	for (size_t i = 0; i < v->rp.n; i++) {
		const struct vhdx_write *w = &v->rp.w[i];
		if (w->off + w->len > v->cbytes && w->off + w->len > v->rp.last_bytes)
			return vdisk_set_error("log: a write of %u bytes at %" PRIu64
			                       " is past the "
			                       "file's end after replay (%" PRIu64 " bytes)",
			                       w->len, w->off, v->rp.last_bytes);
	}
	return 0;
}

static int overlaps(const struct region *a, const struct region *b)
{
	return a->off < b->off + b->len && b->off < a->off + a->len;
}

static int read_regions(struct vhdx *v)
{
	uint8_t *rt = malloc(VHDX_RT_SIZE);
	if (!rt)
		return vdisk_set_error_errno(ENOMEM, "region table");
	const char *why = NULL;
	int t;
	for (t = 0; t < 2; t++) {
		if (meta_read(v, rt, VHDX_RT_SIZE, (uint64_t)(3 + t) * 65536,
		              t ? "region table 2" : "region table 1") < 0)
			goto fail;
		uint32_t want = img_le32(rt + 4);
		memset(rt + 4, 0, 4);
		if (memcmp(rt, "regi", 4) != 0)
			why = "signature is not 'regi'";
		else if (vdisk_crc32c(0, rt, VHDX_RT_SIZE) != want)
			why = "checksum does not match";
		else if (img_le32(rt + 8) > VHDX_MAX_ENTRIES)
			why = "more than 2047 entries";
		else
			break;
	}
	if (t == 2) {
		vdisk_set_error("region tables: neither is valid (the last: %s)", why);
		goto fail;
	}
	uint32_t count = img_le32(rt + 8);
	bool have_bat = false, have_meta = false;
	struct region regs[VHDX_MAX_ENTRIES + 2];
	unsigned nregs = 0;
	regs[nregs++] = (struct region){0, VHDX_MiB, "the headers"};
	if (v->log_len)
		regs[nregs++] = (struct region){v->log_off, v->log_len, "the log"};
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = rt + 16 + 32 * i;
		uint64_t off = vhdx_le64(e + 16);
		uint32_t len = img_le32(e + 24);
		bool required = img_le32(e + 28) & 1;
		char g[37];
		img_guid_str(e, g);
		const char *what = memcmp(e, GUID_BAT, 16) == 0    ? "the BAT"
		                   : memcmp(e, GUID_META, 16) == 0 ? "the metadata region"
		                                                   : NULL;
		if (!what) {
			if (required) {
				vdisk_set_error(
				    "region table: entry %u (%s) is required but unknown", i, g);
				goto fail;
			}
			continue; /* an optional region this reader does not know */
		}
		if (off % VHDX_MiB || len % VHDX_MiB || len == 0 || off < VHDX_MiB) {
			vdisk_set_error("region table: entry %u (%s): offset %" PRIu64
			                " or length %u is "
			                "not a non-zero multiple of 1 MiB past the first MiB",
			                i, what, off, len);
			goto fail;
		}
		bool *have = what[4] == 'B' ? &have_bat : &have_meta;
		if (*have) {
			vdisk_set_error("region table: entry %u: %s twice", i, what);
			goto fail;
		}
		*have = true;
		if (off + len > v->cbytes) {
			vdisk_set_error("region table: entry %u: %s (%u bytes at %" PRIu64
			                ") is past the end of the %" PRIu64 "-byte file",
			                i, what, len, off, v->cbytes);
			goto fail;
		}
		if (have == &have_bat) {
			v->bat_off = off;
			v->bat_len = len;
		} else {
			v->meta_off = off;
			v->meta_len = len;
		}
		regs[nregs] = (struct region){off, len, what};
		for (unsigned k = 0; k < nregs; k++)
			if (overlaps(&regs[k], &regs[nregs])) {
				vdisk_set_error("region table: entry %u: %s overlaps %s", i, what,
				                regs[k].what);
				goto fail;
			}
		nregs++;
	}
	if (!have_bat || !have_meta) {
		vdisk_set_error("region table: no %s region", have_bat ? "metadata" : "BAT");
		goto fail;
	}
	free(rt);
	return 0;
fail:
	free(rt);
	return -1;
}

/* A metadata item found in the table: its bytes, copied. */
struct item {
	const uint8_t *guid;
	const char *name;
	uint32_t want_len; /* 0: any */
	uint8_t *data;
	uint32_t len;
};

static int read_metadata(struct vhdx *v)
{
	uint8_t *mt = malloc(65536);
	struct item items[] = {
	    {GUID_FILE_PARAMS, "file parameters", 8, NULL, 0},
	    {GUID_DISK_SIZE, "virtual disk size", 8, NULL, 0},
	    {GUID_PAGE83, "page 83 data", 16, NULL, 0},
	    {GUID_LOGICAL_SS, "logical sector size", 4, NULL, 0},
	    {GUID_PHYSICAL_SS, "physical sector size", 4, NULL, 0},
	    {GUID_PARENT_LOC, "parent locator", 0, NULL, 0},
	};
	enum { N_ITEMS = sizeof items / sizeof items[0] };
	int rc = -1;
	if (!mt)
		return vdisk_set_error_errno(ENOMEM, "metadata table");
	if (v->meta_len < 65536) {
		vdisk_set_error("metadata region: %" PRIu64 " bytes, less than its table's 64 KiB",
		                v->meta_len);
		goto out;
	}
	if (meta_read(v, mt, 65536, v->meta_off, "metadata table") < 0)
		goto out;
	if (memcmp(mt, "metadata", 8) != 0) {
		vdisk_set_error("metadata table: the signature is not 'metadata'");
		goto out;
	}
	uint16_t count = vhdx_le16(mt + 10);
	if (count > VHDX_MAX_ENTRIES) {
		vdisk_set_error("metadata table: %u entries, more than 2047", count);
		goto out;
	}
	for (unsigned i = 0; i < count; i++) {
		const uint8_t *e = mt + 32 + 32 * i;
		uint32_t off = img_le32(e + 16), len = img_le32(e + 20), fl = img_le32(e + 24);
		bool required = fl & 4;
		char g[37];
		img_guid_str(e, g);
		struct item *it = NULL;
		for (unsigned k = 0; k < N_ITEMS; k++)
			if (memcmp(e, items[k].guid, 16) == 0)
				it = &items[k];
		if (!it) {
			if (required) {
				vdisk_set_error(
				    "metadata table: entry %u (%s) is required but unknown", i, g);
				goto out;
			}
			continue;
		}
		if (it->data) {
			vdisk_set_error("metadata table: entry %u: %s twice", i, it->name);
			goto out;
		}
		if ((len && off < 65536) || (uint64_t)off + len > v->meta_len ||
		    (it->want_len && len != it->want_len) || len == 0 || len > (1u << 20)) {
			vdisk_set_error(
			    "metadata table: entry %u (%s): %u bytes at offset %u do not fit "
			    "the %" PRIu64 "-byte region after its table%s",
			    i, it->name, len, off, v->meta_len,
			    it->want_len ? " or have the wrong length" : "");
			goto out;
		}
		/* items are small; read each (whole sectors) and keep its bytes */
		uint64_t a = (v->meta_off + off) & ~511ull;
		uint64_t b = (v->meta_off + off + len + 511) & ~511ull;
		uint8_t *buf = malloc(b - a);
		it->data = malloc(len);
		if (!buf || !it->data) {
			free(buf);
			vdisk_set_error_errno(ENOMEM, "metadata");
			goto out;
		}
		if (meta_read(v, buf, b - a, a, it->name) < 0) {
			free(buf);
			goto out;
		}
		memcpy(it->data, buf + (v->meta_off + off - a), len);
		it->len = len;
		free(buf);
	}
	for (unsigned k = 0; k < 5; k++)
		if (!items[k].data) {
			vdisk_set_error("metadata: no %s item", items[k].name);
			goto out;
		}
	v->block_size = img_le32(items[0].data);
	uint32_t flags = img_le32(items[0].data + 4);
	v->leave_allocated = flags & 1;
	v->has_parent = flags & 2;
	v->size = vhdx_le64(items[1].data);
	memcpy(v->page83, items[2].data, 16);
	v->lss = img_le32(items[3].data);
	v->pss = img_le32(items[4].data);
	if (v->block_size < VHDX_MiB || v->block_size > VHDX_MAX_BLOCK ||
	    (v->block_size & (v->block_size - 1))) {
		vdisk_set_error("file parameters: block size %" PRIu32 " is not a power of two "
		                "from 1 MiB to 256 MiB",
		                v->block_size);
		goto out;
	}
	if (v->lss != 512 && v->lss != 4096) {
		vdisk_set_error("logical sector size: %" PRIu32 " (512 or 4096)", v->lss);
		goto out;
	}
	if (v->pss != 512 && v->pss != 4096) {
		vdisk_set_error("physical sector size: %" PRIu32 " (512 or 4096)", v->pss);
		goto out;
	}
	if (v->size == 0 || v->size > VHDX_MAX_SIZE || v->size % v->lss) {
		vdisk_set_error("virtual disk size: %" PRIu64 " is not a multiple of the %" PRIu32
		                "-byte sector from 1 sector to 64 TiB",
		                v->size, v->lss);
		goto out;
	}
	if (v->has_parent && !items[5].data) {
		vdisk_set_error("metadata: a differencing image (has_parent) without a parent "
		                "locator item");
		goto out;
	}
	v->spb = v->block_size / v->lss;
	v->chunk_ratio = ((1ull << 23) * v->lss) / v->block_size;
	v->data_blocks = (v->size + v->block_size - 1) / v->block_size;
	uint64_t chunks = (v->data_blocks + v->chunk_ratio - 1) / v->chunk_ratio;
	v->bat_entries = v->has_parent ? chunks * (v->chunk_ratio + 1)
	                               : v->data_blocks + (v->data_blocks - 1) / v->chunk_ratio;
	if (v->bat_entries * 8 > v->bat_len) {
		vdisk_set_error("BAT: %" PRIu64 " entries do not fit its %" PRIu64 "-byte region",
		                v->bat_entries, v->bat_len);
		goto out;
	}
	if (items[5].data) {
		const uint8_t *p = items[5].data;
		uint32_t len = items[5].len;
		if (len < 20 || memcmp(p, GUID_LOC_VHDX, 16) != 0) {
			vdisk_set_error("parent locator: not of the VHDX type");
			goto out;
		}
		uint16_t kv = vhdx_le16(p + 18);
		if (20ull + 12ull * kv > len) {
			vdisk_set_error("parent locator: %u entries do not fit its %u bytes", kv,
			                len);
			goto out;
		}
		for (unsigned i = 0; i < kv; i++) {
			const uint8_t *e = p + 20 + 12 * i;
			uint32_t ko = img_le32(e), vo = img_le32(e + 4);
			uint16_t kl = vhdx_le16(e + 8), vl = vhdx_le16(e + 10);
			char key[64], val[1024];
			if ((uint64_t)ko + kl > len || (uint64_t)vo + vl > len || kl % 2 ||
			    vl % 2 || kl == 0 ||
			    img_utf16_to_utf8(p + ko, kl, false, false, key, sizeof key) < 0 ||
			    img_utf16_to_utf8(p + vo, vl, false, false, val, sizeof val) < 0) {
				vdisk_set_error(
				    "parent locator: entry %u: key or value outside the item or "
				    "not UTF-16",
				    i);
				goto out;
			}
			char **slot = strcmp(key, "parent_linkage") == 0        ? &v->loc.linkage
			              : strcmp(key, "parent_linkage2") == 0     ? &v->loc.linkage2
			              : strcmp(key, "relative_path") == 0       ? &v->loc.relative
			              : strcmp(key, "volume_path") == 0         ? &v->loc.volume
			              : strcmp(key, "absolute_win32_path") == 0 ? &v->loc.absolute
			                                                        : NULL;
			if (slot) {
				free(*slot);
				*slot = strdup(val);
			}
		}
		if (v->has_parent && !v->loc.linkage) {
			vdisk_set_error("parent locator: no parent_linkage");
			goto out;
		}
	}
	rc = 0;
out:
	for (unsigned k = 0; k < N_ITEMS; k++)
		free(items[k].data);
	free(mt);
	return rc;
}

static bool is_vhdx(struct vdisk *d);

/* The linkage GUID of a locator, "{xxxxxxxx-...}", against a data-write GUID. */
static bool linkage_matches(const char *linkage, const uint8_t guid[16])
{
	char g[37];
	img_guid_str(guid, g);
	size_t n = strlen(linkage);
	const char *s = linkage;
	if (n == 38 && s[0] == '{' && s[37] == '}') {
		s++;
		n = 36;
	}
	return n == 36 && strncasecmp(s, g, 36) == 0;
}

static int open_parent(struct vdisk *d, struct vhdx *v, json_t *cfg, bool allow, json_t *chain)
{
	json_t *spec = json_object_get(cfg, "parent");
	if (spec) {
		v->parent = vdisk_open_child(d, spec, "parent", true);
		if (!v->parent)
			return -1;
	} else {
		const char *name = v->loc.relative ? v->loc.relative : v->loc.absolute;
		if (!name)
			return vdisk_set_error(
			    "parent: the locator names no relative_path; give the "
			    "parent with \"parent\"");
		const char *why = NULL;
		char *p = v->ct.dir || allow ? img_parent_path(v->ct.dir, name, allow, &why) : NULL;
		if (!p)
			return vdisk_set_error("parent: '%s': %s; give it with \"parent\"", name,
			                       why ? why : "the child is not opened by path");
		struct stat st;
		if (stat(p, &st) != 0) {
			vdisk_set_error("parent: '%s' (from the locator's '%s'): no such file", p,
			                name);
			free(p);
			return -1;
		}
		json_t *ps = json_pack("{s:s, s:s, s:b, s:O}", "type", "vhdx", "path", p,
		                       "allow-parent-paths", allow, "chain", chain);
		v->parent = ps ? vdisk_open_child(d, ps, "parent", true) : NULL;
		json_decref(ps);
		v->parent_path = p;
		if (!v->parent)
			return -1;
	}
	if (vdisk_sector_size(v->parent) != v->lss)
		return vdisk_set_error("parent: %" PRIu32 "-byte sectors, the child has %" PRIu32,
		                       vdisk_sector_size(v->parent), v->lss);
	if (vdisk_sector_count(v->parent) * v->lss != v->size)
		return vdisk_set_error("parent: %" PRIu64 " bytes, the child has %" PRIu64,
		                       vdisk_sector_count(v->parent) * v->lss, v->size);
	if (is_vhdx(v->parent)) {
		const struct vhdx *pv = vdisk_priv(v->parent);
		const uint8_t *dw = pv->header + 32;
		if (!linkage_matches(v->loc.linkage, dw) &&
		    !(v->loc.linkage2 && linkage_matches(v->loc.linkage2, dw))) {
			char g[37];
			img_guid_str(dw, g);
			return vdisk_set_error(
			    "parent: its data-write GUID {%s} is not the child's "
			    "parent_linkage %s (the parent changed)",
			    g, v->loc.linkage);
		}
	}
	return 0;
}

static void vhdx_free(struct vhdx *v)
{
	if (!v)
		return;
	vhdx_replay_free(&v->rp);
	for (unsigned i = 0; i < CACHE_SLOTS; i++)
		free(v->cache[i].buf);
	free(v->loc.linkage);
	free(v->loc.linkage2);
	free(v->loc.relative);
	free(v->loc.volume);
	free(v->loc.absolute);
	free(v->parent_path);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* The chain of images above this one (real paths), to refuse loops and bound
 * the depth. */
static json_t *extend_chain(struct vhdx *v, json_t *chain)
{
	json_t *mine = chain ? json_copy(chain) : json_array();
	if (!mine || !v->ct.path)
		return mine;
	char *real = realpath(v->ct.path, NULL);
	size_t i;
	json_t *p;
	json_array_foreach (mine, i, p) {
		if (real && json_is_string(p) && strcmp(json_string_value(p), real) == 0) {
			vdisk_set_error("parent: a loop: '%s' is its own ancestor", v->ct.path);
			goto fail;
		}
	}
	if (json_array_size(mine) >= VHDX_CHAIN_MAX) {
		vdisk_set_error("parent: a chain longer than %d images", VHDX_CHAIN_MAX);
		goto fail;
	}
	if (real)
		json_array_append_new(mine, json_string(real));
	free(real);
	return mine;
fail:
	free(real);
	json_decref(mine);
	return NULL;
}

static int vhdx_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"path",  "inner", "parent", "allow-parent-paths",
	                                   "chain", NULL};
	bool allow = false;
	json_t *chain = json_object_get(cfg, "chain");
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_bool(cfg, "allow-parent-paths", &allow) < 0)
		return -1;
	if (chain && !json_is_array(chain))
		return vdisk_set_error("chain: not an array of paths");
	if (!vdisk_read_only_requested(d))
		return vdisk_set_error(
		    "read-only: this version reads VHDX images only; open it with "
		    "\"read-only\": true (or convert it)");
	struct vhdx *v = calloc(1, sizeof *v);
	if (!v)
		return vdisk_set_error_errno(ENOMEM, "vhdx");
	pthread_mutex_init(&v->lock, NULL);
	for (unsigned i = 0; i < CACHE_SLOTS; i++)
		v->cache[i].off = UINT64_MAX;
	json_t *mychain = NULL;
	if (img_container_open(d, cfg, &v->ct, 0) < 0)
		goto fail_nocont;
	v->cbytes = img_container_bytes(&v->ct);
	if (v->cbytes < 2 * VHDX_MiB) {
		vdisk_set_error("%s: %" PRIu64 " bytes, too small for a VHDX image",
		                v->ct.path ? "path" : "inner", v->cbytes);
		goto fail;
	}
	if (!(mychain = extend_chain(v, chain)))
		goto fail;
	if (read_headers(v) < 0 || replay_log(v) < 0 || read_regions(v) < 0 || read_metadata(v) < 0)
		goto fail;
	if (json_object_get(cfg, "parent") && !v->has_parent) {
		vdisk_set_error("parent: the image is not a differencing image");
		goto fail;
	}
	if (v->has_parent && open_parent(d, v, cfg, allow, mychain) < 0)
		goto fail;

	vdisk_set_priv(d, v);
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_count = v->size / v->lss;
	m->sector_size = v->lss;
	m->physical_sector_size = v->pss < v->lss ? v->lss : v->pss;
	m->has_disk_id = !guid_zero(v->page83);
	memcpy(m->disk_id, v->page83, 16);
	m->fua = true;
	m->read_only = true;
	m->unmap = VDISK_UNMAP_IGNORED;
	m->optimal_unmap_sectors = (uint32_t)v->spb;
	m->caps = VDISK_CAP_EXTENTS | (vdisk_caps(v->ct.disk) & VDISK_CAP_SHARED_FLUSH);
	m->req_ctx_size = sizeof(struct vhdx_ctx);
	json_decref(mychain);
	return 0;
fail:
	img_container_close(&v->ct, false);
fail_nocont:
	json_decref(mychain);
	vhdx_free(v);
	return -1;
}

static void vhdx_close(struct vdisk *d)
{
	struct vhdx *v = vdisk_priv(d);
	img_container_close(&v->ct, false);
	vhdx_free(v);
}

static const char *kind(const struct vhdx *v)
{
	return v->has_parent ? "differencing" : v->leave_allocated ? "fixed" : "dynamic";
}

static bool is_vhdx(struct vdisk *d)
{
	return strcmp(vdisk_type(d), "vhdx") == 0;
}

static int vhdx_inspect(struct vdisk *d, json_t *obj)
{
	struct vhdx *v = vdisk_priv(d);
	char g[37];
	json_t *o = json_object();
	json_object_set_new(o, "kind", json_string(kind(v)));
	json_object_set_new(o, "block_size", json_integer(v->block_size));
	json_object_set_new(o, "logical_sector_size", json_integer(v->lss));
	json_object_set_new(o, "physical_sector_size", json_integer(v->pss));
	json_object_set_new(o, "creator", json_string(v->creator));
	json_object_set_new(o, "header", json_integer(v->header_slot + 1));
	json_object_set_new(o, "header_sequence",
	                    json_integer((json_int_t)vhdx_le64(v->header + 8)));
	img_guid_str(v->header + 32, g);
	json_object_set_new(o, "data_write_guid", json_string(g));
	json_object_set_new(o, "log_entries_replayed_in_memory", json_integer(v->rp.entries));
	if (v->has_parent) {
		json_object_set_new(o, "parent_linkage", json_string(v->loc.linkage));
		if (v->loc.relative)
			json_object_set_new(o, "parent_relative_path",
			                    json_string(v->loc.relative));
		if (v->loc.absolute)
			json_object_set_new(o, "parent_absolute_win32_path",
			                    json_string(v->loc.absolute));
		if (v->parent_path)
			json_object_set_new(o, "parent_path", json_string(v->parent_path));
	}
	json_object_set_new(obj, "vhdx", o);
	return 0;
}

/* Every BAT entry: a known state, no reserved bits, inside the file and past
 * the headers, and no two blocks in the same space. */
static int vhdx_check(struct vdisk *d, struct vdisk_check *chk)
{
	struct vhdx *v = vdisk_priv(d);
	uint64_t *used = NULL;
	size_t nused = 0, cap = 0;
	for (uint64_t i = 0; i < v->bat_entries; i++) {
		uint64_t e;
		if (bat_get(v, i, &e) < 0)
			return -1;
		bool sb = v->chunk_ratio && (i + 1) % (v->chunk_ratio + 1) == 0;
		unsigned st = (unsigned)(e & 7);
		uint64_t off = entry_offset(e);
		uint64_t len = sb ? VHDX_MiB : v->block_size;
		bool ok_state = sb ? (st == VHDX_SB_NOT_PRESENT || st == VHDX_SB_PRESENT)
		                   : (st <= 3 || st == 6 || st == 7);
		if (!ok_state) {
			vdisk_check_problem(chk, "BAT entry %" PRIu64 ": invalid state %u", i, st);
			continue;
		}
		if (e & 0xffff8ull)
			vdisk_check_problem(chk, "BAT entry %" PRIu64 ": reserved bits set", i);
		if (st != 6 && st != 7)
			continue;
		if (off < VHDX_MiB || off + len > v->cbytes)
			vdisk_check_problem(chk,
			                    "BAT entry %" PRIu64 ": %" PRIu64 " bytes at %" PRIu64
			                    " are outside the file",
			                    i, len, off);
		struct region blk = {off, len, NULL};
		struct region fixed[] = {{v->bat_off, v->bat_len, "the BAT"},
		                         {v->meta_off, v->meta_len, "the metadata region"},
		                         {v->log_off, v->log_len, "the log"}};
		for (unsigned k = 0; k < 3; k++)
			if (fixed[k].len && overlaps(&blk, &fixed[k]))
				vdisk_check_problem(chk,
				                    "BAT entry %" PRIu64 ": its space overlaps %s",
				                    i, fixed[k].what);
		if (nused == cap) {
			cap = cap ? cap * 2 : 1024;
			uint64_t *nu = realloc(used, cap * 2 * sizeof *nu);
			if (!nu) {
				free(used);
				return vdisk_set_error_errno(ENOMEM, "check");
			}
			used = nu;
		}
		used[2 * nused] = off;
		used[2 * nused + 1] = off + len;
		nused++;
	}
	/* overlaps between blocks: sort by start */
	for (size_t i = 1; i < nused; i++) {
		uint64_t a = used[2 * i], b = used[2 * i + 1];
		size_t j = i;
		while (j > 0 && used[2 * (j - 1)] > a) {
			used[2 * j] = used[2 * (j - 1)];
			used[2 * j + 1] = used[2 * (j - 1) + 1];
			j--;
		}
		used[2 * j] = a;
		used[2 * j + 1] = b;
	}
	for (size_t i = 1; i < nused; i++)
		if (used[2 * i] < used[2 * (i - 1) + 1])
			vdisk_check_problem(
			    chk, "two blocks share the space at file offset %" PRIu64, used[2 * i]);
	free(used);
	if (v->rp.entries)
		vdisk_check_problem(chk, "the log holds %u entries not yet replayed into the file",
		                    v->rp.entries);
	return 0;
}

const struct vdisk_driver vdisk_driver_vhdx = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "vhdx",
    .description = "VHDX image, read-only: fixed, dynamic or differencing (path or inner, "
                   "parent, allow-parent-paths)",
    .open = vhdx_open,
    .close = vhdx_close,
    .read = vhdx_read,
    .extents = vhdx_extents,
    .inspect = vhdx_inspect,
    .check = vhdx_check,
};
