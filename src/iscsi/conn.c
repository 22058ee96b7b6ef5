/* A connection: the transport, PDU framing, the full-feature phase (commands,
 * data-out and R2T, responses and data-in, NOP, task management, logout). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "iscsi/target.h"
#include "vdisk/backend.h"

/* ------------------------------------------------------------------------- */
/* Buffers and tasks                                                           */
/* ------------------------------------------------------------------------- */

#define POOL_CACHE_MAX (32u << 20)

void *isc_buf_get(struct isc_conn *c, size_t len, uint8_t *cls)
{
	unsigned k = 0;
	while (((size_t)1 << (ISC_BUF_MIN_SHIFT + k)) < len)
		k++;
	if (k >= ISC_BUF_CLASSES)
		return NULL;
	*cls = (uint8_t)k;
	void *p = c->pool.free[k];
	if (p) {
		c->pool.free[k] = *(void **)p;
		c->pool.cached -= (size_t)1 << (ISC_BUF_MIN_SHIFT + k);
		return p;
	}
	if (posix_memalign(&p, 4096, (size_t)1 << (ISC_BUF_MIN_SHIFT + k)))
		return NULL;
	return p;
}

static void buf_put(struct isc_conn *c, void *p, uint8_t cls)
{
	size_t sz = (size_t)1 << (ISC_BUF_MIN_SHIFT + cls);
	if (c->pool.cached + sz > POOL_CACHE_MAX) {
		free(p);
		return;
	}
	*(void **)p = c->pool.free[cls];
	c->pool.free[cls] = p;
	c->pool.cached += sz;
}

static void pool_fini(struct isc_conn *c)
{
	for (unsigned k = 0; k < ISC_BUF_CLASSES; k++)
		while (c->pool.free[k]) {
			void *p = c->pool.free[k];
			c->pool.free[k] = *(void **)p;
			free(p);
		}
	c->pool.cached = 0;
}

static struct isc_task *task_get(struct isc_conn *c)
{
	struct isc_task *k = c->free_tasks;
	if (k) {
		c->free_tasks = k->next;
		c->nfree_tasks--;
	} else {
		k = malloc(sizeof *k);
		if (!k)
			return NULL;
	}
	memset(k, 0, offsetof(struct isc_task, ext));
	k->c = c;
	k->refs = 1;
	return k;
}

/* Drop a reference; the last one recycles the task and its buffer. */
void isc_task_put(struct isc_task *k)
{
	if (--k->refs > 0)
		return;
	struct isc_conn *c = k->c;
	if (k->buf)
		buf_put(c, k->buf, k->buf_cls);
	c->inflight_bytes -= k->charged;
	if (c->nfree_tasks < 256) {
		k->next = c->free_tasks;
		c->free_tasks = k;
		c->nfree_tasks++;
	} else {
		free(k);
	}
}

/* Give k a buffer of at least len bytes (kept if it has one big enough). */
static bool task_buf(struct isc_task *k, size_t len)
{
	if (k->buf && k->cap >= len)
		return true;
	struct isc_conn *c = k->c;
	if (k->buf) {
		buf_put(c, k->buf, k->buf_cls);
		c->inflight_bytes -= k->charged;
		k->buf = NULL;
		k->charged = 0;
	}
	k->buf = isc_buf_get(c, len ? len : 1, &k->buf_cls);
	if (!k->buf)
		return false;
	k->cap = (size_t)1 << (ISC_BUF_MIN_SHIFT + k->buf_cls);
	k->charged = k->cap;
	c->inflight_bytes += k->charged;
	return true;
}

bool isc_task_buf(struct isc_task *k, size_t len)
{
	return task_buf(k, len);
}

static void active_remove(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	if (!k->active)
		return;
	for (struct isc_task **pp = &c->active; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	k->active = false;
	k->next = NULL;
	c->nactive--;
}

static struct isc_task *active_find(struct isc_conn *c, uint32_t itt)
{
	for (struct isc_task *k = c->active; k; k = k->next)
		if (k->itt == itt)
			return k;
	return NULL;
}

uint32_t isc_max_cmdsn(const struct isc_conn *c)
{
	unsigned room = c->nactive < ISC_WINDOW ? ISC_WINDOW - c->nactive : 1;
	return c->exp_cmdsn + room - 1;
}

/* ------------------------------------------------------------------------- */
/* Output                                                                      */
/* ------------------------------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned out_room(const struct isc_conn *c)
{
	return ISC_OUTQ - c->out_count;
}

/* Queue a PDU: bhs (48 bytes; its DataSegmentLength is set here) and dlen
 * bytes of data that stay valid until sent (task holds them: a reference is
 * taken). */
void isc_send_pdu(struct isc_conn *c, uint8_t *bhs, const uint8_t *data, uint32_t dlen,
                  struct isc_task *task)
{
	if (ISC_UNLIKELY(c->out_count >= ISC_OUTQ)) {
		c->fatal = true;
		return;
	}
	struct isc_out *o = &c->outq[(c->out_head + c->out_count) % ISC_OUTQ];
	c->out_count++;
	bhs[4] = 0;
	isc_put24(bhs + 5, dlen);
	memcpy(o->hdr, bhs, ISC_BHS);
	o->hlen = ISC_BHS;
	if (c->hdigest) {
		put_le32(o->hdr + ISC_BHS, vdisk_crc32c(0, o->hdr, ISC_BHS));
		o->hlen += 4;
	}
	o->data = data;
	o->dlen = dlen;
	o->tail_len = 0;
	if (dlen) {
		uint32_t pad = (4 - (dlen & 3)) & 3;
		memset(o->tail, 0, sizeof o->tail);
		o->tail_len = (uint8_t)pad;
		if (c->ddigest) {
			uint32_t crc = vdisk_crc32c(0, data, dlen);
			if (pad)
				crc = vdisk_crc32c(crc, o->tail, pad);
			put_le32(o->tail + pad, crc);
			o->tail_len += 4;
		}
	}
	o->task = task;
	if (task)
		task->refs++;
}

/* A PDU whose data is copied (login and text replies, rejects, NOP-In echo). */
static void send_copy(struct isc_conn *c, uint8_t *bhs, const void *data, uint32_t dlen)
{
	if (!dlen) {
		isc_send_pdu(c, bhs, NULL, 0, NULL);
		return;
	}
	struct isc_task *k = task_get(c);
	if (!k || !task_buf(k, dlen)) {
		if (k)
			isc_task_put(k);
		c->fatal = true;
		return;
	}
	memcpy(k->buf, data, dlen);
	isc_send_pdu(c, bhs, k->buf, dlen, k);
	isc_task_put(k);
}

void isc_send_copy(struct isc_conn *c, uint8_t *bhs, const void *data, uint32_t dlen)
{
	send_copy(c, bhs, data, dlen);
}

static void out_pop(struct isc_conn *c)
{
	struct isc_out *o = &c->outq[c->out_head];
	if (o->task)
		isc_task_put(o->task);
	o->task = NULL;
	c->out_head = (c->out_head + 1) % ISC_OUTQ;
	c->out_count--;
	c->out_off = 0;
}

/* Write queued output until done or the socket is full.  Returns false on a
 * transport error. */
static bool flush_out(struct isc_conn *c)
{
	while (c->out_count) {
		struct iovec iov[192];
		int n = 0;
		size_t skip = c->out_off;
		for (unsigned i = 0; i < c->out_count && n + 3 <= 192; i++) {
			struct isc_out *o = &c->outq[(c->out_head + i) % ISC_OUTQ];
			struct iovec parts[3] = {
			    {o->hdr, o->hlen}, {(void *)o->data, o->dlen}, {o->tail, o->tail_len}};
			for (int j = 0; j < 3; j++) {
				size_t len = parts[j].iov_len;
				if (!len)
					continue;
				if (skip >= len) {
					skip -= len;
					continue;
				}
				iov[n].iov_base = (uint8_t *)parts[j].iov_base + skip;
				iov[n].iov_len = len - skip;
				skip = 0;
				n++;
			}
		}
		ssize_t w;
		if (c->is_socket) {
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
			w = sendmsg(c->out_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} else {
			w = writev(c->out_fd, iov, n);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			return false;
		}
		size_t left = (size_t)w;
		while (left && c->out_count) {
			struct isc_out *o = &c->outq[c->out_head];
			size_t total = (size_t)o->hlen + o->dlen + o->tail_len;
			size_t rest = total - c->out_off;
			if (left >= rest) {
				left -= rest;
				out_pop(c);
			} else {
				c->out_off += left;
				left = 0;
			}
		}
		/* pop entries of zero length (none exist: every PDU has a header) */
	}
	return true;
}

/* ------------------------------------------------------------------------- */
/* Responses                                                                   */
/* ------------------------------------------------------------------------- */

static void fill_sn(struct isc_conn *c, uint8_t *bhs, bool advance)
{
	isc_put32(bhs + 24, c->stat_sn);
	if (advance)
		c->stat_sn++;
	isc_put32(bhs + 28, c->exp_cmdsn);
	isc_put32(bhs + 32, isc_max_cmdsn(c));
}

void isc_fill_sn(struct isc_conn *c, uint8_t *bhs, bool advance)
{
	fill_sn(c, bhs, advance);
}

static void send_reject(struct isc_conn *c, const uint8_t *bad, uint8_t reason)
{
	uint8_t bhs[ISC_BHS] = {OP_REJECT, 0x80, reason};
	memset(bhs + 16, 0xff, 4);
	fill_sn(c, bhs, true);
	send_copy(c, bhs, bad, ISC_BHS);
}

static void send_r2ts(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	while (k->r2t_next < k->want && k->r2t_out < c->max_r2t && out_room(c) > 16) {
		uint32_t len = k->want - k->r2t_next;
		if (len > c->max_burst)
			len = c->max_burst;
		uint8_t bhs[ISC_BHS] = {OP_R2T, 0x80};
		isc_put64(bhs + 8, k->lun);
		isc_put32(bhs + 16, k->itt);
		k->ttt = c->next_ttt++;
		if (k->ttt == 0xffffffff)
			k->ttt = c->next_ttt++;
		isc_put32(bhs + 20, k->ttt);
		fill_sn(c, bhs, false);
		isc_put32(bhs + 36, k->r2tsn++);
		isc_put32(bhs + 40, k->r2t_next);
		isc_put32(bhs + 44, len);
		isc_send_pdu(c, bhs, NULL, 0, NULL);
		k->r2t_next += len;
		k->r2t_out++;
	}
}

/* TMF tasks waiting for k to finish: answer them once none is left. */
static void tmf_release(struct isc_task *k)
{
	struct isc_task *w = k->tmf_waiter;
	k->tmf_waiter = NULL;
	if (!w)
		return;
	if (--w->tmf_waiting)
		return;
	struct isc_conn *c = w->c;
	uint8_t bhs[ISC_BHS] = {OP_TMF_RSP, 0x80, w->tmf_response};
	isc_put32(bhs + 16, w->itt);
	fill_sn(c, bhs, true);
	isc_send_pdu(c, bhs, NULL, 0, NULL);
	isc_task_put(w);
}

/* The command is done (status, sense and data-in in k): send its data-in and
 * response, and let go of it. */
void isc_task_finish(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	k->executing = false;
	if (k->counted_writer) {
		atomic_fetch_sub(&c->t->writers, 1);
		k->counted_writer = false;
	}
	active_remove(k);
	if (k->aborted || c->fatal) {
		tmf_release(k);
		isc_task_put(k);
		return;
	}
	/* residuals: what the command wanted against what the initiator expects */
	uint64_t wanted = k->has_expected ? k->expected : k->read ? k->xfer : k->edtl;
	uint32_t send = k->read ? (k->xfer < k->edtl ? k->xfer : k->edtl) : 0;
	uint8_t flags = 0;
	uint32_t resid = 0;
	if (wanted > k->edtl) {
		flags = 0x04; /* O */
		resid = wanted - k->edtl > UINT32_MAX ? UINT32_MAX : (uint32_t)(wanted - k->edtl);
	} else if (wanted < k->edtl) {
		flags = 0x02; /* U */
		resid = k->edtl - (uint32_t)wanted;
	}
	bool collapse = k->status == ST_GOOD && send > 0;
	uint32_t off = 0;
	while (off < send) {
		uint32_t len = send - off;
		if (len > c->max_send_dsl)
			len = c->max_send_dsl;
		bool last = off + len == send;
		uint8_t bhs[ISC_BHS] = {OP_DATA_IN, 0};
		if (last) {
			bhs[1] = 0x80;
			if (collapse) {
				bhs[1] |= 0x01 | flags;
				bhs[3] = k->status;
				isc_put32(bhs + 44, resid);
			}
		}
		isc_put32(bhs + 16, k->itt);
		memset(bhs + 20, 0xff, 4);
		fill_sn(c, bhs, last && collapse);
		if (!(last && collapse))
			memset(bhs + 24, 0, 4);
		isc_put32(bhs + 36, k->datasn++);
		isc_put32(bhs + 40, off);
		isc_send_pdu(c, bhs, k->buf + off, len, k);
		off += len;
	}
	if (!collapse) {
		uint8_t bhs[ISC_BHS] = {OP_SCSI_RSP, 0x80 | flags, 0, k->status};
		isc_put32(bhs + 16, k->itt);
		fill_sn(c, bhs, true);
		isc_put32(bhs + 36, k->datasn);
		isc_put32(bhs + 44, resid);
		uint32_t slen = 0;
		uint8_t *s = (uint8_t *)k->ext; /* room for the sense, free now */
		if (k->status == ST_CHECK) {
			memset(s, 0, 20);
			isc_put16(s, 18);
			s[2] = 0x70 | (k->info_valid ? 0x80 : 0);
			s[4] = k->sense_key;
			if (k->info_valid)
				isc_put32(s + 5, k->info);
			s[9] = 10;
			s[14] = (uint8_t)(k->asc >> 8);
			s[15] = (uint8_t)k->asc;
			slen = 20;
		}
		isc_send_pdu(c, bhs, slen ? s : NULL, slen, k);
	}
	tmf_release(k);
	isc_task_put(k);
}

/* ------------------------------------------------------------------------- */
/* Full-feature PDUs                                                           */
/* ------------------------------------------------------------------------- */

/* CmdSN of a non-immediate request: false if outside the window (ignore it). */
static bool take_cmdsn(struct isc_conn *c, uint32_t cmdsn)
{
	uint32_t max = isc_max_cmdsn(c);
	if (isc_sn_lt(cmdsn, c->exp_cmdsn) || isc_sn_lt(max, cmdsn))
		return false;
	c->exp_cmdsn = cmdsn + 1;
	return true;
}

static void start_exec(struct isc_task *k)
{
	k->executing = true;
	isc_scsi_exec(k);
}

static void on_scsi_cmd(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	bool imm = bhs[0] & 0x40;
	uint32_t cmdsn = isc_get32(bhs + 24);
	if (!imm && !take_cmdsn(c, cmdsn)) {
		isc_log(c->t, VDISK_ISCSI_LOG_CLIENT,
		        "%s: CmdSN %" PRIu32 " outside [%" PRIu32 ", %" PRIu32 "]: ignored",
		        c->peer, cmdsn, c->exp_cmdsn, isc_max_cmdsn(c));
		return;
	}
	struct isc_task *k = task_get(c);
	if (!k) {
		c->fatal = true;
		return;
	}
	k->itt = isc_get32(bhs + 16);
	k->edtl = isc_get32(bhs + 20);
	k->cmdsn = cmdsn;
	k->immediate = imm;
	k->lun = isc_get64(bhs + 8);
	k->read = bhs[1] & 0x40;
	k->write = bhs[1] & 0x20;
	memcpy(k->cdb, bhs + 32, 16);
	k->active = true;
	k->next = c->active;
	c->active = k;
	c->nactive++;
	if (k->read && k->write) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		isc_task_finish(k);
		return;
	}
	if (dlen && !k->write) {
		isc_send_reject_pub(c, bhs, 0x04);
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		isc_task_finish(k);
		return;
	}
	if (k->write && k->edtl) {
		if (k->edtl > ISC_MAX_XFER || dlen > k->edtl) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			isc_task_finish(k);
			return;
		}
		if (c->inflight_bytes + k->edtl > ISC_MAX_INFLIGHT_BYTES) {
			k->status = ST_TASK_SET_FULL;
			isc_task_finish(k);
			return;
		}
		if (!task_buf(k, k->edtl)) {
			k->status = ST_BUSY;
			isc_task_finish(k);
			return;
		}
		memcpy(k->buf, data, dlen);
		k->have = dlen;
		k->want = k->edtl;
		bool final = bhs[1] & 0x80;
		uint32_t unsol = 0;
		if (!c->initial_r2t && !final) {
			unsol = c->first_burst < k->want ? c->first_burst : k->want;
			if (unsol < dlen)
				unsol = dlen;
		} else {
			unsol = dlen;
		}
		k->r2t_next = unsol;
		if (k->have >= k->want) {
			start_exec(k);
			return;
		}
		send_r2ts(k);
		return;
	}
	start_exec(k);
}

static void on_data_out(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	uint32_t itt = isc_get32(bhs + 16);
	uint32_t ttt = isc_get32(bhs + 20);
	uint32_t off = isc_get32(bhs + 40);
	uint32_t datasn = isc_get32(bhs + 36);
	struct isc_task *k = active_find(c, itt);
	if (!k || !k->write || k->executing || k->aborted) {
		/* data for a command already answered (refused early, or aborted) */
		return;
	}
	if (ttt == 0xffffffff) {
		/* unsolicited: DataSN counts within the unsolicited sequence */
	}
	if (datasn != k->exp_datasn) {
		isc_log(c->t, VDISK_ISCSI_LOG_CLIENT,
		        "%s: Data-Out DataSN %" PRIu32 ", expected %" PRIu32, c->peer, datasn,
		        k->exp_datasn);
		send_reject(c, bhs, 0x09);
		c->fatal = true;
		return;
	}
	k->exp_datasn = datasn + 1;
	if ((uint64_t)off + dlen > k->want) {
		send_reject(c, bhs, 0x09);
		c->fatal = true;
		return;
	}
	memcpy(k->buf + off, data, dlen);
	k->have += dlen;
	if ((bhs[1] & 0x80) && ttt != 0xffffffff) {
		if (k->r2t_out)
			k->r2t_out--;
		k->exp_datasn = 0;
	}
	if ((bhs[1] & 0x80) && ttt == 0xffffffff)
		k->exp_datasn = 0;
	if (k->have >= k->want) {
		start_exec(k);
		return;
	}
	send_r2ts(k);
}

static void on_nop_out(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	uint32_t itt = isc_get32(bhs + 16);
	uint32_t ttt = isc_get32(bhs + 20);
	if (!(bhs[0] & 0x40) && itt != 0xffffffff)
		take_cmdsn(c, isc_get32(bhs + 24));
	if (itt == 0xffffffff) {
		if (ttt == c->nop_ttt)
			c->nop_outstanding = false;
		return;
	}
	uint8_t r[ISC_BHS] = {OP_NOP_IN, 0x80};
	memcpy(r + 8, bhs + 8, 8);
	isc_put32(r + 16, itt);
	memset(r + 20, 0xff, 4);
	fill_sn(c, r, true);
	if (dlen > c->max_send_dsl)
		dlen = c->max_send_dsl;
	send_copy(c, r, data, dlen);
}

/* Abort k: a task still collecting data goes now; one on the disk is marked
 * and answers nothing when it completes.  Returns true if w must wait. */
static bool abort_task(struct isc_task *k, struct isc_task *w)
{
	k->aborted = true;
	if (k->executing || k->deferred) {
		if (k->deferred) {
			/* scsi.c retries deferred tasks: it sees aborted and finishes */
		}
		k->tmf_waiter = w;
		w->tmf_waiting++;
		return true;
	}
	active_remove(k);
	isc_task_put(k);
	return false;
}

static void on_tmf(struct isc_conn *c, const uint8_t *bhs)
{
	if (!(bhs[0] & 0x40))
		take_cmdsn(c, isc_get32(bhs + 24));
	uint8_t fn = bhs[1] & 0x7f;
	uint32_t ref = isc_get32(bhs + 20);
	struct isc_task *w = task_get(c);
	if (!w) {
		c->fatal = true;
		return;
	}
	w->itt = isc_get32(bhs + 16);
	w->tmf_waiting = 1; /* released below */
	w->tmf_response = 0;
	uint64_t lun = isc_get64(bhs + 8);
	switch (fn) {
	case 1: { /* ABORT TASK */
		struct isc_task *k = active_find(c, ref);
		if (k)
			abort_task(k, w);
		else
			w->tmf_response = 1; /* already answered: task does not exist */
		break;
	}
	case 2: /* ABORT TASK SET */
	case 4: /* CLEAR TASK SET */
	case 5: /* LOGICAL UNIT RESET */
	case 6: /* TARGET WARM RESET */
	case 7: /* TARGET COLD RESET */
		if (fn == 5 && lun != 0) {
			w->tmf_response = 2; /* LUN does not exist */
			break;
		}
		for (struct isc_task *k = c->active, *nx; k; k = nx) {
			nx = k->next;
			abort_task(k, w);
		}
		if (fn >= 5) {
			struct isc_target *t = c->t;
			isc_ua_all(t, NULL, UA_RESET); /* SAM-5: every I_T nexus */
			pthread_mutex_lock(&t->lock);
			t->spc2_holder = NULL;
			pthread_mutex_unlock(&t->lock);
		}
		break;
	default:
		w->tmf_response = 5; /* not supported */
		break;
	}
	struct isc_task dummy = {.tmf_waiter = w};
	tmf_release(&dummy);
}

static void on_logout(struct isc_conn *c, const uint8_t *bhs)
{
	if (!(bhs[0] & 0x40))
		take_cmdsn(c, isc_get32(bhs + 24));
	uint8_t reason = bhs[1] & 0x7f;
	uint8_t r[ISC_BHS] = {OP_LOGOUT_RSP, 0x80, 0};
	if (reason == 2)
		r[2] = 2; /* connection recovery is not supported */
	isc_put32(r + 16, isc_get32(bhs + 16));
	/* the response follows every response of earlier commands: tasks
	 * finishing later still answer first as they come before in the queue,
	 * and the connection closes only once nothing is in flight */
	fill_sn(c, r, true);
	isc_send_pdu(c, r, NULL, 0, NULL);
	if (r[2] == 0) {
		c->phase = PH_LOGOUT;
		c->closing = true;
	}
}

void isc_send_reject_pub(struct isc_conn *c, const uint8_t *bad, uint8_t reason)
{
	send_reject(c, bad, reason);
}

static void on_pdu(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	uint8_t op = bhs[0] & 0x3f;
	c->last_rx = isc_now_ns();
	if (c->phase == PH_LOGIN) {
		if (op != OP_LOGIN_REQ) {
			isc_log(c->t, VDISK_ISCSI_LOG_CLIENT, "%s: opcode 0x%02x before login",
			        c->peer, op);
			c->fatal = true;
			return;
		}
		isc_login_pdu(c, bhs, data, dlen);
		return;
	}
	if (c->discovery && op != OP_TEXT_REQ && op != OP_LOGOUT_REQ && op != OP_NOP_OUT) {
		send_reject(c, bhs, 0x05);
		return;
	}
	switch (op) {
	case OP_SCSI_CMD: on_scsi_cmd(c, bhs, data, dlen); break;
	case OP_DATA_OUT: on_data_out(c, bhs, data, dlen); break;
	case OP_NOP_OUT: on_nop_out(c, bhs, data, dlen); break;
	case OP_TMF_REQ: on_tmf(c, bhs); break;
	case OP_TEXT_REQ: isc_text_pdu(c, bhs, data, dlen); break;
	case OP_LOGOUT_REQ: on_logout(c, bhs); break;
	case OP_LOGIN_REQ:
		send_reject(c, bhs, 0x04);
		c->fatal = true;
		break;
	default: send_reject(c, bhs, 0x05); break;
	}
}

/* ------------------------------------------------------------------------- */
/* Input                                                                       */
/* ------------------------------------------------------------------------- */

/* Parse whole PDUs from c->in.  Returns false when the connection must end. */
static bool parse_input(struct isc_conn *c)
{
	size_t pos = 0;
	while (!c->fatal && !c->closing && c->in_len - pos >= ISC_BHS) {
		/* back-pressure: leave room for the replies this PDU may cause */
		if (out_room(c) < 128 || c->nactive > ISC_WINDOW + 8)
			break;
		const uint8_t *bhs = c->in + pos;
		uint32_t ahs = (uint32_t)bhs[4] * 4;
		uint32_t dlen = isc_get24(bhs + 5);
		uint32_t max = c->phase == PH_LOGIN ? ISC_MAX_TEXT : ISC_MAX_RECV_DSL;
		if (c->phase == PH_LOGIN && max > ISC_MAX_RECV_DSL)
			max = ISC_MAX_RECV_DSL;
		if (dlen > max) {
			isc_log(c->t, VDISK_ISCSI_LOG_CLIENT,
			        "%s: data segment of %" PRIu32 " bytes is over the %" PRIu32
			        " declared",
			        c->peer, dlen, max);
			return false;
		}
		size_t hd = c->hdigest ? 4 : 0, dd = c->ddigest && dlen ? 4 : 0;
		size_t pad = (4 - (dlen & 3)) & 3;
		size_t total = ISC_BHS + ahs + hd + dlen + pad + dd;
		if (c->in_len - pos < total)
			break;
		if (hd) {
			uint32_t want = get_le32(bhs + ISC_BHS + ahs);
			if (vdisk_crc32c(0, bhs, ISC_BHS + ahs) != want) {
				isc_log(c->t, VDISK_ISCSI_LOG_CLIENT, "%s: header digest error",
				        c->peer);
				return false;
			}
		}
		const uint8_t *data = bhs + ISC_BHS + ahs + hd;
		if (dd) {
			uint32_t want = get_le32(data + dlen + pad);
			if (vdisk_crc32c(0, data, dlen + pad) != want) {
				isc_log(c->t, VDISK_ISCSI_LOG_CLIENT, "%s: data digest error",
				        c->peer);
				send_reject(c, bhs, 0x02);
				pos += total;
				if ((bhs[0] & 0x3f) == OP_DATA_OUT)
					return false; /* level 0: no recovery of lost data */
				continue;
			}
		}
		if (ahs && (bhs[0] & 0x3f) == OP_SCSI_CMD) {
			/* an extended CDB (AHS type 1): CDBs over 16 bytes are not
			 * supported; answered as an unknown command */
			uint8_t copy[ISC_BHS];
			memcpy(copy, bhs, ISC_BHS);
			copy[32] = 0xff;
			on_pdu(c, copy, data, dlen);
		} else {
			on_pdu(c, bhs, data, dlen);
		}
		pos += total;
	}
	if (pos) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	return !c->fatal;
}

static bool read_input(struct isc_conn *c)
{
	size_t cap = ISC_IN_SIZE;
	if (c->in_len >= cap)
		return true;
	ssize_t r = read(c->in_fd, c->in + c->in_len, cap - c->in_len);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return true;
		return false;
	}
	if (r == 0) {
		c->in_eof = true;
		return true;
	}
	c->in_len += (size_t)r;
	return true;
}

/* ------------------------------------------------------------------------- */
/* The connection's life                                                       */
/* ------------------------------------------------------------------------- */

struct isc_conn *isc_conn_new(struct isc_target *t, int in_fd, int out_fd, const char *peer)
{
	struct isc_conn *c = calloc(1, sizeof *c);
	if (!c) {
		vdisk_set_error_errno(ENOMEM, "iscsi connection");
		return NULL;
	}
	c->t = t;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	c->in = malloc(ISC_IN_SIZE);
	if (!c->in) {
		free(c);
		vdisk_set_error_errno(ENOMEM, "iscsi connection");
		return NULL;
	}
	c->phase = PH_LOGIN;
	c->max_send_dsl = 8192;
	c->max_burst = 262144;
	c->first_burst = 65536;
	c->max_r2t = 1;
	c->initial_r2t = true;
	c->immediate_data = true;
	c->next_ttt = 1;
	c->nop_ttt = 0xffffffff;
	uint64_t now = isc_now_ns();
	c->last_rx = now;
	if (t->login_timeout_ns >= 0)
		c->login_deadline = now + (uint64_t)t->login_timeout_ns;
	return c;
}

void isc_conn_free(struct isc_conn *c)
{
	while (c->out_count)
		out_pop(c);
	while (c->free_tasks) {
		struct isc_task *k = c->free_tasks;
		c->free_tasks = k->next;
		free(k);
	}
	pool_fini(c);
	free(c->in);
	free(c->text_acc);
	free(c->text_reply);
	free(c->iname);
	free(c);
}

static void end_session(struct isc_conn *c)
{
	struct isc_target *t = c->t;
	isc_pr_close(c);
	pthread_mutex_lock(&t->lock);
	if (c->nexus && c->nexus->conn == c) {
		c->nexus->conn = NULL;
		/* SPC-2 reservations end with the nexus */
		if (t->spc2_holder == c->nexus)
			t->spc2_holder = NULL;
	}
	pthread_mutex_unlock(&t->lock);
}

void isc_conn_serve(struct isc_conn *c)
{
	struct isc_target *t = c->t;
	c->q = vdisk_queue_create(
	    t->disk, &(struct vdisk_queue_opts){.struct_size = sizeof(struct vdisk_queue_opts),
	                                        .depth = ISC_WINDOW * 2});
	if (!c->q) {
		isc_log(t, VDISK_ISCSI_LOG_ERROR, "%s: queue: %s", c->peer, vdisk_errmsg());
		return;
	}
	int qfd = vdisk_queue_fd(c->q);
	uint64_t grace = 0;
	bool pollable = c->is_socket;
	for (;;) {
		vdisk_queue_poll(c->q);
		if (c->deferred)
			isc_scsi_retry_deferred(c);
		bool stop = atomic_load(&t->stopping) || atomic_load(&c->kill);
		if (stop && !c->closing) {
			c->closing = true;
			grace = isc_now_ns() + ISC_SHUTDOWN_GRACE_NS;
		}
		if (!c->closing && !c->fatal && !parse_input(c))
			c->fatal = true;
		/* requests that completed during their submission answer in this
		 * same round, without another trip through poll() */
		vdisk_queue_poll(c->q);
		if (!flush_out(c))
			break;
		if (c->fatal && vdisk_queue_inflight(c->q) == 0)
			break;
		bool busy = vdisk_queue_inflight(c->q) > 0 || c->deferred;
		if (c->closing && !busy && c->out_count == 0)
			break;
		if (c->in_eof && !busy && c->out_count == 0)
			break;
		if (c->in_eof && !busy && !c->is_socket)
			break;
		uint64_t now = isc_now_ns();
		if (c->phase == PH_LOGIN && c->login_deadline && now > c->login_deadline) {
			isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: login not complete in time",
			        c->peer);
			break;
		}
		if (grace && now > grace && !busy)
			break;
		if (c->phase == PH_FULL && !c->closing && c->is_socket &&
		    now - c->last_rx > ISC_NOP_INTERVAL_NS) {
			if (c->nop_outstanding) {
				isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: no answer to NOP-In",
				        c->peer);
				break;
			}
			uint8_t bhs[ISC_BHS] = {OP_NOP_IN, 0x80};
			memset(bhs + 16, 0xff, 4);
			c->nop_ttt = c->next_ttt++;
			isc_put32(bhs + 20, c->nop_ttt);
			fill_sn(c, bhs, false);
			isc_send_pdu(c, bhs, NULL, 0, NULL);
			c->nop_outstanding = true;
			c->last_rx = now;
			continue;
		}
		if (!pollable) {
			/* a file or pipe replayed: read what there is, then finish */
			if (!c->in_eof && !c->closing && !c->fatal) {
				size_t before = c->in_len;
				if (!read_input(c))
					c->fatal = true;
				if (c->in_len == before && !c->in_eof && busy)
					vdisk_queue_wait(c->q, 1000000);
				continue;
			}
			if (busy)
				vdisk_queue_wait(c->q, 1000000);
			continue;
		}
		struct pollfd p[3];
		p[0].fd = c->in_fd;
		p[0].events = 0;
		bool want_in = !c->closing && !c->in_eof && !c->fatal && c->in_len < ISC_IN_SIZE &&
		               out_room(c) >= 128;
		if (want_in)
			p[0].events |= POLLIN;
		if (c->out_count)
			p[0].events |= POLLOUT;
		p[1].fd = qfd;
		p[1].events = POLLIN;
		p[2].fd = t->stop_fd;
		p[2].events = stop ? 0 : POLLIN;
		int timeout = 1000;
		if (c->deferred)
			timeout = 1;
		int n = poll(p, 3, timeout);
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) && want_in) {
			if (!read_input(c))
				c->fatal = true;
		} else if (n > 0 && (p[0].revents & (POLLHUP | POLLERR)) && !want_in) {
			if (c->closing || c->fatal)
				c->fatal = true;
		}
	}
	/* wait for what is still on the disk (tasks reference this connection) */
	while (vdisk_queue_inflight(c->q) > 0 || c->deferred) {
		c->fatal = true;
		vdisk_queue_wait(c->q, 1000000);
		if (c->deferred)
			isc_scsi_retry_deferred(c);
	}
	/* tasks still collecting data */
	while (c->active) {
		struct isc_task *k = c->active;
		active_remove(k);
		isc_task_put(k);
	}
	end_session(c);
	vdisk_queue_destroy(c->q);
	c->q = NULL;
	isc_log(t, VDISK_ISCSI_LOG_DEBUG, "%s: closed", c->peer);
}
