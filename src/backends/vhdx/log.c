/* vhdx: reading the log.
 *
 * The log is a circular buffer of 4 KiB sectors.  An entry is a header sector
 * ("loge": checksum over the whole entry, length, the tail's offset, sequence
 * number, descriptor count, log GUID, the file sizes it needs and leaves), the
 * rest of its descriptors ("zero": zero a range; "desc": write one 4 KiB
 * sector, whose first 8 and last 4 bytes are kept in the descriptor), then one
 * data sector per "desc" ("data", the sequence number split around 4084 bytes
 * of payload).  A sequence is a run of valid entries, each at the end of the
 * one before (modulo the log) with the next sequence number; it is complete
 * when the tail its last entry names is one of its entries.  Replaying means
 * applying, in order, the entries from that tail to the last entry of the
 * complete sequence whose last sequence number is highest.
 *
 * Every field is checked before it is used; the work is bounded by the log's
 * size: an entry's descriptor and data sectors cannot start another entry (they
 * carry other signatures), so the entries that pass the structural checks do
 * not overlap and their checksums cost one pass over the log in all. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vhdx.h"

#define SECTOR 4096u

struct entry {
	int state; /* 0 unknown, 1 valid, -1 invalid */
	uint32_t len;
	uint32_t tail;
	uint64_t seq;
	uint32_t ndesc;
	uint64_t flushed, last;
};

struct log {
	const uint8_t *buf;
	uint64_t len;
	uint64_t nsec;
	const uint8_t *guid;
	struct entry *e; /* per sector */
	uint8_t *tmp;    /* one entry made contiguous, for its checksum */
};

/* Sector i (modulo the log). */
static const uint8_t *sec(const struct log *l, uint64_t i)
{
	return l->buf + (i % l->nsec) * SECTOR;
}

static uint32_t desc_sectors(uint32_t ndesc)
{
	return (uint32_t)((64ull + 32ull * ndesc + SECTOR - 1) / SECTOR);
}

/* Byte k of the descriptor area of the entry starting at sector s. */
static const uint8_t *desc(const struct log *l, uint64_t s, uint32_t k)
{
	uint64_t byte = 64ull + 32ull * k;
	return sec(l, s + byte / SECTOR) + byte % SECTOR;
}

static bool check_entry(struct log *l, uint64_t s)
{
	struct entry *e = &l->e[s];
	if (e->state)
		return e->state > 0;
	e->state = -1;
	const uint8_t *h = sec(l, s);
	if (memcmp(h, "loge", 4) != 0)
		return false;
	uint32_t len = img_le32(h + 8), tail = img_le32(h + 12), ndesc = img_le32(h + 24);
	uint64_t seq = vhdx_le64(h + 16);
	if (len == 0 || len % SECTOR || len > l->len || tail % SECTOR || tail >= l->len ||
	    seq == 0 || img_le32(h + 28) != 0 || memcmp(h + 32, l->guid, 16) != 0)
		return false;
	uint64_t nsecs = len / SECTOR;
	if (ndesc > (nsecs * SECTOR - 64) / 32)
		return false;
	uint32_t dsecs = desc_sectors(ndesc);
	uint32_t ndata = 0;
	for (uint32_t k = 0; k < ndesc; k++) {
		const uint8_t *d = desc(l, s, k);
		bool is_data = memcmp(d, "desc", 4) == 0;
		if (!is_data && memcmp(d, "zero", 4) != 0)
			return false;
		if (vhdx_le64(d + 24) != seq || vhdx_le64(d + 16) % SECTOR)
			return false;
		if (!is_data && (img_le32(d + 4) != 0 || vhdx_le64(d + 8) % SECTOR))
			return false;
		if (is_data) {
			if (dsecs + ndata >= nsecs)
				return false;
			const uint8_t *ds = sec(l, s + dsecs + ndata);
			uint64_t dseq = (uint64_t)img_le32(ds + 4) << 32 | img_le32(ds + 4092);
			if (memcmp(ds, "data", 4) != 0 || dseq != seq)
				return false;
			ndata++;
		}
	}
	if ((uint64_t)dsecs + ndata != nsecs)
		return false;
	/* the checksum, over the entry made contiguous with its field zeroed */
	for (uint64_t i = 0; i < nsecs; i++)
		memcpy(l->tmp + i * SECTOR, sec(l, s + i), SECTOR);
	memset(l->tmp + 4, 0, 4);
	if (vdisk_crc32c(0, l->tmp, len) != img_le32(h + 4))
		return false;
	*e = (struct entry){1, len, tail, seq, ndesc, vhdx_le64(h + 48), vhdx_le64(h + 56)};
	return true;
}

static int add_write(struct vhdx_replay *rp, size_t *cap, uint64_t off, uint64_t len, uint8_t *data)
{
	if (rp->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct vhdx_write *w = realloc(rp->w, nc * sizeof *w);
		if (!w)
			return -1;
		rp->w = w;
		*cap = nc;
	}
	rp->w[rp->n++] = (struct vhdx_write){off, (uint32_t)len, data};
	return 0;
}

/* The writes of the valid entry at sector s. */
static int entry_writes(struct log *l, uint64_t s, struct vhdx_replay *rp, size_t *cap)
{
	const struct entry *e = &l->e[s];
	uint32_t dsecs = desc_sectors(e->ndesc), ndata = 0;
	for (uint32_t k = 0; k < e->ndesc; k++) {
		const uint8_t *d = desc(l, s, k);
		uint64_t off = vhdx_le64(d + 16);
		if (off < VHDX_MiB)
			return vdisk_set_error("log: entry %" PRIu64 " (sequence %" PRIu64
			                       ") descriptor %u writes at offset %" PRIu64
			                       ", inside the headers",
			                       s * SECTOR, e->seq, k, off);
		if (memcmp(d, "zero", 4) == 0) {
			uint64_t zl = vhdx_le64(d + 8);
			/* one write per MiB at most, so a length cannot overflow 32 bits */
			for (uint64_t o = 0; o < zl; o += VHDX_MiB) {
				uint64_t n = zl - o < VHDX_MiB ? zl - o : VHDX_MiB;
				if (off + o < off || add_write(rp, cap, off + o, n, NULL) < 0)
					return vdisk_set_error("log: entry %" PRIu64
					                       " descriptor %u: a zero "
					                       "range of %" PRIu64
					                       " bytes at %" PRIu64 " is too large",
					                       s * SECTOR, k, zl, off);
			}
			continue;
		}
		const uint8_t *ds = sec(l, s + dsecs + ndata++);
		uint8_t *buf = malloc(SECTOR);
		if (!buf || add_write(rp, cap, off, SECTOR, buf) < 0) {
			free(buf);
			return vdisk_set_error_errno(ENOMEM, "log");
		}
		memcpy(buf, d + 8, 8);                /* leading bytes */
		memcpy(buf + 8, ds + 8, SECTOR - 12); /* payload */
		memcpy(buf + SECTOR - 4, d + 4, 4);   /* trailing bytes */
	}
	return 0;
}

int vhdx_log_parse(const uint8_t *buf, uint64_t log_len, const uint8_t log_guid[16],
                   struct vhdx_replay *out)
{
	memset(out, 0, sizeof *out);
	struct log l = {buf, log_len, log_len / SECTOR, log_guid, NULL, NULL};
	l.e = calloc(l.nsec, sizeof *l.e);
	l.tmp = malloc(log_len);
	/* entries that continue a valid one: a sequence starting there is a suffix
	 * of a longer one with the same head, so only the others start a walk */
	uint8_t *has_pred = calloc(l.nsec, 1);
	int rc = -1;
	if (!l.e || !l.tmp || !has_pred) {
		vdisk_set_error_errno(ENOMEM, "log: %" PRIu64 " bytes", log_len);
		goto out;
	}
	/* the best complete sequence: its first entry and its head */
	uint64_t best_head = UINT64_MAX, best_tail = 0, best_seq = 0;
	for (uint64_t s = 0; s < l.nsec; s++) {
		if (!check_entry(&l, s))
			continue;
		uint64_t nx = (s + l.e[s].len / SECTOR) % l.nsec;
		if (nx != s && check_entry(&l, nx) && l.e[nx].seq == l.e[s].seq + 1)
			has_pred[nx] = 1;
	}
	for (uint64_t s = 0; s < l.nsec; s++) {
		if (l.e[s].state <= 0 || has_pred[s])
			continue;
		/* follow the chain from s */
		uint64_t cur = s, steps = 1;
		while (steps < l.nsec) {
			uint64_t nx = (cur + l.e[cur].len / SECTOR) % l.nsec;
			if (nx == s || !check_entry(&l, nx) || l.e[nx].seq != l.e[cur].seq + 1)
				break;
			cur = nx;
			steps++;
		}
		/* complete if the head's tail is an entry of s..cur */
		uint64_t tail = l.e[cur].tail / SECTOR;
		bool found = false;
		for (uint64_t x = s, i = 0; i < steps; i++) {
			if (x == tail) {
				found = true;
				break;
			}
			x = (x + l.e[x].len / SECTOR) % l.nsec;
		}
		if (found && (best_head == UINT64_MAX || l.e[cur].seq > best_seq)) {
			best_head = cur;
			best_tail = tail;
			best_seq = l.e[cur].seq;
		}
	}
	if (best_head == UINT64_MAX) {
		rc = 0;
		goto out;
	}
	size_t cap = 0;
	for (uint64_t x = best_tail;; x = (x + l.e[x].len / SECTOR) % l.nsec) {
		if (entry_writes(&l, x, out, &cap) < 0) {
			vhdx_replay_free(out);
			goto out;
		}
		out->entries++;
		if (x == best_head)
			break;
	}
	out->head_seq = best_seq;
	out->flushed_bytes = l.e[best_head].flushed;
	out->last_bytes = l.e[best_head].last;
	rc = 0;
out:
	free(has_pred);
	free(l.e);
	free(l.tmp);
	return rc;
}

void vhdx_replay_free(struct vhdx_replay *rp)
{
	for (size_t i = 0; i < rp->n; i++)
		free(rp->w[i].data);
	free(rp->w);
	memset(rp, 0, sizeof *rp);
}
