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
    .usage = "Usage: vdisk create FORMAT PATH SIZE [options]\n"
             "       vdisk create vhd PATH [SIZE] --parent PARENT\n"
             "       vdisk create vhd PATH --fixed --adopt\n"
             "       vdisk create TYPE:KEY=VALUE,... SIZE\n\n"
             "Creates PATH as an empty image of SIZE bytes (512, 4k, 1M, 2G, 1T...).  An\n"
             "existing PATH is never overwritten.  The last form creates the disk a\n"
             "shorthand spec names, for types that take create=SIZE (rbd:pool=P,image=I).\n\n"
             "Formats:\n"
             "  raw   a sparse file: allocates nothing until written\n"
             "        --sector-size 512|4096\n"
             "  vhd   a VHD image, dynamic unless --fixed (at most 2040 GiB)\n"
             "        --fixed            the data at offset 0 of a file of SIZE + 512\n"
             "        --block-size SIZE  a dynamic image's block (default 2M)\n"
             "        --parent PARENT    a differencing image over PARENT (a path, or a\n"
             "                           spec), of PARENT's size\n"
             "        --fixed --adopt    turn the existing raw file PATH into a fixed VHD\n"
             "                           in place: appends a footer, moves no data\n",
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
	                                     {"fixed", no_argument, NULL, 'f'},
	                                     {"block-size", required_argument, NULL, 'b'},
	                                     {"parent", required_argument, NULL, 'p'},
	                                     {"adopt", no_argument, NULL, 'a'},
	                                     {NULL, 0, NULL, 0}};
	const struct vdisk_cmd *cmd = &vdisk_cmd_create;
	uint64_t ss = 512, size = 0, bs = 0;
	bool fixed = false, adopt = false, have_ss = false;
	const char *parent = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (vdisk_parse_size(optarg, &ss) < 0 || (ss != 512 && ss != 4096))
				return tool_usage(cmd, "--sector-size: '%s' is not 512 or 4096",
				                  optarg);
			have_ss = true;
			break;
		case 'b':
			if (vdisk_parse_size(optarg, &bs) < 0 || bs < 512 || (bs & (bs - 1)))
				return tool_usage(cmd, "--block-size: '%s' is not a power of two",
				                  optarg);
			break;
		case 'f': fixed = true; break;
		case 'a': adopt = true; break;
		case 'p': parent = optarg; break;
		default: return tool_usage(cmd, "unknown option");
		}
	}
	if (optind == argc - 2 && strchr(argv[optind], ':') && argv[optind][0] != '{')
		return create_spec(cmd, argv[optind], argv[optind + 1], ss);
	int nargs = argc - optind;
	if (nargs < 2)
		return tool_usage(cmd, "expected FORMAT PATH SIZE");
	const char *fmt = argv[optind], *path = argv[optind + 1];
	const char *sz = nargs > 2 ? argv[optind + 2] : NULL;
	bool vhd = strcmp(fmt, "vhd") == 0 || strcmp(fmt, "vhd1") == 0;
	if (strcmp(fmt, "raw") != 0 && !vhd)
		return tool_usage(cmd, "unknown format '%s' (known: raw, vhd)", fmt);
	if (nargs > 3)
		return tool_usage(cmd, "expected FORMAT PATH SIZE");
	if (!vhd && (fixed || adopt || parent || bs))
		return tool_usage(cmd, "--fixed, --adopt, --parent and --block-size are for vhd");
	if (vhd && have_ss)
		return tool_usage(cmd, "--sector-size: a VHD has 512-byte sectors");
	if (adopt && (!fixed || parent || sz || bs))
		return tool_usage(cmd, "--adopt goes with --fixed alone and no SIZE");
	if (parent && (fixed || bs))
		return tool_usage(cmd, "--parent: a differencing image is dynamic, of its parent's "
		                       "block size rules (no --fixed)");
	if (fixed && bs)
		return tool_usage(cmd, "--block-size: a fixed image has no blocks");
	if (!sz && !adopt && !parent)
		return tool_usage(cmd, "expected FORMAT PATH SIZE");
	if (sz && (vdisk_parse_size(sz, &size) < 0 || size == 0))
		return tool_usage(cmd, "'%s' is not a size", sz);
	if (sz && size % (vhd ? 512 : ss))
		return tool_usage(cmd,
		                  "size %" PRIu64 " is not a multiple of the sector size %" PRIu64,
		                  size, vhd ? 512 : ss);
	if (!adopt && access(path, F_OK) == 0)
		return tool_error("create", EXIT_FAIL, "'%s' exists; refusing to overwrite it",
		                  path);
	json_t *spec;
	if (!vhd) {
		spec = json_pack("{s:s, s:s, s:I, s:I}", "type", "file", "path", path, "create",
		                 (json_int_t)size, "sector-size", (json_int_t)ss);
	} else {
		spec = json_pack("{s:s, s:s}", "type", "vhd", "path", path);
		if (adopt) {
			json_object_set_new(spec, "adopt", json_true());
		} else if (size) {
			json_object_set_new(spec, "create", json_integer((json_int_t)size));
		} else {
			json_object_set_new(spec, "create", json_true());
		}
		if (fixed)
			json_object_set_new(spec, "fixed", json_true());
		if (bs)
			json_object_set_new(spec, "block-size", json_integer((json_int_t)bs));
		if (parent) {
			/* a path names a VHD parent (its type is recorded, not probed) */
			size_t tl = strspn(parent, "abcdefghijklmnopqrstuvwxyz0123456789");
			bool is_spec =
			    parent[0] == '{' || parent[0] == '@' || (tl && parent[tl] == ':');
			json_object_set_new(
			    spec, "parent",
			    is_spec ? json_string(parent)
			            : json_pack("{s:s, s:s}", "type", "vhd", "path", parent));
		}
	}
	char *text = json_dumps(spec, JSON_COMPACT);
	json_decref(spec);
	struct vdisk *d = text ? vdisk_open(text, 0) : NULL;
	free(text);
	if (!d)
		return tool_error("create", EXIT_FAIL, "%s", vdisk_errmsg());
	vdisk_unref(d);
	return EXIT_OK;
}
