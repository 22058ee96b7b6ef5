#!/usr/bin/env bash
# vdisk serve --iscsi judged by real initiators: libiscsi's iscsi-ls (discovery
# with SendTargets), iscsi-inq (standard data and VPD pages), iscsi-readcapacity16,
# header digests; qemu's iscsi:// driver copying an image into and out of the
# target (qemu-img convert) and comparing it (qemu-img compare); NBD and iSCSI
# served by one process; CHAP; usage errors.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/iscsi-functions.sh"
requires iscsi-inq iscsi-ls iscsi-readcapacity16 qemu-img
qemu-img --help | grep -cw iscsi >/dev/null || skip "qemu-img without the iscsi driver (qemu-block-extra)"

expect_status 2 "$VDISK" serve ram:size=1M --target-name iqn.2026-01.x:y
expect_stderr "--iscsi"
expect_status 2 "$VDISK" serve ram:size=1M --iscsi
expect_status 1 "$VDISK" serve ram:size=1M --iscsi 127.0.0.1:0 --target-name NotAnIQN
expect_stderr "target-name"
expect_status 1 "$VDISK" serve ram:size=1M --iscsi '::1:5'
expect_status 1 "$VDISK" serve ram:size=1M --iscsi 127.0.0.1:0 --iscsi-chap-file "$TMP/nosuch"
expect_stderr "nosuch"

# a file with a pattern, served
"$PYTHON" -c "
import sys
with open(sys.argv[1], 'wb') as f:
    for i in range(4096):
        f.write(bytes([i % 251]) * 4096 if i % 3 else b'\0' * 4096)
" "$TMP/src.img"
cp "$TMP/src.img" "$TMP/disk.img"
start_iscsi "file:path=$TMP/disk.img" --target-name iqn.2026-01.org.example:t1
[[ $ISCSI_URI == */iqn.2026-01.org.example:t1/0 ]] || fail "URI $ISCSI_URI"

iscsi-ls "$ISCSI_PORTAL" >"$TMP/ls" || fail "iscsi-ls"
grep -q "Target:iqn.2026-01.org.example:t1 Portal:127.0.0.1:$ISCSI_PORT,1" "$TMP/ls" ||
	fail "iscsi-ls: $(cat "$TMP/ls")"
iscsi-inq "$ISCSI_URI" >"$TMP/inq" || fail "iscsi-inq"
grep -q "Vendor:VDISK" "$TMP/inq" || fail "inquiry: $(cat "$TMP/inq")"
grep -q "Peripheral Device Type:DIRECT_ACCESS" "$TMP/inq" || fail "inquiry type"
iscsi-inq -e 1 -c 176 "$ISCSI_URI" >"$TMP/b0" || fail "VPD B0"
grep -q "maximum transfer length:16384" "$TMP/b0" || fail "block limits: $(cat "$TMP/b0")"
iscsi-inq -e 1 -c 131 "$ISCSI_URI" >"$TMP/83" || fail "VPD 83"
grep -qi "NAA" "$TMP/83" || fail "device identification: $(cat "$TMP/83")"
iscsi-readcapacity16 "$ISCSI_URI" >"$TMP/rc" || fail "readcapacity16"
grep -q "Total size:16777216" "$TMP/rc" || fail "capacity: $(cat "$TMP/rc")"
grep -q "LBPME:1" "$TMP/rc" || fail "LBPME: $(cat "$TMP/rc")"
# header digests (CRC32C) negotiated by libiscsi
iscsi-inq "$ISCSI_URI?header_digest=crc32c" >/dev/null || fail "iscsi-inq with header digests"

# qemu: read the served image out, compare, write another one in
qemu-img convert -f raw -O raw "$ISCSI_URI" "$TMP/out.img" || fail "qemu-img convert out of iscsi"
cmp "$TMP/src.img" "$TMP/out.img" || fail "image read over iSCSI differs"
qemu-img compare -f raw -F raw "$ISCSI_URI" "$TMP/src.img" || fail "qemu-img compare"
"$PYTHON" -c "
import os, sys
with open(sys.argv[1], 'wb') as f:
    f.write(os.urandom(16 << 20))
" "$TMP/new.img"
qemu-img convert -n -f raw -O raw "$TMP/new.img" "$ISCSI_URI" || fail "qemu-img convert into iscsi"
qemu-img compare -f raw -F raw "$TMP/new.img" "$ISCSI_URI" || fail "compare after writing"
stop_iscsi
cmp "$TMP/new.img" "$TMP/disk.img" || fail "the file does not hold what was written"

# NBD and iSCSI from one process, over one disk
requires nbdinfo
"$VDISK" serve ram:size=8M --iscsi 127.0.0.1:0 --tcp 127.0.0.1:0 >"$TMP/both.out" 2>"$TMP/both.err" &
both=$!
cleanup_fn "kill $both 2>/dev/null"
for _ in $(seq 1 100); do [[ $(wc -l <"$TMP/both.out") -ge 2 ]] && break; sleep 0.05; done
iuri=$(grep '^iscsi://' "$TMP/both.out") || fail "no iSCSI URI: $(cat "$TMP/both.out" "$TMP/both.err")"
nuri=$(grep '^nbd://' "$TMP/both.out") || fail "no NBD URI"
head -c 1048576 "$TMP/new.img" >"$TMP/1m.img"
qemu-img convert -n -f raw -O raw "$TMP/1m.img" "$iuri" || fail "write over iSCSI"
nbdinfo --size "$nuri" | grep -cx 8388608 >/dev/null || fail "nbdinfo beside iSCSI"
"$PYTHON" - "$nuri" "$TMP/1m.img" <<'PY' || fail "data written over iSCSI is not seen over NBD"
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
want = open(sys.argv[2], 'rb').read()
assert h.pread(len(want), 0) == want
PY
kill -TERM $both
wait $both || fail "serve with NBD and iSCSI exited $?"

# CHAP: the right secret logs in, a wrong one and none are refused
printf '# user:secret\ninitiator:s3cret-s3cret\n' >"$TMP/chap"
start_iscsi ram:size=1M --iscsi-chap-file "$TMP/chap"
iscsi-inq "iscsi://initiator%s3cret-s3cret@127.0.0.1:$ISCSI_PORT/iqn.2026-01.org.vdisk:disk/0" \
	>/dev/null || fail "CHAP with the right secret"
if iscsi-inq "iscsi://initiator%wrong-secret!@127.0.0.1:$ISCSI_PORT/iqn.2026-01.org.vdisk:disk/0" \
	>/dev/null 2>&1; then fail "CHAP with a wrong secret logged in"; fi
if iscsi-inq "$ISCSI_URI" >/dev/null 2>&1; then fail "no CHAP logged in"; fi
stop_iscsi
echo ok
