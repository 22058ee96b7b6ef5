/* image: what the image-format drivers (vhd, and vhdx after it) share.
 *
 * A format driver reads and writes its container through a child disk, the
 * way qemu splits format and protocol drivers: {"type":FMT,"inner":SPEC}, or
 * {"type":FMT,"path":P} for the common case of a `file` child.  This folder
 * holds no driver of its own; it gives a format driver:
 *
 *  - the container (struct img_container): opening it from "inner" or "path",
 *    synchronous byte-addressed I/O for the control path (open, check, create),
 *    and growing it through the child's resize;
 *  - big- and little-endian field access, the ones'-complement checksum that
 *    VHD uses, random GUIDs (RFC 4122 version 4, Microsoft byte order) and
 *    their text form;
 *  - UTF-16 (either byte order) to and from UTF-8, for locator names;
 *  - the parent-path policy: a parent named inside an image is looked for
 *    only in the child's own directory (no absolute path, no "..") unless the
 *    spec says allow-parent-paths, because a guest-writable image must never
 *    make the host open another host file.
 *
 * Container offsets are bytes; the container's sector size must be 512 (VHD
 * structures are 512-byte aligned, VHDX ones 4 KiB: both fit). */
#ifndef VDISK_IMAGE_H
#define VDISK_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdisk/backend.h"

/* ---- byte order ---------------------------------------------------------- */
static inline uint16_t img_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}
static inline uint32_t img_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint64_t img_be64(const void *p)
{
	return (uint64_t)img_be32(p) << 32 | img_be32((const uint8_t *)p + 4);
}
static inline void img_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}
static inline void img_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}
static inline void img_put_be64(void *p, uint64_t v)
{
	img_put_be32(p, (uint32_t)(v >> 32));
	img_put_be32((uint8_t *)p + 4, (uint32_t)v);
}
static inline uint32_t img_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}
static inline void img_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

/* ---- checksums, GUIDs, names --------------------------------------------- */

/* VHD's checksum: the ones' complement of the byte sum of buf[0..len), the
 * `skip_len` bytes at `skip` (the checksum field itself) counted as zero. */
uint32_t img_checksum_ones(const void *buf, size_t len, size_t skip, size_t skip_len);

/* A random GUID (version 4) as 16 bytes.  Returns 0, or -1 after setting an
 * error if the system has no randomness to give. */
int img_guid_random(uint8_t guid[16]);
/* The text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" of the bytes as stored
 * (Microsoft order: the first three fields little-endian). out: 37 bytes. */
void img_guid_str(const uint8_t guid[16], char out[37]);

/* UTF-16 (big-endian if be) of at most len bytes, ending at the first NUL unit,
 * into NUL-terminated UTF-8.  Returns 0, or -1 (unpaired surrogate, out too
 * small, or no terminator in `len` bytes when need_nul). */
int img_utf16_to_utf8(const void *in, size_t len, bool be, bool need_nul, char *out, size_t outlen);
/* UTF-8 to UTF-16 (no terminator): returns the bytes written, or -1 (bad UTF-8
 * or out too small). */
long img_utf8_to_utf16(const char *in, bool be, void *out, size_t outlen);

/* ---- the container ------------------------------------------------------- */

struct img_container {
	struct vdisk *disk; /* the child: the core owns and closes it */
	char *path;         /* the file, when opened from "path"; else NULL */
	char *dir;          /* its directory (for parent names), or NULL */
	int grow_fd;        /* see img_container_grow(); -1 if none */
	bool created;       /* img_container_open made the file */
};

/* Open d's container from cfg's "path" (a `file` child) or "inner" (any
 * spec); exactly one must be given.  With create_size > 0 and "path", the
 * file must not exist and is made with that many bytes (sparse); with
 * "inner" the container is resized to that many bytes.  Returns 0,
 * or -1 after setting an error naming the key. */
int img_container_open(struct vdisk *d, json_t *cfg, struct img_container *ct,
                       uint64_t create_size);
/* Release what img_container_open kept (not the child: the core closes it).
 * With remove, a file img_container_open created is deleted again. */
void img_container_close(struct img_container *ct, bool remove);

static inline uint64_t img_container_bytes(const struct img_container *ct)
{
	return vdisk_sector_count(ct->disk) * 512;
}

/* Synchronous byte I/O on the container (control path: open, check, create,
 * ctl).  off and len are multiples of 512.  Return 0, or -1 after setting an
 * error that names `what` and the offset. */
int img_pread(struct img_container *ct, void *buf, size_t len, uint64_t off, const char *what);
int img_pwrite(struct img_container *ct, const void *buf, size_t len, uint64_t off,
               const char *what);
int img_flush(struct img_container *ct);

/* Grow the container to new_bytes (a multiple of 512; new bytes read as
 * zeros).  Through the child's resize where it has one; a `file` child opened
 * from "path" (whose type has no resize yet) is grown with ftruncate on a
 * descriptor of the same file and its new size announced with
 * vdisk_set_sector_count().  Callable from the data path (it blocks).
 * Returns 0, or a negative errno (-ENOSPC: the container cannot grow). */
int img_container_grow(struct img_container *ct, uint64_t new_bytes);

/* ---- parents ------------------------------------------------------------- */

/* Resolve a parent name found inside an image (Windows separators allowed)
 * into a host path, by the policy above: without allow_paths, only a plain
 * file name (or ".\name") in dir is accepted.  Returns a malloc'd path, or
 * NULL with *why set to the reason. */
char *img_parent_path(const char *dir, const char *name, bool allow_paths, const char **why);

#endif
