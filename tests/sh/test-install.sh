# Installing into a fresh prefix (cmake --install --prefix) gives a user what
# the pkg-config file promises: a program using vdisk/vdisk.h and
# vdisk/backend.h (a driver of its own) builds and links against the shared
# library and against the static one with only `pkg-config libvdisk`, every
# exported symbol carries a VDISK_ version, and the man pages are installed.
# ctest-timeout: 300
source "$(dirname "$0")/functions.sh"
requires cc pkg-config objdump

prefix=$TMP/prefix
cmake --install "$BUILD_DIR" --prefix "$prefix" >"$TMP/install.log" 2>&1 ||
	fail "cmake --install failed: $(tail -5 "$TMP/install.log")"

pc=$(find "$prefix" -name libvdisk.pc)
[[ -n $pc ]] || fail "libvdisk.pc not installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir libvdisk)
[[ $libdir == "$prefix"/* ]] || fail "libvdisk.pc libdir '$libdir' is not under the install prefix"
[[ -f $libdir/libvdisk.a ]] || fail "the static library is not installed in $libdir"
[[ -e $libdir/libvdisk.so.0 ]] || fail "libvdisk.so.0 is not installed in $libdir"
[[ -x $prefix/bin/vdisk ]] || fail "the vdisk command is not installed"
[[ $(pkg-config --modversion libvdisk) == "$("$prefix/bin/vdisk" --version | grep -o '[0-9][0-9.]*' | head -1)" ]] ||
	fail "libvdisk.pc version differs from vdisk --version"

# every exported symbol is versioned, and nothing but vdisk_* is exported
objdump -T "$libdir/libvdisk.so.0" | grep -E '^[0-9a-f]+ g ' | grep -v '\*ABS\*' >"$TMP/syms" || true
defined=$(grep -c ' vdisk_' "$TMP/syms" || true)
versioned=$(grep -cE ' VDISK_[0-9][0-9.]* +vdisk_[a-z0-9_]+$' "$TMP/syms" || true)
[[ $defined -gt 50 && $defined -eq $versioned ]] ||
	fail "$versioned of $defined exported vdisk_ functions carry a VDISK_ version"
grep -vE ' vdisk_[a-z0-9_]+$' "$TMP/syms" >"$TMP/leaked" &&
	fail "libvdisk.so exports symbols outside vdisk_*: $(head -3 "$TMP/leaked")"

cat >"$TMP/user.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <vdisk/backend.h>
#include <vdisk/vdisk.h>

static int ones_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {NULL};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = m->physical_sector_size = 512;
	m->sector_count = 8;
	return 0;
}
static int ones_read(struct vdisk_req *r)
{
	vdisk_iov_memset(r->iov, r->iovcnt, 0, 1, r->len);
	vdisk_req_complete(r, vdisk_status_ok());
	return 0;
}
static const struct vdisk_driver ones = {
    .struct_size = sizeof ones, .name = "ones", .open = ones_open, .read = ones_read};

int main(void)
{
	unsigned char buf[512];
	if (vdisk_register_driver(&ones) < 0)
		return fprintf(stderr, "register: %s\n", vdisk_errmsg()), 1;
	struct vdisk *d = vdisk_open("ones:", 0);
	if (!d || vdisk_pread(d, buf, sizeof buf, 512).kind != VDISK_OK || buf[0] != 1 || buf[511] != 1)
		return fprintf(stderr, "ones: %s\n", vdisk_errmsg()), 1;
	vdisk_unref(d);
	d = vdisk_open("ram:size=1M", 0);
	memset(buf, 0xAB, sizeof buf);
	if (!d || vdisk_pwrite(d, buf, sizeof buf, 4096, 0).kind != VDISK_OK)
		return fprintf(stderr, "ram: %s\n", vdisk_errmsg()), 1;
	memset(buf, 0, sizeof buf);
	if (vdisk_pread(d, buf, sizeof buf, 4096).kind != VDISK_OK || buf[100] != 0xAB)
		return fprintf(stderr, "ram read: %s\n", vdisk_errmsg()), 1;
	vdisk_unref(d);
	printf("ok %s\n", vdisk_version());
	return 0;
}
C

san=()
if grep -q '^VDISK_SANITIZE:BOOL=ON' "$BUILD_DIR/CMakeCache.txt"; then
	san=(-fsanitize=address,undefined)
fi
# shared
# shellcheck disable=SC2046
cc -std=c17 -Wall -Wextra -Werror "${san[@]}" -o "$TMP/user" "$TMP/user.c" \
	$(pkg-config --cflags --libs libvdisk) 2>"$TMP/cc.log" ||
	fail "building against the installed shared library: $(cat "$TMP/cc.log")"
LD_LIBRARY_PATH=$libdir "$TMP/user" >"$TMP/out" 2>&1 || fail "the program failed: $(cat "$TMP/out")"
grep -q '^ok ' "$TMP/out" || fail "unexpected output: $(cat "$TMP/out")"
# (the whole output first: grep -q stopping early would fail ldd with SIGPIPE)
linked=$(LD_LIBRARY_PATH=$libdir ldd "$TMP/user")
grep -q "$libdir/libvdisk.so.0" <<<"$linked" ||
	fail "the program is not linked to the installed libvdisk.so.0"

# static: libvdisk.a, then the (shared) libraries it needs, as the .pc names
# them (pkg-config --static would recurse into libcurl's own private
# dependencies, whose -dev packages Debian does not pull in)
deps=$(pkg-config --print-requires libvdisk; pkg-config --print-requires-private libvdisk)
# and the libraries without a .pc of their own, from its Libs.private
private=$(sed -n 's/^Libs.private: //p' "$(pkg-config --variable=pcfiledir libvdisk)/libvdisk.pc")
# shellcheck disable=SC2046,SC2086
cc -std=c17 -Wall -Wextra -Werror "${san[@]}" -o "$TMP/user-static" "$TMP/user.c" \
	$(pkg-config --cflags libvdisk) "$libdir/libvdisk.a" $(pkg-config --libs $deps) \
	$private 2>"$TMP/cc.log" ||
	fail "building against the installed static library: $(cat "$TMP/cc.log")"
linked=$(ldd "$TMP/user-static")
grep -q libvdisk <<<"$linked" && fail "the static program needs libvdisk.so"
"$TMP/user-static" >"$TMP/out" 2>&1 || fail "the static program failed: $(cat "$TMP/out")"
grep -q '^ok ' "$TMP/out" || fail "unexpected output: $(cat "$TMP/out")"

# man pages
if [[ -d $SRC_DIR/man ]]; then
	for scd in "$SRC_DIR"/man/*.scd; do
		page=$(basename "$scd" .scd)
		sec=${page##*.}
		[[ -f $prefix/share/man/man$sec/$page ]] || fail "man page $page not installed in share/man/man$sec"
	done
fi
echo "install ok"
