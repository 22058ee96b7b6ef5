#include "testutil.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char tmpdir[256];

static void rm_tmpdir(void)
{
	char cmd[300];
	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *tu_tmpdir(void)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof tmpdir, "/tmp/vdisk-test.XXXXXX");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(1);
		}
		atexit(rm_tmpdir);
	}
	return tmpdir;
}

char *tu_spec(const char *spec)
{
	const char *t = tu_tmpdir();
	size_t n = 0;
	for (const char *p = spec; (p = strstr(p, "@TMP@")); p += 5)
		n++;
	char *out = malloc(strlen(spec) + n * strlen(t) + 1), *o = out;
	for (const char *p = spec; *p;) {
		if (strncmp(p, "@TMP@", 5) == 0) {
			o = stpcpy(o, t);
			p += 5;
		} else {
			*o++ = *p++;
		}
	}
	*o = '\0';
	return out;
}

struct vdisk *tu_open(const char *spec, unsigned flags)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, flags);
	if (!d) {
		fprintf(stderr, "cannot open '%s': %s\n", s, vdisk_errmsg());
		exit(1);
	}
	free(s);
	return d;
}

void tu_pattern(void *buf, size_t len, uint64_t first_sector, uint32_t ss, uint64_t seed)
{
	unsigned char *b = buf;
	for (size_t off = 0; off < len; off += 8) {
		uint64_t sector = first_sector + off / ss;
		uint64_t x = (sector + 1) * 0x9E3779B97F4A7C15ull ^ (seed + 0x632BE59BD9B4E019ull) ^
		             (off % ss) * 0xD6E8FEB86659FD93ull;
		x ^= x >> 29;
		x *= 0xBF58476D1CE4E5B9ull;
		x ^= x >> 32;
		size_t n = len - off < 8 ? len - off : 8;
		memcpy(b + off, &x, n);
	}
}

void *tu_alloc(size_t len)
{
	void *p = aligned_alloc(4096, (len + 4095) / 4096 * 4096 + 4096);
	if (!p) {
		perror("aligned_alloc");
		exit(1);
	}
	memset(p, 0, (len + 4095) / 4096 * 4096 + 4096);
	return p;
}

struct waiter {
	bool done;
	vdisk_status st;
};

static void done_cb(void *o, vdisk_status st)
{
	struct waiter *w = o;
	w->st = st;
	w->done = true;
}

static vdisk_status finish(struct vdisk_queue *q, struct waiter *w, int rc)
{
	if (rc < 0) {
		fprintf(stderr, "submit failed: %s\n", strerror(-rc));
		vdisk_status st = {VDISK_ERR_IO, 0, 0, -rc};
		return st;
	}
	while (!w->done)
		vdisk_queue_wait(q, -1);
	return w->st;
}

vdisk_status tu_readv(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int n)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_readv(q, sector, iov, n, done_cb, &w));
}

vdisk_status tu_writev(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int n,
                       unsigned flags)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_writev(q, sector, iov, n, flags, done_cb, &w));
}

vdisk_status tu_read(struct vdisk_queue *q, uint64_t sector, void *buf, size_t len)
{
	struct iovec iov = {buf, len};
	return tu_readv(q, sector, &iov, 1);
}

vdisk_status tu_write(struct vdisk_queue *q, uint64_t sector, const void *buf, size_t len,
                      unsigned flags)
{
	struct iovec iov = {(void *)buf, len};
	return tu_writev(q, sector, &iov, 1, flags);
}

vdisk_status tu_flush(struct vdisk_queue *q)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_flush(q, done_cb, &w));
}

vdisk_status tu_unmap(struct vdisk_queue *q, uint64_t sector, uint64_t count)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_unmap(q, sector, count, 0, done_cb, &w));
}

vdisk_status tu_write_zeroes(struct vdisk_queue *q, uint64_t sector, uint64_t count, unsigned flags)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_write_zeroes(q, sector, count, flags, done_cb, &w));
}

vdisk_status tu_extents(struct vdisk_queue *q, uint64_t sector, uint64_t count,
                        struct vdisk_extent *ext, unsigned max, unsigned *n)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_extents(q, sector, count, ext, max, n, done_cb, &w));
}

vdisk_status tu_eject(struct vdisk_queue *q)
{
	struct waiter w = {0};
	return finish(q, &w, vdisk_eject(q, done_cb, &w));
}

const char *tu_st(vdisk_status st)
{
	return vdisk_error_name((enum vdisk_error)st.kind);
}

char *tu_stripe_spec(unsigned n, const char *chunk, const char *member, const char *extra)
{
	size_t cap = 256 + n * (strlen(member) + 16) + (extra ? strlen(extra) : 0);
	char *s = malloc(cap);
	if (!s)
		abort();
	int len = snprintf(s, cap, "{\"type\":\"striped\",\"chunk-size\":\"%s\"%s,\"disks\":[",
	                   chunk, extra ? extra : "");
	for (unsigned i = 0; i < n; i++) {
		len += snprintf(s + len, cap - (size_t)len, "%s", i ? "," : "");
		len += snprintf(s + len, cap - (size_t)len, member, i);
	}
	snprintf(s + len, cap - (size_t)len, "]}");
	return s;
}

struct vdisk *tu_open_stripe(unsigned n, const char *chunk, const char *member)
{
	char *s = tu_stripe_spec(n, chunk, member, NULL);
	struct vdisk *d = tu_open(s, 0);
	free(s);
	return d;
}

unsigned long long tu_vm_size(void)
{
	unsigned long long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmSize:", 7) == 0)
			sscanf(line + 7, "%llu", &kb);
	fclose(f);
	return kb << 10;
}

void tu_flag_cb(void *opaque, vdisk_status st)
{
	struct tu_flag *f = opaque;
	f->calls++;
	f->st = st;
}

bool tu_fd_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}
