/* Persistent reservations (SPC-4 PERSISTENT RESERVE IN / OUT) on the disk's
 * reservation model.
 *
 * The target keeps a prwrap domain of its own for the LUN: each I_T nexus is
 * an initiator of it, a prwrap layer opened (when the nexus first issues
 * PERSISTENT RESERVE OUT) with a host id derived from the initiator name and
 * ISID, over a `null` disk: the layer carries the nexus's identity and the
 * shared reservation state, while data goes to the disk through the
 * connection's queue.  A registration outlives its session (it belongs to the
 * nexus) for as long as the target runs, or across restarts with a state file
 * (APTPL).  The access a nexus has under the current reservation is computed
 * from the domain's report whenever the state changed (t->pr_seq), so a
 * command costs one atomic load while nothing changes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "iscsi/target.h"

#define PR_MAX_REGS 256

static struct vdisk *open_pr(struct isc_target *t, const uint8_t host_id[16])
{
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", host_id[i]);
	json_t *spec =
	    json_pack("{s:s,s:s,s:s,s:{s:s,s:s}}", "type", "prwrap", "domain", t->pr_domain,
	              "host-id", hex, "inner", "type", "null", "size", "1M");
	if (!spec)
		return NULL;
	if (t->pr_state_file)
		json_object_set_new(spec, "state-file", json_string(t->pr_state_file));
	char *text = json_dumps(spec, JSON_COMPACT);
	json_decref(spec);
	if (!text)
		return NULL;
	struct vdisk *d = vdisk_open(text, 0);
	free(text);
	return d;
}

int isc_pr_init(struct isc_target *t)
{
	char name[512];
	snprintf(name, sizeof name, "iscsi:%s:%p", t->name, (void *)t);
	t->pr_domain = strdup(name);
	if (!t->pr_domain)
		return -1;
	uint8_t anchor[16];
	memset(anchor, 0xff, sizeof anchor);
	t->pr_anchor = open_pr(t, anchor);
	if (!t->pr_anchor)
		return -1;
	return 0;
}

void isc_pr_fini(struct isc_target *t)
{
	if (t->pr_anchor)
		vdisk_unref(t->pr_anchor);
	t->pr_anchor = NULL;
}

void isc_pr_close(struct isc_conn *c)
{
	if (c->pr)
		vdisk_unref(c->pr);
	c->pr = NULL;
}

/* SCSI PR TYPE codes <-> enum vdisk_pr_type */
static int from_scsi_type(uint8_t st)
{
	switch (st) {
	case 1: return VDISK_PR_WRITE_EXCLUSIVE;
	case 3: return VDISK_PR_EXCLUSIVE_ACCESS;
	case 5: return VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY;
	case 6: return VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY;
	case 7: return VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS;
	case 8: return VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
	default: return -1;
	}
}

static uint8_t to_scsi_type(uint8_t vt)
{
	static const uint8_t map[] = {0, 1, 3, 5, 6, 7, 8};
	return vt < sizeof map ? map[vt] : 0;
}

struct pr_snapshot {
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant regs[PR_MAX_REGS];
	unsigned n;
	bool ok;
};

static void snapshot(struct isc_target *t, struct pr_snapshot *s)
{
	vdisk_status st = vdisk_pr_report(t->pr_anchor, &s->rep, s->regs, PR_MAX_REGS);
	s->ok = vdisk_ok(st);
	s->n = s->ok ? (s->rep.nregistrants < PR_MAX_REGS ? s->rep.nregistrants : PR_MAX_REGS) : 0;
}

static const struct vdisk_pr_registrant *find_reg(const struct pr_snapshot *s,
                                                  const uint8_t host[16])
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->regs[i].host_id_len == 16 && memcmp(s->regs[i].host_id, host, 16) == 0)
			return &s->regs[i];
	return NULL;
}

uint8_t isc_pr_access(struct isc_conn *c)
{
	struct isc_target *t = c->t;
	unsigned seq = atomic_load(&t->pr_seq);
	if (c->pr_known && c->pr_seq == seq)
		return c->pr_access;
	uint8_t acc = PR_ACC_READ | PR_ACC_WRITE;
	if (seq != 0 && c->nexus) {
		struct pr_snapshot *s = malloc(sizeof *s);
		if (s) {
			snapshot(t, s);
			const struct vdisk_pr_registrant *me = find_reg(s, c->nexus->host_id);
			bool reg = me != NULL, holder = me && me->holds_reservation;
			switch (s->rep.type) {
			case VDISK_PR_NONE: break;
			case VDISK_PR_WRITE_EXCLUSIVE:
				if (!holder)
					acc = PR_ACC_READ;
				break;
			case VDISK_PR_EXCLUSIVE_ACCESS:
				if (!holder)
					acc = 0;
				break;
			case VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY:
			case VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS:
				if (!reg)
					acc = PR_ACC_READ;
				break;
			default:
				if (!reg)
					acc = 0;
				break;
			}
			free(s);
		}
	}
	c->pr_seq = seq;
	c->pr_access = acc;
	c->pr_known = true;
	return acc;
}

/* An iSCSI TransportID (SPC-4 7.6.4.6, format 01b: name and ISID). */
static size_t transport_id(struct isc_target *t, const uint8_t host[16], uint8_t *out, size_t cap)
{
	char iname[256] = "unknown";
	uint8_t isid[6] = {0};
	isc_nexus_by_host(t, host, iname, sizeof iname, isid);
	char s[300];
	int n = snprintf(s, sizeof s, "%s,i,0x%02x%02x%02x%02x%02x%02x", iname, isid[0], isid[1],
	                 isid[2], isid[3], isid[4], isid[5]);
	size_t len = (size_t)n + 1;
	size_t padded = (len + 3) & ~(size_t)3;
	if (padded < 20)
		padded = 20;
	if (4 + padded > cap)
		return 0;
	memset(out, 0, 4 + padded);
	out[0] = 0x45;
	isc_put16(out + 2, (uint16_t)padded);
	memcpy(out + 4, s, len);
	return 4 + padded;
}

void isc_pr_in(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	uint8_t sa = k->cdb[1] & 0x1f;
	uint16_t alloc = isc_get16(k->cdb + 7);
	if (sa > 3) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return;
	}
	struct pr_snapshot *s = malloc(sizeof *s);
	uint8_t *b = malloc(8 + PR_MAX_REGS * 320);
	if (!s || !b) {
		free(s);
		free(b);
		k->status = ST_BUSY;
		return;
	}
	snapshot(t, s);
	if (!s->ok) {
		isc_task_check(k, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		goto out;
	}
	size_t n = 8;
	memset(b, 0, 8);
	isc_put32(b, s->rep.generation);
	switch (sa) {
	case 0: /* READ KEYS */
		for (unsigned i = 0; i < s->n; i++, n += 8)
			isc_put64(b + n, s->regs[i].key);
		isc_put32(b + 4, (uint32_t)(8 * s->rep.nregistrants));
		break;
	case 1: /* READ RESERVATION */
		if (s->rep.type != VDISK_PR_NONE) {
			uint64_t key = 0;
			bool all = s->rep.type == VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS ||
			           s->rep.type == VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
			for (unsigned i = 0; i < s->n && !all; i++)
				if (s->regs[i].holds_reservation)
					key = s->regs[i].key;
			memset(b + 8, 0, 16);
			isc_put64(b + 8, key);
			b[8 + 13] = to_scsi_type(s->rep.type);
			n += 16;
			isc_put32(b + 4, 16);
		}
		break;
	case 2: { /* REPORT CAPABILITIES */
		struct vdisk_pr_capabilities caps = {0};
		vdisk_pr_capabilities(t->pr_anchor, &caps);
		memset(b, 0, 8);
		isc_put16(b, 8);
		b[2] = caps.persist_through_power_loss ? 0x01 : 0;            /* PTPL_C */
		b[3] = 0x80 | (s->rep.persist_through_power_loss ? 0x01 : 0); /* TMV, PTPL_A */
		uint16_t mask = 0;
		if (caps.types & (1u << VDISK_PR_WRITE_EXCLUSIVE))
			mask |= 0x0200;
		if (caps.types & (1u << VDISK_PR_EXCLUSIVE_ACCESS))
			mask |= 0x0800;
		if (caps.types & (1u << VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
			mask |= 0x2000;
		if (caps.types & (1u << VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY))
			mask |= 0x4000;
		if (caps.types & (1u << VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS))
			mask |= 0x8000;
		if (caps.types & (1u << VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS))
			mask |= 0x0001;
		isc_put16(b + 4, mask);
		n = 8;
		break;
	}
	case 3: /* READ FULL STATUS */
		for (unsigned i = 0; i < s->n; i++) {
			uint8_t *d = b + n;
			memset(d, 0, 24);
			isc_put64(d, s->regs[i].key);
			if (s->regs[i].holds_reservation) {
				d[12] = 0x01;
				d[13] = to_scsi_type(s->rep.type);
			}
			isc_put16(d + 18, 1);
			size_t tl = transport_id(t, s->regs[i].host_id, d + 24, 300);
			isc_put32(d + 20, (uint32_t)tl);
			n += 24 + tl;
		}
		isc_put32(b + 4, (uint32_t)(n - 8));
		break;
	}
	size_t m = n < alloc ? n : alloc;
	if (isc_task_buf(k, m ? m : 1)) {
		memcpy(k->buf, b, m);
		k->xfer = (uint32_t)m;
	} else {
		k->status = ST_BUSY;
	}
out:
	free(s);
	free(b);
}

static void pr_fail(struct isc_task *k, vdisk_status st, bool release)
{
	switch (st.kind) {
	case VDISK_OK: return;
	case VDISK_ERR_RESERVATION_CONFLICT: k->status = ST_RESERVATION_CONFLICT; return;
	case VDISK_ERR_INVALID_INPUT:
		isc_task_check(k, SK_ILLEGAL_REQUEST,
		               release ? ASC_INVALID_RELEASE_PR : ASC_INVALID_FIELD_CDB);
		return;
	case VDISK_ERR_NOT_SUPPORTED:
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
		return;
	default: isc_task_check(k, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE); return;
	}
}

void isc_pr_out(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t sa = k->cdb[1] & 0x1f;
	uint8_t scope = k->cdb[2] >> 4, stype = k->cdb[2] & 0x0f;
	uint32_t plen = isc_get32(k->cdb + 5);
	if (sa > 6) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return;
	}
	if (plen != 24 || k->have < 24) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	if (!c->nexus) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
		return;
	}
	uint64_t key = isc_get64(k->buf), sakey = isc_get64(k->buf + 8);
	uint8_t flags = k->buf[20];
	bool typed = sa == 1 || sa == 2 || sa == 4 || sa == 5;
	int vtype = 0;
	if (typed) {
		if (scope != 0) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return;
		}
		vtype = from_scsi_type(stype);
		if (vtype < 0) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return;
		}
	}
	if (flags & 0x0c) { /* SPEC_I_PT, ALL_TG_PT */
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM);
		return;
	}
	struct vdisk_pr_capabilities caps = {0};
	vdisk_pr_capabilities(t->pr_anchor, &caps);
	if ((flags & 0x01) && (sa == 0 || sa == 6) && !caps.persist_through_power_loss) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM);
		return;
	}
	if (!c->pr) {
		c->pr = open_pr(t, c->nexus->host_id);
		if (!c->pr) {
			isc_log(t, VDISK_ISCSI_LOG_ERROR, "%s: reservations: %s", c->peer,
			        vdisk_errmsg());
			isc_task_check(k, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
			return;
		}
	}
	struct pr_snapshot *before = malloc(sizeof *before), *after = malloc(sizeof *after);
	if (!before || !after) {
		free(before);
		free(after);
		k->status = ST_BUSY;
		return;
	}
	snapshot(t, before);
	vdisk_status st;
	switch (sa) {
	case 0:
	case 6: {
		unsigned f = sa == 6 ? VDISK_PR_IGNORE_EXISTING_KEY : 0;
		if (caps.persist_through_power_loss)
			f |= (flags & 0x01) ? VDISK_PR_SET_PTPL : VDISK_PR_CLEAR_PTPL;
		st = vdisk_pr_register(c->pr, key, sakey, f);
		break;
	}
	case 1: st = vdisk_pr_reserve(c->pr, key, (enum vdisk_pr_type)vtype); break;
	case 2: st = vdisk_pr_release(c->pr, key, (enum vdisk_pr_type)vtype); break;
	case 3: st = vdisk_pr_clear(c->pr, key); break;
	default:
		st = vdisk_pr_preempt(c->pr, key, sakey, (enum vdisk_pr_type)vtype, sa == 5);
		break;
	}
	pr_fail(k, st, sa == 2);
	if (vdisk_ok(st)) {
		atomic_fetch_add(&t->pr_seq, 1);
		snapshot(t, after);
		const uint8_t *me = c->nexus->host_id;
		/* unit attentions for the other initiators (SPC-4 5.12.11) */
		for (unsigned i = 0; i < before->n; i++) {
			const uint8_t *h = before->regs[i].host_id;
			if (memcmp(h, me, 16) == 0)
				continue;
			bool gone = find_reg(after, h) == NULL;
			if (sa == 3)
				isc_ua_host(t, h, UA_RES_PREEMPTED);
			else if ((sa == 4 || sa == 5) && gone)
				isc_ua_host(t, h, UA_REG_PREEMPTED);
			else if (sa == 2 && before->rep.type != VDISK_PR_NONE &&
			         after->rep.type == VDISK_PR_NONE &&
			         before->rep.type != VDISK_PR_WRITE_EXCLUSIVE &&
			         before->rep.type != VDISK_PR_EXCLUSIVE_ACCESS)
				isc_ua_host(t, h, UA_RES_RELEASED);
		}
	}
	free(before);
	free(after);
}
