/* `vdisk`: the command-line front end.  Dispatches to the subcommands listed by
 * the build. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"

#define X(n) extern const struct vdisk_cmd vdisk_cmd_##n;
#include "builtin_cmds.h"
#undef X

static const struct vdisk_cmd *const cmds[] = {
#define X(n) &vdisk_cmd_##n,
#include "builtin_cmds.h"
#undef X
};
#define NCMDS (sizeof cmds / sizeof *cmds)

int tool_error(const char *cmd, int status, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "vdisk %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

int tool_usage(const struct vdisk_cmd *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "vdisk %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vdisk %s --help'.\n", cmd->name);
	return EXIT_USAGE;
}

bool tool_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

const char *tool_human_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	unsigned u = 0;
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

static void print_type(const char *name, const char *desc, void *arg)
{
	fprintf(arg, "  %-10s %s\n", name, desc);
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: vdisk COMMAND [ARGS...]\n\n"
	             "Virtual disks: inspect, serve over NBD, benchmark, convert.\n\nCommands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(out, "  %-10s %s\n", cmds[i]->name, cmds[i]->summary);
	fprintf(out, "\nA SPEC names a disk stack:\n"
	             "  JSON        '{\"type\":\"file\",\"path\":\"d.img\"}'  (or @stack.json)\n"
	             "  shorthand   ram:size=1G   file:path=d.img,read-only=on\n"
	             "  bare path   d.img  (format probed; raw opens as file)\n"
	             "Sizes: 512, 4k, 1M, 2G, 1T.  Durations: 0, 250us, 2ms, 1s.\n\n"
	             "Types:\n");
	vdisk_list_types(print_type, out);
	fprintf(out, "\n'vdisk COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("vdisk %s\n", vdisk_version());
		return EXIT_OK;
	}
	for (size_t i = 0; i < NCMDS; i++) {
		if (strcmp(argv[1], cmds[i]->name) == 0) {
			if (tool_wants_help(argc - 1, argv + 1)) {
				fputs(cmds[i]->usage, stdout);
				return EXIT_OK;
			}
			return cmds[i]->main(argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "vdisk: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
