/* vdisk info SPEC [--json]: what a disk stack is. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int info_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_info = {
    .name = "info",
    .summary = "show a disk's metadata and its layers",
    .usage = "Usage: vdisk info SPEC [--json] [--read-only]\n\n"
             "Opens SPEC and prints its type, size, sector sizes, disk id, FUA, read-only,\n"
             "unmap behaviour, optimal unmap granularity, persistent-reservation support and\n"
             "every layer with its configuration (secrets redacted), and for an image (vhd)\n"
             "its kind, block size, creator and parent.  A disk that cannot be\n"
             "opened writable is opened read-only.\n\n"
             "  --json        one JSON object: type, sector_count, sector_size,\n"
             "                physical_sector_size, disk_id, fua, read_only, unmap_behavior,\n"
             "                optimal_unmap_sectors, persistent_reservations, layers\n"
             "  --read-only   open read-only from the start\n",
    .main = info_main,
};

static void print_human(json_t *o)
{
	char hs[32];
	uint64_t count = (uint64_t)json_integer_value(json_object_get(o, "sector_count"));
	uint64_t ss = (uint64_t)json_integer_value(json_object_get(o, "sector_size"));
	json_t *id = json_object_get(o, "disk_id");
	printf("type:                    %s\n", json_string_value(json_object_get(o, "type")));
	printf("size:                    %" PRIu64 " bytes (%s), %" PRIu64 " sectors\n", count * ss,
	       tool_human_size(count * ss, hs, sizeof hs), count);
	printf("sector size:             %" PRIu64 " (physical %" JSON_INTEGER_FORMAT ")\n", ss,
	       json_integer_value(json_object_get(o, "physical_sector_size")));
	printf("disk id:                 %s\n",
	       json_is_string(id) ? json_string_value(id) : "none");
	printf("FUA respected:           %s\n",
	       json_is_true(json_object_get(o, "fua")) ? "yes" : "no");
	printf("read-only:               %s\n",
	       json_is_true(json_object_get(o, "read_only")) ? "yes" : "no");
	printf("unmap:                   %s (optimal %" JSON_INTEGER_FORMAT " sectors)\n",
	       json_string_value(json_object_get(o, "unmap_behavior")),
	       json_integer_value(json_object_get(o, "optimal_unmap_sectors")));
	printf("persistent reservations: %s\n",
	       json_is_true(json_object_get(o, "persistent_reservations")) ? "yes" : "no");
	printf("layers:\n");
	size_t i;
	json_t *l;
	json_array_foreach (json_object_get(o, "layers"), i, l) {
		int depth = (int)json_integer_value(json_object_get(l, "depth"));
		const char *path = json_string_value(json_object_get(l, "path"));
		char *cfg = json_dumps(json_object_get(l, "config"), JSON_COMPACT | JSON_SORT_KEYS);
		printf("  %*s%s%s%s %s\n", depth * 2, "", path && *path ? path : "",
		       path && *path ? ": " : "", json_string_value(json_object_get(l, "type")),
		       cfg ? cfg : "");
		free(cfg);
		/* an image format's own description (vhd: kind, block size, creator,
		 * parent) */
		json_t *im = json_object_get(l, "image");
		const char *k;
		json_t *val;
		json_object_foreach (im, k, val) {
			char *t = json_is_string(val) ? NULL : json_dumps(val, JSON_ENCODE_ANY);
			printf("  %*s  %s: %s\n", depth * 2, "", k, t ? t : json_string_value(val));
			free(t);
		}
	}
}

static int info_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"read-only", no_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	bool json = false, ro = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jr", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'r': ro = true; break;
		default: return tool_usage(&vdisk_cmd_info, "unknown option");
		}
	}
	if (optind != argc - 1)
		return tool_usage(&vdisk_cmd_info, "expected one SPEC");
	const char *spec = argv[optind];
	struct vdisk *d = vdisk_open(spec, ro ? VDISK_OPEN_READ_ONLY : 0);
	if (!d && !ro) {
		char first[1024];
		snprintf(first, sizeof first, "%s", vdisk_errmsg());
		d = vdisk_open(spec, VDISK_OPEN_READ_ONLY);
		if (!d)
			return tool_error("info", EXIT_FAIL, "%s", first);
	}
	if (!d)
		return tool_error("info", EXIT_FAIL, "%s", vdisk_errmsg());
	char *s = vdisk_inspect(d, json ? VDISK_INSPECT_PRETTY : 0);
	int rc = EXIT_OK;
	if (!s) {
		rc = tool_error("info", EXIT_FAIL, "%s", vdisk_errmsg());
	} else if (json) {
		puts(s);
	} else {
		json_t *o = json_loads(s, 0, NULL);
		if (o)
			print_human(o);
		json_decref(o);
	}
	free(s);
	vdisk_unref(d);
	return rc;
}
