# docs/writing-a-backend.md: its worked example compiles as written, against
# the library, registers at run time, and behaves as the guide says; and no
# document points outside the repository.
source "$(dirname "$0")/functions.sh"
requires cc pkg-config

guide=$SRC_DIR/docs/writing-a-backend.md
awk '/^## A worked example/ {on=1} on && /^```c$/ {code=1; next} code && /^```$/ {exit} code {print}' \
	"$guide" >"$TMP/readonly.c"
grep -q 'vdisk_driver_readonly' "$TMP/readonly.c" || fail "no example found in $guide"
cat >>"$TMP/readonly.c" <<'C'

#include <stdio.h>
#include "vdisk/vdisk.h"

int main(void)
{
	unsigned char buf[4096];
	char *res = NULL;
	if (vdisk_register_driver(&vdisk_driver_readonly) < 0)
		return fprintf(stderr, "register: %s\n", vdisk_errmsg()), 1;
	struct vdisk *d = vdisk_open("{\"type\":\"readonly\",\"inner\":\"ram:size=1M\"}", 0);
	if (!d)
		return fprintf(stderr, "open: %s\n", vdisk_errmsg()), 1;
	if (!vdisk_read_only(d) || vdisk_sector_count(d) != 2048)
		return fprintf(stderr, "metadata\n"), 1;
	if (vdisk_pread(d, buf, sizeof buf, 0).kind != VDISK_OK)
		return fprintf(stderr, "read failed\n"), 1;
	if (vdisk_pwrite(d, buf, sizeof buf, 0, 0).kind != VDISK_ERR_READ_ONLY)
		return fprintf(stderr, "write not refused\n"), 1;
	if (vdisk_ctl(d, "stats", NULL, &res) < 0 || !res || !strstr(res, "\"reads\":1"))
		return fprintf(stderr, "stats: %s\n", res ? res : vdisk_errmsg()), 1;
	free(res);
	if (vdisk_ctl(d, "nope", NULL, NULL) == 0)
		return fprintf(stderr, "unknown ctl accepted\n"), 1;
	vdisk_unref(d);
	if (vdisk_open("{\"type\":\"readonly\"}", 0) || !strstr(vdisk_errmsg(), "inner: required"))
		return fprintf(stderr, "missing inner: %s\n", vdisk_errmsg()), 1;
	puts("guide ok");
	return 0;
}
C
san=()
grep -q '^VDISK_SANITIZE:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" && san=(-fsanitize=address,undefined)
# shellcheck disable=SC2046
cc -std=gnu17 -Wall -Wextra -Werror "${san[@]}" -I"$SRC_DIR/include" -o "$TMP/readonly" \
	"$TMP/readonly.c" "$BUILD_DIR/libvdisk.a" \
	$(pkg-config --libs liburing jansson libcrypto libssl sqlite3 libcurl libnbd) -lrbd -lrados -lpthread -lm \
	2>"$TMP/cc.log" || fail "the guide's example does not build: $(cat "$TMP/cc.log")"
"$TMP/readonly" >"$TMP/out" 2>&1 || fail "the guide's example misbehaves: $(cat "$TMP/out")"

# no document points outside the repository
for doc in "$SRC_DIR"/README.md "$SRC_DIR"/docs/*.md; do
	if grep -nE '\]\((\.\./|/)' "$doc" >"$TMP/links"; then
		fail "$doc links outside the repository: $(head -3 "$TMP/links")"
	fi
done
# nor names a file beside the repository, or a section of a document users do not have
if grep -rnE '\.\./shared|MACHINE-BASELINE|DESIGN\.md|\(section [0-9]' "$SRC_DIR"/README.md \
	"$SRC_DIR"/docs "$SRC_DIR"/man "$SRC_DIR"/include "$SRC_DIR"/src/core "$SRC_DIR"/src/backends/layered \
	>"$TMP/refs"; then
	fail "references outside the repository: $(head -3 "$TMP/refs")"
fi
echo "guide ok"
