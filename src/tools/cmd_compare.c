/* vdisk compare A B: are two disks' contents the same? */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"
#include "vdisk/backend.h"

static int compare_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_compare = {
    .name = "compare",
    .summary = "compare the contents of two disks",
    .usage = "Usage: vdisk compare A B [--quiet]\n\n"
             "Compares the bytes of two disk stacks (any formats, any sector sizes).  Ranges\n"
             "that both disks report as zero are not read.  Exit status 0 if the contents\n"
             "are identical, 1 if they differ (the first differing byte offset is printed)\n"
             "or on failure, 2 on a usage error.  Disks of different sizes differ.\n",
    .main = compare_main,
};

#define CHUNK (4u << 20)

/* Is [off, off+len) of d all zero by its extents?  false when unsure. */
static bool zero_by_extents(struct vdisk *d, uint64_t off, uint64_t len)
{
	uint64_t ss = vdisk_sector_size(d);
	struct vdisk_extent e[1];
	unsigned n = 0;
	if (off % ss || len % ss)
		return false;
	vdisk_status st = vdisk_extents_sync(d, off / ss, len / ss, e, 1, &n);
	return vdisk_ok(st) && n == 1 && (e[0].flags & VDISK_EXTENT_ZERO) && e[0].count * ss >= len;
}

static int compare_main(int argc, char **argv)
{
	static const struct option opts[] = {{"quiet", no_argument, NULL, 'q'}, {NULL, 0, NULL, 0}};
	bool quiet = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
		if (c == 'q')
			quiet = true;
		else
			return tool_usage(&vdisk_cmd_compare, "unknown option");
	}
	if (optind != argc - 2)
		return tool_usage(&vdisk_cmd_compare, "expected two SPECs");
	struct vdisk *a = vdisk_open(argv[optind], VDISK_OPEN_READ_ONLY);
	if (!a)
		return tool_error("compare", EXIT_FAIL, "%s", vdisk_errmsg());
	struct vdisk *b = vdisk_open(argv[optind + 1], VDISK_OPEN_READ_ONLY);
	if (!b) {
		vdisk_unref(a);
		return tool_error("compare", EXIT_FAIL, "%s", vdisk_errmsg());
	}
	uint64_t sa = vdisk_sector_count(a) * vdisk_sector_size(a);
	uint64_t sb = vdisk_sector_count(b) * vdisk_sector_size(b);
	uint64_t common = sa < sb ? sa : sb;
	unsigned char *x = aligned_alloc(4096, CHUNK), *y = aligned_alloc(4096, CHUNK);
	int rc = EXIT_OK;
	struct tool_progress pr;
	if (!x || !y) {
		rc = tool_error("compare", EXIT_FAIL, "out of memory");
		goto out;
	}
	tool_progress_start(&pr, "compare", common);
	for (uint64_t off = 0; off < common; off += CHUNK) {
		uint64_t len = common - off < CHUNK ? common - off : CHUNK;
		tool_progress_update(&pr, off);
		if (zero_by_extents(a, off, len) && zero_by_extents(b, off, len))
			continue;
		vdisk_status st = vdisk_pread(a, x, len, off);
		if (vdisk_ok(st))
			st = vdisk_pread(b, y, len, off);
		if (!vdisk_ok(st)) {
			char msg[200];
			rc = tool_error("compare", EXIT_FAIL, "reading at byte %" PRIu64 ": %s",
			                off, vdisk_status_str(st, msg, sizeof msg));
			goto out_progress;
		}
		if (memcmp(x, y, len) != 0) {
			uint64_t i = 0;
			while (x[i] == y[i])
				i++;
			if (!quiet)
				printf("Content mismatch at offset %" PRIu64 "\n", off + i);
			rc = EXIT_FAIL;
			goto out_progress;
		}
	}
	if (sa != sb) {
		if (!quiet)
			printf("Sizes differ: %" PRIu64 " and %" PRIu64 " bytes (the first %" PRIu64
			       " are identical)\n",
			       sa, sb, common);
		rc = EXIT_FAIL;
	} else if (!quiet) {
		printf("Images are identical.\n");
	}
out_progress:
	tool_progress_end(&pr);
out:
	free(x);
	free(y);
	vdisk_unref(a);
	vdisk_unref(b);
	return rc;
}
