/* Fuzz the spec parser and the stack builder: any byte string given as a spec
 * must give a disk or a clear error, never a crash.  Opened read-only, so no
 * input can create or change a file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	uint64_t v;
	bool b;
	(void)vdisk_parse_size(s, &v);
	(void)vdisk_parse_duration(s, &v);
	(void)vdisk_parse_bool(s, &b);
	struct vdisk *d = vdisk_open(s, VDISK_OPEN_READ_ONLY);
	if (d) {
		char *info = vdisk_inspect(d, VDISK_INSPECT_STATS);
		free(info);
		vdisk_unref(d);
	} else if (!*vdisk_errmsg()) {
		abort(); /* a failure must always say why */
	}
	free(s);
	return 0;
}
