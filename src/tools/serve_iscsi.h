/* `vdisk serve --iscsi`: the hooks cmd_serve.c calls (serve_iscsi.c). */
#ifndef VDISK_SERVE_ISCSI_H
#define VDISK_SERVE_ISCSI_H

#include <stdbool.h>

#include "tool.h"

/* Take --iscsi HOST:PORT, --target-name IQN, --iscsi-chap-file FILE,
 * --iscsi-pr-state FILE, --iscsi-max-connections N and --iscsi-login-timeout S
 * out of argv.  Returns 0, or an exit status after printing the error. */
int serve_iscsi_args(const struct vdisk_cmd *cmd, int *argc, char **argv);
/* Whether --iscsi was given. */
bool serve_iscsi_wanted(void);
/* Serve d over iSCSI alone on this thread until SIGINT/SIGTERM; returns the
 * exit status. */
int serve_iscsi_only(struct vdisk *d, bool read_only, int log_level, const char *pid_file);
/* Start the target on a thread of its own beside the NBD server (prints its
 * URI); returns 0, or -1 after printing the error. */
int serve_iscsi_start(struct vdisk *d, bool read_only, int log_level);
/* Stop a target started by serve_iscsi_start() (nothing if none); returns 0
 * or -1 if its final flush failed. */
int serve_iscsi_stop(void);

#endif
