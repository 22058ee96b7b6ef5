/* vdisk — an iSCSI target for any disk stack.
 *
 * The target speaks iSCSI (RFC 7143) at error recovery level 0: discovery
 * sessions (SendTargets) and normal sessions, login with parameter negotiation
 * (CRC32C header and data digests, MaxRecvDataSegmentLength, ImmediateData,
 * InitialR2T, FirstBurstLength, MaxBurstLength, MaxOutstandingR2T), optional
 * CHAP, NOP-In/Out, text, logout, task management (ABORT TASK, ABORT TASK SET,
 * LUN RESET, TARGET WARM/COLD RESET) and SCSI commands on one LUN (0) that is
 * the disk, with the SPC-4 / SBC-3 semantics of the disk contract: sense per
 * vdisk error kind, UNMAP and WRITE SAME from the unmap behaviour, COMPARE AND
 * WRITE, persistent reservations with each I_T nexus as an initiator.
 *
 * Built on the public API only.  Every connection is served by a thread of its
 * own that owns one vdisk queue and polls the socket and the queue, so the
 * data path takes no locks; the connection limit bounds the threads.
 *
 * Persistent reservations: the target keeps a prwrap reservation domain of its
 * own for the LUN, and every I_T nexus (initiator name + ISID) is an initiator
 * of that domain, with a host id derived from the nexus.  Two initiators of one
 * target thus see each other's registrations and conflicts as on a shared
 * array.  With pr_state_file the domain persists (APTPL).
 *
 * Threads: a target is driven by one caller thread (vdisk_iscsi_target_run());
 * vdisk_iscsi_target_stop() may be called from any thread and from a signal
 * handler.  Control-path errors return -1 or NULL with vdisk_errmsg() set.
 */
#ifndef VDISK_ISCSI_H
#define VDISK_ISCSI_H

#include <stdbool.h>
#include <stddef.h>

#include "vdisk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Log levels passed to the log callback. */
enum {
	VDISK_ISCSI_LOG_ERROR = 0, /* the target itself failed */
	VDISK_ISCSI_LOG_CLIENT,    /* an initiator broke the protocol or was refused */
	VDISK_ISCSI_LOG_DEBUG,     /* logins, logouts, negotiated parameters */
};

struct vdisk_iscsi_config {
	size_t struct_size;        /* sizeof(struct vdisk_iscsi_config) */
	const char *target_name;   /* the IQN; NULL: "iqn.2026-01.org.vdisk:disk" */
	bool read_only;            /* serve read-only even if the disk is writable */
	unsigned max_connections;  /* at once, logging in or not; 0: 64 */
	int login_timeout_ms;      /* a login must complete within this; 0: 15 s;
	                             negative: no limit */
	const char *chap_file;     /* lines "user:secret": CHAP is then required */
	const char *pr_state_file; /* persist reservations here (APTPL); NULL: none */
	int log_level;             /* messages up to this level are logged */
	/* Receives each log line (no newline); NULL: "vdisk iscsi: ..." on stderr.
	 * Called from the target's threads. */
	void (*log)(void *opaque, int level, const char *msg);
	void *log_opaque;
};

struct vdisk_iscsi_target;

/* Create a target for disk d (a reference is taken).  cfg may be NULL for the
 * defaults.  The CHAP file is read here.  Returns NULL with vdisk_errmsg(). */
struct vdisk_iscsi_target *vdisk_iscsi_target_new(struct vdisk *d,
                                                  const struct vdisk_iscsi_config *cfg);

/* Listen on TCP host:port (port 0 picks a free one).  A host that is not a
 * loopback address is refused unless allow_remote is set.  Returns 0 or -1. */
int vdisk_iscsi_target_listen_tcp(struct vdisk_iscsi_target *t, const char *host, const char *port,
                                  bool allow_remote);

/* "iscsi://HOST:PORT/IQN/0" for the first listener, malloc'd; NULL if none. */
char *vdisk_iscsi_target_uri(struct vdisk_iscsi_target *t);

/* Accept and serve initiators until vdisk_iscsi_target_stop(); then close
 * every connection once its commands in flight have completed, flush the disk
 * and return 0 (or -1 if the flush failed). */
int vdisk_iscsi_target_run(struct vdisk_iscsi_target *t);

/* Serve one connection on fd (a socket, or a regular file read to its end,
 * which is how fuzzers replay a byte stream; responses then go to out_fd) on
 * the calling thread.  The descriptors are not closed.  Returns 0. */
int vdisk_iscsi_target_serve_fds(struct vdisk_iscsi_target *t, int in_fd, int out_fd);

/* Ask run() to finish.  Async-signal-safe. */
void vdisk_iscsi_target_stop(struct vdisk_iscsi_target *t);

/* Free a target that is not running. */
void vdisk_iscsi_target_free(struct vdisk_iscsi_target *t);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_ISCSI_H */
