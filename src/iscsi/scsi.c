/* SCSI commands (SPC-4, SBC-3) on the disk: the device server of LUN 0. */
#include <errno.h>
#include <sched.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi/target.h"
#include "vdisk/backend.h"

#define ASC_INVALID_FIELD_IU 0x0e03

static void finish(struct isc_task *k)
{
	isc_task_finish(k);
}

void isc_task_check(struct isc_task *k, uint8_t key, uint16_t asc)
{
	k->status = ST_CHECK;
	k->sense_key = key;
	k->asc = asc;
	k->xfer = 0;
}

static void check_info(struct isc_task *k, uint8_t key, uint16_t asc, uint32_t info)
{
	isc_task_check(k, key, asc);
	k->info_valid = true;
	k->info = info;
}

void isc_task_status(struct isc_task *k, vdisk_status st, bool write)
{
	switch (st.kind) {
	case VDISK_OK: k->status = ST_GOOD; return;
	case VDISK_ERR_ILLEGAL_BLOCK:
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return;
	case VDISK_ERR_INVALID_INPUT:
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return;
	case VDISK_ERR_READ_ONLY: isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED); return;
	case VDISK_ERR_RESERVATION_CONFLICT:
		k->status = ST_RESERVATION_CONFLICT;
		k->xfer = 0;
		return;
	case VDISK_ERR_ABORTED_PREEMPT:
		isc_task_check(k, SK_ABORTED_COMMAND, ASC_COMMANDS_CLEARED);
		return;
	case VDISK_ERR_UNSUPPORTED_EJECT:
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return;
	case VDISK_ERR_NOT_SUPPORTED:
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return;
	case VDISK_ERR_MEDIUM:
		switch (st.medium) {
		case VDISK_MEDIUM_GUARD_CHECK:
			isc_task_check(k, SK_MEDIUM_ERROR, ASC_GUARD_CHECK);
			return;
		case VDISK_MEDIUM_APP_TAG_CHECK:
			isc_task_check(k, SK_MEDIUM_ERROR, ASC_APP_TAG_CHECK);
			return;
		case VDISK_MEDIUM_REF_TAG_CHECK:
			isc_task_check(k, SK_MEDIUM_ERROR, ASC_REF_TAG_CHECK);
			return;
		case VDISK_MEDIUM_WRITE_FAULT:
			isc_task_check(k, SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
			return;
		default:
			isc_task_check(k, SK_MEDIUM_ERROR,
			               write ? ASC_WRITE_ERROR : ASC_UNRECOVERED_READ);
			return;
		}
	case VDISK_ERR_IO:
	default:
		switch (st.errnum) {
		case ENOSPC:
		case EDQUOT: isc_task_check(k, SK_DATA_PROTECT, ASC_SPACE_ALLOC_FAILED); return;
		case EROFS: isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED); return;
		case EIO:
		case EILSEQ:
			isc_task_check(k, SK_MEDIUM_ERROR,
			               write ? ASC_WRITE_ERROR : ASC_UNRECOVERED_READ);
			return;
		case ERANGE: isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE); return;
		case EINVAL: isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB); return;
		case ENOMEDIUM: isc_task_check(k, SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT); return;
		case EAGAIN:
		case ENOMEM:
		case EBUSY:
			k->status = ST_BUSY;
			k->xfer = 0;
			return;
		default: isc_task_check(k, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE); return;
		}
	}
}

/* A submission that failed at once (-errno). */
static void submit_failed(struct isc_task *k, int rc, bool write)
{
	isc_task_status(k, vdisk_status_make(VDISK_ERR_IO, -rc), write);
	finish(k);
}

/* Data-in of a command: copy src (its natural length len) into the task,
 * truncated to the allocation length alloc. */
static bool datain(struct isc_task *k, const void *src, size_t len, size_t alloc)
{
	size_t n = len < alloc ? len : alloc;
	if (!isc_task_buf(k, n ? n : 1)) {
		k->status = ST_BUSY;
		return false;
	}
	memcpy(k->buf, src, n);
	k->xfer = (uint32_t)n;
	return true;
}

/* ------------------------------------------------------------------------- */
/* Inquiry                                                                     */
/* ------------------------------------------------------------------------- */

static void hex_id(const uint8_t id[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static size_t vpd_page(struct isc_task *k, uint8_t page, uint8_t *b, size_t cap)
{
	struct isc_target *t = k->c->t;
	memset(b, 0, cap);
	b[1] = page;
	size_t n = 4;
	switch (page) {
	case 0x00: {
		static const uint8_t pages[] = {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2};
		memcpy(b + 4, pages, sizeof pages);
		n += sizeof pages;
		break;
	}
	case 0x80: {
		char s[33];
		hex_id(t->id, s);
		memcpy(b + 4, s, 32);
		n += 32;
		break;
	}
	case 0x83: {
		/* NAA IEEE registered extended (6), from the disk id */
		uint8_t *d = b + n;
		d[0] = 0x01; /* binary */
		d[1] = 0x03; /* LU, NAA */
		d[3] = 16;
		memcpy(d + 4, t->id, 16);
		d[4] = (uint8_t)(0x60 | (d[4] & 0x0f));
		n += 20;
		/* T10 vendor id */
		d = b + n;
		d[0] = 0x02; /* ASCII */
		d[1] = 0x01;
		char s[33];
		hex_id(t->id, s);
		d[3] = 8 + 32;
		memcpy(d + 4, "VDISK   ", 8);
		memcpy(d + 12, s, 32);
		n += 4 + 40;
		/* the target's SCSI name string (association: target device) */
		d = b + n;
		size_t nl = strlen(t->name) + 1;
		size_t padded = (nl + 3) & ~(size_t)3;
		if (n + 4 + padded <= cap) {
			d[0] = 0x53;               /* iSCSI, UTF-8 */
			d[1] = 0x80 | 0x20 | 0x08; /* PIV, target device, SCSI name */
			d[3] = (uint8_t)padded;
			memcpy(d + 4, t->name, nl - 1);
			n += 4 + padded;
		}
		/* relative target port 1 and target port group 1 */
		d = b + n;
		d[0] = 0x51;
		d[1] = 0x80 | 0x10 | 0x04;
		d[3] = 4;
		d[7] = 1;
		n += 8;
		d = b + n;
		d[0] = 0x51;
		d[1] = 0x80 | 0x10 | 0x05;
		d[3] = 4;
		d[7] = 1;
		n += 8;
		break;
	}
	case 0xb0: {
		uint32_t max_blocks = ISC_MAX_XFER >> t->shift;
		b[5] = ISC_MAX_CAW_BLOCKS;
		isc_put16(b + 6, (uint16_t)(t->pbs / t->bs));
		isc_put32(b + 8, max_blocks);
		isc_put32(b + 12, max_blocks);
		if (t->unmap != VDISK_UNMAP_IGNORED) {
			isc_put32(b + 20, 0xffffffff);
			isc_put32(b + 24, ISC_MAX_UNMAP_DESC);
			isc_put32(b + 28, t->opt_unmap);
			isc_put32(b + 32, 0x80000000u); /* UGAVALID, alignment 0 */
		}
		isc_put64(b + 36, max_blocks);
		n = 64;
		break;
	}
	case 0xb1:
		isc_put16(b + 4, 1); /* non-rotating */
		n = 64;
		break;
	case 0xb2:
		if (t->unmap != VDISK_UNMAP_IGNORED) {
			b[5] = 0x80 | 0x40 | 0x20; /* LBPU, LBPWS, LBPWS10 */
			if (t->unmap == VDISK_UNMAP_ZEROES)
				b[5] |= 0x04; /* LBPRZ */
			b[6] = 0x02;          /* thin provisioned */
		}
		n = 8;
		break;
	default: return 0;
	}
	isc_put16(b + 2, (uint16_t)(n - 4));
	return n;
}

static void cmd_inquiry(struct isc_task *k)
{
	uint8_t *cdb = k->cdb;
	struct isc_target *t = k->c->t;
	uint16_t alloc = isc_get16(cdb + 3);
	uint8_t b[512];
	size_t n;
	if ((cdb[1] & 0x01) == 0) {
		if (cdb[2]) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return;
		}
		memset(b, 0, 96);
		b[0] = k->lun == 0 ? 0x00 : 0x7f;
		b[1] = (t->caps & VDISK_CAP_EJECT) ? 0x80 : 0;
		b[2] = 0x06; /* SPC-4 */
		b[3] = 0x12; /* HiSup, format 2 */
		b[5] = 0x00;
		b[7] = 0x02; /* CmdQue */
		memcpy(b + 8, "VDISK   ", 8);
		memcpy(b + 16, "vdisk           ", 16);
		memcpy(b + 32, "0.1 ", 4);
		static const uint16_t vd[] = {0x00a0, 0x0960, 0x0460, 0x04c0};
		for (int i = 0; i < 4; i++)
			isc_put16(b + 58 + 2 * i, vd[i]);
		n = 96;
		b[4] = (uint8_t)(n - 5);
	} else {
		if (k->lun != 0) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
			return;
		}
		n = vpd_page(k, cdb[2], b, sizeof b);
		if (!n) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return;
		}
	}
	datain(k, b, n, alloc);
}

/* ------------------------------------------------------------------------- */
/* Read / write                                                                */
/* ------------------------------------------------------------------------- */

static bool lba_range(struct isc_task *k, uint64_t lba, uint64_t n)
{
	uint64_t cap = vdisk_sector_count(k->c->t->disk);
	if (lba > cap || n > cap - lba) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return false;
	}
	return true;
}

/* LBA, block count and flags byte of READ/WRITE/VERIFY 6/10/12/16 and the
 * like; false for an opcode without them. */
static void rw_fields(const uint8_t *cdb, uint64_t *lba, uint64_t *n)
{
	switch (cdb[0] >> 5) {
	case 0: /* 6-byte */
		*lba = (uint64_t)(cdb[1] & 0x1f) << 16 | isc_get16(cdb + 2);
		*n = cdb[4] ? cdb[4] : 256;
		break;
	case 1: /* 10-byte */
	case 2:
		*lba = isc_get32(cdb + 2);
		*n = isc_get16(cdb + 7);
		break;
	case 5: /* 12-byte */
		*lba = isc_get32(cdb + 2);
		*n = isc_get32(cdb + 6);
		break;
	case 4: /* 16-byte */
	default:
		*lba = isc_get64(cdb + 2);
		*n = isc_get32(cdb + 10);
		break;
	}
}

static void read_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	if (vdisk_ok(st)) {
		k->status = ST_GOOD;
		k->xfer = (uint32_t)(k->nblocks << k->c->t->shift);
	} else {
		isc_task_status(k, st, false);
	}
	finish(k);
}

static void cmd_read(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t *cdb = k->cdb;
	uint64_t lba, n;
	rw_fields(cdb, &lba, &n);
	if (cdb[0] != 0x08 && (cdb[1] & 0xe0)) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB); /* RDPROTECT */
		return finish(k);
	}
	if (!lba_range(k, lba, n))
		return finish(k);
	k->has_expected = true;
	k->expected = n << t->shift;
	if (n == 0)
		return finish(k);
	if (k->expected > ISC_MAX_XFER) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (!isc_task_buf(k, (size_t)k->expected)) {
		k->status = ST_BUSY;
		return finish(k);
	}
	k->nblocks = n;
	k->iov.iov_base = k->buf;
	k->iov.iov_len = (size_t)k->expected;
	int rc = vdisk_readv(c->q, lba, &k->iov, 1, read_done, k);
	if (rc < 0)
		submit_failed(k, rc, false);
}

static void writer_enter(struct isc_task *k)
{
	atomic_fetch_add(&k->c->t->writers, 1);
	k->counted_writer = true;
}

static void write_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	isc_task_status(k, st, true);
	finish(k);
}

/* Is COMPARE AND WRITE running?  Then this writer waits (deferred). */
static bool caw_blocks(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	writer_enter(k);
	if (atomic_load(&t->caw_active) == 0)
		return false;
	atomic_fetch_sub(&t->writers, 1);
	k->counted_writer = false;
	k->deferred = true;
	k->c->deferred++;
	return true;
}

static void cmd_write(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t *cdb = k->cdb;
	uint64_t lba, n;
	rw_fields(cdb, &lba, &n);
	bool verify = cdb[0] == 0x2e || cdb[0] == 0xae || cdb[0] == 0x8e;
	if (cdb[0] != 0x0a && (cdb[1] & 0xe0)) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB); /* WRPROTECT */
		return finish(k);
	}
	if (verify && (cdb[1] & 0x02)) {
		/* BYTCHK: nothing to compare against but what we write */
	}
	if (t->read_only) {
		isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return finish(k);
	}
	if (!lba_range(k, lba, n))
		return finish(k);
	k->has_expected = true;
	k->expected = n << t->shift;
	if (n == 0)
		return finish(k);
	if (caw_blocks(k))
		return;
	if (k->expected > k->edtl) {
		/* SPDTL > EDTL: only the EDTL bytes are written (FCP-4 9.4.2 a),
		 * which may end inside a block: the synchronous path merges it */
		vdisk_status st = vdisk_status_ok();
		if (k->edtl)
			st = vdisk_pwrite(t->disk, k->buf, k->edtl, lba << t->shift, 0);
		isc_task_status(k, st, true);
		return finish(k);
	}
	k->nblocks = n;
	k->lba = lba;
	k->iov.iov_base = k->buf;
	k->iov.iov_len = (size_t)k->expected;
	bool fua = cdb[0] != 0x0a && (cdb[1] & 0x08);
	int rc =
	    vdisk_writev(c->q, lba, &k->iov, 1, (fua || verify) ? VDISK_IO_FUA : 0, write_done, k);
	if (rc < 0)
		submit_failed(k, rc, true);
}

/* VERIFY: BYTCHK 0 checks the medium (a read), 1 compares the data-out, 3
 * compares one block against every block. */
static void verify_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	struct isc_target *t = k->c->t;
	if (!vdisk_ok(st)) {
		isc_task_status(k, st, false);
		return finish(k);
	}
	k->status = ST_GOOD;
	int bytchk = (k->cdb[1] >> 1) & 3;
	size_t bytes = (size_t)k->nblocks << t->shift;
	const uint8_t *got = k->buf + k->cap / 2;
	if (bytchk == 1 || bytchk == 3) {
		for (size_t i = 0; i < bytes; i++) {
			uint8_t want = bytchk == 1 ? k->buf[i] : k->buf[i & (t->bs - 1)];
			if (got[i] != want) {
				check_info(k, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, (uint32_t)i);
				break;
			}
		}
	}
	finish(k);
}

static void cmd_verify(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t *cdb = k->cdb;
	uint64_t lba, n;
	rw_fields(cdb, &lba, &n);
	int bytchk = (cdb[1] >> 1) & 3;
	if ((cdb[1] & 0xe0) || bytchk == 2) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (!lba_range(k, lba, n))
		return finish(k);
	size_t bytes = (size_t)(n << t->shift);
	k->has_expected = true;
	k->expected = bytchk == 1 ? bytes : bytchk == 3 ? t->bs : 0;
	if (n == 0)
		return finish(k);
	if (bytes > ISC_MAX_XFER) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (bytchk && k->have < k->expected) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IU);
		return finish(k);
	}
	/* the data-out (if any) stays in the first half, the read goes to the
	 * second */
	size_t have = k->write ? k->edtl : 0;
	size_t half = bytes > have ? bytes : have;
	if (k->buf && k->cap >= 2 * half) {
		/* fits */
	} else {
		uint8_t *old = k->buf;
		size_t old_len = have;
		uint8_t *keep = NULL;
		if (old && old_len) {
			keep = malloc(old_len);
			if (!keep) {
				k->status = ST_BUSY;
				return finish(k);
			}
			memcpy(keep, old, old_len);
		}
		bool ok = isc_task_buf(k, 2 * half);
		if (ok && keep)
			memcpy(k->buf, keep, old_len);
		free(keep);
		if (!ok) {
			k->status = ST_BUSY;
			return finish(k);
		}
	}
	k->nblocks = n;
	k->iov.iov_base = k->buf + k->cap / 2;
	k->iov.iov_len = bytes;
	int rc = vdisk_readv(c->q, lba, &k->iov, 1, verify_done, k);
	if (rc < 0)
		submit_failed(k, rc, false);
}

static void cmd_sync_cache(struct isc_task *k)
{
	uint64_t lba, n;
	if (k->cdb[0] == 0x35) {
		lba = isc_get32(k->cdb + 2);
		n = isc_get16(k->cdb + 7);
	} else {
		lba = isc_get64(k->cdb + 2);
		n = isc_get32(k->cdb + 10);
	}
	if (!lba_range(k, lba, n))
		return finish(k);
	int rc = vdisk_flush(k->c->q, write_done, k);
	if (rc < 0)
		submit_failed(k, rc, true);
}

static void cmd_prefetch(struct isc_task *k)
{
	uint64_t lba, n;
	if (k->cdb[0] == 0x34) {
		lba = isc_get32(k->cdb + 2);
		n = isc_get16(k->cdb + 7);
	} else {
		lba = isc_get64(k->cdb + 2);
		n = isc_get32(k->cdb + 10);
	}
	if (lba_range(k, lba, n))
		k->status = ST_CONDITION_MET;
	finish(k);
}

/* ------------------------------------------------------------------------- */
/* Capacity, sense, modes                                                      */
/* ------------------------------------------------------------------------- */

static void cmd_read_capacity10(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	uint64_t cap = vdisk_sector_count(t->disk);
	uint8_t b[8];
	isc_put32(b, cap - 1 > 0xffffffffull ? 0xffffffff : (uint32_t)(cap - 1));
	isc_put32(b + 4, t->bs);
	k->c->seen_sectors = cap;
	datain(k, b, 8, 8);
}

static void cmd_read_capacity16(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	uint64_t cap = vdisk_sector_count(t->disk);
	uint32_t alloc = isc_get32(k->cdb + 10);
	uint8_t b[32] = {0};
	isc_put64(b, cap - 1);
	isc_put32(b + 8, t->bs);
	b[13] = (uint8_t)__builtin_ctz(t->pbs / t->bs);
	if (t->unmap != VDISK_UNMAP_IGNORED) {
		b[14] = 0x80; /* LBPME */
		if (t->unmap == VDISK_UNMAP_ZEROES)
			b[14] |= 0x40; /* LBPRZ */
	}
	k->c->seen_sectors = cap;
	datain(k, b, 32, alloc);
}

static void cmd_get_lba_status_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	if (!vdisk_ok(st)) {
		isc_task_status(k, st, false);
		return finish(k);
	}
	uint8_t b[8 + 16 * 64];
	size_t n = 8;
	uint64_t next = k->lba;
	for (unsigned i = 0; i < k->nexts; i++) {
		/* descriptors start at the LBA asked for and follow each other */
		uint64_t end = k->ext[i].sector + k->ext[i].count;
		if (end <= next)
			continue;
		uint8_t *d = b + n;
		memset(d, 0, 16);
		isc_put64(d, next);
		uint64_t cnt = end - next;
		next = end;
		if (cnt > 0xffffffffull)
			cnt = 0xffffffffull;
		isc_put32(d + 8, (uint32_t)cnt);
		d[12] = (k->ext[i].flags & VDISK_EXTENT_HOLE) ? 1 : 0;
		n += 16;
	}
	isc_put32(b, (uint32_t)(n - 4));
	memset(b + 4, 0, 4);
	datain(k, b, n, isc_get32(k->cdb + 10));
	finish(k);
}

static void cmd_get_lba_status(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	uint64_t lba = isc_get64(k->cdb + 2);
	uint64_t cap = vdisk_sector_count(t->disk);
	if (lba >= cap) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return finish(k);
	}
	uint32_t alloc = isc_get32(k->cdb + 10);
	if (alloc < 24) {
		/* room for the header and one descriptor only */
	}
	unsigned max = alloc >= 8 ? (alloc - 8) / 16 : 0;
	if (max == 0)
		max = 1;
	if (max > 64)
		max = 64;
	uint64_t count = cap - lba;
	k->lba = lba;
	int rc =
	    vdisk_extents(k->c->q, lba, count, k->ext, max, &k->nexts, cmd_get_lba_status_done, k);
	if (rc < 0)
		submit_failed(k, rc, false);
}

static uint32_t pop_ua(struct isc_conn *c)
{
	struct isc_nexus *n = c->nexus;
	if (!n)
		return 0;
	uint32_t ua = atomic_load(&n->ua);
	if (!ua)
		return 0;
	uint32_t bit = ua & -ua;
	atomic_fetch_and(&n->ua, ~bit);
	return bit;
}

static uint16_t ua_asc(uint32_t bit)
{
	switch (bit) {
	case UA_RESET: return ASC_BUS_DEVICE_RESET;
	case UA_REG_PREEMPTED: return ASC_REGISTRATIONS_PREEMPTED;
	case UA_RES_PREEMPTED: return ASC_RESERVATIONS_PREEMPTED;
	case UA_RES_RELEASED: return ASC_RESERVATIONS_RELEASED;
	case UA_CAPACITY: return ASC_CAPACITY_CHANGED;
	default: return ASC_COMMANDS_CLEARED;
	}
}

static void cmd_request_sense(struct isc_task *k)
{
	uint8_t b[18] = {0x70};
	b[7] = 10;
	uint32_t ua = pop_ua(k->c);
	if (ua) {
		b[2] = SK_UNIT_ATTENTION;
		uint16_t asc = ua_asc(ua);
		b[12] = (uint8_t)(asc >> 8);
		b[13] = (uint8_t)asc;
	}
	datain(k, b, 18, k->cdb[4]);
	finish(k);
}

/* The pages we have: caching (08), control (0A), informational exceptions
 * (1C).  pc: 0 current, 1 changeable, 2 default. */
static size_t mode_page(struct isc_task *k, uint8_t page, int pc, uint8_t *b)
{
	struct isc_target *t = k->c->t;
	switch (page) {
	case 0x08:
		memset(b, 0, 20);
		b[0] = 0x08;
		b[1] = 0x12;
		if (pc != 1)
			b[2] = 0x04; /* WCE: writes are cached until a flush */
		return 20;
	case 0x0a:
		memset(b, 0, 12);
		b[0] = 0x0a;
		b[1] = 0x0a;
		if (pc != 1) {
			b[3] = 0x10; /* QERR 0, queue algorithm: unrestricted */
			b[5] = 0x40; /* TAS */
			isc_put16(b + 10, 0xffff);
		}
		(void)t;
		return 12;
	case 0x1c:
		memset(b, 0, 12);
		b[0] = 0x1c;
		b[1] = 0x0a;
		return 12;
	default: return 0;
	}
}

static void cmd_mode_sense(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	uint8_t *cdb = k->cdb;
	bool ten = cdb[0] == 0x5a;
	bool dbd = cdb[1] & 0x08;
	int pc = cdb[2] >> 6;
	uint8_t page = cdb[2] & 0x3f, sub = cdb[3];
	uint32_t alloc = ten ? isc_get16(cdb + 7) : cdb[4];
	if (pc == 3) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED);
		return finish(k);
	}
	uint8_t b[256];
	memset(b, 0, sizeof b);
	size_t hdr = ten ? 8 : 4, n = hdr;
	uint8_t devspec = (t->read_only ? 0x80 : 0) | 0x10; /* WP, DPOFUA */
	if (!dbd) {
		uint8_t *d = b + n;
		uint64_t cap = vdisk_sector_count(t->disk);
		isc_put32(d, cap > 0xffffffffull ? 0xffffffff : (uint32_t)cap);
		isc_put24(d + 5, t->bs);
		n += 8;
	}
	if (sub != 0 && sub != 0xff) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (page == 0x3f) {
		n += mode_page(k, 0x08, pc, b + n);
		n += mode_page(k, 0x0a, pc, b + n);
		n += mode_page(k, 0x1c, pc, b + n);
	} else {
		size_t m = mode_page(k, page, pc, b + n);
		if (!m || sub == 0xff) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return finish(k);
		}
		n += m;
	}
	if (ten) {
		isc_put16(b, (uint16_t)(n - 2));
		b[3] = devspec;
		isc_put16(b + 6, dbd ? 0 : 8);
	} else {
		b[0] = (uint8_t)(n - 1);
		b[2] = devspec;
		b[3] = dbd ? 0 : 8;
	}
	datain(k, b, n, alloc);
	finish(k);
}

static void cmd_mode_select(struct isc_task *k)
{
	/* parameters are accepted if well formed; nothing here is changeable,
	 * so values that differ from the current ones are refused */
	bool ten = k->cdb[0] == 0x55;
	uint32_t len = ten ? isc_get16(k->cdb + 7) : k->cdb[4];
	if (len == 0)
		return finish(k);
	if (len > k->have) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return finish(k);
	}
	size_t hdr = ten ? 8 : 4;
	if (len < hdr) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return finish(k);
	}
	size_t bdl = ten ? isc_get16(k->buf + 6) : k->buf[3];
	size_t pos = hdr + bdl;
	while (pos + 2 <= len) {
		uint8_t page = k->buf[pos] & 0x3f;
		size_t plen = (size_t)k->buf[pos + 1] + 2;
		uint8_t cur[32];
		size_t m = mode_page(k, page, 0, cur);
		if (!m || plen != m || pos + plen > len) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM);
			return finish(k);
		}
		for (size_t i = 2; i < m; i++)
			if (k->buf[pos + i] != cur[i] && !(page == 0x08 && i == 2)) {
				isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM);
				return finish(k);
			}
		pos += plen;
	}
	finish(k);
}

static void cmd_report_luns(struct isc_task *k)
{
	uint32_t alloc = isc_get32(k->cdb + 6);
	if (alloc < 16 || k->cdb[2] > 2) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	uint8_t b[16] = {0};
	isc_put32(b, 8);
	datain(k, b, 16, alloc);
	finish(k);
}

/* ------------------------------------------------------------------------- */
/* Unmap, write same, compare and write                                        */
/* ------------------------------------------------------------------------- */

static void multi_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	if (!vdisk_ok(st) && vdisk_ok(k->first_err))
		k->first_err = st;
	if (--k->pending)
		return;
	isc_task_status(k, k->first_err, true);
	finish(k);
}

static void cmd_unmap(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint32_t len = isc_get16(k->cdb + 7);
	if (t->read_only) {
		isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return finish(k);
	}
	if (k->cdb[1] & 0x01) { /* ANCHOR */
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (len == 0)
		return finish(k);
	if (len < 8 || len > k->have) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return finish(k);
	}
	uint32_t bdl = isc_get16(k->buf + 2);
	if (bdl > len - 8)
		bdl = len - 8;
	unsigned nd = bdl / 16;
	if (nd > ISC_MAX_UNMAP_DESC) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_PARAM);
		return finish(k);
	}
	uint64_t cap = vdisk_sector_count(t->disk);
	for (unsigned i = 0; i < nd; i++) {
		const uint8_t *d = k->buf + 8 + 16 * i;
		uint64_t lba = isc_get64(d);
		uint32_t n = isc_get32(d + 8);
		if (lba > cap || n > cap - lba) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
			return finish(k);
		}
	}
	if (caw_blocks(k))
		return;
	k->first_err = (vdisk_status){0};
	k->pending = 1;
	for (unsigned i = 0; i < nd; i++) {
		const uint8_t *d = k->buf + 8 + 16 * i;
		uint32_t n = isc_get32(d + 8);
		if (!n)
			continue;
		k->pending++;
		int rc = vdisk_unmap(c->q, isc_get64(d), n, 0, multi_done, k);
		if (rc < 0) {
			k->pending--;
			k->first_err = vdisk_status_make(VDISK_ERR_IO, -rc);
			break;
		}
	}
	multi_done(k, (vdisk_status){0});
}

/* WRITE SAME of a non-zero block: a buffer of copies written in pieces. */
static void ws_next(struct isc_task *k);
static void ws_done(void *opaque, vdisk_status st)
{
	struct isc_task *k = opaque;
	if (!vdisk_ok(st)) {
		isc_task_status(k, st, true);
		return finish(k);
	}
	ws_next(k);
}

static void ws_next(struct isc_task *k)
{
	struct isc_target *t = k->c->t;
	if (k->done_blocks >= k->nblocks) {
		k->status = ST_GOOD;
		return finish(k);
	}
	uint64_t per = (k->cap >> t->shift);
	uint64_t n = k->nblocks - k->done_blocks;
	if (n > per)
		n = per;
	k->iov.iov_base = k->buf;
	k->iov.iov_len = (size_t)(n << t->shift);
	uint64_t lba = k->lba + k->done_blocks;
	k->done_blocks += n;
	int rc = vdisk_writev(k->c->q, lba, &k->iov, 1, 0, ws_done, k);
	if (rc < 0)
		submit_failed(k, rc, true);
}

static void cmd_write_same(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t *cdb = k->cdb;
	bool sixteen = cdb[0] == 0x93;
	uint64_t lba = sixteen ? isc_get64(cdb + 2) : isc_get32(cdb + 2);
	uint64_t n = sixteen ? isc_get32(cdb + 10) : isc_get16(cdb + 7);
	bool unmap = cdb[1] & 0x08, anchor = cdb[1] & 0x10, ndob = sixteen && (cdb[1] & 0x01);
	if ((cdb[1] & 0xe0) || anchor) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (t->read_only) {
		isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return finish(k);
	}
	uint64_t cap = vdisk_sector_count(t->disk);
	if (n == 0)
		n = lba <= cap ? cap - lba : 0; /* to the end of the medium */
	if (!lba_range(k, lba, n))
		return finish(k);
	k->has_expected = true;
	k->expected = ndob ? 0 : t->bs;
	if (!ndob && k->have < t->bs) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (k->edtl > (ndob ? 0 : t->bs)) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (n > (ISC_MAX_XFER >> t->shift)) {
		/* over the MAXIMUM WRITE SAME LENGTH of the block limits */
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (n == 0)
		return finish(k);
	if (caw_blocks(k))
		return;
	k->lba = lba;
	k->nblocks = n;
	if (unmap && t->unmap == VDISK_UNMAP_UNSPECIFIED) {
		/* UNMAP: the blocks are deallocated, whatever the data block */
		int rc = vdisk_unmap(c->q, lba, n, 0, write_done, k);
		if (rc < 0)
			submit_failed(k, rc, true);
		return;
	}
	bool zero =
	    ndob || vdisk_buf_is_zero(k->buf, t->bs) || (unmap && t->unmap == VDISK_UNMAP_ZEROES);
	if (zero) {
		unsigned flags = unmap && t->unmap == VDISK_UNMAP_ZEROES ? VDISK_ZERO_MAY_UNMAP : 0;
		int rc = vdisk_write_zeroes(c->q, lba, n, flags, write_done, k);
		if (rc < 0)
			submit_failed(k, rc, true);
		return;
	}
	/* fill a buffer of up to 1 MiB with copies of the block */
	size_t want = n << t->shift > (1u << 20) ? (1u << 20) : (size_t)(n << t->shift);
	uint8_t *blk = malloc(t->bs);
	if (!blk) {
		k->status = ST_BUSY;
		return finish(k);
	}
	memcpy(blk, k->buf, t->bs);
	if (!isc_task_buf(k, want)) {
		free(blk);
		k->status = ST_BUSY;
		return finish(k);
	}
	for (size_t off = 0; off + t->bs <= k->cap && off < want; off += t->bs)
		memcpy(k->buf + off, blk, t->bs);
	free(blk);
	if (k->cap > want)
		k->cap = want; /* ws_next writes whole copies only */
	k->done_blocks = 0;
	ws_next(k);
}

/* COMPARE AND WRITE: done with the synchronous API while every other writer
 * of the target waits, which makes it atomic against them. */
static void cmd_compare_and_write(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t *cdb = k->cdb;
	uint64_t lba = isc_get64(cdb + 2);
	uint32_t n = cdb[13];
	if (cdb[1] & 0xe0) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (t->read_only) {
		isc_task_check(k, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return finish(k);
	}
	if (n > ISC_MAX_CAW_BLOCKS) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (!lba_range(k, lba, n))
		return finish(k);
	size_t bytes = (size_t)n << t->shift;
	k->has_expected = true;
	k->expected = 2 * bytes;
	if (k->edtl != 2 * bytes) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	if (n == 0)
		return finish(k);
	if (pthread_mutex_trylock(&t->caw_lock) != 0) {
		k->deferred = true;
		c->deferred++;
		return;
	}
	atomic_store(&t->caw_active, 1);
	/* this connection's own writes first, then everyone else's */
	while (atomic_load(&t->writers) > 0) {
		if (vdisk_queue_inflight(c->q))
			vdisk_queue_wait(c->q, 100000);
		else
			sched_yield();
	}
	uint8_t *cur = malloc(bytes);
	if (!cur) {
		k->status = ST_BUSY;
		goto out;
	}
	vdisk_status st = vdisk_pread(t->disk, cur, bytes, lba << t->shift);
	if (!vdisk_ok(st)) {
		isc_task_status(k, st, false);
		goto out;
	}
	for (size_t i = 0; i < bytes; i++)
		if (cur[i] != k->buf[i]) {
			check_info(k, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, (uint32_t)i);
			goto out;
		}
	st = vdisk_pwrite(t->disk, k->buf + bytes, bytes, lba << t->shift,
	                  (cdb[1] & 0x08) ? VDISK_IO_FUA : 0);
	isc_task_status(k, st, true);
out:
	free(cur);
	atomic_store(&t->caw_active, 0);
	pthread_mutex_unlock(&t->caw_lock);
	finish(k);
}

/* ------------------------------------------------------------------------- */
/* Start stop, reserve/release (SPC-2)                                         */
/* ------------------------------------------------------------------------- */

static void cmd_start_stop(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t b4 = k->cdb[4];
	if ((b4 >> 4) != 0) /* a power condition: nothing to do */
		return finish(k);
	bool loej = b4 & 0x02, start = b4 & 0x01;
	if (!loej)
		return finish(k);
	if (start) {
		if (atomic_load(&t->ejected))
			isc_task_check(k, SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
		return finish(k);
	}
	if (!(t->caps & VDISK_CAP_EJECT)) {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	int rc = vdisk_eject(c->q, write_done, k);
	if (rc < 0)
		submit_failed(k, rc, true);
	else
		atomic_store(&t->ejected, true);
}

static void cmd_reserve6(struct isc_task *k, bool reserve)
{
	struct isc_target *t = k->c->t;
	struct isc_nexus *me = k->c->nexus;
	pthread_mutex_lock(&t->lock);
	struct isc_nexus *h = atomic_load(&t->spc2_holder);
	if (reserve) {
		if (h && h != me)
			k->status = ST_RESERVATION_CONFLICT;
		else
			atomic_store(&t->spc2_holder, me);
	} else if (h == me) {
		atomic_store(&t->spc2_holder, NULL);
	}
	pthread_mutex_unlock(&t->lock);
	finish(k);
}

/* ------------------------------------------------------------------------- */
/* REPORT SUPPORTED OPERATION CODES                                            */
/* ------------------------------------------------------------------------- */

struct opinfo {
	uint8_t op;
	uint16_t sa;
	bool has_sa;
	uint8_t len;
	uint8_t mask[16];
};

static const struct opinfo ops[] = {
    {0x00, 0, false, 6, {0x00, 0, 0, 0, 0, 0x07}},
    {0x03, 0, false, 6, {0x03, 0x01, 0, 0, 0xff, 0x07}},
    {0x08, 0, false, 6, {0x08, 0x1f, 0xff, 0xff, 0xff, 0x07}},
    {0x0a, 0, false, 6, {0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07}},
    {0x12, 0, false, 6, {0x12, 0x01, 0xff, 0xff, 0xff, 0x07}},
    {0x15, 0, false, 6, {0x15, 0x11, 0, 0, 0xff, 0x07}},
    {0x16, 0, false, 6, {0x16, 0, 0, 0, 0, 0x07}},
    {0x17, 0, false, 6, {0x17, 0, 0, 0, 0, 0x07}},
    {0x1a, 0, false, 6, {0x1a, 0x08, 0xff, 0xff, 0xff, 0x07}},
    {0x1b, 0, false, 6, {0x1b, 0x01, 0, 0x0f, 0xf7, 0x07}},
    {0x25, 0, false, 10, {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
    {0x28, 0, false, 10, {0x28, 0x18, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x2a, 0, false, 10, {0x2a, 0x18, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x2e, 0, false, 10, {0x2e, 0x12, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x2f, 0, false, 10, {0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x34, 0, false, 10, {0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x35, 0, false, 10, {0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x41, 0, false, 10, {0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0x07}},
    {0x42, 0, false, 10, {0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x55, 0, false, 10, {0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5a, 0, false, 10, {0x5a, 0x08, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5e, 0, true, 10, {0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5e, 1, true, 10, {0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5e, 2, true, 10, {0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5e, 3, true, 10, {0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
    {0x5f, 0, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 1, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 2, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 3, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 4, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 5, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x5f, 6, true, 10, {0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}},
    {0x88,
     0,
     false,
     16,
     {0x88, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x89,
     0,
     false,
     16,
     {0x89, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0, 0x07}},
    {0x8a,
     0,
     false,
     16,
     {0x8a, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x8e,
     0,
     false,
     16,
     {0x8e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x8f,
     0,
     false,
     16,
     {0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x90,
     0,
     false,
     16,
     {0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x91,
     0,
     false,
     16,
     {0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x93,
     0,
     false,
     16,
     {0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x9e,
     0x10,
     true,
     16,
     {0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0x9e,
     0x12,
     true,
     16,
     {0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xa0, 0, false, 12, {0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xa3, 0x0c, true, 12, {0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xa8, 0, false, 12, {0xa8, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xaa, 0, false, 12, {0xaa, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xae, 0, false, 12, {0xae, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
    {0xaf, 0, false, 12, {0xaf, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
};

static void cmd_report_opcodes(struct isc_task *k)
{
	uint8_t *cdb = k->cdb;
	int ro = cdb[2] & 0x07;
	bool rctd = cdb[2] & 0x80;
	uint8_t rop = cdb[3];
	uint16_t rsa = isc_get16(cdb + 4);
	uint32_t alloc = isc_get32(cdb + 6);
	uint8_t b[4 + sizeof ops / sizeof ops[0] * 20 + 64];
	memset(b, 0, sizeof b);
	size_t n;
	if (ro == 0) {
		n = 4;
		for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
			uint8_t *d = b + n;
			d[0] = ops[i].op;
			isc_put16(d + 2, ops[i].sa);
			d[5] = (ops[i].has_sa ? 0x01 : 0) | (rctd ? 0x02 : 0);
			isc_put16(d + 6, ops[i].len);
			n += 8;
			if (rctd) {
				isc_put16(d + 8, 0x0a);
				n += 12;
			}
		}
		isc_put32(b, (uint32_t)(n - 4));
	} else if (ro >= 1 && ro <= 3) {
		const struct opinfo *f = NULL;
		bool any_sa = false;
		for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
			if (ops[i].op != rop)
				continue;
			if (ops[i].has_sa)
				any_sa = true;
			if ((ro == 1 && !ops[i].has_sa) ||
			    (ro != 1 && ops[i].has_sa && ops[i].sa == rsa) ||
			    (ro == 3 && !ops[i].has_sa))
				f = &ops[i];
		}
		bool known = false;
		for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
			known |= ops[i].op == rop;
		if ((ro == 1 && any_sa) || (ro == 2 && known && !any_sa)) {
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
			return finish(k);
		}
		if (ro == 3 && f && !f->has_sa && rsa) {
			f = NULL;
		}
		b[1] = f ? 0x03 : 0x01; /* SUPPORT: supported per standard / not */
		if (rctd)
			b[1] |= 0x80;
		n = 4;
		if (f) {
			isc_put16(b + 2, f->len);
			memcpy(b + 4, f->mask, f->len);
			n += f->len;
		}
		if (rctd) {
			isc_put16(b + n, 0x0a);
			n += 12;
		}
	} else {
		isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_CDB);
		return finish(k);
	}
	datain(k, b, n, alloc);
	finish(k);
}

/* ------------------------------------------------------------------------- */
/* Dispatch                                                                    */
/* ------------------------------------------------------------------------- */

enum { ACC_NONE = 0, ACC_R = 1, ACC_W = 2 };

/* What a command needs under a reservation (SPC-4 table 66, simplified to
 * data access): 0 for commands every nexus may issue. */
static int access_of(uint8_t op)
{
	switch (op) {
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88: /* READ */
	case 0x2f:
	case 0xaf:
	case 0x8f: /* VERIFY */
	case 0x34:
	case 0x90: /* PRE-FETCH */ return ACC_R;
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a: /* WRITE */
	case 0x2e:
	case 0xae:
	case 0x8e: /* WRITE AND VERIFY */
	case 0x41:
	case 0x93:
	case 0x42:
	case 0x89: /* WRITE SAME, UNMAP, CAW */
	case 0x35:
	case 0x91: /* SYNCHRONIZE CACHE */
	case 0x15:
	case 0x55:
	case 0x1b: /* MODE SELECT, START STOP */ return ACC_W;
	case 0x9e: /* GET LBA STATUS (READ CAPACITY 16 is allowed) */ return ACC_NONE;
	default: return ACC_NONE;
	}
}

/* Commands a nexus may issue while another holds an SPC-2 reservation. */
static bool spc2_allowed(uint8_t op)
{
	switch (op) {
	case 0x12:
	case 0xa0:
	case 0x03:
	case 0x17:
	case 0x5e:
	case 0x5f:
	case 0x25:
	case 0x9e:
	case 0xa3: return true;
	default: return false;
	}
}

void isc_scsi_exec(struct isc_task *k)
{
	struct isc_conn *c = k->c;
	struct isc_target *t = c->t;
	uint8_t op = k->cdb[0];
	if (k->lun != 0) {
		if (op == 0x12)
			cmd_inquiry(k);
		else if (op == 0xa0)
			return cmd_report_luns(k);
		else if (op == 0x03)
			return cmd_request_sense(k);
		else
			isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
		return finish(k);
	}
	if (op != 0x12 && op != 0xa0 && op != 0x03) {
		uint64_t cap = vdisk_sector_count(t->disk);
		if (cap != c->seen_sectors && c->nexus) {
			c->seen_sectors = cap;
			atomic_fetch_or(&c->nexus->ua, UA_CAPACITY);
		}
		uint32_t ua = pop_ua(c);
		if (ua) {
			isc_task_check(k, SK_UNIT_ATTENTION, ua_asc(ua));
			return finish(k);
		}
	}
	struct isc_nexus *h = atomic_load(&t->spc2_holder);
	if (h && h != c->nexus && !spc2_allowed(op)) {
		k->status = ST_RESERVATION_CONFLICT;
		return finish(k);
	}
	int acc = access_of(op);
	if (acc) {
		uint8_t have = isc_pr_access(c);
		if ((acc == ACC_R && !(have & PR_ACC_READ)) ||
		    (acc == ACC_W && !(have & PR_ACC_WRITE))) {
			k->status = ST_RESERVATION_CONFLICT;
			return finish(k);
		}
	}
	if (atomic_load(&t->ejected) && op != 0x12 && op != 0xa0 && op != 0x03 && op != 0x1b &&
	    op != 0x5e && op != 0x5f && op != 0xa3) {
		isc_task_check(k, SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
		return finish(k);
	}
	switch (op) {
	case 0x00: return finish(k); /* TEST UNIT READY */
	case 0x03: return cmd_request_sense(k);
	case 0x12: cmd_inquiry(k); return finish(k);
	case 0x25: cmd_read_capacity10(k); return finish(k);
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88: return cmd_read(k);
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a:
	case 0x2e:
	case 0xae:
	case 0x8e: return cmd_write(k);
	case 0x2f:
	case 0xaf:
	case 0x8f: return cmd_verify(k);
	case 0x35:
	case 0x91: return cmd_sync_cache(k);
	case 0x34:
	case 0x90: return cmd_prefetch(k);
	case 0x9e:
		switch (k->cdb[1] & 0x1f) {
		case 0x10: cmd_read_capacity16(k); return finish(k);
		case 0x12: return cmd_get_lba_status(k);
		default: break;
		}
		break;
	case 0x1a:
	case 0x5a: return cmd_mode_sense(k);
	case 0x15:
	case 0x55: return cmd_mode_select(k);
	case 0xa0: return cmd_report_luns(k);
	case 0x42: return cmd_unmap(k);
	case 0x41:
	case 0x93: return cmd_write_same(k);
	case 0x89: return cmd_compare_and_write(k);
	case 0x1b: return cmd_start_stop(k);
	case 0x1e: /* PREVENT ALLOW MEDIUM REMOVAL: nothing holds the medium */ return finish(k);
	case 0x16: return cmd_reserve6(k, true);
	case 0x17: return cmd_reserve6(k, false);
	case 0x5e: isc_pr_in(k); return finish(k);
	case 0x5f: isc_pr_out(k); return finish(k);
	case 0xa3:
		if ((k->cdb[1] & 0x1f) == 0x0c)
			return cmd_report_opcodes(k);
		break;
	default: break;
	}
	isc_task_check(k, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
	finish(k);
}

void isc_scsi_retry_deferred(struct isc_conn *c)
{
	struct isc_target *t = c->t;
	if (atomic_load(&t->caw_active))
		return;
	for (struct isc_task *k = c->active; k && c->deferred;) {
		struct isc_task *nx = k->next;
		if (k->deferred) {
			k->deferred = false;
			c->deferred--;
			if (k->aborted) {
				finish(k);
			} else {
				isc_scsi_exec(k);
			}
		}
		k = nx;
	}
}
