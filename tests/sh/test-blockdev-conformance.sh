#!/usr/bin/env bash
# The conformance suite over loop devices (the file backend on a block
# device): 512- and 4096-byte logical blocks, O_DIRECT (the default) and the
# page cache, a loop device in direct-I/O mode; `vdisk info` reports the
# device's geometry and no reservations; bad specs are refused by name.
# Needs root and the loop driver (skipped otherwise); every loop device made
# here is detached on exit.
# ctest-timeout: 600
source "$(dirname "$0")/functions.sh"
requires losetup truncate jq
[[ -c /dev/loop-control && -w /dev/loop-control ]] || skip "needs /dev/loop-control (root, loop driver)"
CONF=$BUILD_DIR/tests/vdisk-conformance
[[ -x $CONF ]] || fail "no $CONF (build first)"

# attach VAR FILE SIZE [losetup options...]: the device in $VAR (not in a
# subshell, so that its detach is registered here)
attach() {
	local var=$1 file=$2 size=$3
	shift 3
	truncate -s "$size" "$file"
	local dev
	dev=$(losetup -f --show "$@" "$file") || skip "losetup could not attach $file"
	cleanup_fn "losetup -d '$dev'"
	printf -v "$var" %s "$dev"
}

attach dev512 "$TMP/a.img" 32M
attach dev4k "$TMP/b.img" 32M --sector-size 4096
attach devdio "$TMP/c.img" 32M --direct-io=on

for spec in "file:path=$dev512" \
	"file:path=$dev512,direct=off" \
	"file:path=$dev512,direct=off,write-mode=uring" \
	"file:path=$dev4k" \
	"file:path=$devdio" \
	"file:path=$devdio,sector-size=4096" \
	"{\"type\":\"file\",\"path\":\"$dev4k\",\"direct\":false}"; do
	"$CONF" "$spec" >"$TMP/conf.out" 2>&1 || { cat "$TMP/conf.out"; fail "conformance over $spec"; }
	grep -q ", 0 failures" "$TMP/conf.out" || { cat "$TMP/conf.out"; fail "conformance over $spec"; }
	echo "ok: $spec"
done

# what the device says, as vdisk info shows it; a bare device path probes as file
"$VDISK" info --json "$dev4k" >"$TMP/info.json" || fail "vdisk info $dev4k"
[[ $(jq -r .type "$TMP/info.json") == file ]] || fail "type: $(jq -r .type "$TMP/info.json")"
[[ $(jq -r .sector_size "$TMP/info.json") == 4096 ]] || fail "sector size of a 4096-byte loop device"
[[ $(jq -r .sector_count "$TMP/info.json") == $((32 * 1024 * 1024 / 4096)) ]] || fail "sector count"
[[ $(jq -r .unmap_behavior "$TMP/info.json") == unspecified ]] || fail "unmap behaviour"
[[ $(jq -r .persistent_reservations "$TMP/info.json") == false ]] || fail "a loop device has no PR"
[[ $(jq -r '.layers[0].block_device.logical_block_size' "$TMP/info.json") == 4096 ]] ||
	fail "inspect lacks the device's logical block size"
[[ $(jq -r '.layers[0].direct' "$TMP/info.json") == true ]] || fail "O_DIRECT is not the default"

# bad specs over a device: refused, naming the field
expect_status 1 "$VDISK" info "file:path=$dev512,create=1M"
expect_stderr "create: '$dev512' is a block device"
expect_status 1 "$VDISK" info "file:path=$dev4k,sector-size=512"
expect_stderr "sector-size: 512 is smaller than the 4096-byte logical blocks"
expect_status 1 "$VDISK" info "file:path=/dev/null"
expect_stderr "not a regular file or block device"
echo "all passed"
