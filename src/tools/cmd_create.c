/* vdisk create FORMAT PATH SIZE: a new, empty image. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"
#include "vdisk/backend.h"

static int create_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_create = {
    .name = "create",
    .summary = "create a new, empty image",
    .usage = "Usage: vdisk create FORMAT PATH SIZE [--sector-size 512|4096]\n"
             "       vdisk create TYPE:KEY=VALUE,... SIZE\n\n"
             "Creates PATH as an empty image of SIZE bytes (512, 4k, 1M, 2G, 1T...).  An\n"
             "existing PATH is never overwritten.  The second form creates the disk a\n"
             "shorthand spec names, for types that take create=SIZE (rbd:pool=P,image=I).\n\n"
             "Formats:\n"
             "  raw   a sparse file: allocates nothing until written\n",
    .main = create_main,
};

/* vdisk create TYPE:... SIZE: open the spec with create=SIZE; a disk that was
 * there already (its top layer's inspect says created: false) is refused. */
static int create_spec(const struct vdisk_cmd *cmd, const char *spec, const char *sz, uint64_t ss)
{
	uint64_t size;
	if (vdisk_parse_size(sz, &size) < 0 || size == 0)
		return tool_usage(cmd, "'%s' is not a size", sz);
	char *text = NULL;
	if (asprintf(&text, "%s,create=%s%s", spec, sz, ss != 512 ? ",sector-size=4096" : "") < 0)
		return tool_error("create", EXIT_FAIL, "out of memory");
	struct vdisk *d = vdisk_open(text, 0);
	free(text);
	if (!d)
		return tool_error("create", EXIT_FAIL, "%s", vdisk_errmsg());
	char *info = vdisk_inspect(d, 0);
	json_t *j = info ? json_loads(info, 0, NULL) : NULL;
	json_t *created =
	    json_object_get(json_array_get(json_object_get(j, "layers"), 0), "created");
	int rc = EXIT_OK;
	if (json_is_false(created))
		rc = tool_error("create", EXIT_FAIL, "'%s' exists; refusing to overwrite it", spec);
	json_decref(j);
	free(info);
	vdisk_unref(d);
	return rc;
}

static int create_main(int argc, char **argv)
{
	static const struct option opts[] = {{"sector-size", required_argument, NULL, 's'},
	                                     {NULL, 0, NULL, 0}};
	const struct vdisk_cmd *cmd = &vdisk_cmd_create;
	uint64_t ss = 512, size;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 's' || vdisk_parse_size(optarg, &ss) < 0 || (ss != 512 && ss != 4096))
			return tool_usage(cmd,
			                  c == 's' ? "--sector-size: '%s' is not 512 or 4096"
			                           : "unknown option%s",
			                  c == 's' ? optarg : "");
	}
	if (optind == argc - 2 && strchr(argv[optind], ':') && argv[optind][0] != '{')
		return create_spec(cmd, argv[optind], argv[optind + 1], ss);
	if (optind != argc - 3)
		return tool_usage(cmd, "expected FORMAT PATH SIZE");
	const char *fmt = argv[optind], *path = argv[optind + 1], *sz = argv[optind + 2];
	if (strcmp(fmt, "raw") != 0)
		return tool_usage(cmd, "unknown format '%s' (known: raw)", fmt);
	if (vdisk_parse_size(sz, &size) < 0 || size == 0)
		return tool_usage(cmd, "'%s' is not a size", sz);
	if (size % ss)
		return tool_usage(cmd,
		                  "size %" PRIu64 " is not a multiple of the sector size %" PRIu64,
		                  size, ss);
	if (access(path, F_OK) == 0)
		return tool_error("create", EXIT_FAIL, "'%s' exists; refusing to overwrite it",
		                  path);
	json_t *spec = json_pack("{s:s, s:s, s:I, s:I}", "type", "file", "path", path, "create",
	                         (json_int_t)size, "sector-size", (json_int_t)ss);
	char *text = json_dumps(spec, JSON_COMPACT);
	json_decref(spec);
	struct vdisk *d = text ? vdisk_open(text, 0) : NULL;
	free(text);
	if (!d)
		return tool_error("create", EXIT_FAIL, "%s", vdisk_errmsg());
	vdisk_unref(d);
	return EXIT_OK;
}
