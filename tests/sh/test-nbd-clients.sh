#!/usr/bin/env bash
# Real clients move real data: nbdcopy round trips (sparse, whole export, with
# several connections) compared byte for byte, qemu-img compare against the
# export, and qemu-io pattern writes and reads (FUA writes, write -z,
# discard, aio_write / aio_read / aio_flush) checked through a second client;
# nbdsh checks a few error replies.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdcopy qemu-img qemu-io cmp

src=$TMP/src.img
truncate -s 64M "$src"
for off in 0 7 19 40 63; do
	dd if=/dev/urandom of="$src" bs=1M count=1 seek=$off conv=notrunc status=none
done
# a stretch that is not 4K-aligned in content
printf 'tail' | dd of="$src" bs=1 seek=$((50 << 20)) conv=notrunc status=none

for spec in ram:size=64M "file:path=$TMP/disk.img,create=64M"; do
	start_server "$spec"
	nbdcopy --connections=4 "$src" "$URI" || fail "$spec: nbdcopy to the export"
	nbdcopy "$URI" "$TMP/back.img" || fail "$spec: nbdcopy from the export"
	cmp "$src" "$TMP/back.img" || fail "$spec: round trip differs"
	qemu-img compare -f raw -F raw "$src" "$URI" >/dev/null || fail "$spec: qemu-img compare"
	# nbdcopy to null: reads the whole export, skipping holes by block status
	nbdcopy "$URI" null: || fail "$spec: nbdcopy to null:"
	rm -f "$TMP/back.img"

	qemu-io -f raw "$URI" \
		-c 'write -P 0x11 0 64k' \
		-c 'write -f -P 0x22 64k 4k' \
		-c 'write -z 1M 1M' \
		-c 'discard 7M 1M' \
		-c 'aio_write -P 0x33 2M 128k' \
		-c 'aio_write -P 0x44 3M 512' \
		-c 'aio_flush' \
		-c 'aio_read -P 0x33 2M 128k' \
		-c 'aio_flush' \
		-c 'read -P 0x11 0 64k' \
		-c 'read -P 0x22 64k 4k' \
		-c 'read -P 0 1M 1M' \
		-c 'read -P 0x44 3M 512' \
		-c 'flush' >"$TMP/qemu-io.out" 2>&1 || fail "$spec: qemu-io: $(cat "$TMP/qemu-io.out")"
	grep -qiE 'fail|error|mismatch' "$TMP/qemu-io.out" && fail "$spec: $(cat "$TMP/qemu-io.out")"
	# a second, independent client sees what the first wrote
	qemu-io -f raw -r "$URI" -c 'read -P 0x33 2M 128k' -c 'read -P 0 1M 1M' \
		>"$TMP/qemu-io.out" 2>&1 || fail "$spec: reread: $(cat "$TMP/qemu-io.out")"
	grep -qiE 'fail|mismatch' "$TMP/qemu-io.out" && fail "$spec: reread: $(cat "$TMP/qemu-io.out")"
	# the discarded range reads as zeros (both disks say unmap zeroes)
	qemu-io -f raw -r "$URI" -c 'read -P 0 7M 1M' >"$TMP/qemu-io.out" 2>&1 ||
		fail "$spec: discarded range: $(cat "$TMP/qemu-io.out")"
	stop_server
done

# nbdsh (libnbd's shell, run by Debian's python3) sees the errors of the protocol
if command -v nbdsh >/dev/null; then
	start_server ram:size=1M
	PATH=/usr/bin:$PATH nbdsh -u "$URI" -c '
import errno
h.set_strict_mode(0)
for fn, want in ((lambda: h.pwrite(b"x" * 512, 1 << 20), errno.ENOSPC),
                 (lambda: h.pread(512, 1 << 20), errno.EINVAL),
                 (lambda: h.pread(100, 0), errno.EINVAL),
                 (lambda: h.trim(512, (1 << 20) - 256), errno.EINVAL)):
    try:
        fn()
        raise SystemExit("no error")
    except nbd.Error as e:
        assert e.errnum == want, (e.errnum, want)
h.pwrite(b"y" * 512, 0, nbd.CMD_FLAG_FUA)
assert h.pread(512, 0) == b"y" * 512
' || fail "nbdsh"
	stop_server
fi

# what the file export wrote is in the file after a clean stop
qemu-io -f raw -r "$TMP/disk.img" -c 'read -P 0x22 64k 4k' >/dev/null || fail "file content"
