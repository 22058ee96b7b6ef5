#!/usr/bin/env bash
# The nbd backend under the vdisk command, judged by qemu-nbd, nbdkit, nbdcopy
# and qemu-io: convert and compare between an export and a file both ways,
# map of a sparse export, a RAM diff layered over a read-only remote export,
# and open errors that name the URI and the reason.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
source "$(dirname "$0")/nbdc-functions.sh"
requires nbdkit qemu-nbd nbdcopy qemu-io

# a sparse 16 MiB source with data at three places
truncate -s 16M "$TMP/src.img"
head -c 1M /dev/urandom | dd of="$TMP/src.img" bs=1M seek=0 conv=notrunc status=none
head -c 64K /dev/urandom | dd of="$TMP/src.img" bs=64K seek=100 conv=notrunc status=none
head -c 512 /dev/urandom | dd of="$TMP/src.img" bs=512 seek=32767 conv=notrunc status=none

# --- export -> file, compare, map (qemu-nbd, read-only) ---
start_qemu_nbd ro -f raw -r -t -e 8 "$TMP/src.img"
ro=$(nbd_spec "$QEMU_URI")
"$VDISK" convert "$ro" "$TMP/out.img" || fail "convert export -> file"
cmp "$TMP/src.img" "$TMP/out.img" || fail "convert export -> file: contents differ"
expect_status 0 "$VDISK" compare "$ro" "$TMP/src.img"
cp "$TMP/src.img" "$TMP/changed.img"
printf 'x' | dd of="$TMP/changed.img" bs=1 seek=$((7 * 1048576 + 3)) conv=notrunc status=none
expect_status 1 "$VDISK" compare "$ro" "$TMP/changed.img"
grep -q 7340035 "$TMP/stdout" "$TMP/stderr" || fail "compare names no offset: $(cat "$TMP/stdout" "$TMP/stderr")"
"$VDISK" map "$ro" --json >"$TMP/map.json"
"$PYTHON" - "$TMP/map.json" <<'PY' || fail "map of a sparse export: $(cat "$TMP/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
data = [(r["offset"], r["length"]) for r in m if not r["zero"] and not r["hole"]]
holes = [(r["offset"], r["length"]) for r in m if r["zero"] and r["hole"]]
assert data[0] == (0, 1 << 20), m
assert (100 << 16, 1 << 16) in data, m
assert data[-1][0] + data[-1][1] == 16 << 20, m
assert sum(l for _, l in holes) >= 14 << 20, m
PY
# writes to a read-only export are refused by the disk, not sent
truncate -s 16M "$TMP/empty.img"
expect_status 1 "$VDISK" convert "$TMP/src.img" "$ro"
expect_stderr "read-only"

# --- file -> export (nbdkit memory), checked by nbdcopy ---
start_nbdkit mem memory size=16M
rw=$(nbd_spec "$NBDKIT_URI")
"$VDISK" convert "$TMP/src.img" "$rw" || fail "convert file -> export"
expect_status 0 "$VDISK" compare "$TMP/src.img" "$rw"
nbdcopy "$NBDKIT_URI" "$TMP/copy.img" || fail "nbdcopy"
cmp "$TMP/src.img" "$TMP/copy.img" || fail "nbdcopy reads other data than convert wrote"

# --- a RAM diff over a read-only remote export, served and written by qemu-io ---
layered="{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\",\"disk\":$ro}]}"
start_server "$layered"
qemu-io -f raw -c 'write -P 0xab 4096 8192' -c 'write -z 1048576 65536' "$URI" >"$TMP/qio" ||
	fail "qemu-io write: $(cat "$TMP/qio")"
nbdcopy "$URI" "$TMP/diff.img" || fail "nbdcopy of the layered disk"
stop_server
cmp "$TMP/src.img" "$TMP/out.img" >/dev/null || fail "the base image changed"
"$PYTHON" - "$TMP/src.img" "$TMP/diff.img" <<'PY' || fail "layered diff content"
import sys
src = bytearray(open(sys.argv[1], "rb").read())
got = open(sys.argv[2], "rb").read()
src[4096:4096 + 8192] = b"\xab" * 8192
src[1048576:1048576 + 65536] = bytes(65536)
assert got == bytes(src), "layered disk differs from base + writes"
PY

# --- open errors name the URI and the reason ---
expect_status 1 "$VDISK" info '{"type":"nbd"}'
expect_stderr "uri: missing"
expect_status 1 "$VDISK" info "{\"type\":\"nbd\",\"uri\":\"$NBDKIT_URI\",\"bogus\":1}"
expect_stderr "bogus"
expect_status 1 "$VDISK" info "$(nbd_spec "nbd+unix:///?socket=$TMP/none.sock")"
expect_stderr "$TMP/none.sock"
expect_status 1 "$VDISK" info "$(nbd_spec "http://example.invalid/")"
expect_stderr "http://example.invalid/"
start_nbdkit odd memory size=1000
expect_status 1 "$VDISK" info "$(nbd_spec "$NBDKIT_URI")"
expect_stderr "export size 1000 is not a multiple of the 512-byte sector"
start_qemu_nbd named -f raw -r -t -x alpha "$TMP/src.img"
expect_status 1 "$VDISK" info "$(nbd_spec "$QEMU_URI" export beta)"
expect_stderr "export 'beta'"
expect_status 0 "$VDISK" info "$(nbd_spec "$QEMU_URI" export alpha)"
grep -q '16 MiB\|16777216' "$TMP/stdout" || fail "export alpha: $(cat "$TMP/stdout")"

# --- TLS with a pre-shared key, against vdisk serve ---
requires openssl
echo "alice:$(openssl rand -hex 32)" >"$TMP/psk"
start_server ram:size=16M --tls-psk "$TMP/psk"
tls=$(nbd_spec "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$TMP/psk")
"$VDISK" convert "$TMP/src.img" "$tls" || fail "convert file -> TLS export"
expect_status 0 "$VDISK" compare "$tls" "$TMP/src.img"
"$VDISK" info "$tls" --json | grep -c '"tls": true' >/dev/null || fail "TLS not negotiated"
echo "alice:$(openssl rand -hex 32)" >"$TMP/wrong-psk"
expect_status 1 "$VDISK" info "$(nbd_spec "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$TMP/wrong-psk")"
expect_stderr "nbds+unix://alice@/"
stop_server
