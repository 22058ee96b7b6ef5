/* Fuzz the VHDX log reader alone: the first 16 bytes are the header's log
 * GUID, the rest (cut to whole 4 KiB sectors, at least one) is the log.  Every
 * write a replay would make must lie past the headers and be at most 1 MiB;
 * a log that cannot be read must say why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/vhdx/vhdx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t guid[16] = {0};
	if (size < 16)
		return 0;
	memcpy(guid, data, 16);
	size_t len = (size - 16) & ~(size_t)4095;
	if (len == 0)
		len = 4096;
	if (len > (4u << 20))
		len = 4u << 20;
	uint8_t *log = calloc(1, len);
	if (!log)
		return 0;
	memcpy(log, data + 16, size - 16 < len ? size - 16 : len);
	struct vhdx_replay rp;
	if (vhdx_log_parse(log, len, guid, &rp) == 0) {
		for (size_t i = 0; i < rp.n; i++)
			if (rp.w[i].off < VHDX_MiB || rp.w[i].len == 0 || rp.w[i].len > VHDX_MiB)
				abort();
		if (rp.n && !rp.entries)
			abort();
		vhdx_replay_free(&rp);
	} else if (!*vdisk_errmsg()) {
		abort();
	}
	free(log);
	return 0;
}
