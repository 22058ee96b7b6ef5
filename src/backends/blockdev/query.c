/* What a block device says about itself.
 *
 * Sizes come from ioctls (they answer for every block device, whatever sysfs
 * is mounted); discard, write-zeroes, FUA and the write cache only from sysfs,
 * where an absent file means "not offered". */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/cdrom.h>
#include <linux/fs.h>
#include <linux/nvme_ioctl.h>

#include "blockdev.h"

int blk_size(int fd, uint64_t *bytes)
{
	if (ioctl(fd, BLKGETSIZE64, bytes) < 0)
		return -errno;
	return 0;
}

/* Read /sys/dev/block/M:m/<name> into buf; false if it does not exist. */
static bool sysfs_read(dev_t rdev, const char *name, char *buf, size_t len)
{
	char p[128];
	snprintf(p, sizeof p, "/sys/dev/block/%u:%u/%s", major(rdev), minor(rdev), name);
	FILE *fp = fopen(p, "re");
	if (!fp)
		return false;
	bool ok = fgets(buf, (int)len, fp) != NULL;
	fclose(fp);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

static uint64_t sysfs_u64(dev_t rdev, const char *name)
{
	char buf[64];
	if (!sysfs_read(rdev, name, buf, sizeof buf))
		return 0;
	return strtoull(buf, NULL, 10);
}

int blk_query(int fd, const char *path, dev_t rdev, struct blk_info *bi)
{
	int v = 0;
	unsigned int pb = 0;
	unsigned short rot = 0;
	memset(bi, 0, sizeof *bi);
	bi->rdev = rdev;
	if (ioctl(fd, BLKSSZGET, &v) < 0)
		return vdisk_set_error_errno(errno, "path '%s': BLKSSZGET (logical block size)",
		                             path);
	bi->logical = (uint32_t)v;
	if (ioctl(fd, BLKPBSZGET, &pb) < 0)
		pb = bi->logical;
	bi->physical = pb;
	if (blk_size(fd, &bi->size) < 0)
		return vdisk_set_error_errno(errno, "path '%s': BLKGETSIZE64 (device size)", path);
	if (ioctl(fd, BLKROTATIONAL, &rot) == 0)
		bi->rotational = rot != 0;
	if (ioctl(fd, BLKROGET, &v) == 0)
		bi->read_only = v != 0;
	if (bi->logical < 512 || (bi->logical & (bi->logical - 1)))
		return vdisk_set_error("path '%s': logical block size %" PRIu32
		                       " is not a power of two >= 512",
		                       path, bi->logical);

	bi->discard_max = sysfs_u64(rdev, "queue/discard_max_bytes");
	bi->discard_granularity = (uint32_t)sysfs_u64(rdev, "queue/discard_granularity");
	bi->write_zeroes_max = sysfs_u64(rdev, "queue/write_zeroes_max_bytes");
	bi->fua = sysfs_u64(rdev, "queue/fua") != 0;
	char wc[32];
	bi->write_cache =
	    sysfs_read(rdev, "queue/write_cache", wc, sizeof wc) && strcmp(wc, "write back") == 0;

	/* an optical drive: it answers CDROM_GET_CAPABILITY (other devices say
	 * ENOTTY or EINVAL) and can open its tray */
	int cap = ioctl(fd, CDROM_GET_CAPABILITY, 0);
	bi->cdrom = cap > 0 && (cap & CDC_OPEN_TRAY);

	int nsid = ioctl(fd, NVME_IOCTL_ID);
	bi->nsid = nsid > 0 ? (uint32_t)nsid : 0;
	return 0;
}
