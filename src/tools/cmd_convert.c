/* vdisk convert SRC DST: copy a disk into another, keeping it sparse. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"
#include "vdisk/backend.h"

static int convert_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_convert = {
    .name = "convert",
    .summary = "copy a disk into another (sparse by default)",
    .usage = "Usage: vdisk convert SRC DST [--format raw|vhd] [--fixed] [--bs SIZE] [--depth N]\n"
             "                    [--no-sparse]\n\n"
             "Copies every byte of SRC into DST.  DST is a spec of an existing disk at least\n"
             "as large as SRC, or a path that does not exist yet, which becomes a new image\n"
             "of SRC's size: a sparse raw file, or with --format vhd a dynamic VHD (a fixed\n"
             "one with --fixed).  Ranges SRC reports as zero, and blocks that read as\n"
             "zeros, are not written to a new file and are written as zeros (deallocating\n"
             "where the disk can) to an existing one.  Ends with a flush of DST.\n\n"
             "  --format F     the format of a new DST: raw (default) or vhd\n"
             "  --fixed        with --format vhd: a fixed VHD\n"
             "  --bs SIZE      copy unit (default 1M)\n"
             "  --depth N      reads in flight, each of --bs (default 8)\n"
             "  --no-sparse    write every block, zeros included\n",
    .main = convert_main,
};

/* The copy is a pipeline of two threads: a reader keeps up to `depth` reads in
 * flight on its own queue, a writer writes what they filled on another.  Two
 * threads writing the same file would only fight over its inode lock. */
enum { SLOT_FREE, SLOT_READING, SLOT_FILLED };

struct slot {
	uint64_t off, len;
	unsigned char *buf;
	int state;
	bool zero; /* the source said the range is zero: nothing was read */
	struct job *j;
	vdisk_status st;
	struct iovec iov;
};

struct job {
	struct vdisk *src, *dst;
	uint64_t size, bs, gran;
	bool sparse, fresh;
	unsigned depth;
	struct slot *slots;
	pthread_mutex_t lock;
	pthread_cond_t filled, freed;
	bool failed, reader_done;
	char err[512];
};

struct sw {
	bool done;
	vdisk_status st;
};
static void sw_done(void *o, vdisk_status st)
{
	struct sw *w = o;
	w->st = st;
	w->done = true;
}

static vdisk_status wait_for(struct vdisk_queue *q, struct sw *w, int rc)
{
	if (rc < 0)
		return vdisk_status_io(-rc);
	while (!w->done)
		vdisk_queue_wait(q, -1);
	return w->st;
}

/* Record the first failure; under j->lock. */
static void fail_locked(struct job *j, const char *what, uint64_t off, vdisk_status st)
{
	char msg[200];
	if (!j->failed)
		snprintf(j->err, sizeof j->err, "%s at byte %" PRIu64 ": %s", what, off,
		         vdisk_status_str(st, msg, sizeof msg));
	j->failed = true;
	pthread_cond_broadcast(&j->filled);
	pthread_cond_broadcast(&j->freed);
}

/* The source's allocation at off: returns the length of the extent that
 * starts there (to the end of the source at most) and whether it reads as
 * zeros.  A failed query says "data" for one block: reading is always right. */
static uint64_t src_extent(struct job *j, struct vdisk_queue *q, uint64_t off, bool *zero)
{
	uint64_t ss = vdisk_sector_size(j->src);
	struct vdisk_extent e;
	unsigned n = 0;
	struct sw w = {0};
	vdisk_status st = wait_for(
	    q, &w, vdisk_extents(q, off / ss, (j->size - off) / ss, &e, 1, &n, sw_done, &w));
	*zero = false;
	if (!vdisk_ok(st) || n != 1 || e.count == 0)
		return j->bs;
	*zero = (e.flags & VDISK_EXTENT_ZERO) != 0;
	return e.count > (j->size - off) / ss ? j->size - off : e.count * ss;
}

static void read_done(void *o, vdisk_status st)
{
	struct slot *s = o;
	struct job *j = s->j;
	pthread_mutex_lock(&j->lock);
	if (!vdisk_ok(st))
		fail_locked(j, "reading", s->off, st);
	s->state = SLOT_FILLED;
	pthread_cond_signal(&j->filled);
	pthread_mutex_unlock(&j->lock);
}

static void *reader(void *arg)
{
	struct job *j = arg;
	struct vdisk_queue *q = vdisk_queue_create(j->src, NULL);
	uint64_t ss = vdisk_sector_size(j->src), off = 0, data_end = 0, zero_end = 0;
	if (!q) {
		pthread_mutex_lock(&j->lock);
		if (!j->failed)
			snprintf(j->err, sizeof j->err, "%s", vdisk_errmsg());
		j->failed = true;
		j->reader_done = true;
		pthread_cond_broadcast(&j->filled);
		pthread_mutex_unlock(&j->lock);
		return NULL;
	}
	for (unsigned next = 0;; next = (next + 1) % j->depth) {
		struct slot *s = &j->slots[next];
		pthread_mutex_lock(&j->lock);
		/* wait until this slot is free, completing reads meanwhile */
		while (s->state != SLOT_FREE && !j->failed) {
			if (vdisk_queue_inflight(q)) {
				pthread_mutex_unlock(&j->lock);
				vdisk_queue_wait(q, 1000000);
				pthread_mutex_lock(&j->lock);
			} else {
				pthread_cond_wait(&j->freed, &j->lock);
			}
		}
		bool stop = j->failed || off >= j->size;
		pthread_mutex_unlock(&j->lock);
		if (stop)
			break;
		/* One slot per zero extent however long (nothing is read), data in
		 * blocks of bs; the source is asked once per extent, not per block. */
		if (j->sparse && off >= data_end) {
			bool zero;
			uint64_t len = src_extent(j, q, off, &zero);
			if (zero)
				zero_end = off + len;
			else
				data_end = off + len;
		}
		s->off = off;
		s->zero = off < zero_end;
		if (s->zero)
			s->len = zero_end - off;
		else
			s->len = j->size - off < j->bs ? j->size - off : j->bs;
		off += s->len;
		if (s->zero) {
			pthread_mutex_lock(&j->lock);
			s->state = SLOT_FILLED;
			pthread_cond_signal(&j->filled);
			pthread_mutex_unlock(&j->lock);
			continue;
		}
		pthread_mutex_lock(&j->lock);
		s->state = SLOT_READING;
		pthread_mutex_unlock(&j->lock);
		s->iov = (struct iovec){s->buf, (size_t)s->len};
		int rc = vdisk_readv(q, s->off / ss, &s->iov, 1, read_done, s);
		if (rc < 0) {
			pthread_mutex_lock(&j->lock);
			fail_locked(j, "reading", s->off, vdisk_status_io(-rc));
			pthread_mutex_unlock(&j->lock);
			break;
		}
	}
	while (vdisk_queue_inflight(q))
		vdisk_queue_wait(q, -1);
	vdisk_queue_destroy(q);
	pthread_mutex_lock(&j->lock);
	j->reader_done = true;
	pthread_cond_broadcast(&j->filled);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* Write one filled slot, skipping (new file) or zeroing (existing disk) the
 * blocks of gran bytes that are all zeros. */
static vdisk_status put(struct job *j, struct vdisk_queue *q, struct slot *s)
{
	uint64_t ss = vdisk_sector_size(j->dst), pos = 0, len = s->len;
	if (s->zero) {
		struct sw w = {0};
		if (j->fresh)
			return vdisk_status_ok();
		return wait_for(q, &w,
		                vdisk_write_zeroes(q, s->off / ss, len / ss, VDISK_ZERO_MAY_UNMAP,
		                                   sw_done, &w));
	}
	while (pos < len) {
		uint64_t n = len - pos < j->gran ? len - pos : j->gran;
		bool zero = j->sparse && vdisk_buf_is_zero(s->buf + pos, (size_t)n);
		uint64_t end = pos + n;
		while (j->sparse && end < len) {
			n = len - end < j->gran ? len - end : j->gran;
			if (vdisk_buf_is_zero(s->buf + end, (size_t)n) != zero)
				break;
			end += n;
		}
		if (!j->sparse)
			end = len;
		struct sw w = {0};
		vdisk_status st = vdisk_status_ok();
		if (!zero) {
			struct iovec iov = {s->buf + pos, (size_t)(end - pos)};
			st = wait_for(
			    q, &w, vdisk_writev(q, (s->off + pos) / ss, &iov, 1, 0, sw_done, &w));
		} else if (!j->fresh) {
			st = wait_for(q, &w,
			              vdisk_write_zeroes(q, (s->off + pos) / ss, (end - pos) / ss,
			                                 VDISK_ZERO_MAY_UNMAP, sw_done, &w));
		}
		if (!vdisk_ok(st))
			return st;
		pos = end;
	}
	return vdisk_status_ok();
}

/* The writer: runs on the calling thread, slots in order. */
static void writer(struct job *j, struct tool_progress *pr)
{
	struct vdisk_queue *q = vdisk_queue_create(j->dst, NULL);
	uint64_t done = 0;
	if (!q) {
		pthread_mutex_lock(&j->lock);
		if (!j->failed)
			snprintf(j->err, sizeof j->err, "%s", vdisk_errmsg());
		j->failed = true;
		pthread_cond_broadcast(&j->freed);
		pthread_mutex_unlock(&j->lock);
		return;
	}
	for (unsigned next = 0;; next = (next + 1) % j->depth) {
		struct slot *s = &j->slots[next];
		pthread_mutex_lock(&j->lock);
		while (s->state != SLOT_FILLED && !j->failed &&
		       !(j->reader_done && s->state == SLOT_FREE))
			pthread_cond_wait(&j->filled, &j->lock);
		bool stop = j->failed || s->state != SLOT_FILLED;
		pthread_mutex_unlock(&j->lock);
		if (stop)
			break;
		vdisk_status st = put(j, q, s);
		pthread_mutex_lock(&j->lock);
		if (!vdisk_ok(st))
			fail_locked(j, "writing", s->off, st);
		s->state = SLOT_FREE;
		pthread_cond_signal(&j->freed);
		pthread_mutex_unlock(&j->lock);
		done += s->len;
		tool_progress_update(pr, done);
	}
	vdisk_queue_destroy(q);
}

static int convert_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"bs", required_argument, NULL, 'b'},  {"depth", required_argument, NULL, 't'},
	    {"no-sparse", no_argument, NULL, 'n'}, {"format", required_argument, NULL, 'F'},
	    {"fixed", no_argument, NULL, 'x'},     {NULL, 0, NULL, 0},
	};
	const struct vdisk_cmd *cmd = &vdisk_cmd_convert;
	uint64_t bs = 1 << 20;
	unsigned depth = 8;
	bool sparse = true, fixed = false;
	const char *format = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'b':
			if (vdisk_parse_size(optarg, &bs) < 0 || bs < 4096 || bs > (256u << 20) ||
			    (bs & (bs - 1)))
				return tool_usage(
				    cmd, "--bs: '%s' is not a power of two in 4k..256M", optarg);
			break;
		case 't':
			depth = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !*optarg || depth < 1 || depth > 256)
				return tool_usage(cmd, "--depth: '%s' is not 1..256", optarg);
			break;
		case 'n': sparse = false; break;
		case 'F':
			if (strcmp(optarg, "raw") != 0 && strcmp(optarg, "vhd") != 0)
				return tool_usage(cmd, "--format: '%s' is not raw or vhd", optarg);
			format = optarg;
			break;
		case 'x': fixed = true; break;
		default: return tool_usage(cmd, "unknown option");
		}
	}
	if (optind != argc - 2)
		return tool_usage(cmd, "expected SRC and DST");
	const char *srcspec = argv[optind], *dstspec = argv[optind + 1];
	bool vhd = format && strcmp(format, "vhd") == 0;
	if (fixed && !vhd)
		return tool_usage(cmd, "--fixed goes with --format vhd");
	struct job j = {.bs = bs, .sparse = sparse, .depth = depth};
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.filled, NULL);
	pthread_cond_init(&j.freed, NULL);
	int rc = EXIT_OK;
	j.src = vdisk_open(srcspec, VDISK_OPEN_READ_ONLY);
	if (!j.src)
		return tool_error("convert", EXIT_FAIL, "%s", vdisk_errmsg());
	j.size = vdisk_sector_count(j.src) * vdisk_sector_size(j.src);

	/* a path that does not exist yet becomes a new sparse raw file; a spec
	 * (JSON, @file, type:...) names an existing disk */
	size_t tl = strspn(dstspec, "abcdefghijklmnopqrstuvwxyz0123456789");
	bool is_spec = dstspec[0] == '{' || dstspec[0] == '@' || (tl && dstspec[tl] == ':');
	if (format && (is_spec || access(dstspec, F_OK) == 0)) {
		rc = tool_error("convert", EXIT_FAIL,
		                "%s: --format makes a new image, and this destination exists",
		                dstspec);
		goto out;
	}
	if (vhd && j.size % 512) {
		rc = tool_error("convert", EXIT_FAIL,
		                "the source size %" PRIu64 " is not a multiple of a VHD's 512-byte "
		                "sectors",
		                j.size);
		goto out;
	}
	if (!is_spec && access(dstspec, F_OK) != 0) {
		json_t *spec = json_pack("{s:s, s:s, s:I}", "type", vhd ? "vhd" : "file", "path",
		                         dstspec, "create", (json_int_t)j.size);
		if (spec && fixed)
			json_object_set_new(spec, "fixed", json_true());
		char *text = json_dumps(spec, JSON_COMPACT);
		json_decref(spec);
		j.dst = text ? vdisk_open(text, 0) : NULL;
		free(text);
		j.fresh = true;
	} else {
		j.dst = vdisk_open(dstspec, 0);
	}
	if (!j.dst) {
		rc = tool_error("convert", EXIT_FAIL, "%s", vdisk_errmsg());
		goto out;
	}
	uint64_t dsize = vdisk_sector_count(j.dst) * vdisk_sector_size(j.dst);
	if (vdisk_read_only(j.dst)) {
		rc = tool_error("convert", EXIT_FAIL, "%s: the destination is read-only", dstspec);
		goto out;
	}
	if (dsize < j.size) {
		rc = tool_error("convert", EXIT_FAIL,
		                "%s: the destination (%" PRIu64
		                " bytes) is smaller than the source (%" PRIu64 " bytes)",
		                dstspec, dsize, j.size);
		goto out;
	}
	if (j.size % vdisk_sector_size(j.dst)) {
		rc = tool_error("convert", EXIT_FAIL,
		                "the source size %" PRIu64
		                " is not a multiple of the destination's %" PRIu32 "-byte sectors",
		                j.size, vdisk_sector_size(j.dst));
		goto out;
	}
	j.gran = vdisk_sector_size(j.dst) > 4096 ? vdisk_sector_size(j.dst) : 4096;
	if (j.bs < vdisk_sector_size(j.src) || j.bs < vdisk_sector_size(j.dst))
		j.bs = vdisk_sector_size(j.src) > vdisk_sector_size(j.dst)
		           ? vdisk_sector_size(j.src)
		           : vdisk_sector_size(j.dst);

	j.slots = calloc(j.depth, sizeof *j.slots);
	for (unsigned i = 0; j.slots && i < j.depth; i++) {
		j.slots[i].j = &j;
		j.slots[i].buf = aligned_alloc(4096, (size_t)j.bs);
		if (!j.slots[i].buf) {
			rc = tool_error("convert", EXIT_FAIL, "out of memory");
			goto out;
		}
	}
	if (!j.slots) {
		rc = tool_error("convert", EXIT_FAIL, "out of memory");
		goto out;
	}
	struct tool_progress pr;
	pthread_t th;
	tool_progress_start(&pr, "convert", j.size);
	if (pthread_create(&th, NULL, reader, &j) != 0) {
		rc = tool_error("convert", EXIT_FAIL, "cannot start a thread");
		goto out;
	}
	writer(&j, &pr);
	pthread_join(th, NULL);
	if (!j.failed)
		tool_progress_end(&pr);
	else if (pr.tty)
		fputc('\n', stderr);
	if (j.failed) {
		rc = tool_error("convert", EXIT_FAIL, "%s", j.err);
		goto out;
	}
	vdisk_status st = vdisk_flush_sync(j.dst);
	if (!vdisk_ok(st)) {
		char msg[200];
		rc = tool_error("convert", EXIT_FAIL, "flushing %s: %s", dstspec,
		                vdisk_status_str(st, msg, sizeof msg));
	}
out:
	for (unsigned i = 0; j.slots && i < j.depth; i++)
		free(j.slots[i].buf);
	free(j.slots);
	if (j.dst)
		vdisk_unref(j.dst);
	vdisk_unref(j.src);
	pthread_mutex_destroy(&j.lock);
	pthread_cond_destroy(&j.filled);
	pthread_cond_destroy(&j.freed);
	return rc;
}
