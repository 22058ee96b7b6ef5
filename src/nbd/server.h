/* The NBD server's internals, shared by the files of src/nbd.
 *
 * Threads.  The acceptor (the thread in vdisk_nbd_server_run()) hands each new
 * connection to the worker with the fewest; from then on the connection lives on
 * that worker alone: negotiation, transmission, TLS, its requests on the
 * worker's vdisk queue and their completions.  Nothing on the data path is
 * shared between threads, so nothing there is locked.
 *
 * A connection is a non-blocking state machine fed by the worker's epoll loop:
 * bytes read go into conn->in, are parsed as far as they are complete, and
 * what the parser decides (option replies, vdisk requests) is queued; replies
 * are gathered into one writev/sendmsg per connection and loop iteration.
 *
 * Memory per connection is bounded: the input buffer is fixed, an option is
 * buffered only up to NBD_MAX_OPTION (longer ones are skipped and refused), and
 * requests stop being read while more than NBD_MAX_INFLIGHT requests or
 * NBD_MAX_INFLIGHT_BYTES (or one maximum payload, if larger) of buffers are
 * in flight (which includes replies the client has not read yet). */
#ifndef VDISK_NBD_SERVER_H
#define VDISK_NBD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

#include "nbd/proto.h"
#include "vdisk/nbd.h"
#include "vdisk/vdisk.h"

#define NBD_EXPORT __attribute__((visibility("default")))
#define NBD_LIKELY(x) __builtin_expect(!!(x), 1)
#define NBD_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define NBD_DEFAULT_PAYLOAD (64u << 20) /* advertised maximum; reads and writes */
#define NBD_PAYLOAD_LIMIT (256u << 20)  /* the most --max-payload may ask for */
#define NBD_MAX_OPTION (64u << 10)      /* longest option kept in memory */
#define NBD_IN_SIZE (NBD_MAX_OPTION + (64u << 10))
#define NBD_MAX_INFLIGHT 256
#define NBD_MAX_INFLIGHT_BYTES (64u << 20) /* or the maximum payload, if larger */
#define NBD_MAX_EXTENTS 1024               /* descriptors in one block-status reply */
#define NBD_CACHE_CHUNK (1u << 20)         /* NBD_CMD_CACHE reads this much at a time */
#define NBD_SPARSE_READ_MIN (64u << 10)    /* smaller reads send their zeros */
#define NBD_ZERO_GRAIN 4096u               /* zeros found in reads, in these blocks */
#define NBD_READ_RUNS 8                    /* extents a sparse read looks at */
#define NBD_TLS_BUF (64u << 10)
#define NBD_META_ALLOC_ID 1                        /* our id for base:allocation */
#define NBD_SHUTDOWN_GRACE_NS (10ull * 1000000000) /* for clients that stop reading */

struct nbd_server;
struct nbd_worker;
struct nbd_conn;

/* ------------------------------------------------------------------------- */
/* Buffers: page-aligned, power-of-two classes from 4 KiB, cached per worker.  */
/* ------------------------------------------------------------------------- */

#define NBD_BUF_MIN_SHIFT 12
#define NBD_BUF_CLASSES 18 /* 4 KiB .. 512 MiB: a maximum payload and its partial sectors */
#define NBD_BUF_CACHE_MAX (64u << 20)

struct nbd_bufpool {
	void *free[NBD_BUF_CLASSES];
	size_t cached;
};

void *nbd_buf_get(struct nbd_bufpool *p, size_t len, uint8_t *cls);
void nbd_buf_put(struct nbd_bufpool *p, void *buf, uint8_t cls);
void nbd_bufpool_fini(struct nbd_bufpool *p);

/* ------------------------------------------------------------------------- */
/* Range locks between requests that change the disk (rlock.c)                 */
/* ------------------------------------------------------------------------- */

struct nbd_rlock {
	struct nbd_rlock *prev, *next; /* the worker's or the server's list */
	struct nbd_rlock *ready_next;  /* on the owner's ready list */
	uint64_t start, end;           /* sectors [start, end) */
	struct nbd_worker *w;          /* the owner: go() runs on its thread */
	void (*go)(struct nbd_rlock *l);
	bool rmw;       /* a read-modify-write: exclusive */
	bool global;    /* on the server's list */
	bool waiting;   /* blocked; go() will be called */
	bool waited_on; /* a waiter saw it: its release wakes the waiters */
};

/* Take l (start, end, rmw and go set) for a request of worker w: true if it
 * is held now, false if l->go(l) will run on w's thread once it is. */
bool nbd_rlock_acquire(struct nbd_worker *w, struct nbd_rlock *l);
void nbd_rlock_release(struct nbd_worker *w, struct nbd_rlock *l);
/* Resume the requests of w whose locks were granted by other releases. */
void nbd_rlock_run_ready(struct nbd_worker *w);

/* ------------------------------------------------------------------------- */
/* Requests of the transmission phase                                          */
/* ------------------------------------------------------------------------- */

struct nbd_req {
	struct nbd_conn *conn;
	struct nbd_req *next; /* free list, or the connection's reply queue */
	uint64_t cookie;
	uint64_t offset;
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint8_t buf_cls;
	bool flush_after;       /* FUA the disk does not honour: flush, then reply */
	unsigned char *data;    /* payload buffer (read data, write data, extents) */
	unsigned char *payload; /* where a write's payload is received: data + head */
	uint32_t head;          /* offset's distance from its sector's start */
	bool locked;            /* holds lk */
	uint8_t step;           /* read-modify-write, sparse read: the step under way */
	uint8_t scratch_cls;
	unsigned pending;       /* disk requests of this step still out */
	vdisk_status rmw_st;    /* the first failure of the step */
	unsigned char *scratch; /* read-modify-write: the partial sectors */
	struct nbd_rlock lk;
	uint64_t done;     /* CACHE: bytes read so far */
	unsigned next_ext; /* extents returned */
	/* the reply: hdr (and payload) as iovecs; a sparse read's chunks */
	struct iovec iov[2 * NBD_READ_RUNS + 2];
	int iovcnt;
	size_t charged; /* bytes counted in conn->inflight_bytes */
	unsigned char hdr[96];
	/* a sparse read: its extents, then its runs of data and holes (bytes) */
	struct vdisk_extent ext[NBD_READ_RUNS + 1];
	unsigned char chdr[NBD_READ_RUNS + 1][NBD_CHUNK_SIZE + 12];
};

/* ------------------------------------------------------------------------- */
/* Connections                                                                 */
/* ------------------------------------------------------------------------- */

enum conn_state {
	CS_CLIENT_FLAGS,  /* greeting sent, waiting for the client's flags */
	CS_OPTIONS,       /* option haggling */
	CS_OPT_DISCARD,   /* skipping the body of an option too long to keep */
	CS_TLS_HANDSHAKE, /* after STARTTLS's ACK */
	CS_TRANSMISSION,
	CS_CLOSING, /* no more input; finishing requests and output */
	CS_DEAD,    /* the transport failed; waiting only for requests */
};

/* A growable byte buffer for negotiation output. */
struct nbd_obuf {
	unsigned char *p;
	size_t len, cap, off;
};

struct nbd_conn {
	struct nbd_worker *w;
	struct nbd_server *srv;
	struct nbd_conn *next, *prev; /* the worker's connections */
	struct nbd_conn *dirty_next;  /* the worker's "output to send" list */
	bool dirty;
	enum conn_state state;
	int in_fd, out_fd;
	bool is_socket;
	bool in_poll, out_poll;     /* pollable (else: always ready) */
	uint32_t in_mask, out_mask; /* events registered with epoll, 0: none */
	bool want_out;              /* output is waiting for the socket */
	bool stalled;               /* input stopped for back-pressure */
	bool resume_input;          /* read again once the worker flushes */
	bool tls_read_blocked;      /* SSL_read needs the socket writable first */
	bool in_eof;
	bool closed_fds;
	char peer[80];
	uint64_t deadline_ns; /* handshake or shutdown deadline, 0: none */

	/* input: in[in_start, in_end) is unparsed */
	unsigned char *in;
	size_t in_start, in_end;
	uint64_t discard;     /* bytes of input to drop (oversized option/write) */
	uint32_t discard_opt; /* the option being discarded, for its reply */
	struct nbd_req *rx;   /* a write whose payload is still arriving */
	uint32_t rx_have;

	/* output */
	struct nbd_obuf ctl; /* negotiation replies */
	struct nbd_req *out_head, **out_tail;
	size_t out_off; /* bytes of out_head already sent */

	/* negotiation state */
	bool fixed, no_zeroes, structured, meta_alloc, tls_active;
	bool strict;            /* asked for the block sizes: requests must be aligned to them */
	bool sparse_hint;       /* the last large read met zeros: ask for extents first */
	bool abort_after_flush; /* NBD_OPT_ABORT, EXPORT_NAME refusal, DISC */
	bool starttls_pending;  /* begin TLS once the ACK is out */

	/* transmission */
	uint64_t export_size;
	uint16_t eflags;
	unsigned inflight;
	size_t inflight_bytes;
	struct nbd_req *free_reqs;
	unsigned nfree_reqs;

	/* TLS: SSL reads and writes the internal side of a BIO pair; the network
	 * side is moved to and from the socket by conn.c */
	SSL *ssl;
	BIO *net_bio;
	unsigned psk_id;          /* 1 + the index of the PSK the client used; 0: none */
	unsigned char *tls_stage; /* plaintext gathered for one SSL_write */
	size_t tls_stage_len;
};

/* ------------------------------------------------------------------------- */
/* Workers and the server                                                      */
/* ------------------------------------------------------------------------- */

struct nbd_worker {
	struct nbd_server *srv;
	unsigned index;
	pthread_t thread;
	bool started;
	int epfd;
	int wake_fd; /* eventfd: new connections, stop */
	struct vdisk_queue *q;
	int qfd;
	struct nbd_bufpool pool;
	struct nbd_conn *conns;
	struct nbd_conn *dirty;
	unsigned nalways;     /* connections with a non-pollable descriptor */
	atomic_uint load;     /* connections owned, for the acceptor's choice */
	pthread_mutex_t lock; /* protects incoming */
	struct nbd_conn *incoming;
	bool draining;
	bool exit_when_idle;        /* serve_fds: return when the last connection goes */
	bool reap_pending;          /* a connection may have finished */
	uint64_t next_check;        /* when to look at deadlines next */
	pthread_mutex_t rl_lock;    /* protects rl_list */
	struct nbd_rlock *rl_list;  /* aligned writes in flight (rlock.c) */
	struct nbd_rlock *rl_ready; /* granted locks to resume; under lock */
};

struct nbd_listener {
	int fd;
	bool is_unix;
	char *path; /* Unix socket path, removed on free */
	char *uri;
};

struct nbd_server {
	struct vdisk *disk;
	char *export_name;
	char *description;
	bool read_only;
	unsigned nthreads;
	unsigned max_conns;
	int64_t handshake_timeout_ns; /* <0: none */
	enum vdisk_nbd_tls tls;
	SSL_CTX *tls_ctx;
	struct nbd_psk *psks;
	unsigned npsks;
	char *tls_allow; /* fnmatch pattern for the peer's subject or PSK identity */
	int log_level;
	void (*log)(void *opaque, int level, const char *msg);
	void *log_opaque;

	/* fixed facts of the export */
	uint32_t min_block, pref_block, max_payload;
	size_t max_inflight_bytes; /* per connection, before its input stops */
	unsigned shift;
	bool once;       /* stop when nconns falls to 0 */
	uint16_t eflags; /* without NBD_FLAG_SEND_DF, which depends on the client */
	bool emulate_fua;
	bool sparse_reads; /* the disk knows its extents: reads may send holes */

	struct nbd_listener *listeners;
	unsigned nlisteners;
	struct nbd_worker *workers;
	unsigned nworkers;
	atomic_uint nconns;
	atomic_bool stopping;
	int stop_fd; /* eventfd */
	bool running;

	/* range locks (rlock.c) */
	pthread_mutex_t rl_lock;
	struct nbd_rlock *rl_head, *rl_tail; /* oldest first */
	atomic_uint rl_rmw;                  /* read-modify-writes on that list */
};

/* server.c */
void nbd_log(struct nbd_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t nbd_now_ns(void);

/* conn.c: the transport and the connection's life */
struct nbd_conn *nbd_conn_new(struct nbd_worker *w, int in_fd, int out_fd, const char *peer);
void nbd_conn_attach(struct nbd_worker *w, struct nbd_conn *c);
void nbd_conn_on_input(struct nbd_conn *c);
void nbd_conn_on_output(struct nbd_conn *c);
void nbd_conn_mark_dirty(struct nbd_conn *c);
void nbd_conn_flush(struct nbd_conn *c);
size_t nbd_conn_gather(struct nbd_conn *c, unsigned char *dst, size_t max);
void nbd_conn_close(struct nbd_conn *c, const char *why);
void nbd_conn_fail(struct nbd_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool nbd_conn_reap(struct nbd_conn *c);
void nbd_conn_update_poll(struct nbd_conn *c);
void nbd_conn_begin_drain(struct nbd_conn *c);
bool nbd_conn_wants_input(const struct nbd_conn *c);
int nbd_obuf_reserve(struct nbd_obuf *b, size_t more);

/* handshake.c: the greeting and option haggling */
void nbd_hs_start(struct nbd_conn *c);
/* Parse buffered input; returns false when the connection must close. */
bool nbd_hs_parse(struct nbd_conn *c);

/* transmit.c: requests and replies */
/* May another request be read?  (The in-flight bound on a connection.) */
static inline bool nbd_tx_room(const struct nbd_conn *c)
{
	return c->inflight < NBD_MAX_INFLIGHT && c->inflight_bytes < c->srv->max_inflight_bytes;
}
bool nbd_tx_parse(struct nbd_conn *c);
void nbd_tx_payload_done(struct nbd_conn *c);
void nbd_req_free(struct nbd_conn *c, struct nbd_req *r);
void nbd_conn_free_reqs(struct nbd_conn *c);

#endif
