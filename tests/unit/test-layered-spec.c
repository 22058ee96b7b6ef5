/* Layered specs that must be refused, each with a message naming the layer at
 * fault and the reason: malformed specs and every invalid combination the
 * reference rejects (no layers, read-cache without fill support, sector-size
 * mismatch, a read-only layer in the write path, useless write-through). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

static void refused(const char *spec, const char *want)
{
	char *s = tu_spec(spec);
	struct vdisk *d = vdisk_open(s, 0);
	if (d || !strstr(vdisk_errmsg(), want)) {
		fprintf(stderr, "spec: %s\n  got: %s\n  want: ...%s...\n", s,
		        d ? "(opened)" : vdisk_errmsg(), want);
		if (d)
			vdisk_unref(d);
		free(s);
		fail();
	}
	free(s);
}

#define L(x) "{\"type\":\"layered\",\"layers\":[" x "]}"
#define RAM "{\"type\":\"ram\",\"size\":65536}"

static void test_malformed(void **state)
{
	(void)state;
	refused("{\"type\":\"layered\"}", "layers: required");
	refused(L(""), "layers: at least one layer is required");
	refused("{\"type\":\"layered\",\"layers\":{}}", "layers: expected a list");
	refused("layered:layers=ram", "layers: expected a list");
	refused(L("5"), "layers[0]: expected an object");
	refused(L(RAM ",\"ram\""), "layers[1]: expected an object");
	refused(L("{\"size\":4096}"), "layers[0]: missing \"type\"");
	refused(L("{\"type\":\"vhdx\"}"), "layers[0]: unknown layer type 'vhdx'");
	refused(L("{\"type\":\"ram\",\"size\":4096,\"bogus\":1}"),
	        "layers[0] (ram): unknown key 'bogus'");
	refused("{\"type\":\"layered\",\"bogus\":1,\"layers\":[" RAM "]}", "unknown key 'bogus'");
	refused(L("{\"type\":\"ram\",\"size\":4096,\"read-cache\":\"maybe\"}"),
	        "layers[0] (ram): read-cache: 'maybe' is not a boolean");
	refused(L("{\"type\":\"ram\",\"size\":\"lots\"}"), "layers[0] (ram): size: 'lots'");
	refused(L(RAM ",{\"type\":\"disk\"}"), "layers[1] (disk): disk: required");
	refused(L(RAM ",{\"type\":\"disk\",\"disk\":\"file:path=@TMP@/none.img\"}"),
	        "layers[1].disk file: path '");
	refused(L(RAM ",{\"type\":\"disk\",\"disk\":\"file:path=x\",\"size\":1}"),
	        "layers[1] (disk): unknown key 'size'");
	refused(L("{\"type\":\"sqlite\"}"), "layers[0] (sqlite): path: required");
	refused(L("{\"type\":\"sqlite\",\"path\":\"@TMP@/none.dbhd\"}"),
	        "layers[0] (sqlite): path '");
	refused(L("{\"type\":\"sqlite\",\"path\":\"@TMP@/x.dbhd\",\"size\":4096}"),
	        "layers[0] (sqlite): size: only with create");
	refused(L("{\"type\":\"sqlite\",\"path\":\"@TMP@/x.dbhd\",\"create\":true}"),
	        "layers[0] (sqlite): size: required to create");
	refused(L("{\"type\":\"sqlite\",\"path\":\"@TMP@/x.dbhd\",\"create\":true,\"size\":5000,"
	          "\"sector-size\":4096}"),
	        "layers[0] (sqlite): size: 5000 is not a non-zero multiple");
	/* nothing was created by the refused creates */
	char *x = tu_spec("@TMP@/x.dbhd");
	assert_int_equal(access(x, F_OK), -1);
	free(x);
	refused(L("{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/c\",\"key\":\"k\"}"),
	        "layers[0] (sqlite-cache): a cache needs a layer below it");
	refused(L("{\"type\":\"sqlite-cache\",\"key\":\"k\"}," RAM),
	        "layers[0] (sqlite-cache): root: required");
	refused(
	    L("{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/c\",\"key\":\"../up\",\"read-cache\":"
	      "true}," RAM),
	    "layers[0] (sqlite-cache): key: '../up' is not usable");
	refused(L("{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/c\",\"key\":\"\",\"read-cache\":"
	          "true}," RAM),
	        "layers[0] (sqlite-cache): key: empty");
	refused(L("{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/c\",\"read-cache\":true}," RAM),
	        "layers[0] (sqlite-cache): key: required, because the layer below has no disk id");

	/* too many layers */
	char *big = malloc(70 * 64 + 64);
	size_t o = (size_t)sprintf(big, "{\"type\":\"layered\",\"layers\":[");
	for (int i = 0; i < 65; i++)
		o += (size_t)sprintf(big + o, "%s" RAM, i ? "," : "");
	sprintf(big + o, "]}");
	refused(big, "layers: 65 layers; at most 64");
	free(big);
}

static void test_invalid_combinations(void **state)
{
	(void)state;
	/* read-cache on a layer that cannot be filled without overwriting */
	refused(L(RAM ",{\"type\":\"disk\",\"read-cache\":true,\"disk\":\"ram:size=64k\"}"),
	        "layers[1] (disk): read-cache: this layer cannot be filled");
	/* sector sizes must match the bottom layer's */
	refused(L("{\"type\":\"ram\",\"size\":65536,\"sector-size\":4096},"
	          "{\"type\":\"disk\",\"disk\":\"ram:size=64k\"}"),
	        "layers[0] (ram): sector size 4096 differs from the bottom layer's 512");
	refused(L("{\"type\":\"ram\",\"sector-size\":512},{\"type\":\"ram\",\"size\":65536,"
	          "\"sector-size\":4096},"
	          "{\"type\":\"ram\",\"size\":65536,\"sector-size\":4096}"),
	        "layers[0] (ram): sector size 512 differs from the bottom layer's 4096");
	/* a read-only layer in the write path of a writable disk */
	refused(L("{\"type\":\"disk\",\"disk\":\"ram:size=64k,read-only=on\"}"),
	        "layers[0] (disk): read-only, but it is in the write path");
	refused(L("{\"type\":\"ram\",\"write-through\":true},"
	          "{\"type\":\"disk\",\"disk\":\"ram:size=64k,read-only=on\"}"),
	        "layers[1] (disk): read-only, but it is in the write path");
	refused(L("{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/c\",\"key\":\"ro\"}," RAM),
	        "layers[0] (sqlite-cache): read-only, but it is in the write path");
	/* useless write-through: below a layer that does not pass writes on, and at
	 * the bottom */
	refused(L(RAM "," RAM ",{\"type\":\"ram\",\"size\":65536,\"write-through\":true}," RAM),
	        "layers[2] (ram): write-through has no effect: writes never reach it, because "
	        "layers[1]");
	refused(L("{\"type\":\"ram\",\"size\":65536,\"write-through\":true}"),
	        "layers[0] (ram): write-through on the bottom layer has no effect");
	refused(L("{\"type\":\"ram\",\"write-through\":true},{\"type\":\"ram\",\"size\":65536,"
	          "\"write-through\":true}"),
	        "layers[1] (ram): write-through on the bottom layer has no effect");
}

/* The same stacks are fine where the reference allows them. */
static void test_valid_combinations(void **state)
{
	(void)state;
	static const char *const ok[] = {
	    /* a read-only layer below the write path, or in a read-only disk */
	    L(RAM ",{\"type\":\"disk\",\"disk\":\"ram:size=64k,read-only=on\"}"),
	    "{\"type\":\"layered\",\"read-only\":true,\"layers\":[{\"type\":\"disk\",\"disk\":"
	    "\"ram:size=64k,read-only=on\"}]}",
	    /* a read-only cache below the write path */
	    L(RAM ",{\"type\":\"sqlite-cache\",\"root\":\"@TMP@/"
	          "c\",\"key\":\"k2\",\"read-cache\":true},"
	          "{\"type\":\"disk\",\"disk\":\"ram:size=64k\"}"),
	    /* write-through chains */
	    L("{\"type\":\"ram\",\"write-through\":true},{\"type\":\"ram\",\"write-through\":true},"
	      "{\"type\":\"disk\",\"disk\":\"ram:size=64k\"}"),
	    /* a cache on top of a read-only disk */
	    "{\"type\":\"layered\",\"read-only\":true,\"layers\":[{\"type\":\"ram\",\"read-cache\":"
	    "true},{\"type\":\"disk\",\"disk\":\"ram:size=64k\"}]}",
	};
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		char *s = tu_spec(ok[i]);
		struct vdisk *d = vdisk_open(s, 0);
		if (!d) {
			fprintf(stderr, "%s: %s\n", s, vdisk_errmsg());
			fail();
		}
		vdisk_unref(d);
		free(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_invalid_combinations),
	    cmocka_unit_test(test_valid_combinations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
