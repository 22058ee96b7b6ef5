/* Persistent reservations of a block device: the kernel's pr_ops ioctls
 * (IOC_PR_*) for the actions, an NVMe Reservation Report through I/O
 * passthrough for the state, as OpenVMM's block-device backend does.
 *
 * Offered only for NVMe namespaces whose controller supports reservations
 * (Identify Controller ONCS bit 5) and whose namespace names at least one type
 * (Identify Namespace RESCAP): the kernel has no call that says whether a
 * device implements pr_ops, and no other call that reads the state back.
 *
 * The report asks for the extended data structure (CDW11.EDS = 1) because it
 * parses the extended layout: 64-byte entries with 128-bit host ids.  Without
 * EDS a controller answers in the 24-byte layout, whose key and host id sit at
 * other offsets (OpenVMM's backend misses the bit). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/nvme_ioctl.h>
#include <linux/pr.h>

#include "blockdev.h"

#define NVME_ADMIN_IDENTIFY 0x06
#define NVME_CMD_RESV_REPORT 0x0e
#define NVME_SC_RESERVATION_CONFLICT 0x83
#define NVME_ONCS_RESERVATIONS (1u << 5)
#define PR_STATUS_RESERVATION_CONFLICT 0x18 /* PR_STS_* (newer kernels) and SAM status */

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16;
}
static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int identify(int fd, uint32_t nsid, uint32_t cns, uint8_t *buf)
{
	struct nvme_passthru_cmd c = {
	    .opcode = NVME_ADMIN_IDENTIFY,
	    .nsid = nsid,
	    .addr = (uint64_t)(uintptr_t)buf,
	    .data_len = 4096,
	    .cdw10 = cns,
	};
	return ioctl(fd, NVME_IOCTL_ADMIN_CMD, &c);
}

bool blk_pr_probe(int fd, const struct blk_info *bi, struct blk_pr *pr)
{
	bool ok = false;
	uint8_t *buf = NULL;
	if (!bi->nsid || posix_memalign((void **)&buf, 4096, 4096))
		return false;
	/* Identify Controller: ONCS at bytes 521:520 */
	if (identify(fd, 0, 1, buf) != 0 || !(le16(buf + 520) & NVME_ONCS_RESERVATIONS))
		goto out;
	/* Identify Namespace: RESCAP at byte 31 */
	if (identify(fd, bi->nsid, 0, buf) != 0 || buf[31] == 0)
		goto out;
	pr->fd = fd;
	pr->nsid = bi->nsid;
	pr->rescap = buf[31];
	ok = true;
out:
	free(buf);
	return ok;
}

/* The outcome of a pr_ops ioctl: -1 with errno, or a positive device status. */
static vdisk_status pr_status(int rc)
{
	if (rc == 0)
		return vdisk_status_ok();
	if (rc < 0 && errno == EBADE)
		return vdisk_status_make(VDISK_ERR_RESERVATION_CONFLICT, EBADE);
	if (rc < 0 && (errno == ENOTTY || errno == EOPNOTSUPP))
		return vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, errno);
	if (rc < 0)
		return vdisk_status_io(errno);
	if (rc == PR_STATUS_RESERVATION_CONFLICT || (rc & 0x7ff) == NVME_SC_RESERVATION_CONFLICT)
		return vdisk_status_make(VDISK_ERR_RESERVATION_CONFLICT, EBADE);
	return vdisk_status_io(EIO);
}

static vdisk_status blk_pr_capabilities(struct vdisk *d, struct vdisk_pr_capabilities *caps)
{
	struct blk_pr *pr = file_blk_pr(d);
	/* RESCAP bit n (1..6) is reservation type n; bit 0 is PTPL */
	caps->types = pr->rescap & 0x7eu;
	caps->persist_through_power_loss = pr->rescap & 1u;
	return vdisk_status_ok();
}

unsigned blk_pr_parse_report(const uint8_t *buf, size_t len, struct vdisk_pr_report *rep,
                             struct vdisk_pr_registrant *regs, unsigned max)
{
	if (len < 64)
		return 0;
	unsigned n = le16(buf + 5);
	rep->generation = le32(buf);
	rep->type = buf[4] <= VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS ? buf[4] : VDISK_PR_NONE;
	rep->persist_through_power_loss = buf[9] != 0;
	rep->nregistrants = n;
	for (unsigned i = 0; i < n && i < max && 64 + 64 * (size_t)(i + 1) <= len; i++) {
		const uint8_t *e = buf + 64 + 64 * (size_t)i;
		struct vdisk_pr_registrant *r = &regs[i];
		memset(r, 0, sizeof *r);
		r->controller_id = le16(e);
		r->holds_reservation = e[2] & 1;
		r->key = le64(e + 8);
		memcpy(r->host_id, e + 16, 16);
		r->host_id_len = 16;
	}
	return n;
}

static vdisk_status blk_pr_report(struct vdisk *d, struct vdisk_pr_report *rep,
                                  struct vdisk_pr_registrant *regs, unsigned max)
{
	struct blk_pr *pr = file_blk_pr(d);
	size_t len = 4096;
	for (int attempt = 0; attempt < 2; attempt++) {
		uint8_t *buf;
		if (posix_memalign((void **)&buf, 4096, len))
			return vdisk_status_io(ENOMEM);
		memset(buf, 0, len);
		struct nvme_passthru_cmd c = {
		    .opcode = NVME_CMD_RESV_REPORT,
		    .nsid = pr->nsid,
		    .addr = (uint64_t)(uintptr_t)buf,
		    .data_len = (uint32_t)len,
		    .cdw10 = (uint32_t)(len / 4 - 1), /* NUMD, 0's based dwords */
		    .cdw11 = 1,                       /* EDS: extended data structure */
		};
		int rc = ioctl(pr->fd, NVME_IOCTL_IO_CMD, &c);
		if (rc != 0) {
			free(buf);
			return pr_status(rc);
		}
		unsigned n = blk_pr_parse_report(buf, len, rep, regs, max);
		free(buf);
		/* every entry the caller asked for was in the answer */
		size_t need = 64 + 64 * (size_t)(n < max ? n : max);
		if (need <= len)
			return vdisk_status_ok();
		len = (need + 4095) / 4096 * 4096;
	}
	return vdisk_status_io(EIO); /* the registrant count kept changing */
}

static vdisk_status blk_pr_register(struct vdisk *d, uint64_t current_key, uint64_t new_key,
                                    unsigned flags)
{
	struct blk_pr *pr = file_blk_pr(d);
	/* the kernel's NVMe register always asks the device to persist
	 * (CPTPL = 3); there is no way to ask otherwise through pr_ops */
	if (flags & VDISK_PR_CLEAR_PTPL)
		return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
	struct pr_registration reg = {
	    .old_key = current_key,
	    .new_key = new_key,
	    .flags = (flags & VDISK_PR_IGNORE_EXISTING_KEY) ? PR_FL_IGNORE_KEY : 0,
	};
	return pr_status(ioctl(pr->fd, IOC_PR_REGISTER, &reg));
}

static vdisk_status blk_pr_reserve(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	struct pr_reservation rsv = {.key = key, .type = (uint32_t)type};
	return pr_status(ioctl(file_blk_pr(d)->fd, IOC_PR_RESERVE, &rsv));
}

static vdisk_status blk_pr_release(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	struct pr_reservation rsv = {.key = key, .type = (uint32_t)type};
	return pr_status(ioctl(file_blk_pr(d)->fd, IOC_PR_RELEASE, &rsv));
}

static vdisk_status blk_pr_clear(struct vdisk *d, uint64_t key)
{
	struct pr_clear clr = {.key = key};
	return pr_status(ioctl(file_blk_pr(d)->fd, IOC_PR_CLEAR, &clr));
}

static vdisk_status blk_pr_preempt(struct vdisk *d, uint64_t key, uint64_t preempt_key,
                                   enum vdisk_pr_type type, bool abort)
{
	struct pr_preempt p = {.old_key = key, .new_key = preempt_key, .type = (uint32_t)type};
	return pr_status(
	    ioctl(file_blk_pr(d)->fd, abort ? IOC_PR_PREEMPT_ABORT : IOC_PR_PREEMPT, &p));
}

const struct vdisk_pr_ops blk_pr_ops = {
    .capabilities = blk_pr_capabilities,
    .report = blk_pr_report,
    .register_key = blk_pr_register,
    .reserve = blk_pr_reserve,
    .release = blk_pr_release,
    .clear = blk_pr_clear,
    .preempt = blk_pr_preempt,
};
