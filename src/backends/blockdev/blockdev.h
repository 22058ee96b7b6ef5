/* Block devices under the file backend: what the device says about itself,
 * the process-wide resize listener, and persistent reservations.
 *
 * The file backend (src/backends/file.c) owns the data path for regular files
 * and block devices alike; this folder holds only what is particular to
 * devices, so that file.c's open reads as a list of steps. */
#ifndef VDISK_BLOCKDEV_H
#define VDISK_BLOCKDEV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vdisk/backend.h"

/* What a block device reports, from ioctls first and sysfs where there is no
 * ioctl (/sys/dev/block/MAJOR:MINOR/queue/...). */
struct blk_info {
	dev_t rdev;
	uint32_t logical;             /* BLKSSZGET */
	uint32_t physical;            /* BLKPBSZGET */
	uint64_t size;                /* BLKGETSIZE64, bytes */
	uint32_t discard_granularity; /* queue/discard_granularity, bytes */
	uint64_t discard_max;         /* queue/discard_max_bytes: 0 = no discard */
	uint64_t write_zeroes_max;    /* queue/write_zeroes_max_bytes: 0 = none */
	bool fua;                     /* queue/fua: the device has native FUA */
	bool write_cache;             /* queue/write_cache is "write back" */
	bool rotational;              /* BLKROTATIONAL */
	bool read_only;               /* BLKROGET */
	bool cdrom;                   /* CDROM_GET_CAPABILITY answers, with a tray */
	uint32_t nsid;                /* NVMe namespace id (NVME_IOCTL_ID), 0 if not NVMe */
};

/* Fill bi for the open block device fd (path for messages).  Returns 0, or -1
 * after vdisk_set_error() naming path and what could not be read. */
int blk_query(int fd, const char *path, dev_t rdev, struct blk_info *bi);

/* The device's size in bytes now (BLKGETSIZE64); -errno on failure. */
int blk_size(int fd, uint64_t *bytes);

/* ------------------------------------------------------------------------- */
/* Resize: one netlink uevent listener per process                            */
/* ------------------------------------------------------------------------- */

/* A disk that follows its device's size.  The listener thread re-reads the
 * size of every watch whose device a "change" uevent with RESIZE=1 names (and
 * of every watch after lost events) and calls vdisk_set_sector_count(d). */
struct blk_watch {
	struct vdisk *d;
	int fd;
	dev_t rdev;
	unsigned shift;
	struct blk_watch *next;
};

/* Start following w's device (starts the listener with the first watch).
 * Returns true when resize events will be seen; false when the listener
 * could not start (no netlink: the size then stays as opened), w is then not
 * registered. */
bool blk_watch_add(struct blk_watch *w);
/* Stop following; on return the listener no longer touches w or its disk
 * (stops the listener with the last watch). */
void blk_watch_del(struct blk_watch *w);
/* Re-read w's device size now and publish it if it changed. */
void blk_watch_refresh(struct blk_watch *w);

/* Parse one uevent message (NUL-separated "header\0KEY=VALUE\0...").  Returns
 * 1 and sets *dev for a block resize event (ACTION=change, SUBSYSTEM=block,
 * RESIZE=1, MAJOR and MINOR), 0 for anything else. */
int blk_uevent_parse(const char *msg, size_t len, dev_t *dev);

/* ------------------------------------------------------------------------- */
/* Persistent reservations: Linux IOC_PR_* ioctls + NVMe Reservation Report    */
/* ------------------------------------------------------------------------- */

struct blk_pr {
	int fd;
	uint32_t nsid;
	uint8_t rescap; /* NVMe Identify Namespace RESCAP */
};

/* Whether the device offers reservations: an NVMe namespace whose controller
 * has ONCS.reservations and whose RESCAP is not zero.  Fills pr when so. */
bool blk_pr_probe(int fd, const struct blk_info *bi, struct blk_pr *pr);

/* The PR calls of the file driver (used only when vdisk_meta.has_pr). */
extern const struct vdisk_pr_ops blk_pr_ops;

/* The PR state of a file disk (defined in file.c). */
struct blk_pr *file_blk_pr(struct vdisk *d);

/* Parse an NVMe Reservation Report in the extended layout (64-byte header,
 * 64-byte registrant entries, 128-bit host ids), len bytes of buf.  Returns the
 * number of registrants the header announces (which may exceed what len holds:
 * ask again with 64 + 64 * that many bytes), filling rep and up to max regs
 * from the entries present. */
unsigned blk_pr_parse_report(const uint8_t *buf, size_t len, struct vdisk_pr_report *rep,
                             struct vdisk_pr_registrant *regs, unsigned max);

#endif
