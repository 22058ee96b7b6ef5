/* libFuzzer target: an input is a VHD image (the seed corpus, fuzz/corpus/vhd,
 * holds qemu-made and malformed ones: fuzz/vhd-make-corpus.py).  It is opened
 * writable from a private file; an open either fails with a message or gives
 * a disk on which random reads, writes and flushes (drawn from a hash of the
 * input) are checked against a model of the first MODEL_MAX bytes, read from
 * the disk first.  Then the image is closed, opened again and must read as the
 * model: what was written survives a close.  A disagreement aborts. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"

#define MODEL_MAX (4u << 20)
#define OPS 64

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void die(const char *what, uint64_t off)
{
	fprintf(stderr, "fuzz_vhd: %s at byte %" PRIu64 "\n", what, off);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[] = "/tmp/fuzz-vhd.XXXXXX", path[64], spec[128];
	if (!mkdtemp(dir))
		return 0;
	snprintf(path, sizeof path, "%s/i.vhd", dir);
	snprintf(spec, sizeof spec, "vhd:path=%s", path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);

	struct vdisk *d = vdisk_open(spec, 0);
	if (!d) {
		if (!*vdisk_errmsg())
			die("open failed without a message", 0);
		goto out;
	}
	uint64_t bytes = vdisk_sector_count(d) * 512;
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
	for (unsigned op = 0; op < OPS; op++) {
		uint64_t x = mix(&seed);
		size_t sectors = mlen / 512;
		size_t first = (size_t)(mix(&seed) % sectors);
		size_t n = 1 + (size_t)(mix(&seed) % 128);
		if (first + n > sectors)
			n = sectors - first;
		uint64_t off = (uint64_t)first * 512;
		size_t len = n * 512;
		switch (x % 4) {
		case 0:
		case 1:
			memset(buf, (int)(x >> 8), len);
			buf[0] = (uint8_t)op;
			if (vdisk_ok(vdisk_pwrite(d, buf, len, off,
			                          (x >> 16) % 5 == 0 ? VDISK_IO_FUA : 0)))
				memcpy(model + off, buf, len);
			else if (!vdisk_ok(vdisk_pread(d, model + off, len, off)))
				/* a write may fail (the container cannot grow) and have
				 * done part of its work: the model takes what is there */
				die("reading after a failed write failed", off);
			break;
		case 2:
			if (vdisk_ok(vdisk_pread(d, buf, len, off)) &&
			    memcmp(buf, model + off, len) != 0)
				die("a read differs from the model", off);
			break;
		default: vdisk_flush_sync(d); break;
		}
	}
	vdisk_unref(d);
	d = vdisk_open(spec, VDISK_OPEN_READ_ONLY);
	if (!d)
		die("the image does not open again after writes", 0);
	for (size_t off = 0; off < mlen; off += 256 * 1024) {
		size_t len = mlen - off < 256 * 1024 ? mlen - off : 256 * 1024;
		if (!vdisk_ok(vdisk_pread(d, buf, len, off)))
			die("reading after reopening failed", off);
		if (memcmp(buf, model + off, len) != 0)
			die("after reopening, the image differs from the model", off);
	}
	char *report = NULL;
	vdisk_check(d, 0, &report);
	free(report);
	vdisk_unref(d);
	free(model);
	free(buf);
out:
	unlink(path);
	rmdir(dir);
	return 0;
}
