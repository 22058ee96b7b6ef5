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
	.usage = "Usage: vdisk convert SRC DST [--bs SIZE] [--threads N] [--no-sparse]\n\n"
	         "Copies every byte of SRC into DST.  DST is a spec of an existing disk at least\n"
	         "as large as SRC, or a path that does not exist yet, which becomes a new sparse\n"
	         "raw file of SRC's size.  Ranges SRC reports as zero, and blocks that read as\n"
	         "zeros, are not written to a new file and are written as zeros (deallocating\n"
	         "where the disk can) to an existing one.  Ends with a flush of DST.\n\n"
	         "  --bs SIZE      copy unit (default 1M)\n"
	         "  --threads N    copy in N threads, each with its own queues (default 2)\n"
	         "  --no-sparse    write every block, zeros included\n",
	.main = convert_main,
};

struct job {
	struct vdisk *src, *dst;
	uint64_t size, bs, gran;
	bool sparse, fresh;
	atomic_uint_fast64_t next_chunk, done_bytes;
	atomic_bool failed;
	char err[512];
	pthread_mutex_t err_lock;
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

static void fail(struct job *j, const char *what, uint64_t off, vdisk_status st)
{
	char msg[200];
	pthread_mutex_lock(&j->err_lock);
	if (!atomic_exchange(&j->failed, true))
		snprintf(j->err, sizeof j->err, "%s at byte %" PRIu64 ": %s", what, off,
		         vdisk_status_str(st, msg, sizeof msg));
	pthread_mutex_unlock(&j->err_lock);
}

/* Write [off, off+len) of buf to dst, skipping (new file) or zeroing (existing
 * disk) the blocks of gran bytes that are all zeros. */
static vdisk_status put(struct job *j, struct vdisk_queue *q, const unsigned char *buf,
                        uint64_t off, uint64_t len)
{
	uint64_t ss = vdisk_sector_size(j->dst);
	uint64_t pos = 0;
	while (pos < len) {
		bool zero = j->sparse && vdisk_buf_is_zero(buf + pos, (size_t)(len - pos < j->gran ? len - pos : j->gran));
		uint64_t end = pos;
		while (end < len) {
			uint64_t n = len - end < j->gran ? len - end : j->gran;
			if (j->sparse && vdisk_buf_is_zero(buf + end, (size_t)n) != zero)
				break;
			end += n;
		}
		struct sw w = {0};
		vdisk_status st = vdisk_status_ok();
		if (!zero) {
			struct iovec iov = {(void *)(buf + pos), (size_t)(end - pos)};
			st = wait_for(q, &w, vdisk_writev(q, (off + pos) / ss, &iov, 1, 0, sw_done, &w));
		} else if (!j->fresh) {
			st = wait_for(q, &w, vdisk_write_zeroes(q, (off + pos) / ss, (end - pos) / ss,
			                                        VDISK_ZERO_MAY_UNMAP, sw_done, &w));
		}
		if (!vdisk_ok(st))
			return st;
		pos = end;
	}
	return vdisk_status_ok();
}

static bool src_zero(struct job *j, struct vdisk_queue *q, uint64_t off, uint64_t len)
{
	uint64_t ss = vdisk_sector_size(j->src);
	struct vdisk_extent e;
	unsigned n = 0;
	struct sw w = {0};
	vdisk_status st =
	    wait_for(q, &w, vdisk_extents(q, off / ss, len / ss, &e, 1, &n, sw_done, &w));
	return vdisk_ok(st) && n == 1 && (e.flags & VDISK_EXTENT_ZERO) && e.count * ss >= len;
}

static void *worker(void *arg)
{
	struct job *j = arg;
	struct vdisk_queue *qs = vdisk_queue_create(j->src, NULL);
	struct vdisk_queue *qd = vdisk_queue_create(j->dst, NULL);
	unsigned char *buf = aligned_alloc(4096, (size_t)j->bs);
	if (!qs || !qd || !buf) {
		pthread_mutex_lock(&j->err_lock);
		if (!atomic_exchange(&j->failed, true))
			snprintf(j->err, sizeof j->err, "%s", buf ? vdisk_errmsg() : "out of memory");
		pthread_mutex_unlock(&j->err_lock);
		goto out;
	}
	uint64_t sss = vdisk_sector_size(j->src);
	for (;;) {
		uint64_t k = atomic_fetch_add(&j->next_chunk, 1);
		uint64_t off = k * j->bs;
		if (off >= j->size || atomic_load(&j->failed))
			break;
		uint64_t len = j->size - off < j->bs ? j->size - off : j->bs;
		vdisk_status st;
		if (j->sparse && src_zero(j, qs, off, len)) {
			memset(buf, 0, (size_t)len);
			st = put(j, qd, buf, off, len);
		} else {
			struct sw w = {0};
			struct iovec iov = {buf, (size_t)len};
			st = wait_for(qs, &w, vdisk_readv(qs, off / sss, &iov, 1, sw_done, &w));
			if (!vdisk_ok(st)) {
				fail(j, "reading", off, st);
				break;
			}
			st = put(j, qd, buf, off, len);
		}
		if (!vdisk_ok(st)) {
			fail(j, "writing", off, st);
			break;
		}
		atomic_fetch_add(&j->done_bytes, len);
	}
out:
	free(buf);
	if (qs)
		vdisk_queue_destroy(qs);
	if (qd)
		vdisk_queue_destroy(qd);
	return NULL;
}

static int convert_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"bs", required_argument, NULL, 'b'},
		{"threads", required_argument, NULL, 't'},
		{"no-sparse", no_argument, NULL, 'n'},
		{NULL, 0, NULL, 0},
	};
	const struct vdisk_cmd *cmd = &vdisk_cmd_convert;
	uint64_t bs = 1 << 20;
	unsigned threads = 2;
	bool sparse = true;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'b':
			if (vdisk_parse_size(optarg, &bs) < 0 || bs < 4096 || bs > (256u << 20) ||
			    (bs & (bs - 1)))
				return tool_usage(cmd, "--bs: '%s' is not a power of two in 4k..256M", optarg);
			break;
		case 't':
			threads = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !*optarg || threads < 1 || threads > 64)
				return tool_usage(cmd, "--threads: '%s' is not 1..64", optarg);
			break;
		case 'n': sparse = false; break;
		default: return tool_usage(cmd, "unknown option");
		}
	}
	if (optind != argc - 2)
		return tool_usage(cmd, "expected SRC and DST");
	const char *srcspec = argv[optind], *dstspec = argv[optind + 1];
	struct job j = {.bs = bs, .sparse = sparse};
	pthread_mutex_init(&j.err_lock, NULL);
	int rc = EXIT_OK;
	j.src = vdisk_open(srcspec, VDISK_OPEN_READ_ONLY);
	if (!j.src)
		return tool_error("convert", EXIT_FAIL, "%s", vdisk_errmsg());
	j.size = vdisk_sector_count(j.src) * vdisk_sector_size(j.src);

	/* a path that does not exist yet becomes a new sparse raw file; a spec
	 * (JSON, @file, type:...) names an existing disk */
	size_t tl = strspn(dstspec, "abcdefghijklmnopqrstuvwxyz0123456789");
	bool is_spec = dstspec[0] == '{' || dstspec[0] == '@' || (tl && dstspec[tl] == ':');
	if (!is_spec && access(dstspec, F_OK) != 0) {
		json_t *spec = json_pack("{s:s, s:s, s:I}", "type", "file", "path", dstspec, "create",
		                         (json_int_t)j.size);
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
		                "%s: the destination (%" PRIu64 " bytes) is smaller than the source (%" PRIu64
		                " bytes)",
		                dstspec, dsize, j.size);
		goto out;
	}
	if (j.size % vdisk_sector_size(j.dst)) {
		rc = tool_error("convert", EXIT_FAIL,
		                "the source size %" PRIu64 " is not a multiple of the destination's %" PRIu32
		                "-byte sectors",
		                j.size, vdisk_sector_size(j.dst));
		goto out;
	}
	j.gran = vdisk_sector_size(j.dst) > 4096 ? vdisk_sector_size(j.dst) : 4096;
	if (j.bs < vdisk_sector_size(j.src) || j.bs < vdisk_sector_size(j.dst))
		j.bs = vdisk_sector_size(j.src) > vdisk_sector_size(j.dst) ? vdisk_sector_size(j.src)
		                                                            : vdisk_sector_size(j.dst);

	pthread_t th[64];
	unsigned started = 0;
	struct tool_progress pr;
	tool_progress_start(&pr, "convert", j.size);
	for (; started < threads; started++)
		if (pthread_create(&th[started], NULL, worker, &j) != 0)
			break;
	if (!started) {
		rc = tool_error("convert", EXIT_FAIL, "cannot start a thread");
		goto out;
	}
	while (atomic_load(&j.done_bytes) < j.size && !atomic_load(&j.failed)) {
		tool_progress_update(&pr, atomic_load(&j.done_bytes));
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
		/* all workers may have stopped without finishing (a failure) */
		if (atomic_load(&j.next_chunk) * j.bs >= j.size + (uint64_t)started * j.bs)
			break;
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (!atomic_load(&j.failed))
		tool_progress_end(&pr);
	else if (pr.tty)
		fputc('\n', stderr);
	if (atomic_load(&j.failed)) {
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
	if (j.dst)
		vdisk_unref(j.dst);
	vdisk_unref(j.src);
	pthread_mutex_destroy(&j.err_lock);
	return rc;
}
