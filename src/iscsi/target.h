/* The iSCSI target's internals, shared by the files of src/iscsi.
 *
 * Threads.  The thread in vdisk_iscsi_target_run() accepts connections and
 * starts one thread per connection; that thread owns the connection, its
 * session and a vdisk queue, and runs a poll loop over the socket, the queue's
 * descriptor and the target's stop descriptor.  What is shared between
 * connections lives in the target under t->lock: the nexus table (unit
 * attentions, SPC-2 reservations), the session list (reinstatement) and the
 * persistent-reservation domain.  COMPARE AND WRITE excludes every writer of
 * the target (t->caw_active, t->writers).
 *
 * Memory per connection is bounded: the input buffer holds one PDU of at most
 * ISC_MAX_RECV_DSL data bytes (longer ones end the connection), at most
 * ISC_WINDOW commands are accepted at once (the CmdSN window), and payload
 * buffers in flight are bounded by ISC_MAX_INFLIGHT_BYTES (a command beyond it
 * gets TASK SET FULL).
 */
#ifndef VDISK_ISCSI_TARGET_H
#define VDISK_ISCSI_TARGET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vdisk/iscsi.h"
#include "vdisk/vdisk.h"

#define ISC_EXPORT __attribute__((visibility("default")))
#define ISC_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ISC_BHS 48
#define ISC_MAX_RECV_DSL (256u << 10) /* our MaxRecvDataSegmentLength */
#define ISC_MAX_AHS (255u * 4)
#define ISC_IN_SIZE (ISC_BHS + ISC_MAX_AHS + 8 + ISC_MAX_RECV_DSL + 8)
#define ISC_WINDOW 64           /* commands accepted at once */
#define ISC_MAX_XFER (8u << 20) /* largest data transfer of one command */
#define ISC_MAX_INFLIGHT_BYTES (64u << 20)
#define ISC_MAX_BURST (1u << 20)     /* our MaxBurstLength */
#define ISC_FIRST_BURST (256u << 10) /* our FirstBurstLength */
#define ISC_MAX_R2T 4                /* our MaxOutstandingR2T */
#define ISC_MAX_TEXT (64u << 10)     /* login / text keys kept */
#define ISC_OUTQ 2048                /* PDUs queued for output */
#define ISC_MAX_CAW_BLOCKS 255
#define ISC_MAX_UNMAP_DESC 256
#define ISC_MAX_NEXUS 1024
#define ISC_NOP_INTERVAL_NS (30ull * 1000000000)
#define ISC_SHUTDOWN_GRACE_NS (10ull * 1000000000)
#define ISC_DEFAULT_NAME "iqn.2026-01.org.vdisk:disk"

/* PDU opcodes */
enum {
	OP_NOP_OUT = 0x00,
	OP_SCSI_CMD = 0x01,
	OP_TMF_REQ = 0x02,
	OP_LOGIN_REQ = 0x03,
	OP_TEXT_REQ = 0x04,
	OP_DATA_OUT = 0x05,
	OP_LOGOUT_REQ = 0x06,
	OP_SNACK = 0x10,
	OP_NOP_IN = 0x20,
	OP_SCSI_RSP = 0x21,
	OP_TMF_RSP = 0x22,
	OP_LOGIN_RSP = 0x23,
	OP_TEXT_RSP = 0x24,
	OP_DATA_IN = 0x25,
	OP_LOGOUT_RSP = 0x26,
	OP_R2T = 0x31,
	OP_ASYNC = 0x32,
	OP_REJECT = 0x3f,
};

/* SCSI status and sense keys */
enum {
	ST_GOOD = 0x00,
	ST_CHECK = 0x02,
	ST_CONDITION_MET = 0x04,
	ST_BUSY = 0x08,
	ST_RESERVATION_CONFLICT = 0x18,
	ST_TASK_SET_FULL = 0x28,
	ST_TASK_ABORTED = 0x40,
};
enum {
	SK_NO_SENSE = 0x0,
	SK_NOT_READY = 0x2,
	SK_MEDIUM_ERROR = 0x3,
	SK_HARDWARE_ERROR = 0x4,
	SK_ILLEGAL_REQUEST = 0x5,
	SK_UNIT_ATTENTION = 0x6,
	SK_DATA_PROTECT = 0x7,
	SK_ABORTED_COMMAND = 0xb,
	SK_MISCOMPARE = 0xe,
};
/* ASC << 8 | ASCQ */
enum {
	ASC_NONE = 0x0000,
	ASC_WRITE_ERROR = 0x0c00,
	ASC_GUARD_CHECK = 0x1001,
	ASC_APP_TAG_CHECK = 0x1002,
	ASC_REF_TAG_CHECK = 0x1003,
	ASC_UNRECOVERED_READ = 0x1100,
	ASC_PARAM_LIST_LENGTH = 0x1a00,
	ASC_MISCOMPARE_VERIFY = 0x1d00,
	ASC_INVALID_OPCODE = 0x2000,
	ASC_LBA_OUT_OF_RANGE = 0x2100,
	ASC_INVALID_FIELD_CDB = 0x2400,
	ASC_LUN_NOT_SUPPORTED = 0x2500,
	ASC_INVALID_FIELD_PARAM = 0x2600,
	ASC_INVALID_RELEASE_PR = 0x2604,
	ASC_WRITE_PROTECTED = 0x2700,
	ASC_SPACE_ALLOC_FAILED = 0x2707,
	ASC_POWER_ON_RESET = 0x2900,
	ASC_BUS_DEVICE_RESET = 0x2903,
	ASC_PARAMETERS_CHANGED = 0x2a00,
	ASC_RESERVATIONS_PREEMPTED = 0x2a03,
	ASC_RESERVATIONS_RELEASED = 0x2a04,
	ASC_REGISTRATIONS_PREEMPTED = 0x2a05,
	ASC_CAPACITY_CHANGED = 0x2a09,
	ASC_SAVING_NOT_SUPPORTED = 0x3900,
	ASC_MEDIUM_NOT_PRESENT = 0x3a00,
	ASC_INTERNAL_FAILURE = 0x4400,
	ASC_REMOVAL_PREVENTED = 0x5302,
	ASC_COMMANDS_CLEARED = 0x2f00,
};

/* Unit attention conditions pending for a nexus (bits, reported in this
 * order of precedence). */
enum {
	UA_RESET = 1u << 0,
	UA_REG_PREEMPTED = 1u << 1,
	UA_RES_PREEMPTED = 1u << 2,
	UA_RES_RELEASED = 1u << 3,
	UA_CAPACITY = 1u << 4,
	UA_COMMANDS_CLEARED = 1u << 5,
};

struct isc_target;
struct isc_conn;

/* An I_T nexus: an initiator port (name + ISID) that has logged in.  Kept
 * after its session ends, for its unit attentions; dropped oldest-first when
 * the table is full. */
struct isc_nexus {
	struct isc_nexus *next;
	char *iname;
	uint8_t isid[6];
	uint8_t host_id[16];   /* its host id in the reservation domain */
	_Atomic uint32_t ua;   /* UA_* pending */
	struct isc_conn *conn; /* its live session's connection, or NULL */
	uint64_t last_used;
};

/* ------------------------------------------------------------------------- */
/* Tasks: one SCSI command, NOP ping or text exchange                          */
/* ------------------------------------------------------------------------- */

struct isc_task {
	struct isc_conn *c;
	struct isc_task *next; /* free list or the active list */
	uint32_t itt, cmdsn, edtl;
	uint64_t lun;
	uint8_t cdb[16];
	bool read, write, immediate;
	bool active;         /* in the active list */
	bool aborted;        /* no response is to be sent */
	bool executing;      /* submitted to the disk */
	bool deferred;       /* waiting for COMPARE AND WRITE to finish elsewhere */
	bool counted_writer; /* counted in t->writers */
	int refs;            /* output entries still referring to buf */
	/* payload */
	uint8_t *buf;
	size_t cap; /* bytes allocated at buf */
	uint8_t buf_cls;
	size_t charged; /* counted in c->inflight_bytes */
	/* data-out */
	uint32_t have;     /* bytes of data-out received */
	uint32_t want;     /* bytes of data-out to receive (<= edtl) */
	uint32_t r2t_next; /* offset the next R2T asks for */
	uint32_t r2t_out;  /* R2Ts outstanding */
	uint32_t r2tsn, ttt;
	uint32_t exp_datasn;
	/* the response */
	uint8_t status;
	uint8_t sense_key;
	uint16_t asc;
	bool info_valid;
	uint32_t info;
	uint32_t xfer; /* data-in bytes produced in buf */
	uint32_t datasn;
	/* the operation's progress */
	uint64_t lba;
	uint64_t nblocks;
	uint64_t done_blocks;
	unsigned pending; /* sub-requests in flight */
	vdisk_status first_err;
	int stage;
	unsigned next_ext;
	struct iovec iov;
	unsigned nexts;
	uint64_t expected; /* the command's own transfer size, for residuals */
	bool has_expected;
	/* a TMF waiting for this task to finish */
	struct isc_task *tmf_waiter;
	uint8_t tmf_response;
	unsigned tmf_waiting; /* tasks a TMF task waits for */
	/* last: not cleared when a task is reused */
	struct vdisk_extent ext[64];
};

/* An output PDU: header (with its digest) and an optional data segment. */
struct isc_out {
	uint8_t hdr[ISC_BHS + 4];
	uint8_t hlen;
	uint8_t tail_len; /* pad + data digest */
	uint8_t tail[8];
	const uint8_t *data;
	uint32_t dlen;
	struct isc_task *task; /* reference dropped once sent, or NULL */
};

enum conn_phase {
	PH_LOGIN,
	PH_FULL,
	PH_LOGOUT, /* the logout response is queued: close once it is sent */
};

/* A buffer class cache, per connection. */
#define ISC_BUF_MIN_SHIFT 12
#define ISC_BUF_CLASSES 12 /* 4 KiB .. 8 MiB */
struct isc_bufpool {
	void *free[ISC_BUF_CLASSES];
	size_t cached;
};

struct isc_conn {
	struct isc_target *t;
	struct isc_conn *next, *prev; /* t->conns */
	int in_fd, out_fd;
	bool is_socket;
	pthread_t thread;
	bool detached;
	atomic_bool kill; /* asked to close (reinstatement, stop) */
	char peer[80];
	char local_addr[80]; /* "HOST:PORT" for SendTargets */
	enum conn_phase phase;
	bool closing; /* no more input; finish output */
	bool in_eof;
	bool fatal; /* drop at once */
	uint64_t login_deadline;
	uint64_t last_rx;
	uint32_t nop_ttt;
	bool nop_outstanding;

	/* input */
	uint8_t *in;
	size_t in_len;

	/* output */
	struct isc_out outq[ISC_OUTQ];
	unsigned out_head, out_count;
	size_t out_off; /* bytes of outq[out_head] sent */

	/* negotiated */
	bool hdigest, ddigest;
	bool initial_r2t, immediate_data;
	uint32_t max_send_dsl; /* the initiator's MaxRecvDataSegmentLength */
	uint32_t max_burst, first_burst, max_r2t;
	bool discovery;
	bool authenticated;
	int login_stage;
	bool chap_sent;
	uint8_t chap_id;
	uint8_t chap_challenge[16];
	char *text_acc; /* keys of a login/text request continued over PDUs */
	size_t text_len;
	/* the text reply being sent in pieces */
	char *text_reply;
	size_t text_reply_len, text_reply_off;
	uint32_t text_ttt;

	/* session */
	char *iname;
	uint8_t isid[6];
	uint16_t tsih, cid;
	struct isc_nexus *nexus;
	uint32_t stat_sn, exp_cmdsn;
	unsigned nactive;
	struct isc_task *active;
	struct isc_task *free_tasks;
	unsigned nfree_tasks;
	size_t inflight_bytes;
	struct isc_bufpool pool;
	uint32_t next_ttt;
	uint64_t seen_sectors; /* capacity the initiator was last told of */
	unsigned deferred;     /* tasks waiting on COMPARE AND WRITE */

	/* reservations */
	struct vdisk *pr;  /* this nexus's initiator in the domain, lazily */
	unsigned pr_seq;   /* t->pr_seq this access was computed at */
	uint8_t pr_access; /* PR_ACC_* */
	bool pr_known;

	/* disk */
	struct vdisk_queue *q;
};

enum {
	PR_ACC_READ = 1u << 0,
	PR_ACC_WRITE = 1u << 1,
};

struct isc_chap {
	char *user;
	uint8_t *secret;
	size_t len;
};

struct isc_target {
	struct vdisk *disk;
	char *name;
	bool read_only;
	unsigned max_conns;
	int64_t login_timeout_ns; /* <0: none */
	struct isc_chap *chap;
	unsigned nchap;
	int log_level;
	void (*log)(void *opaque, int level, const char *msg);
	void *log_opaque;

	/* fixed facts of the LUN */
	uint32_t bs;
	unsigned shift;
	uint32_t pbs;
	uint8_t id[16];
	bool fua;
	enum vdisk_unmap_behavior unmap;
	uint32_t opt_unmap;
	unsigned caps;

	/* listeners */
	int lfd;
	char *uri;
	int stop_fd;
	atomic_bool stopping;
	bool running;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct isc_conn *conns;
	unsigned nconns;
	struct isc_nexus *nexus;
	unsigned nnexus;
	uint16_t next_tsih;
	uint64_t use_clock;
	/* SPC-2 RESERVE(6): the holder nexus, or NULL */
	struct isc_nexus *_Atomic spc2_holder;
	atomic_bool ejected;

	/* reservations: a prwrap domain of the target's own */
	char *pr_domain;
	char *pr_state_file;
	struct vdisk *pr_anchor;
	atomic_uint pr_seq;

	/* COMPARE AND WRITE against other writers */
	pthread_mutex_t caw_lock;
	atomic_uint caw_active;
	atomic_uint writers;
};

/* target.c */
void isc_log(struct isc_target *t, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t isc_now_ns(void);
/* Find or make the nexus (t->lock held by the caller). */
struct isc_nexus *isc_nexus_get(struct isc_target *t, const char *iname, const uint8_t isid[6]);
/* Set ua on every nexus but except (NULL: all). */
void isc_ua_all(struct isc_target *t, struct isc_nexus *except, uint32_t ua);
void isc_ua_host(struct isc_target *t, const uint8_t host_id[16], uint32_t ua);
bool isc_nexus_by_host(struct isc_target *t, const uint8_t host_id[16], char *iname, size_t len,
                       uint8_t isid[6]);

/* conn.c */
void isc_conn_serve(struct isc_conn *c);
struct isc_conn *isc_conn_new(struct isc_target *t, int in_fd, int out_fd, const char *peer);
void isc_conn_free(struct isc_conn *c);
void isc_send_pdu(struct isc_conn *c, uint8_t *bhs, const uint8_t *data, uint32_t dlen,
                  struct isc_task *task);
void isc_task_put(struct isc_task *k);
void *isc_buf_get(struct isc_conn *c, size_t len, uint8_t *cls);
void isc_task_finish(struct isc_task *k);
uint32_t isc_max_cmdsn(const struct isc_conn *c);
bool isc_task_buf(struct isc_task *k, size_t len);
void isc_send_copy(struct isc_conn *c, uint8_t *bhs, const void *data, uint32_t dlen);
void isc_fill_sn(struct isc_conn *c, uint8_t *bhs, bool advance);
void isc_send_reject_pub(struct isc_conn *c, const uint8_t *bad, uint8_t reason);

/* login.c */
void isc_login_pdu(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen);
void isc_text_pdu(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen);

/* scsi.c */
/* Execute a command whose data-out (if any) is all in k->buf. */
void isc_scsi_exec(struct isc_task *k);
void isc_task_check(struct isc_task *k, uint8_t key, uint16_t asc);
/* The status of a failed disk operation as sense. */
void isc_task_status(struct isc_task *k, vdisk_status st, bool write);
/* Try deferred (COMPARE AND WRITE-blocked) tasks again. */
void isc_scsi_retry_deferred(struct isc_conn *c);

/* pr.c */
void isc_pr_in(struct isc_task *k);
void isc_pr_out(struct isc_task *k);
/* This nexus's access under the current reservation (PR_ACC_*). */
uint8_t isc_pr_access(struct isc_conn *c);
void isc_pr_close(struct isc_conn *c);
int isc_pr_init(struct isc_target *t);
void isc_pr_fini(struct isc_target *t);

static inline void isc_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void isc_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void isc_put64(uint8_t *p, uint64_t v)
{
	isc_put32(p, (uint32_t)(v >> 32));
	isc_put32(p + 4, (uint32_t)v);
}
static inline uint32_t isc_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t isc_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t isc_get24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}
static inline uint64_t isc_get64(const uint8_t *p)
{
	return (uint64_t)isc_get32(p) << 32 | isc_get32(p + 4);
}
static inline void isc_put24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}
/* Serial number arithmetic (RFC 1982) on 32 bits: a < b */
static inline bool isc_sn_lt(uint32_t a, uint32_t b)
{
	return a != b && (int32_t)(a - b) < 0;
}

#endif
