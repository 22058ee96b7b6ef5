/* vdisk_check(): every layer's own consistency check, then (optionally) a read
 * of everything the stack says is allocated, with unreadable ranges narrowed
 * down to the sector. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { CHECK_MAX_LISTED = 100, CHECK_CHUNK = 1 << 20 };

struct vdisk_check {
	json_t *problems;
	uint64_t total;
	struct vdisk *layer; /* the layer being checked */
};

static json_t *problem_new(struct vdisk_check *chk, const char *msg)
{
	chk->total++;
	if (json_array_size(chk->problems) >= CHECK_MAX_LISTED)
		return NULL;
	json_t *o = json_object();
	json_object_set_new(o, "layer", json_string(chk->layer->path));
	json_object_set_new(o, "type", json_string(chk->layer->drv->name));
	json_object_set_new(o, "message", json_string(msg));
	json_array_append_new(chk->problems, o);
	return o;
}

VD_EXPORT void vdisk_check_problem(struct vdisk_check *chk, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	problem_new(chk, msg);
}

static int check_layers(struct vdisk_check *chk, struct vdisk *d, unsigned *layers,
                        unsigned *checked)
{
	++*layers;
	if (d->drv->check) {
		chk->layer = d;
		if (d->drv->check(d, chk) < 0) {
			char why[512];
			snprintf(why, sizeof why, "%s", vdisk_errmsg());
			return vdisk_set_error("%s (%s): check: %s",
			                       d->path[0] ? d->path : "top layer", d->drv->name,
			                       why);
		}
		++*checked;
	}
	for (unsigned i = 0; i < d->nchildren; i++)
		if (check_layers(chk, d->children[i], layers, checked) < 0)
			return -1;
	return 0;
}

static void unreadable(struct vdisk_check *chk, uint64_t off, uint64_t len, vdisk_status st)
{
	char why[200], msg[300];
	vdisk_status_str(st, why, sizeof why);
	snprintf(msg, sizeof msg, "unreadable: %" PRIu64 " bytes at byte %" PRIu64 ": %s", len, off,
	         why);
	json_t *o = problem_new(chk, msg);
	if (o) {
		json_object_set_new(o, "offset", json_integer((json_int_t)off));
		json_object_set_new(o, "length", json_integer((json_int_t)len));
	}
}

/* Read [off, off+len) (one chunk that failed as a whole) sector by sector and
 * report each run of unreadable sectors once, with its first error. */
static void narrow(struct vdisk_check *chk, struct vdisk *d, unsigned char *buf, uint64_t off,
                   uint64_t len, uint64_t *bytes)
{
	uint64_t ss = d->meta.sector_size, bad_off = 0, bad_len = 0;
	vdisk_status bad_st = vdisk_status_ok();
	for (uint64_t pos = off; pos < off + len; pos += ss) {
		vdisk_status st = vdisk_pread(d, buf, ss, pos);
		if (vdisk_ok(st)) {
			*bytes += ss;
			if (bad_len)
				unreadable(chk, bad_off, bad_len, bad_st);
			bad_len = 0;
			continue;
		}
		if (!bad_len) {
			bad_off = pos;
			bad_st = st;
		}
		bad_len += ss;
	}
	if (bad_len)
		unreadable(chk, bad_off, bad_len, bad_st);
}

static int read_all(struct vdisk_check *chk, struct vdisk *d, uint64_t *bytes)
{
	unsigned char *buf = aligned_alloc(4096, CHECK_CHUNK);
	if (!buf)
		return vdisk_set_error("check: out of memory");
	uint64_t ss = d->meta.sector_size, count = vd_sector_count(d), sector = 0;
	chk->layer = d;
	while (sector < count) {
		struct vdisk_extent ext[64];
		unsigned n = 0;
		vdisk_status st = vdisk_extents_sync(d, sector, count - sector, ext, 64, &n);
		if (!vdisk_ok(st) || n == 0) {
			/* no map: read the rest as data */
			ext[0] = (struct vdisk_extent){.sector = sector, .count = count - sector};
			n = 1;
		}
		for (unsigned i = 0; i < n && sector < count; i++) {
			uint64_t end = ext[i].sector + ext[i].count;
			if (end > count || end <= sector)
				end = count;
			if (ext[i].flags & VDISK_EXTENT_ZERO) {
				sector = end;
				continue;
			}
			while (sector < end) {
				uint64_t len = (end - sector) * ss;
				if (len > CHECK_CHUNK)
					len = CHECK_CHUNK;
				st = vdisk_pread(d, buf, (size_t)len, sector * ss);
				if (vdisk_ok(st))
					*bytes += len;
				else
					narrow(chk, d, buf, sector * ss, len, bytes);
				sector += len / ss;
			}
		}
	}
	free(buf);
	return 0;
}

VD_EXPORT int vdisk_check(struct vdisk *d, unsigned flags, char **report)
{
	vd_clear_error();
	if (report)
		*report = NULL;
	if (!d)
		return vdisk_set_error("vdisk_check: disk is NULL");
	if (flags & ~(unsigned)VDISK_CHECK_READ)
		return vdisk_set_error("vdisk_check: unknown flags 0x%x", flags);
	struct vdisk_check chk = {.problems = json_array()};
	unsigned checked = 0, layers = 0;
	uint64_t bytes = 0;
	if (check_layers(&chk, d, &layers, &checked) < 0 ||
	    ((flags & VDISK_CHECK_READ) && read_all(&chk, d, &bytes) < 0)) {
		json_decref(chk.problems);
		return -1;
	}
	int rc = chk.total > INT32_MAX ? INT32_MAX : (int)chk.total;
	if (report) {
		json_t *o = json_pack("{s:o, s:I, s:i, s:i, s:I}", "problems", chk.problems,
		                      "problems_total", (json_int_t)chk.total, "layers", layers,
		                      "layers_checked", checked, "bytes_read", (json_int_t)bytes);
		*report = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(o);
		if (!*report)
			return vdisk_set_error("vdisk_check: out of memory");
	} else {
		json_decref(chk.problems);
	}
	return rc;
}
