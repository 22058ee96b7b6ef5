/* vdisk check SPEC [--read] [--json]: look for damage in a disk stack. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int check_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_check = {
    .name = "check",
    .summary = "look for damage in a disk stack (read-only)",
    .usage = "Usage: vdisk check SPEC [--read] [--json]\n\n"
             "Opens SPEC read-only and lets every layer that can check its own state do so:\n"
             "a file still has the size it had at open and is still the file its path names;\n"
             "a SQLite layer passes SQLite's integrity check, and every stored sector has the\n"
             "layer's sector size and lies inside it.  Nothing is written.\n\n"
             "  --read   also read every allocated sector; unreadable ranges are problems,\n"
             "           found to the sector\n"
             "  --json   one JSON object: problems (layer, type, message; offset and length\n"
             "           for unreadable ranges), problems_total, layers, layers_checked,\n"
             "           bytes_read\n\n"
             "Exit status: 0 no problem found, 1 problems found or the check failed, 2 usage.\n",
    .main = check_main,
};

static int check_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"read", no_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	bool json = false;
	unsigned flags = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jr", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'r': flags |= VDISK_CHECK_READ; break;
		default: return tool_usage(&vdisk_cmd_check, "unknown option");
		}
	}
	if (optind != argc - 1)
		return tool_usage(&vdisk_cmd_check, "expected one SPEC");
	struct vdisk *d = vdisk_open(argv[optind], VDISK_OPEN_READ_ONLY);
	if (!d)
		return tool_error("check", EXIT_FAIL, "%s", vdisk_errmsg());
	char *s = NULL;
	int n = vdisk_check(d, flags, &s);
	vdisk_unref(d);
	if (n < 0)
		return tool_error("check", EXIT_FAIL, "%s", vdisk_errmsg());
	if (json) {
		puts(s);
		free(s);
		return n ? EXIT_FAIL : EXIT_OK;
	}
	json_t *o = json_loads(s, 0, NULL);
	free(s);
	if (!o)
		return tool_error("check", EXIT_FAIL, "out of memory");
	size_t i;
	json_t *p;
	json_array_foreach (json_object_get(o, "problems"), i, p) {
		const char *layer = json_string_value(json_object_get(p, "layer"));
		printf("%s (%s): %s\n", layer && *layer ? layer : "top",
		       json_string_value(json_object_get(p, "type")),
		       json_string_value(json_object_get(p, "message")));
	}
	json_int_t total = json_integer_value(json_object_get(o, "problems_total"));
	if ((size_t)total > json_array_size(json_object_get(o, "problems")))
		printf("... and %" JSON_INTEGER_FORMAT " more\n",
		       total - (json_int_t)json_array_size(json_object_get(o, "problems")));
	char hs[32];
	printf("%s: %" JSON_INTEGER_FORMAT " layer(s), %" JSON_INTEGER_FORMAT
	       " with checks of their own",
	       total ? "problems found" : "no problem found",
	       json_integer_value(json_object_get(o, "layers")),
	       json_integer_value(json_object_get(o, "layers_checked")));
	if (flags & VDISK_CHECK_READ)
		printf(", %s read", tool_human_size((uint64_t)json_integer_value(
		                                        json_object_get(o, "bytes_read")),
		                                    hs, sizeof hs));
	printf("\n");
	json_decref(o);
	return n ? EXIT_FAIL : EXIT_OK;
}
