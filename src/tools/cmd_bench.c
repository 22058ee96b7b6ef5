/* vdisk bench SPEC: a load generator on the public async API, one thread and
 * one queue per --queues, --iodepth requests kept in flight on each.  Latency
 * is measured per request from submit to callback with the TSC. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"
#include "vdisk/backend.h"

static int bench_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_bench = {
    .name = "bench",
    .summary = "measure IOPS, bandwidth and latency of a disk stack",
    .usage = "Usage: vdisk bench SPEC [options]\n\n"
             "  --rw MODE          randread (default), randwrite, read, write, randrw\n"
             "  --bs SIZE          block size (default 4k; a multiple of the sector size)\n"
             "  --iodepth N        requests in flight per queue (default 32)\n"
             "  --queues N         queues, one thread each (default 1)\n"
             "  --runtime SECONDS  measured time (default 5)\n"
             "  --ramp SECONDS     unmeasured warm-up before it (default 0)\n"
             "  --size SIZE        use only the first SIZE bytes of the disk (default: all)\n"
             "  --rwmixread PCT    reads in percent for randrw (default 50)\n"
             "  --seed N           random seed (default 1)\n"
             "  --fill             first write the whole region with random data (1 MiB\n"
             "                     writes), so that reads of a sparse disk read real memory\n"
             "  --json             print JSON: iops, mib_per_s, lat_ns {mean, p50, p99, max},\n"
             "                     per_queue [...]\n\n"
             "Write modes overwrite the disk's data.  Read modes open it read-only.\n",
    .main = bench_main,
};

enum rw { RANDREAD, RANDWRITE, READ, WRITE, RANDRW };
static const char *const rw_names[] = {"randread", "randwrite", "read", "write", "randrw"};

/* Log-linear latency histogram over TSC ticks: 16 sub-buckets per power of two
 * (about 6% resolution). */
#define SUB 16
#define NBUCKETS (64 * SUB)

static unsigned bucket_of(uint64_t v)
{
	if (v < SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	return (e - 3) * SUB + (unsigned)((v >> (e - 4)) & (SUB - 1));
}

static double bucket_mid(unsigned b)
{
	if (b < SUB)
		return b;
	unsigned e = b / SUB + 3, m = b % SUB;
	double lo = ldexp(1.0, (int)e) + (double)m * ldexp(1.0, (int)e - 4);
	return lo + ldexp(1.0, (int)e - 5);
}

struct params {
	const char *spec;
	enum rw rw;
	uint64_t bs, size;
	unsigned iodepth, queues, mixread;
	double runtime, ramp;
	uint64_t seed;
	uint32_t ss;
};

struct bq;
struct io {
	struct bq *bq;
	struct iovec iov;
	uint64_t t0;
};

struct bq {
	const struct params *p;
	struct vdisk *d;
	unsigned index;
	struct vdisk_queue *q;
	struct io *ios;
	unsigned char *bufs;
	uint64_t rng;
	uint64_t seq_next;
	uint64_t nblocks;
	uint64_t ramp_end, deadline;
	unsigned inflight;
	bool stop;
	/* results */
	uint64_t ops, errors, lat_sum, lat_max;
	uint64_t hist[NBUCKETS];
	uint64_t t_start, t_end;
	vdisk_status first_error;
	int submit_error;
	char err[256];
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void io_done(void *opaque, vdisk_status st);

static int submit_one(struct io *io)
{
	struct bq *b = io->bq;
	const struct params *p = b->p;
	uint64_t blk;
	bool write;
	switch (p->rw) {
	case READ:
	case WRITE:
		blk = b->seq_next++;
		if (b->seq_next >= b->nblocks)
			b->seq_next = 0;
		write = p->rw == WRITE;
		break;
	default:
		blk = xorshift(&b->rng) % b->nblocks;
		write = p->rw == RANDWRITE ||
		        (p->rw == RANDRW && xorshift(&b->rng) % 100 >= p->mixread);
	}
	uint64_t sector = blk * (p->bs / p->ss);
	io->t0 = vdisk_ticks();
	int rc = write ? vdisk_writev(b->q, sector, &io->iov, 1, 0, io_done, io)
	               : vdisk_readv(b->q, sector, &io->iov, 1, io_done, io);
	if (rc == 0)
		b->inflight++;
	else
		b->submit_error = rc;
	return rc;
}

static void io_done(void *opaque, vdisk_status st)
{
	struct io *io = opaque;
	struct bq *b = io->bq;
	uint64_t now = vdisk_ticks();
	b->inflight--;
	if (!vdisk_ok(st)) {
		if (!b->errors++)
			b->first_error = st;
		b->stop = true;
	}
	if (now >= b->ramp_end && io->t0 >= b->ramp_end) {
		uint64_t lat = now - io->t0;
		b->ops++;
		b->lat_sum += lat;
		if (lat > b->lat_max)
			b->lat_max = lat;
		b->hist[bucket_of(lat)]++;
	}
	if (now < b->deadline && !b->stop)
		submit_one(io);
}

static void *bq_main(void *arg)
{
	struct bq *b = arg;
	const struct params *p = b->p;
	b->q = vdisk_queue_create(b->d, NULL);
	if (!b->q) {
		snprintf(b->err, sizeof b->err, "%s", vdisk_errmsg());
		return NULL;
	}
	b->ios = calloc(p->iodepth, sizeof *b->ios);
	b->bufs = aligned_alloc(4096, (size_t)p->bs * p->iodepth);
	if (!b->ios || !b->bufs) {
		snprintf(b->err, sizeof b->err, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < (size_t)p->bs * p->iodepth; i++)
		b->bufs[i] = (unsigned char)xorshift(&b->rng);
	/* sequential queues start at evenly spaced places */
	b->seq_next = b->nblocks / p->queues * b->index;
	double tpn = vdisk_ticks_per_ns();
	uint64_t now = vdisk_ticks();
	b->ramp_end = now + (uint64_t)(p->ramp * 1e9 * tpn);
	b->deadline = b->ramp_end + (uint64_t)(p->runtime * 1e9 * tpn);
	for (unsigned i = 0; i < p->iodepth; i++) {
		b->ios[i].bq = b;
		b->ios[i].iov.iov_base = b->bufs + (size_t)i * p->bs;
		b->ios[i].iov.iov_len = p->bs;
		if (submit_one(&b->ios[i]) < 0)
			break;
	}
	while (b->inflight) {
		int rc = vdisk_queue_wait(b->q, 100 * 1000 * 1000);
		if (rc < 0 && rc != -EINTR) {
			snprintf(b->err, sizeof b->err, "vdisk_queue_wait: %s", strerror(-rc));
			break;
		}
	}
	b->t_start = b->ramp_end;
	b->t_end = vdisk_ticks();
out:
	if (!b->inflight)
		vdisk_queue_destroy(b->q);
	free(b->ios);
	free(b->bufs);
	return NULL;
}

struct summary {
	double iops, mibs, mean, p50, p99, max;
	uint64_t ops;
};

static double percentile(const uint64_t *hist, uint64_t total, double pct, double tpn)
{
	uint64_t want = (uint64_t)ceil((double)total * pct / 100.0), seen = 0;
	if (!want)
		want = 1;
	for (unsigned i = 0; i < NBUCKETS; i++) {
		seen += hist[i];
		if (seen >= want)
			return bucket_mid(i) / tpn;
	}
	return 0;
}

static void summarize(const struct params *p, const uint64_t *hist, uint64_t ops, uint64_t lat_sum,
                      uint64_t lat_max, double seconds, struct summary *s)
{
	double tpn = vdisk_ticks_per_ns();
	s->ops = ops;
	s->iops = seconds > 0 ? (double)ops / seconds : 0;
	s->mibs = s->iops * (double)p->bs / (1024.0 * 1024.0);
	s->mean = ops ? (double)lat_sum / (double)ops / tpn : 0;
	s->p50 = ops ? percentile(hist, ops, 50, tpn) : 0;
	s->p99 = ops ? percentile(hist, ops, 99, tpn) : 0;
	s->max = (double)lat_max / tpn;
}

static json_t *summary_json(const struct summary *s)
{
	return json_pack("{s:f, s:f, s:I, s:{s:f, s:f, s:f, s:f}}", "iops", s->iops, "mib_per_s",
	                 s->mibs, "ops", (json_int_t)s->ops, "lat_ns", "mean", s->mean, "p50",
	                 s->p50, "p99", s->p99, "max", s->max);
}

static const char *fmt_ns(double ns, char *buf, size_t len)
{
	if (ns < 1000)
		snprintf(buf, len, "%.0fns", ns);
	else if (ns < 1e6)
		snprintf(buf, len, "%.1fus", ns / 1e3);
	else
		snprintf(buf, len, "%.2fms", ns / 1e6);
	return buf;
}

static int parse_uint(const char *s, unsigned *out, unsigned min, unsigned max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || !*s || v < min || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (*end || !*s || !(v >= 0) || v > 86400)
		return -1;
	*out = v;
	return 0;
}

static int bench_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"rw", required_argument, NULL, 'w'},      {"bs", required_argument, NULL, 'b'},
	    {"iodepth", required_argument, NULL, 'd'}, {"queues", required_argument, NULL, 'q'},
	    {"runtime", required_argument, NULL, 't'}, {"ramp", required_argument, NULL, 'R'},
	    {"size", required_argument, NULL, 's'},    {"rwmixread", required_argument, NULL, 'm'},
	    {"seed", required_argument, NULL, 'S'},    {"json", no_argument, NULL, 'j'},
	    {"fill", no_argument, NULL, 'F'},          {NULL, 0, NULL, 0},
	};
	const struct vdisk_cmd *cmd = &vdisk_cmd_bench;
	struct params p = {.rw = RANDREAD,
	                   .bs = 4096,
	                   .iodepth = 32,
	                   .queues = 1,
	                   .mixread = 50,
	                   .runtime = 5,
	                   .seed = 1};
	bool json = false, fill = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'w': {
			bool found = false;
			for (unsigned i = 0; i < 5; i++)
				if (strcmp(optarg, rw_names[i]) == 0) {
					p.rw = (enum rw)i;
					found = true;
				}
			if (!found)
				return tool_usage(
				    cmd,
				    "--rw: '%s' is not one of randread, randwrite, read, "
				    "write, randrw",
				    optarg);
			break;
		}
		case 'b':
			errno = 0;
			if (vdisk_parse_size(optarg, &p.bs) < 0 || p.bs == 0 || p.bs > (64u << 20))
				return tool_usage(cmd, "--bs: '%s' is not a size up to 64M",
				                  optarg);
			break;
		case 'd':
			if (parse_uint(optarg, &p.iodepth, 1, 65536) < 0)
				return tool_usage(cmd, "--iodepth: '%s' is not 1..65536", optarg);
			break;
		case 'q':
			if (parse_uint(optarg, &p.queues, 1, 256) < 0)
				return tool_usage(cmd, "--queues: '%s' is not 1..256", optarg);
			break;
		case 't':
			if (parse_seconds(optarg, &p.runtime) < 0 || p.runtime == 0)
				return tool_usage(cmd, "--runtime: '%s' is not a number of seconds",
				                  optarg);
			break;
		case 'R':
			if (parse_seconds(optarg, &p.ramp) < 0)
				return tool_usage(cmd, "--ramp: '%s' is not a number of seconds",
				                  optarg);
			break;
		case 's':
			errno = 0;
			if (vdisk_parse_size(optarg, &p.size) < 0 || p.size == 0)
				return tool_usage(cmd, "--size: '%s' is %s", optarg,
				                  errno == ERANGE ? "too large" : "not a size");
			break;
		case 'm':
			if (parse_uint(optarg, &p.mixread, 0, 100) < 0)
				return tool_usage(cmd, "--rwmixread: '%s' is not 0..100", optarg);
			break;
		case 'S': {
			char *end;
			p.seed = strtoull(optarg, &end, 0);
			if (*end || !*optarg)
				return tool_usage(cmd, "--seed: '%s' is not a number", optarg);
			break;
		}
		case 'j': json = true; break;
		case 'F': fill = true; break;
		default: return tool_usage(cmd, "unknown option");
		}
	}
	if (optind != argc - 1)
		return tool_usage(cmd, "expected one SPEC");
	p.spec = argv[optind];

	bool reads_only = (p.rw == RANDREAD || p.rw == READ) && !fill;
	struct vdisk *d = vdisk_open(p.spec, reads_only ? VDISK_OPEN_READ_ONLY : 0);
	if (!d)
		return tool_error("bench", EXIT_FAIL, "%s", vdisk_errmsg());
	p.ss = vdisk_sector_size(d);
	uint64_t disk_bytes = vdisk_sector_count(d) * p.ss;
	int rc = EXIT_OK;
	if (p.size > disk_bytes) {
		rc = tool_usage(cmd,
		                "--size: %" PRIu64 " is larger than the disk (%" PRIu64 " bytes)",
		                p.size, disk_bytes);
		goto out_disk;
	}
	if (!p.size)
		p.size = disk_bytes;
	if (p.bs % p.ss) {
		rc = tool_usage(cmd,
		                "--bs: %" PRIu64 " is not a multiple of the sector size %" PRIu32,
		                p.bs, p.ss);
		goto out_disk;
	}
	if (p.bs > p.size) {
		rc =
		    tool_usage(cmd, "--bs: %" PRIu64 " is larger than the disk (%" PRIu64 " bytes)",
		               p.bs, p.size);
		goto out_disk;
	}
	if (!reads_only && vdisk_read_only(d)) {
		rc = tool_error("bench", EXIT_FAIL, "--rw %s%s: the disk is read-only",
		                rw_names[p.rw], fill ? " --fill" : "");
		goto out_disk;
	}
	if (fill) {
		size_t chunk = 1 << 20;
		unsigned char *buf = aligned_alloc(4096, chunk);
		uint64_t rng = p.seed * 0x9E3779B97F4A7C15ull | 1;
		if (!buf) {
			rc = tool_error("bench", EXIT_FAIL, "out of memory");
			goto out_disk;
		}
		for (uint64_t off = 0; off < p.size; off += chunk) {
			size_t n = p.size - off < chunk ? (size_t)(p.size - off) : chunk;
			for (size_t i = 0; i < n; i += 8) {
				uint64_t x = xorshift(&rng);
				memcpy(buf + i, &x, 8);
			}
			vdisk_status st = vdisk_pwrite(d, buf, n, off, 0);
			if (!vdisk_ok(st)) {
				char sb[256];
				rc =
				    tool_error("bench", EXIT_FAIL, "--fill at byte %" PRIu64 ": %s",
				               off, vdisk_status_str(st, sb, sizeof sb));
				free(buf);
				goto out_disk;
			}
		}
		free(buf);
	}

	struct bq *bqs = calloc(p.queues, sizeof *bqs);
	pthread_t *th = calloc(p.queues, sizeof *th);
	if (!bqs || !th) {
		rc = tool_error("bench", EXIT_FAIL, "out of memory");
		goto out_mem;
	}
	for (unsigned i = 0; i < p.queues; i++) {
		bqs[i].p = &p;
		bqs[i].d = d;
		bqs[i].index = i;
		bqs[i].rng = (p.seed + i) * 0x9E3779B97F4A7C15ull | 1;
		bqs[i].nblocks = p.size / p.bs;
		if (pthread_create(&th[i], NULL, bq_main, &bqs[i]) != 0) {
			rc = tool_error("bench", EXIT_FAIL, "cannot start thread %u", i);
			p.queues = i;
			break;
		}
	}
	for (unsigned i = 0; i < p.queues; i++)
		pthread_join(th[i], NULL);

	uint64_t ops = 0, lat_sum = 0, lat_max = 0, errors = 0;
	uint64_t *hist = calloc(NBUCKETS, sizeof *hist);
	double seconds = 0;
	double tpn = vdisk_ticks_per_ns();
	json_t *per = json_array();
	struct summary s;
	for (unsigned i = 0; i < p.queues; i++) {
		struct bq *b = &bqs[i];
		if (b->err[0]) {
			rc = tool_error("bench", EXIT_FAIL, "queue %u: %s", i, b->err);
			continue;
		}
		if (b->errors) {
			char sb[256];
			rc = tool_error("bench", EXIT_FAIL,
			                "queue %u: %" PRIu64 " I/O errors, first: %s", i, b->errors,
			                vdisk_status_str(b->first_error, sb, sizeof sb));
		}
		if (b->submit_error)
			rc = tool_error("bench", EXIT_FAIL, "queue %u: submit failed: %s", i,
			                strerror(-b->submit_error));
		double secs = (double)(b->t_end - b->t_start) / tpn / 1e9;
		if (secs > seconds)
			seconds = secs;
		summarize(&p, b->hist, b->ops, b->lat_sum, b->lat_max, secs, &s);
		json_array_append_new(per, summary_json(&s));
		ops += b->ops;
		lat_sum += b->lat_sum;
		errors += b->errors;
		if (b->lat_max > lat_max)
			lat_max = b->lat_max;
		for (unsigned k = 0; k < NBUCKETS; k++)
			hist[k] += b->hist[k];
	}
	summarize(&p, hist, ops, lat_sum, lat_max, seconds, &s);
	if (json) {
		json_t *o = summary_json(&s);
		json_object_set_new(o, "spec", json_string(p.spec));
		json_object_set_new(o, "type", json_string(vdisk_type(d)));
		json_object_set_new(o, "rw", json_string(rw_names[p.rw]));
		json_object_set_new(o, "bs", json_integer((json_int_t)p.bs));
		json_object_set_new(o, "iodepth", json_integer(p.iodepth));
		json_object_set_new(o, "queues", json_integer(p.queues));
		json_object_set_new(o, "runtime_s", json_real(seconds));
		json_object_set_new(o, "errors", json_integer((json_int_t)errors));
		json_object_set_new(o, "per_queue", per);
		per = NULL;
		char *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (out)
			puts(out);
		free(out);
		json_decref(o);
	} else {
		char a[32], b2[32], c2[32], d2[32];
		printf("%s bs=%" PRIu64 " iodepth=%u queues=%u on %s: %.0f IOPS, %.1f MiB/s\n"
		       "  latency mean %s  p50 %s  p99 %s  max %s  (%" PRIu64 " ops in %.2f s)\n",
		       rw_names[p.rw], p.bs, p.iodepth, p.queues, vdisk_type(d), s.iops, s.mibs,
		       fmt_ns(s.mean, a, sizeof a), fmt_ns(s.p50, b2, sizeof b2),
		       fmt_ns(s.p99, c2, sizeof c2), fmt_ns(s.max, d2, sizeof d2), ops, seconds);
		/* each queue's share when there are several */
		size_t i;
		json_t *q;
		json_array_foreach (p.queues > 1 ? per : NULL, i, q) {
			json_t *l = json_object_get(q, "lat_ns");
			printf(
			    "  queue %zu: %.0f IOPS, %.1f MiB/s, latency mean %s  p50 %s  p99 %s  "
			    "max %s\n",
			    i, json_real_value(json_object_get(q, "iops")),
			    json_real_value(json_object_get(q, "mib_per_s")),
			    fmt_ns(json_real_value(json_object_get(l, "mean")), a, sizeof a),
			    fmt_ns(json_real_value(json_object_get(l, "p50")), b2, sizeof b2),
			    fmt_ns(json_real_value(json_object_get(l, "p99")), c2, sizeof c2),
			    fmt_ns(json_real_value(json_object_get(l, "max")), d2, sizeof d2));
		}
	}
	json_decref(per);
	free(hist);
out_mem:
	free(bqs);
	free(th);
out_disk:
	vdisk_unref(d);
	return rc;
}
