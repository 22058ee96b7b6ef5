/* Fuzz the fault decorator's rules: the input is the JSON value of "rules" in
 * a fault spec over RAM.  Input that is not JSON is jansson's business and is
 * skipped; any JSON value must give a disk or an error that says why, never a
 * crash or a leak.  An opened disk does every operation twice, then its rules
 * are listed, disarmed, armed, and each element of the input is added again
 * through vdisk_ctl (the same parser on another path). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

static void exercise(struct vdisk *d)
{
	static unsigned char buf[8192];
	struct vdisk_extent e[4];
	unsigned n;
	for (int round = 0; round < 2; round++) {
		vdisk_pread(d, buf, sizeof buf, 4096);
		vdisk_pwrite(d, buf, 4096, 0, 0);
		vdisk_pwrite(d, buf, 1024, 512, VDISK_IO_FUA);
		vdisk_flush_sync(d);
		vdisk_unmap_sync(d, 2, 4);
		vdisk_write_zeroes_sync(d, 0, 16, VDISK_ZERO_MAY_UNMAP);
		vdisk_extents_sync(d, 0, 128, e, 4, &n);
		vdisk_pread(d, buf, 512, 0);
	}
}

static void ctl(struct vdisk *d, const char *op, const char *args)
{
	char *res = NULL;
	if (vdisk_ctl(d, op, args, &res) == 0)
		free(res);
	else if (!*vdisk_errmsg())
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t err;
	json_t *rules = json_loadb((const char *)data, size, JSON_DECODE_ANY, &err);
	if (!rules)
		return 0;
	json_t *spec =
	    json_pack("{s:s,s:s,s:O}", "type", "fault", "inner", "ram:size=64k", "rules", rules);
	char *text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
	json_decref(spec);
	struct vdisk *d = text ? vdisk_open(text, 0) : NULL;
	free(text);
	if (!d) {
		if (!*vdisk_errmsg())
			abort(); /* a failure must always say why */
		json_decref(rules);
		return 0;
	}
	exercise(d);
	ctl(d, "list", NULL);
	ctl(d, "disarm", NULL);
	exercise(d);
	ctl(d, "arm", "{\"rule\":0}");
	ctl(d, "arm", NULL);
	size_t i;
	json_t *r;
	json_array_foreach (rules, i, r) {
		char *s = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
		if (s)
			ctl(d, "add", s);
		free(s);
		if (i >= 8)
			break;
	}
	exercise(d);
	ctl(d, "remove", "{\"rule\":1}");
	ctl(d, "clear", NULL);
	vdisk_unref(d);
	json_decref(rules);
	return 0;
}
