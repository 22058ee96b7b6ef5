#!/usr/bin/env bash
# A block device that goes away under an open disk, served by `vdisk serve`
# and driven by qemu-io:
#  - `losetup -d` while the disk is open: Linux defers the detach to the last
#    close, so requests keep working, and the device is gone once the server
#    has closed it;
#  - a loop device whose backing file lives on a FUSE file system (nbdfuse
#    over nbdkit's memory plugin) whose daemon is killed: every read and write
#    fails with an I/O error, promptly, and the server still answers and
#    stops (its last flush failing, by name).
# Needs root, the loop driver, FUSE, nbdkit, nbdfuse and qemu-io.
# ctest-timeout: 300
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires losetup qemu-io nbdkit nbdfuse fusermount3 timeout
[[ -c /dev/loop-control && -w /dev/loop-control ]] || skip "needs /dev/loop-control (root, loop driver)"

qio() { timeout 60 qemu-io -f raw "$URI" "$@" 2>&1; }

# --- detached while open ---------------------------------------------------
truncate -s 16M "$TMP/plain.img"
dev=$(losetup -f --show "$TMP/plain.img") || skip "losetup could not attach a file"
cleanup_fn "losetup -d '$dev' 2>/dev/null"
start_server "file:path=$dev"
qio -c "write -P 0x5c 1M 64k" | grep -c "wrote 65536" >/dev/null || fail "write before detach"
losetup -d "$dev" || fail "losetup -d $dev"
qio -c "read -P 0x5c 1M 64k" -c "write -P 0x3d 2M 4k" -c "read -P 0x3d 2M 4k" >"$TMP/after" ||
	fail "I/O after a deferred detach: $(cat "$TMP/after")"
grep -q "failed" "$TMP/after" && fail "I/O after a deferred detach: $(cat "$TMP/after")"
stop_server
# the last close released it
for ((i = 0; i < 100; i++)); do
	losetup -a | grep -c "$TMP/plain.img" >/dev/null || break
	sleep 0.05
done
losetup -a | grep -c "$TMP/plain.img" >/dev/null && fail "$dev still attached after the disk closed"

# --- the storage below the device vanishes ---------------------------------
mnt=$TMP/mnt
mkdir -p "$mnt"
nbdfuse -P "$TMP/fuse.pid" "$mnt/disk" --command nbdkit -s --exit-with-parent memory 64M \
	>"$TMP/fuse.log" 2>&1 &
fuse_pid=$!
cleanup_fn "kill -9 $fuse_pid 2>/dev/null; fusermount3 -u '$mnt' 2>/dev/null; wait $fuse_pid 2>/dev/null"
for ((i = 0; i < 100; i++)); do
	[[ -s $TMP/fuse.pid ]] && break
	kill -0 "$fuse_pid" 2>/dev/null || skip "nbdfuse could not mount: $(cat "$TMP/fuse.log")"
	sleep 0.05
done
[[ -f $mnt/disk ]] || skip "nbdfuse mounted nothing: $(cat "$TMP/fuse.log")"
fdev=$(losetup -f --show "$mnt/disk") || skip "losetup cannot attach a file on FUSE"
cleanup_fn "losetup -d '$fdev' 2>/dev/null"

start_server "file:path=$fdev"
qio -c "write -P 0xab 0 1M" -c "read -P 0xab 0 1M" >"$TMP/before" ||
	fail "I/O before: $(cat "$TMP/before")"
grep -q "failed" "$TMP/before" && fail "I/O before: $(cat "$TMP/before")"
kill -9 "$fuse_pid"
wait "$fuse_pid" 2>/dev/null || true

# never-read data (nothing cached above the FUSE file) and writes fail
qio -c "read 40M 64k" >"$TMP/read" || true
grep -q "read failed: Input/output error" "$TMP/read" || fail "read after vanish: $(cat "$TMP/read")"
qio -c "write -P 0x11 8M 64k" >"$TMP/write" || true
grep -q "write failed: Input/output error" "$TMP/write" || fail "write after vanish: $(cat "$TMP/write")"
# the server still answers
qio -c "read 48M 4k" >"$TMP/again" || true
grep -q "Input/output error" "$TMP/again" || fail "a later read: $(cat "$TMP/again")"

# it stops without hanging; its final flush fails and says so
kill -TERM "$SERVER_PID"
rc=0
timeout 60 tail --pid="$SERVER_PID" -f /dev/null || fail "the server did not stop"
wait "$SERVER_PID" || rc=$?
[[ $rc -eq 1 ]] || fail "server exited $rc: $(cat "$TMP/server.err")"
grep -q "I/O error" "$TMP/server.err" || fail "no I/O error named: $(cat "$TMP/server.err")"
if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP/server.err"; then
	fail "sanitizer: $(cat "$TMP/server.err")"
fi
echo "all passed"
