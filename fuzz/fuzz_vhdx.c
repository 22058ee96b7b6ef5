/* Fuzz the VHDX reader: open, then reads checked against a model.
 *
 * An image is mostly zeros over several MiB, so an input is a list of patches
 * laid over a zero file: [u32 offset][u16 length][length bytes], repeated
 * (little-endian; offsets beyond 8 MiB are taken modulo it).  Seeds are real
 * images so reduced (fuzz/vhdx-make-corpus.py).  An image that does not open
 * must say why; one that opens is read whole (its first MiBs) as the model,
 * then read again in random pieces that must match it, and its extents and
 * check must run. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"

#define FILE_MAX (8u << 20)
#define MODEL_MAX (4u << 20)
#define OPS 32

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void die(const char *what)
{
	fprintf(stderr, "fuzz_vhdx: %s\n", what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[] = "/tmp/fuzz-vhdx.XXXXXX", path[64], spec[128];
	if (!mkdtemp(dir))
		return 0;
	snprintf(path, sizeof path, "%s/i.vhdx", dir);
	snprintf(spec, sizeof spec, "vhdx:path=%s,read-only=on", path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		goto out;
	uint64_t end = 0;
	for (size_t i = 0; i + 6 <= size;) {
		uint32_t off = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
		               (uint32_t)data[i + 2] << 16 | (uint32_t)data[i + 3] << 24;
		size_t len = (size_t)data[i + 4] | (size_t)data[i + 5] << 8;
		i += 6;
		if (len > size - i)
			len = size - i;
		off %= FILE_MAX;
		if (len > FILE_MAX - off)
			len = FILE_MAX - off;
		if (pwrite(fd, data + i, len, off) != (ssize_t)len)
			break;
		if (off + len > end)
			end = off + len;
		i += len;
	}
	/* a whole number of sectors, as an image file has */
	if (ftruncate(fd, (off_t)((end + 511) & ~511ull)) != 0) {
		close(fd);
		goto out;
	}
	close(fd);

	struct vdisk *d = vdisk_open(spec, 0);
	if (!d) {
		if (!*vdisk_errmsg())
			die("open failed without a message");
		goto out;
	}
	uint32_t ss = vdisk_sector_size(d);
	uint64_t bytes = vdisk_sector_count(d) * ss;
	size_t mlen = bytes < MODEL_MAX ? (size_t)bytes : MODEL_MAX;
	uint8_t *model = malloc(mlen), *buf = malloc(256 * 1024);
	if (!model || !buf || !vdisk_ok(vdisk_pread(d, model, mlen, 0))) {
		free(model);
		free(buf);
		vdisk_unref(d);
		goto out;
	}
	uint64_t seed = size;
	for (size_t i = 0; i < size; i++)
		seed = seed * 131 + data[i];
	size_t sectors = mlen / ss;
	for (unsigned op = 0; op < OPS && sectors; op++) {
		size_t first = (size_t)(mix(&seed) % sectors);
		size_t n = 1 + (size_t)(mix(&seed) % (256 * 1024 / ss));
		if (first + n > sectors)
			n = sectors - first;
		vdisk_status st = vdisk_pread(d, buf, n * ss, (uint64_t)first * ss);
		if (vdisk_ok(st) && memcmp(buf, model + first * ss, n * ss) != 0)
			die("a read differs from the same bytes read before");
	}
	struct vdisk_extent ext[64];
	unsigned n = 0;
	(void)vdisk_extents_sync(d, 0, vdisk_sector_count(d), ext, 64, &n);
	free(model);
	free(buf);
	vdisk_unref(d);
out:
	unlink(path);
	rmdir(dir);
	return 0;
}
