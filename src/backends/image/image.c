/* image: helpers shared by the image-format drivers; see image.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

uint32_t img_checksum_ones(const void *buf, size_t len, size_t skip, size_t skip_len)
{
	const uint8_t *b = buf;
	uint32_t sum = 0;
	for (size_t i = 0; i < len; i++)
		if (i < skip || i >= skip + skip_len)
			sum += b[i];
	return ~sum;
}

int img_guid_random(uint8_t guid[16])
{
	size_t got = 0;
	while (got < 16) {
		ssize_t n = getrandom(guid + got, 16 - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return vdisk_set_error_errno(n < 0 ? errno : EIO, "unique id: getrandom");
		got += (size_t)n;
	}
	/* version 4, variant 1; byte 7 is the high byte of the little-endian
	 * third field */
	guid[7] = (uint8_t)((guid[7] & 0x0f) | 0x40);
	guid[8] = (uint8_t)((guid[8] & 0x3f) | 0x80);
	return 0;
}

void img_guid_str(const uint8_t g[16], char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12],
	         g[13], g[14], g[15]);
}

static unsigned unit16(const uint8_t *p, bool be)
{
	return be ? (unsigned)(p[0] << 8 | p[1]) : (unsigned)(p[1] << 8 | p[0]);
}

int img_utf16_to_utf8(const void *in, size_t len, bool be, bool need_nul, char *out, size_t outlen)
{
	const uint8_t *p = in;
	size_t o = 0, i = 0;
	bool ended = false;
	for (; i + 1 < len; i += 2) {
		uint32_t c = unit16(p + i, be);
		if (c == 0) {
			ended = true;
			break;
		}
		if (c >= 0xd800 && c < 0xdc00) {
			if (i + 3 >= len)
				return -1;
			uint32_t lo = unit16(p + i + 2, be);
			if (lo < 0xdc00 || lo >= 0xe000)
				return -1;
			c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		} else if (c >= 0xdc00 && c < 0xe000) {
			return -1;
		}
		char u[4];
		size_t n;
		if (c < 0x80) {
			u[0] = (char)c;
			n = 1;
		} else if (c < 0x800) {
			u[0] = (char)(0xc0 | c >> 6);
			u[1] = (char)(0x80 | (c & 0x3f));
			n = 2;
		} else if (c < 0x10000) {
			u[0] = (char)(0xe0 | c >> 12);
			u[1] = (char)(0x80 | ((c >> 6) & 0x3f));
			u[2] = (char)(0x80 | (c & 0x3f));
			n = 3;
		} else {
			u[0] = (char)(0xf0 | c >> 18);
			u[1] = (char)(0x80 | ((c >> 12) & 0x3f));
			u[2] = (char)(0x80 | ((c >> 6) & 0x3f));
			u[3] = (char)(0x80 | (c & 0x3f));
			n = 4;
		}
		if (o + n + 1 > outlen)
			return -1;
		memcpy(out + o, u, n);
		o += n;
	}
	if (need_nul && !ended)
		return -1;
	if (o + 1 > outlen)
		return -1;
	out[o] = 0;
	return 0;
}

long img_utf8_to_utf16(const char *in, bool be, void *out, size_t outlen)
{
	const uint8_t *s = (const uint8_t *)in;
	uint8_t *p = out;
	size_t o = 0;
	while (*s) {
		uint32_t c;
		unsigned more;
		if (*s < 0x80) {
			c = *s;
			more = 0;
		} else if ((*s & 0xe0) == 0xc0) {
			c = *s & 0x1f;
			more = 1;
		} else if ((*s & 0xf0) == 0xe0) {
			c = *s & 0x0f;
			more = 2;
		} else if ((*s & 0xf8) == 0xf0) {
			c = *s & 0x07;
			more = 3;
		} else {
			return -1;
		}
		s++;
		for (unsigned k = 0; k < more; k++, s++) {
			if ((*s & 0xc0) != 0x80)
				return -1;
			c = c << 6 | (*s & 0x3f);
		}
		uint16_t units[2];
		unsigned n = 1;
		if (c >= 0x10000) {
			c -= 0x10000;
			units[0] = (uint16_t)(0xd800 + (c >> 10));
			units[1] = (uint16_t)(0xdc00 + (c & 0x3ff));
			n = 2;
		} else {
			units[0] = (uint16_t)c;
		}
		for (unsigned k = 0; k < n; k++) {
			if (o + 2 > outlen)
				return -1;
			p[o + (be ? 0 : 1)] = (uint8_t)(units[k] >> 8);
			p[o + (be ? 1 : 0)] = (uint8_t)units[k];
			o += 2;
		}
	}
	return (long)o;
}

/* ---- the container ------------------------------------------------------- */

int img_container_open(struct vdisk *d, json_t *cfg, struct img_container *ct, uint64_t create_size)
{
	const char *path = NULL;
	json_t *inner = json_object_get(cfg, "inner");
	memset(ct, 0, sizeof *ct);
	ct->grow_fd = -1;
	if (vdisk_cfg_string(cfg, "path", &path) < 0)
		return -1;
	if (path && inner)
		return vdisk_set_error("path, inner: give one of them, not both");
	if (!path && !inner)
		return vdisk_set_error("path: required (or inner: the container's spec)");
	if (path && !*path)
		return vdisk_set_error("path: empty");
	if (!path) {
		ct->disk = vdisk_open_child(d, inner, "inner", false);
		if (!ct->disk)
			return -1;
		/* a new image in an existing container: it must take the image's
		 * size, as formats keep a structure at the end */
		uint64_t have = vdisk_sector_count(ct->disk) * vdisk_sector_size(ct->disk);
		if (create_size && have != create_size &&
		    (!(vdisk_caps(ct->disk) & VDISK_CAP_RESIZE) ||
		     create_size % vdisk_sector_size(ct->disk) ||
		     vdisk_resize(ct->disk, create_size / vdisk_sector_size(ct->disk)) < 0))
			return vdisk_set_error("inner: holds %" PRIu64
			                       " bytes and cannot be resized "
			                       "to the new image's %" PRIu64,
			                       have, create_size);
		goto opened;
	}
	if (create_size && access(path, F_OK) == 0)
		return vdisk_set_error("path '%s': exists; refusing to overwrite it", path);
	ct->path = strdup(path);
	char *tmp = strdup(path);
	if (!ct->path || !tmp) {
		free(tmp);
		img_container_close(ct, false);
		return vdisk_set_error_errno(ENOMEM, "path");
	}
	ct->dir = strdup(dirname(tmp));
	free(tmp);
	if (!ct->dir) {
		img_container_close(ct, false);
		return vdisk_set_error_errno(ENOMEM, "path");
	}
	json_t *spec = json_pack("{s:s, s:s}", "type", "file", "path", path);
	if (spec && create_size)
		json_object_set_new(spec, "create", json_integer((json_int_t)create_size));
	if (!spec) {
		img_container_close(ct, false);
		return vdisk_set_error_errno(ENOMEM, "path");
	}
	ct->disk = vdisk_open_child(d, spec, "path", false);
	json_decref(spec);
	if (!ct->disk) {
		img_container_close(ct, false);
		return -1;
	}
	ct->created = create_size != 0;
	if (!vdisk_read_only(ct->disk)) {
		/* the file type cannot resize (yet): keep a descriptor of the very
		 * file the child opened, to grow it (img_container_grow) */
		struct stat a, b;
		ct->grow_fd = open(path, O_RDWR | O_CLOEXEC);
		if (ct->grow_fd >= 0 && (fstat(ct->grow_fd, &a) < 0 || stat(path, &b) < 0 ||
		                         a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
			close(ct->grow_fd);
			ct->grow_fd = -1;
		}
	}
opened:
	if (vdisk_sector_size(ct->disk) != 512) {
		vdisk_set_error("%s: has %" PRIu32 "-byte sectors; an image needs a 512-byte "
		                "sector container",
		                path ? "path" : "inner", vdisk_sector_size(ct->disk));
		img_container_close(ct, ct->created);
		return -1;
	}
	return 0;
}

void img_container_close(struct img_container *ct, bool remove)
{
	if (ct->grow_fd >= 0)
		close(ct->grow_fd);
	ct->grow_fd = -1;
	if (remove && ct->created && ct->path)
		unlink(ct->path);
	free(ct->path);
	free(ct->dir);
	ct->path = ct->dir = NULL;
}

int img_pread(struct img_container *ct, void *buf, size_t len, uint64_t off, const char *what)
{
	vdisk_status st = vdisk_pread(ct->disk, buf, len, off);
	if (!vdisk_ok(st)) {
		char msg[160];
		return vdisk_set_error("%s: reading %zu bytes at offset %" PRIu64
		                       " of the container: %s",
		                       what, len, off, vdisk_status_str(st, msg, sizeof msg));
	}
	return 0;
}

int img_pwrite(struct img_container *ct, const void *buf, size_t len, uint64_t off,
               const char *what)
{
	vdisk_status st = vdisk_pwrite(ct->disk, buf, len, off, 0);
	if (!vdisk_ok(st)) {
		char msg[160];
		return vdisk_set_error("%s: writing %zu bytes at offset %" PRIu64
		                       " of the container: %s",
		                       what, len, off, vdisk_status_str(st, msg, sizeof msg));
	}
	return 0;
}

int img_flush(struct img_container *ct)
{
	vdisk_status st = vdisk_flush_sync(ct->disk);
	if (!vdisk_ok(st)) {
		char msg[160];
		return vdisk_set_error("flushing the container: %s",
		                       vdisk_status_str(st, msg, sizeof msg));
	}
	return 0;
}

int img_container_grow(struct img_container *ct, uint64_t new_bytes)
{
	uint64_t cur = img_container_bytes(ct);
	if (new_bytes <= cur)
		return 0;
	if (vdisk_caps(ct->disk) & VDISK_CAP_RESIZE)
		return vdisk_resize(ct->disk, new_bytes / 512) < 0 ? -ENOSPC : 0;
	if (ct->grow_fd < 0)
		return -ENOSPC;
	if (ftruncate(ct->grow_fd, (off_t)new_bytes) < 0)
		return -errno;
	vdisk_set_sector_count(ct->disk, new_bytes / 512);
	return 0;
}

/* ---- parents ------------------------------------------------------------- */

char *img_parent_path(const char *dir, const char *name, bool allow_paths, const char **why)
{
	char *n = strdup(name), *out = NULL;
	if (!n) {
		*why = "out of memory";
		return NULL;
	}
	for (char *p = n; *p; p++)
		if (*p == '\\')
			*p = '/';
	char *s = n;
	while (s[0] == '.' && s[1] == '/')
		s += 2;
	if (!*s) {
		*why = "empty name";
		goto out;
	}
	bool windows_abs = ((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z' && s[1] == ':');
	if (windows_abs) {
		*why = "a Windows drive path";
		goto out;
	}
	if (!allow_paths) {
		if (strchr(s, '/')) {
			*why = "not a plain file name in the child's directory (allow-parent-paths "
			       "permits paths)";
			goto out;
		}
		if (strcmp(s, "..") == 0 || strcmp(s, ".") == 0) {
			*why = "not a file name";
			goto out;
		}
	}
	if (s[0] == '/') {
		out = strdup(s);
	} else if (asprintf(&out, "%s/%s", dir ? dir : ".", s) < 0) {
		out = NULL;
	}
	if (!out)
		*why = "out of memory";
out:
	free(n);
	return out;
}
