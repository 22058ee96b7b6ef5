/* The engine behind fuzz_layered.c and test-layered-model.c: see
 * fuzz_layered_model.h.  Unspecified unmaps are modelled exactly as the
 * contract allows: each sector then reads either its old bytes or zeros, and
 * the first read pins which. */
#include "fuzz_layered_model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk/vdisk.h"

#define MAX_LAYERS 4
#define MAX_OPS 160

enum ltype { L_RAM, L_SQLITE, L_DISK_FILE, L_DISK_RAM };
static const char *const ltype_name[] = {"ram", "sqlite", "disk(file)", "disk(ram)"};

struct input {
	const uint8_t *p;
	size_t n, pos;
};

static unsigned get8(struct input *in)
{
	return in->pos < in->n ? in->p[in->pos++] : 0;
}
static bool more(struct input *in)
{
	return in->pos < in->n;
}
static uint64_t get64(struct input *in)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | get8(in);
	return v;
}

struct mlayer {
	enum ltype type;
	bool read_cache, write_through;
	bool explicit_size;
	uint64_t count;
	uint64_t visible;
	unsigned char *data; /* count * ss: content where present */
	unsigned char *present;
	char path[512];
	unsigned char *orig; /* a file layer's content at the start */
};

struct model {
	uint32_t ss;
	unsigned shift;
	uint64_t count;
	unsigned char *data;
	unsigned char *maybe_zero;
	int unmap;
	bool read_only;
	bool resizable;
};

struct run {
	unsigned flags;
	char dir[256];
	unsigned n;
	struct mlayer l[MAX_LAYERS];
	struct model m;
	struct vdisk *d;
	struct vdisk_queue *q;
	char spec[4096];
	unsigned op_index;
	unsigned char *buf, *buf2;
	size_t buf_len;
};

static int fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct run *r, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "layered model: op %u: ", r->op_index);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  stack: %s\n", r->spec);
	return 1;
}

static void pattern(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
	for (size_t i = 0; i < len; i++) {
		x ^= x >> 27;
		x *= 0x3C79AC492BA7B653ull;
		x ^= x >> 33;
		buf[i] = (unsigned char)(x >> 24);
	}
}

/* ------------------------------------------------------------------------- */
/* Synchronous calls on the run's queue                                        */
/* ------------------------------------------------------------------------- */

struct waiter {
	bool done;
	vdisk_status st;
};

static void on_done(void *o, vdisk_status st)
{
	struct waiter *w = o;
	w->st = st;
	w->done = true;
}

static vdisk_status wait_for(struct vdisk_queue *q, struct waiter *w, int rc)
{
	if (rc < 0) {
		vdisk_status st = {VDISK_ERR_IO, 0, 0, -rc};
		return st;
	}
	while (!w->done)
		vdisk_queue_wait(q, -1);
	return w->st;
}

/* Split len bytes of buf into up to 4 pieces at byte positions from the input,
 * so requests come in many scatter-gather shapes. */
static int split(struct input *in, unsigned char *buf, size_t len, struct iovec *iov)
{
	int n = 1 + (int)(get8(in) % 4);
	size_t off = 0;
	int k = 0;
	for (int i = 0; i < n - 1 && off < len; i++) {
		size_t piece = len ? (size_t)get8(in) * 97 % (len - off + 1) : 0;
		if (!piece)
			continue;
		iov[k].iov_base = buf + off;
		iov[k].iov_len = piece;
		k++;
		off += piece;
	}
	iov[k].iov_base = buf + off;
	iov[k].iov_len = len - off;
	return k + 1;
}

/* ------------------------------------------------------------------------- */
/* Building the stack                                                          */
/* ------------------------------------------------------------------------- */

static const uint64_t sizes[] = {8, 16, 33, 64, 100, 128};

static int write_file(const char *path, const unsigned char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0)
		return -1;
	size_t done = 0;
	while (done < len) {
		ssize_t k = pwrite(fd, data + done, len - done, (off_t)done);
		if (k <= 0) {
			close(fd);
			return -1;
		}
		done += (size_t)k;
	}
	return close(fd);
}

/* Fill a new sqlite layer through a one-layer layered disk, recording what is
 * present. */
static int prefill_sqlite(struct run *r, struct mlayer *l, struct input *in)
{
	char spec[1024];
	uint32_t ss = r->m.ss;
	snprintf(spec, sizeof spec,
	         "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"%s\","
	         "\"create\":true,\"size\":%" PRIu64 ",\"sector-size\":%" PRIu32 "}]}",
	         l->path, l->count * ss, ss);
	struct vdisk *d = vdisk_open(spec, 0);
	if (!d) {
		fprintf(stderr, "layered model: %s: %s\n", spec, vdisk_errmsg());
		return 2;
	}
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	if (!q) {
		vdisk_unref(d);
		return 2;
	}
	unsigned nops = get8(in) % 6;
	int rc = 0;
	for (unsigned i = 0; i < nops && rc == 0; i++) {
		unsigned kind = get8(in) % 4;
		uint64_t s = get8(in) % l->count;
		uint64_t c = 1 + get8(in) % 8;
		if (s + c > l->count)
			c = l->count - s;
		struct waiter w = {0};
		vdisk_status st;
		if (kind == 3) {
			/* at the bottom: unmapped sectors become absent */
			st = wait_for(q, &w, vdisk_unmap(q, s, c, 0, on_done, &w));
			if (vdisk_ok(st))
				memset(l->present + s, 0, c);
		} else {
			size_t len = (size_t)c * ss;
			unsigned char *b = r->buf;
			if (kind == 2)
				memset(b, 0, len); /* stored as NULL rows */
			else
				pattern(b, len, get8(in) + 1000u * i);
			struct iovec iov = {b, len};
			st = wait_for(q, &w, vdisk_writev(q, s, &iov, 1, 0, on_done, &w));
			if (vdisk_ok(st)) {
				memcpy(l->data + s * ss, b, len);
				memset(l->present + s, 1, c);
			}
		}
		if (!vdisk_ok(st)) {
			fprintf(stderr, "layered model: prefilling %s failed: %s\n", l->path,
			        vdisk_error_name((enum vdisk_error)st.kind));
			rc = 2;
		}
	}
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	return rc;
}

static int setup(struct run *r, struct input *in)
{
	unsigned h = get8(in);
	r->m.ss = h & 1 ? 4096 : 512;
	r->m.shift = h & 1 ? 12 : 9;
	r->m.read_only = (h >> 1 & 7) == 0;
	r->n = 1 + get8(in) % MAX_LAYERS;
	uint32_t ss = r->m.ss;
	r->buf_len = (size_t)300 * ss;
	r->buf = calloc(1, r->buf_len);
	r->buf2 = calloc(1, r->buf_len);
	if (!r->buf || !r->buf2)
		return 2;

	for (unsigned i = 0; i < r->n; i++) {
		struct mlayer *l = &r->l[i];
		unsigned t = get8(in), f = get8(in), z = get8(in);
		l->type = (enum ltype)(t % 4);
		l->read_cache = f & 1;
		l->write_through = f & 2;
		l->count = sizes[z % 6];
		/* ram and sqlite may take their size from below */
		l->explicit_size = !(z & 0x40) || i + 1 == r->n || l->type >= L_DISK_FILE;
		snprintf(l->path, sizeof l->path, "%s/l%u.%s", r->dir, i,
		         l->type == L_SQLITE ? "dbhd" : "img");
	}
	/* inherited sizes, bottom-up */
	for (int i = (int)r->n - 1; i >= 0; i--)
		if (!r->l[i].explicit_size)
			r->l[i].count = r->l[i + 1].count;
	/* make the flags valid: caches only where a layer can be filled, and
	 * write-through only as an unbroken run from the top, never at the bottom */
	for (unsigned i = 0; i < r->n; i++) {
		struct mlayer *l = &r->l[i];
		if (l->type >= L_DISK_FILE)
			l->read_cache = false;
		if (l->write_through && (i + 1 == r->n || (i > 0 && !r->l[i - 1].write_through)))
			l->write_through = false;
	}
	uint64_t vis = UINT64_MAX;
	for (unsigned i = 0; i < r->n; i++) {
		struct mlayer *l = &r->l[i];
		vis = l->count < vis ? l->count : vis;
		l->visible = vis;
		l->data = calloc(l->count, ss);
		l->present = calloc(l->count, 1);
		if (!l->data || !l->present)
			return 2;
		if (l->type == L_DISK_FILE) {
			/* data with holes */
			for (uint64_t s = 0; s < l->count; s++)
				if (get8(in) % 3)
					pattern(l->data + s * ss, ss, 77 + s * 13 + i);
			memset(l->present, 1, l->count);
			l->orig = malloc((size_t)l->count * ss);
			if (!l->orig)
				return 2;
			memcpy(l->orig, l->data, (size_t)l->count * ss);
			if (write_file(l->path, l->data, (size_t)l->count * ss) < 0)
				return 2;
		} else if (l->type == L_DISK_RAM) {
			memset(l->present, 1, l->count);
		} else if (l->type == L_SQLITE) {
			int rc = prefill_sqlite(r, l, in);
			if (rc)
				return rc;
		}
	}

	/* the spec */
	size_t o = (size_t)snprintf(r->spec, sizeof r->spec,
	                            "{\"type\":\"layered\",\"read-only\":%s,"
	                            "\"layers\":[",
	                            r->m.read_only ? "true" : "false");
	for (unsigned i = 0; i < r->n; i++) {
		struct mlayer *l = &r->l[i];
		char size[64] = "";
		if (l->explicit_size && l->type == L_RAM)
			snprintf(size, sizeof size, ",\"size\":%" PRIu64, l->count * ss);
		o += (size_t)snprintf(r->spec + o, sizeof r->spec - o,
		                      "%s{\"read-cache\":%s,"
		                      "\"write-through\":%s,",
		                      i ? "," : "", l->read_cache ? "true" : "false",
		                      l->write_through ? "true" : "false");
		switch (l->type) {
		case L_RAM:
			o += (size_t)snprintf(r->spec + o, sizeof r->spec - o,
			                      "\"type\":\"ram\",\"sector-size\":%" PRIu32 "%s}", ss,
			                      size);
			break;
		case L_SQLITE:
			o += (size_t)snprintf(r->spec + o, sizeof r->spec - o,
			                      "\"type\":\"sqlite\",\"path\":\"%s\"}", l->path);
			break;
		case L_DISK_FILE:
			o += (size_t)snprintf(
			    r->spec + o, sizeof r->spec - o,
			    "\"type\":\"disk\",\"disk\":{\"type\":\"file\",\"path\":\"%s\","
			    "\"sector-size\":%" PRIu32 "}}",
			    l->path, ss);
			break;
		case L_DISK_RAM:
			o += (size_t)snprintf(
			    r->spec + o, sizeof r->spec - o,
			    "\"type\":\"disk\",\"disk\":{\"type\":\"ram\",\"size\":%" PRIu64
			    ",\"sector-size\":%" PRIu32 ",\"huge-pages\":false}}",
			    l->count * ss, ss);
			break;
		}
	}
	snprintf(r->spec + o, sizeof r->spec - o, "]}");

	/* the model: what the stack reads as at the start */
	struct model *m = &r->m;
	m->count = r->l[0].count;
	m->data = calloc(m->count, ss);
	m->maybe_zero = calloc(m->count, 1);
	if (!m->data || !m->maybe_zero)
		return 2;
	for (uint64_t s = 0; s < m->count; s++)
		for (unsigned i = 0; i < r->n; i++) {
			struct mlayer *l = &r->l[i];
			if (i > 0 && s >= l->visible)
				break;
			if (l->present[s]) {
				memcpy(m->data + s * ss, l->data + s * ss, ss);
				break;
			}
		}
	m->resizable = !m->read_only && r->l[0].type != L_DISK_FILE;

	if (r->flags & LM_VERBOSE) {
		fprintf(stderr, "stack:");
		for (unsigned i = 0; i < r->n; i++)
			fprintf(stderr, " [%s %" PRIu64 "%s%s]", ltype_name[r->l[i].type],
			        r->l[i].count, r->l[i].read_cache ? " rc" : "",
			        r->l[i].write_through ? " wt" : "");
		fprintf(stderr, "\n  %s\n", r->spec);
	}
	r->d = vdisk_open(r->spec, 0);
	if (!r->d)
		return fail(r, "open failed: %s", vdisk_errmsg());
	r->q = vdisk_queue_create(r->d, NULL);
	if (!r->q)
		return 2;
	m->unmap = vdisk_unmap_behavior(r->d);
	if (vdisk_sector_count(r->d) != m->count)
		return fail(r, "sector count %" PRIu64 ", model %" PRIu64, vdisk_sector_count(r->d),
		            m->count);
	if (vdisk_sector_size(r->d) != ss)
		return fail(r, "sector size %" PRIu32, vdisk_sector_size(r->d));
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Operations                                                                  */
/* ------------------------------------------------------------------------- */

/* Sectors chosen to hit the edges: inside, at the end, and the 64-bit edges of
 * representability. */
static uint64_t pick_sector(struct run *r, struct input *in)
{
	uint64_t count = r->m.count;
	uint64_t max_sector = (uint64_t)INT64_MAX >> r->m.shift;
	unsigned mode = get8(in) % 10;
	if (mode < 6) {
		uint64_t hi = get8(in);
		return (hi << 8 | get8(in)) % count;
	}
	if (mode < 8) {
		uint64_t back = get8(in) % 4;
		return count - back + (get8(in) % 3 == 0 ? 1 : 0);
	}
	if (mode == 8) {
		const uint64_t edges[] = {UINT64_MAX,     UINT64_MAX - 1, max_sector,
		                          max_sector - 1, max_sector + 1, 1ull << (64 - r->m.shift),
		                          count,          count + 1,      (uint64_t)INT64_MAX};
		return edges[get8(in) % (sizeof edges / sizeof *edges)];
	}
	return get64(in);
}

static uint64_t pick_count(struct input *in)
{
	unsigned c = get8(in);
	if (c == 255)
		return UINT64_MAX;
	if (c >= 250)
		return 1ull << (c - 200);
	return c % 13;
}

static bool in_range(struct run *r, uint64_t s, uint64_t c)
{
	uint64_t end;
	uint64_t max_sector = (uint64_t)INT64_MAX >> r->m.shift;
	return !__builtin_add_overflow(s, c, &end) && end <= max_sector && end <= r->m.count;
}

static int expect_kind(struct run *r, const char *what, vdisk_status st, enum vdisk_error want)
{
	if (st.kind != want)
		return fail(r, "%s: got %s (errno %d), expected %s", what,
		            vdisk_error_name((enum vdisk_error)st.kind), st.errnum,
		            vdisk_error_name(want));
	return 0;
}

/* Compare n sectors read at s with the model; pin unspecified sectors. */
static int check_data(struct run *r, const char *what, uint64_t s, uint64_t n,
                      const unsigned char *got)
{
	struct model *m = &r->m;
	uint32_t ss = m->ss;
	for (uint64_t i = 0; i < n; i++) {
		const unsigned char *want = m->data + (s + i) * ss;
		const unsigned char *g = got + i * ss;
		if (memcmp(want, g, ss) == 0) {
			m->maybe_zero[s + i] = 0;
			continue;
		}
		bool zero = true;
		for (uint32_t k = 0; k < ss && zero; k++)
			zero = g[k] == 0;
		if (m->maybe_zero[s + i] && zero) {
			memset(m->data + (s + i) * ss, 0, ss);
			m->maybe_zero[s + i] = 0;
			continue;
		}
		uint32_t k = 0;
		while (want[k] == g[k])
			k++;
		return fail(r, "%s: sector %" PRIu64 " byte %" PRIu32 ": got %02x, model %02x%s",
		            what, s + i, k, g[k], want[k],
		            m->maybe_zero[s + i] ? " (or zero)" : "");
	}
	return 0;
}

static int op_read(struct run *r, struct input *in, uint64_t s, uint64_t c)
{
	if (c > 256)
		c = 256;
	size_t len = (size_t)c * r->m.ss;
	memset(r->buf, 0xa5, len); /* stale bytes must never come back */
	struct iovec iov[4];
	int n = split(in, r->buf, len, iov);
	struct waiter w = {0};
	vdisk_status st = wait_for(r->q, &w, vdisk_readv(r->q, s, iov, n, on_done, &w));
	if (!in_range(r, s, c))
		return expect_kind(r, "read out of range", st, VDISK_ERR_ILLEGAL_BLOCK);
	if (expect_kind(r, "read", st, VDISK_OK))
		return 1;
	return check_data(r, "read", s, c, r->buf);
}

static int op_write(struct run *r, struct input *in, uint64_t s, uint64_t c, bool fua)
{
	if (c > 256)
		c = 256;
	size_t len = (size_t)c * r->m.ss;
	pattern(r->buf, len, get8(in) + 7919u * r->op_index);
	if (get8(in) % 5 == 0)
		memset(r->buf, 0, len / 2); /* some zero sectors (sqlite stores NULL) */
	struct iovec iov[4];
	int n = split(in, r->buf, len, iov);
	struct waiter w = {0};
	vdisk_status st =
	    wait_for(r->q, &w, vdisk_writev(r->q, s, iov, n, fua ? VDISK_IO_FUA : 0, on_done, &w));
	if (!in_range(r, s, c))
		return expect_kind(r, "write out of range", st, VDISK_ERR_ILLEGAL_BLOCK);
	if (r->m.read_only)
		return expect_kind(r, "write to a read-only disk", st, VDISK_ERR_READ_ONLY);
	if (expect_kind(r, "write", st, VDISK_OK))
		return 1;
	memcpy(r->m.data + s * r->m.ss, r->buf, len);
	memset(r->m.maybe_zero + s, 0, c);
	return 0;
}

static int op_unmap(struct run *r, uint64_t s, uint64_t c)
{
	struct waiter w = {0};
	vdisk_status st = wait_for(r->q, &w, vdisk_unmap(r->q, s, c, 0, on_done, &w));
	if (!in_range(r, s, c))
		return expect_kind(r, "unmap out of range", st, VDISK_ERR_ILLEGAL_BLOCK);
	if (r->m.read_only)
		return expect_kind(r, "unmap on a read-only disk", st, VDISK_ERR_READ_ONLY);
	if (expect_kind(r, "unmap", st, VDISK_OK))
		return 1;
	if (r->m.unmap == VDISK_UNMAP_ZEROES) {
		memset(r->m.data + s * r->m.ss, 0, (size_t)c * r->m.ss);
		memset(r->m.maybe_zero + s, 0, c);
	} else if (r->m.unmap == VDISK_UNMAP_UNSPECIFIED) {
		for (uint64_t i = 0; i < c; i++)
			r->m.maybe_zero[s + i] = 1;
	}
	return 0;
}

static int op_write_zeroes(struct run *r, struct input *in, uint64_t s, uint64_t c)
{
	unsigned f = get8(in);
	unsigned flags = (f & 1 ? VDISK_ZERO_MAY_UNMAP : 0) | (f & 2 ? VDISK_IO_FUA : 0) |
	                 (f % 7 == 0 ? VDISK_ZERO_FAST_ONLY : 0);
	struct waiter w = {0};
	vdisk_status st = wait_for(r->q, &w, vdisk_write_zeroes(r->q, s, c, flags, on_done, &w));
	if (!in_range(r, s, c))
		return expect_kind(r, "write-zeroes out of range", st, VDISK_ERR_ILLEGAL_BLOCK);
	if (r->m.read_only)
		return expect_kind(r, "write-zeroes on a read-only disk", st, VDISK_ERR_READ_ONLY);
	if ((flags & VDISK_ZERO_FAST_ONLY) && st.kind == VDISK_ERR_NOT_SUPPORTED)
		return 0;
	if (expect_kind(r, "write-zeroes", st, VDISK_OK))
		return 1;
	memset(r->m.data + s * r->m.ss, 0, (size_t)c * r->m.ss);
	memset(r->m.maybe_zero + s, 0, c);
	return 0;
}

static int op_flush(struct run *r)
{
	struct waiter w = {0};
	vdisk_status st = wait_for(r->q, &w, vdisk_flush(r->q, on_done, &w));
	return expect_kind(r, "flush", st, VDISK_OK);
}

static int op_extents(struct run *r, uint64_t s, uint64_t c)
{
	struct vdisk_extent ext[8];
	unsigned n = 0;
	struct waiter w = {0};
	vdisk_status st = wait_for(r->q, &w, vdisk_extents(r->q, s, c, ext, 8, &n, on_done, &w));
	if (!in_range(r, s, c))
		return expect_kind(r, "extents out of range", st, VDISK_ERR_ILLEGAL_BLOCK);
	if (expect_kind(r, "extents", st, VDISK_OK))
		return 1;
	if (c && !n)
		return fail(r, "extents: no extent for %" PRIu64 "+%" PRIu64, s, c);
	uint64_t pos = s;
	for (unsigned i = 0; i < n; i++) {
		if (ext[i].sector != pos || ext[i].count == 0 || ext[i].count > s + c - pos)
			return fail(r, "extents: [%u] = %" PRIu64 "+%" PRIu64 " at %" PRIu64, i,
			            ext[i].sector, ext[i].count, pos);
		if (ext[i].flags & VDISK_EXTENT_ZERO) {
			/* must read as zeros: pin what may be zero, reject data */
			for (uint64_t x = ext[i].sector; x < ext[i].sector + ext[i].count; x++) {
				const unsigned char *d = r->m.data + x * r->m.ss;
				bool zero = true;
				for (uint32_t k = 0; k < r->m.ss && zero; k++)
					zero = d[k] == 0;
				if (!zero && !r->m.maybe_zero[x])
					return fail(r,
					            "extents: sector %" PRIu64
					            " reported zero, model has data",
					            x);
				if (!zero) {
					memset(r->m.data + x * r->m.ss, 0, r->m.ss);
					r->m.maybe_zero[x] = 0;
				}
			}
		}
		pos += ext[i].count;
	}
	return 0;
}

static int op_resize(struct run *r, struct input *in)
{
	struct model *m = &r->m;
	uint64_t base = r->l[0].count;
	uint64_t n = 1 + ((uint64_t)get8(in) * 2 * base) / 255;
	if (m->read_only)
		return 0;
	if (r->flags & LM_VERBOSE)
		fprintf(stderr, "    to %" PRIu64 " sectors\n", n);
	int rc = vdisk_resize(r->d, n);
	if (!m->resizable) {
		if (rc == 0)
			return fail(r, "resize of a %s top layer succeeded",
			            ltype_name[r->l[0].type]);
		return 0;
	}
	if (rc < 0)
		return fail(r, "resize to %" PRIu64 ": %s", n, vdisk_errmsg());
	if (vdisk_sector_count(r->d) != n)
		return fail(r, "resize: count %" PRIu64 ", wanted %" PRIu64,
		            vdisk_sector_count(r->d), n);
	unsigned char *d = realloc(m->data, (size_t)n * m->ss);
	unsigned char *z = realloc(m->maybe_zero, (size_t)n);
	if (!d || !z) {
		free(d ? d : m->data);
		free(z ? z : m->maybe_zero);
		m->data = NULL;
		m->maybe_zero = NULL;
		return 2;
	}
	m->data = d;
	m->maybe_zero = z;
	if (n > m->count) {
		/* the grown part reads as zeros, whatever was there before a shrink */
		memset(m->data + m->count * m->ss, 0, (size_t)(n - m->count) * m->ss);
		memset(m->maybe_zero + m->count, 0, (size_t)(n - m->count));
	}
	m->count = n;
	return 0;
}

static int run_ops(struct run *r, struct input *in)
{
	static const char *const names[] = {"read",  "read",  "read",    "write",   "write-fua",
	                                    "flush", "unmap", "wzeroes", "extents", "resize"};
	for (r->op_index = 0; r->op_index < MAX_OPS && more(in); r->op_index++) {
		unsigned op = get8(in) % 10;
		uint64_t s = 0, c = 0;
		if (op != 5 && op != 9) {
			s = pick_sector(r, in);
			c = op <= 4 ? get8(in) % 17 : pick_count(in);
		}
		if (r->flags & LM_VERBOSE)
			fprintf(stderr, "  op %u: %s %" PRIu64 " +%" PRIu64 "\n", r->op_index,
			        names[op], s, c);
		int rc;
		switch (op) {
		case 0:
		case 1:
		case 2: rc = op_read(r, in, s, c); break;
		case 3: rc = op_write(r, in, s, c, false); break;
		case 4: rc = op_write(r, in, s, c, true); break;
		case 5: rc = op_flush(r); break;
		case 6: rc = op_unmap(r, s, c); break;
		case 7: rc = op_write_zeroes(r, in, s, c); break;
		case 8: rc = op_extents(r, s, c); break;
		default: rc = op_resize(r, in); break;
		}
		if (rc)
			return rc;
	}
	/* the whole disk, at the end */
	r->op_index = MAX_OPS;
	for (uint64_t s = 0; s < r->m.count; s += 256) {
		uint64_t c = r->m.count - s < 256 ? r->m.count - s : 256;
		struct iovec iov = {r->buf, (size_t)c * r->m.ss};
		struct waiter w = {0};
		vdisk_status st = wait_for(r->q, &w, vdisk_readv(r->q, s, &iov, 1, on_done, &w));
		if (expect_kind(r, "final read", st, VDISK_OK) ||
		    check_data(r, "final read", s, c, r->buf))
			return 1;
	}
	return 0;
}

static void cleanup(struct run *r)
{
	if (r->q)
		vdisk_queue_destroy(r->q);
	if (r->d)
		vdisk_unref(r->d);
	for (unsigned i = 0; i < MAX_LAYERS; i++) {
		struct mlayer *l = &r->l[i];
		if (l->path[0]) {
			char p[600];
			unlink(l->path);
			snprintf(p, sizeof p, "%s-wal", l->path);
			unlink(p);
			snprintf(p, sizeof p, "%s-shm", l->path);
			unlink(p);
		}
		free(l->data);
		free(l->present);
		free(l->orig);
	}
	if (r->dir[0])
		rmdir(r->dir);
	free(r->m.data);
	free(r->m.maybe_zero);
	free(r->buf);
	free(r->buf2);
}

/* Files below the write path are opened read-only: never changed. */
static int check_files(struct run *r)
{
	for (unsigned i = 0; i < r->n; i++) {
		struct mlayer *l = &r->l[i];
		if (l->type != L_DISK_FILE)
			continue;
		bool in_path = !r->m.read_only;
		for (unsigned k = 0; k < i && in_path; k++)
			in_path = r->l[k].write_through;
		if (in_path)
			continue;
		size_t len = (size_t)l->count * r->m.ss;
		unsigned char *now = malloc(len);
		int fd = open(l->path, O_RDONLY | O_CLOEXEC);
		bool same = now && fd >= 0 && pread(fd, now, len, 0) == (ssize_t)len &&
		            memcmp(now, l->orig, len) == 0;
		if (fd >= 0)
			close(fd);
		free(now);
		if (!same)
			return fail(r, "layers[%u]: the file below the write path changed", i);
	}
	return 0;
}

int lm_run(const uint8_t *data, size_t size, unsigned flags)
{
	struct input in = {data, size, 0};
	struct run r;
	memset(&r, 0, sizeof r);
	r.flags = flags;
	if (size < 4)
		return 0;
	const char *tmp = getenv("TMPDIR");
	snprintf(r.dir, sizeof r.dir, "%s/vdisk-lm.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(r.dir)) {
		r.dir[0] = '\0';
		return 2;
	}
	int rc = setup(&r, &in);
	if (rc == 0)
		rc = run_ops(&r, &in);
	if (rc == 0) {
		vdisk_queue_destroy(r.q);
		r.q = NULL;
		vdisk_unref(r.d);
		r.d = NULL;
		rc = check_files(&r);
	}
	cleanup(&r);
	return rc;
}
