/* vdisk — an NBD server for any disk stack.
 *
 * The server speaks the fixed-newstyle NBD protocol (NetworkBlockDevice/nbd
 * doc/proto.md): option haggling with NBD_OPT_GO / INFO / EXPORT_NAME / LIST /
 * ABORT / STRUCTURED_REPLY / LIST_META_CONTEXT / SET_META_CONTEXT
 * ("base:allocation") / STARTTLS, and in transmission READ, WRITE (+FUA),
 * FLUSH, TRIM, WRITE_ZEROES (+NO_HOLE, +FAST_ZERO), BLOCK_STATUS, CACHE and
 * DISC, with many requests in flight per connection answered out of order.
 * Clients that ask for no block sizes may send requests of any alignment
 * (read-modify-write of partial sectors, serialised by range locks across
 * connections); zeros in large structured reads go out as holes.
 *
 * It is built on the public API of <vdisk/vdisk.h> only: every worker thread
 * owns one vdisk queue and the connections given to it, so the data path takes
 * no locks.  A server serves one disk under one export name.
 *
 * Threads: a server is driven by one caller thread (vdisk_nbd_server_run() or
 * vdisk_nbd_server_serve_fds()); vdisk_nbd_server_stop() may be called from any
 * thread and from a signal handler.  Errors on the control path return -1 or
 * NULL with vdisk_errmsg() set.
 *
 * The server writes to sockets with MSG_NOSIGNAL; a caller that serves pipes
 * (vdisk_nbd_server_serve_fds() on a pipe) should ignore SIGPIPE.
 */
#ifndef VDISK_NBD_H
#define VDISK_NBD_H

#include <stdbool.h>
#include <stddef.h>

#include "vdisk.h"

#ifdef __cplusplus
extern "C" {
#endif

enum vdisk_nbd_tls {
	VDISK_NBD_TLS_OFF = 0, /* STARTTLS is refused */
	VDISK_NBD_TLS_ON,      /* STARTTLS is offered; plain clients are served too */
	VDISK_NBD_TLS_REQUIRE, /* every option but STARTTLS and ABORT needs TLS first */
};

/* Log levels passed to the log callback. */
enum {
	VDISK_NBD_LOG_ERROR = 0, /* the server itself failed (accept, I/O setup) */
	VDISK_NBD_LOG_CLIENT,    /* a client broke the protocol or was refused */
	VDISK_NBD_LOG_DEBUG,     /* connects, disconnects, negotiated options */
};

struct vdisk_nbd_config {
	size_t struct_size;       /* sizeof(struct vdisk_nbd_config) */
	const char *export_name;  /* NULL or "": the default export */
	const char *description;  /* NBD_INFO_DESCRIPTION; NULL: none */
	bool read_only;           /* export read-only even if the disk is writable */
	unsigned threads;         /* worker threads; 0: one per online CPU */
	unsigned max_connections; /* connections at once, negotiating or not; 0: 100 */
	int handshake_timeout_ms; /* a client must finish negotiating within this;
	                             0: 10 s; negative: no limit */
	enum vdisk_nbd_tls tls;
	const char *tls_cert;     /* PEM certificate (chain) file */
	const char *tls_key;      /* PEM private key file */
	const char *tls_psk_file; /* lines "identity:hex-key" (the psktool format) */
	int log_level;            /* messages up to this level are logged */
	/* Receives each log line (no newline); NULL: "vdisk nbd: ..." on stderr.
	 * Called from the server's threads. */
	void (*log)(void *opaque, int level, const char *msg);
	void *log_opaque;
	/* Members below were added later; a struct_size that ends before one
	 * leaves it at its default. */
	size_t max_payload;       /* largest read or write in bytes, advertised as the
	                             maximum block size; 0: 64 MiB; at most 256 MiB */
	bool once;                /* stop when the last client disconnects (after one came) */
	bool tls_verify_peer;     /* X.509: a client must present a certificate that
	                             a CA of tls_ca signed, or the handshake fails */
	const char *tls_ca;       /* PEM file of the CA certificates for tls_verify_peer */
	const char *tls_cert_dir; /* a directory laid out as qemu's tls-creds-x509 and
	                             nbdkit's --tls-certificates: server-cert.pem,
	                             server-key.pem, and ca-cert.pem (the CA for
	                             tls_verify_peer); instead of tls_cert and tls_key */
	const char *tls_allow;    /* NULL, or an fnmatch(3) pattern that a client's
	                             certificate subject (RFC 2253: "CN=alice,O=Example",
	                             with tls_verify_peer) or PSK identity must match */
};

struct vdisk_nbd_server;

/* Create a server for disk d (a reference is taken).  cfg may be NULL for the
 * defaults.  TLS files are loaded here, so a bad certificate fails now.
 * Returns NULL with vdisk_errmsg() set. */
struct vdisk_nbd_server *vdisk_nbd_server_new(struct vdisk *d, const struct vdisk_nbd_config *cfg);

/* Listen on a Unix socket at path (a stale socket file there is replaced; one
 * with a live server behind it is an error).  The file is removed when the
 * server is freed.  Returns 0 or -1. */
int vdisk_nbd_server_listen_unix(struct vdisk_nbd_server *s, const char *path);

/* Listen on TCP host:port (port 0 picks a free one).  A host that is not a
 * loopback address is refused unless allow_remote is set.  Returns 0 or -1. */
int vdisk_nbd_server_listen_tcp(struct vdisk_nbd_server *s, const char *host, const char *port,
                                bool allow_remote);

/* Listen on a socket the caller already bound and set listening (systemd
 * socket activation, inetd-style supervisors); the server takes ownership of
 * fd.  Returns 0 or -1. */
int vdisk_nbd_server_listen_fd(struct vdisk_nbd_server *s, int fd);

/* The NBD URI of the first listener ("nbd+unix:///NAME?socket=PATH",
 * "nbd://HOST:PORT/NAME", nbds... with TLS), malloc'd; NULL if none. */
char *vdisk_nbd_server_uri(struct vdisk_nbd_server *s);

/* Accept and serve clients on the listeners until vdisk_nbd_server_stop().
 * Then stop accepting, close negotiating clients, let every connection finish
 * the requests it has sent and receive their replies, flush the disk and
 * return 0 (or -1 if the flush failed). */
int vdisk_nbd_server_run(struct vdisk_nbd_server *s);

/* Serve exactly one client that talks on in_fd and listens on out_fd (the
 * same socket twice, a pair of pipes, or stdin/stdout), on the calling thread.
 * Returns when the client disconnects or the server is stopped: 0, or -1 if
 * the disk could not be flushed.  The descriptors are not closed.  Regular
 * files work too (read to their end), which is how fuzzers replay a byte
 * stream. */
int vdisk_nbd_server_serve_fds(struct vdisk_nbd_server *s, int in_fd, int out_fd);

/* Ask run() / serve_fds() to finish.  Async-signal-safe. */
void vdisk_nbd_server_stop(struct vdisk_nbd_server *s);

/* Free a server that is not running; removes its Unix socket files. */
void vdisk_nbd_server_free(struct vdisk_nbd_server *s);

#ifdef __cplusplus
}
#endif

#endif /* VDISK_NBD_H */
