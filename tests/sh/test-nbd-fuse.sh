#!/usr/bin/env bash
# A real file system on an export: nbdfuse exposes it as a file, mkfs.ext4
# formats it, debugfs writes a file and a directory into it (no mount needed),
# e2fsck -fn finds the file system clean and the file reads back intact.
# Skipped where FUSE is not available.
# ctest-timeout: 120
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdfuse mkfs.ext4 e2fsck debugfs fusermount3
[[ -c /dev/fuse && -r /dev/fuse && -w /dev/fuse ]] || skip "needs /dev/fuse"

start_server ram:size=128M
mnt=$TMP/mnt
mkdir -p "$mnt"
nbdfuse -P "$TMP/fuse.pid" "$mnt/disk" "$URI" >"$TMP/fuse.log" 2>&1 &
fuse_pid=$!
cleanup_fn "fusermount3 -u '$mnt' 2>/dev/null; wait $fuse_pid 2>/dev/null"
for ((i = 0; i < 100; i++)); do
	[[ -s $TMP/fuse.pid ]] && break
	kill -0 "$fuse_pid" 2>/dev/null || skip "nbdfuse could not mount: $(cat "$TMP/fuse.log")"
	sleep 0.05
done
[[ -f $mnt/disk ]] || skip "nbdfuse mounted nothing: $(cat "$TMP/fuse.log")"

mkfs.ext4 -q -F "$mnt/disk" || fail "mkfs.ext4"
head -c 3M /dev/urandom >"$TMP/payload"
debugfs -w -R "write $TMP/payload payload" "$mnt/disk" >/dev/null 2>&1 || fail "debugfs write"
debugfs -w -R "mkdir dir" "$mnt/disk" >/dev/null 2>&1 || fail "debugfs mkdir"
sync "$mnt/disk" 2>/dev/null || true
e2fsck -fn "$mnt/disk" >"$TMP/fsck.out" 2>&1 || fail "e2fsck: $(cat "$TMP/fsck.out")"
debugfs -R "dump payload $TMP/payload.back" "$mnt/disk" >/dev/null 2>&1 || fail "debugfs dump"
cmp "$TMP/payload" "$TMP/payload.back" || fail "file read back differs"

fusermount3 -u "$mnt"
wait "$fuse_pid" || true
stop_server
