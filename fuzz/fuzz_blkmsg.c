/* Fuzz what a block device's surroundings send the file backend: the first
 * byte picks the parser, the rest is the message.  0: a netlink uevent (from
 * the kernel, but parsed before anything is trusted); 1: an NVMe Reservation
 * Report in the extended layout, with the caller's registrant array sized by
 * the second byte.  Any input must parse or be refused, never read out of
 * bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/blockdev/blockdev.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (data[0] & 1) {
		unsigned max = data[1] % 8;
		struct vdisk_pr_registrant regs[8];
		struct vdisk_pr_report rep;
		/* a copy of exactly the message, so a read past it is caught */
		uint8_t *buf = calloc(1, size - 2 ? size - 2 : 1);
		if (!buf)
			return 0;
		memcpy(buf, data + 2, size - 2);
		unsigned n = blk_pr_parse_report(buf, size - 2, &rep, regs, max);
		if (size - 2 >= 64 && n != rep.nregistrants)
			abort();
		free(buf);
	} else {
		char *msg = malloc(size - 1);
		if (!msg)
			return 0;
		memcpy(msg, data + 1, size - 1);
		dev_t dev;
		blk_uevent_parse(msg, size - 1, &dev);
		free(msg);
	}
	return 0;
}
