/* vdisk map SPEC: the allocation of a disk, extent by extent. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"

static int map_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_map = {
    .name = "map",
    .summary = "list a disk's extents: data, zero, hole",
    .usage = "Usage: vdisk map SPEC [--json]\n\n"
             "Prints the disk's allocation as byte ranges, merging neighbours of the same\n"
             "kind: data (allocated), zero (reads as zeros), hole (unallocated).  Disks that\n"
             "cannot tell report everything as data.\n\n"
             "  --json   [{\"offset\":N,\"length\":N,\"zero\":BOOL,\"hole\":BOOL}, ...]\n",
    .main = map_main,
};

static const char *kind(uint32_t f)
{
	if (f & VDISK_EXTENT_HOLE)
		return f & VDISK_EXTENT_ZERO ? "hole,zero" : "hole";
	return f & VDISK_EXTENT_ZERO ? "zero" : "data";
}

static int map_main(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	bool json = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else
			return tool_usage(&vdisk_cmd_map, "unknown option");
	}
	if (optind != argc - 1)
		return tool_usage(&vdisk_cmd_map, "expected one SPEC");
	struct vdisk *d = vdisk_open(argv[optind], VDISK_OPEN_READ_ONLY);
	if (!d)
		return tool_error("map", EXIT_FAIL, "%s", vdisk_errmsg());
	uint64_t count = vdisk_sector_count(d), ss = vdisk_sector_size(d), pos = 0;
	struct vdisk_extent ext[256];
	/* the run being printed: extended while the kind stays the same */
	struct vdisk_extent run = {0};
	bool first = true;
	int rc = EXIT_OK;
	if (json)
		printf("[");
	else
		printf("%20s %20s  %s\n", "Offset", "Length", "Kind");
	while (pos < count) {
		unsigned n = 0;
		vdisk_status st = vdisk_extents_sync(d, pos, count - pos, ext, 256, &n);
		if (!vdisk_ok(st) || n == 0) {
			char sb[200];
			rc = tool_error("map", EXIT_FAIL, "extents at sector %" PRIu64 ": %s", pos,
			                n ? vdisk_status_str(st, sb, sizeof sb) : "no answer");
			break;
		}
		for (unsigned i = 0; i <= n; i++) {
			bool last = i == n;
			if (!last && run.count && ext[i].flags == run.flags) {
				run.count += ext[i].count;
				continue;
			}
			if (last && ext[n - 1].sector + ext[n - 1].count < count)
				break; /* more to come: the run may go on */
			if (run.count) {
				if (json)
					printf("%s\n{\"offset\":%" PRIu64 ",\"length\":%" PRIu64
					       ",\"zero\":%s,\"hole\":%s}",
					       first ? "" : ",", run.sector * ss, run.count * ss,
					       run.flags & VDISK_EXTENT_ZERO ? "true" : "false",
					       run.flags & VDISK_EXTENT_HOLE ? "true" : "false");
				else
					printf("%20" PRIu64 " %20" PRIu64 "  %s\n", run.sector * ss,
					       run.count * ss, kind(run.flags));
				first = false;
			}
			run = last ? (struct vdisk_extent){0} : ext[i];
		}
		pos = ext[n - 1].sector + ext[n - 1].count;
	}
	if (json)
		printf("\n]\n");
	vdisk_unref(d);
	return rc;
}
