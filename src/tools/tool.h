/* The `vdisk` command: shared declarations of its subcommands. */
#ifndef VDISK_TOOL_H
#define VDISK_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "vdisk/vdisk.h"

/* Exit statuses of every subcommand. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* A subcommand: each src/tools/cmd_<name>.c defines one, and the build lists
 * them (builtin_cmds.h). */
struct vdisk_cmd {
	const char *name;
	const char *summary;                /* one line for `vdisk --help` */
	const char *usage;                  /* full text for `vdisk NAME --help` */
	int (*main)(int argc, char **argv); /* argv[0] is the subcommand name */
};

/* Print "vdisk NAME: message" to stderr; returns status. */
int tool_error(const char *cmd, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Usage error: message, then a hint to --help; returns EXIT_USAGE. */
int tool_usage(const struct vdisk_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* True if argv has -h or --help. */
bool tool_wants_help(int argc, char **argv);

/* "1.0 GiB" */
const char *tool_human_size(uint64_t bytes, char *buf, size_t len);

/* A progress bar on stderr, drawn only when stderr is a terminal. */
struct tool_progress {
	bool tty;
	uint64_t total;
	uint64_t last_ns;
	int last_pct;
	const char *what;
};
void tool_progress_start(struct tool_progress *p, const char *what, uint64_t total);
void tool_progress_update(struct tool_progress *p, uint64_t done);
void tool_progress_end(struct tool_progress *p);

#endif
