#!/usr/bin/env bash
# The blob backend against a real nginx on a free loopback port: the
# conformance suite's read-only parts over http and https (HTTP/2 with the
# test's own CA; `insecure`; a certificate not trusted refused; a queue's
# reads multiplexed on one HTTP/2 connection, as nginx logs them), every byte
# compared with the file served, redirects (5 followed, a 6th refused), the
# query string never shown, a blob replaced while open failing reads (ETag
# pinning, seen through `vdisk serve` and qemu-io), and a sqlite-cache over the
# blob opened a second time and read whole from the cache with nginx stopped;
# a VHD and a VHDX read through a blob.
# ctest-timeout: 600
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/http-functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nginx openssl
CONF=$BUILD_DIR/tests/vdisk-conformance
[[ -x $CONF ]] || fail "no $CONF"

ROOT=$TMP/www
mkdir -p "$ROOT"
# 24 MiB and a half sector: the partial sector is not part of the disk
head -c $((24 * 1024 * 1024 + 256)) /dev/urandom >"$ROOT/disk.img"
head -c $((24 * 1024 * 1024)) "$ROOT/disk.img" >"$TMP/disk.raw"
redirects=""
for i in 1 2 3 4 5 6; do
	redirects+="location = /r$i { return 302 /r$((i - 1)); } "
done
redirects+="location = /r0 { return 302 /disk.img; } "
redirects+="location = /to-https { return 302 https://127.0.0.1:\$server_port/disk.img; } "
# the TLS server logs each request's protocol and connection
NGINX_HTTP_EXTRA="log_format conn '\$connection \$server_protocol \$status \$http_range';"
NGINX_TLS=1 start_nginx "$ROOT" "$redirects access_log $TMP/access.log conn;"
BASE=http://127.0.0.1:$NGINX_PORT
SBASE=https://127.0.0.1:$NGINX_TLS_PORT
spec() { printf '{"type":"blob","url":"%s"%s}' "$1" "${2:-}"; }

# --- conformance (read-only parts) and every byte ---------------------------
"$CONF" "$(spec "$BASE/disk.img?sig=abc")" >"$TMP/conf.out" ||
	fail "conformance over http: $(grep FAIL "$TMP/conf.out")"
grep -q "read-only" "$TMP/conf.out" || fail "conformance did not see a read-only disk"
expect_status 0 "$VDISK" compare "$(spec "$BASE/disk.img" ',"split":"256k"')" "$TMP/disk.raw"
"$CONF" "$(spec "$SBASE/disk.img" ",\"ca-file\":\"$TMP/tls/ca.pem\"")" >"$TMP/conf.out" ||
	fail "conformance over https: $(grep FAIL "$TMP/conf.out")"
expect_status 0 "$VDISK" compare "$(spec "$SBASE/disk.img" ',"insecure":true')" "$TMP/disk.raw"

# --- HTTP/2: one queue's reads multiplexed on one connection -----------------
cp "$TMP/access.log" "$TMP/access.log.before"
expect_status 0 "$VDISK" bench "$(spec "$SBASE/disk.img" ',"insecure":true')" \
	--rw randread --bs 4k --iodepth 32 --runtime 1
"$PYTHON" - "$TMP/access.log.before" "$TMP/access.log" <<'PY' || fail "HTTP/2 multiplexing"
import sys
old = len(open(sys.argv[1]).read().splitlines())
lines = [l.split() for l in open(sys.argv[2]).read().splitlines()[old:]]
gets = [l for l in lines if len(l) == 4 and l[3].startswith("bytes=")]
assert len(gets) >= 64, f"only {len(gets)} ranged requests"
assert all(l[1] == "HTTP/2.0" and l[2] == "206" for l in gets), gets[:3]
conns = {l[0] for l in gets}
# the open's HEAD has a connection of its own; the bench's queue needs one
assert len(conns) == 1, f"{len(gets)} ranges over {len(conns)} connections"
PY

# --- inspect: the URL without its query string, HTTP/2 over TLS -------------
"$VDISK" info --json "$(spec "$SBASE/disk.img?sv=1&sig=TOPSECRET" ",\"ca-file\":\"$TMP/tls/ca.pem\"")" \
	>"$TMP/info.json" 2>&1 || fail "info: $(cat "$TMP/info.json")"
grep -q TOPSECRET "$TMP/info.json" && fail "the query string is shown: $(cat "$TMP/info.json")"
"$PYTHON" - "$TMP/info.json" "$SBASE/disk.img?***" <<'PY' || fail "info: $(cat "$TMP/info.json")"
import json, sys
info = json.load(open(sys.argv[1]))
layer = info["layers"][0]
assert layer["type"] == "blob" and layer["read_only"], layer
assert layer["url"] == sys.argv[2], layer["url"]
assert layer["config"]["url"] == sys.argv[2], layer["config"]
assert layer["http_version"] == "2", layer["http_version"]
assert layer["pinned_by"] == "etag" and layer["etag"], layer
assert layer["sector_count"] == 24 * 2048, layer["sector_count"]
assert layer["physical_sector_size"] == 4096
assert layer["disk_id"], layer
PY
# a certificate nobody trusts
expect_status 1 "$VDISK" info "$(spec "$SBASE/disk.img" ',"retries":0')"
expect_stderr "certificate"

# --- redirects ---------------------------------------------------------------
expect_status 0 "$VDISK" compare "$(spec "$BASE/r4")" "$TMP/disk.raw"
expect_status 1 "$VDISK" info "$(spec "$BASE/r5")"
expect_stderr "more than 5 redirects"
expect_status 1 "$VDISK" info "$(spec "$BASE/to-https")"
expect_stderr "redirect to another scheme refused"

# --- a blob replaced while open fails reads ---------------------------------
requires qemu-io
start_server "$(spec "$BASE/disk.img")"
qemu-io -r -f raw -c "read 0 64k" "$URI" >"$TMP/qio.out" 2>&1 ||
	fail "read before the replacement: $(cat "$TMP/qio.out")"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$ROOT/new.img"
touch -d '2001-01-01' "$ROOT/new.img"
mv "$ROOT/new.img" "$ROOT/disk.img"
if qemu-io -r -f raw -c "read 1M 64k" "$URI" >"$TMP/qio.out" 2>&1 &&
	! grep -qi "failed" "$TMP/qio.out"; then
	fail "a read of the replaced blob succeeded: $(cat "$TMP/qio.out")"
fi
stop_server
cp "$TMP/disk.raw" "$ROOT/disk.img" # the old content again, but a new ETag

# --- a sqlite-cache over the blob: the second open needs no server ----------
"$VDISK" info --json "$(spec "$BASE/disk.img")" >"$TMP/info.json"
read -r etag size < <("$PYTHON" -c '
import json, sys
l = json.load(open(sys.argv[1]))["layers"][0]
print(l["etag"], l["size"])' "$TMP/info.json")
pinned=$(printf ',"etag":%s,"size":%s' "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$etag")" "$size")
cached() {
	printf '{"type":"layered","layers":[{"type":"ram"},{"type":"sqlite-cache","read-cache":true,"root":"%s"},{"type":"disk","disk":%s}]}' \
		"$TMP/cache" "$(spec "$BASE/disk.img" "$1")"
}
# --- image formats over a blob: a dynamic VHD and a VHDX, read-only ----------
requires qemu-img qemu-io
qemu-img create -q -f vpc "$ROOT/d.vhd" 16M
qemu-img create -q -f vhdx "$ROOT/d.vhdx" 16M
for f in vpc:d.vhd vhdx:d.vhdx; do
	qemu-io -f "${f%%:*}" -c "write -P 0x5a 1M 64k" -c "write -P 0x33 9M 4k" "$ROOT/${f#*:}" >/dev/null
	qemu-img convert -f "${f%%:*}" -O raw "$ROOT/${f#*:}" "$TMP/${f#*:}.raw"
done
expect_status 0 "$VDISK" compare \
	"{\"type\":\"vhd\",\"read-only\":true,\"inner\":$(spec "$BASE/d.vhd")}" "$TMP/d.vhd.raw"
expect_status 0 "$VDISK" compare \
	"{\"type\":\"vhdx\",\"read-only\":true,\"inner\":$(spec "$BASE/d.vhdx")}" "$TMP/d.vhdx.raw"

mkdir -p "$TMP/cache"
# a writable open (a RAM diff on top) creates and fills the cache; a read-only
# one only reads it
requires nbdcopy
start_server "$(cached "$pinned")"
nbdcopy "$URI" "$TMP/copy.raw" || fail "nbdcopy through the cache"
stop_server
cmp "$TMP/copy.raw" "$TMP/disk.raw" || fail "the copy through the cache differs"
stop_nginx
# the server is gone: without a pin the blob cannot even open...
expect_status 1 "$VDISK" info "$(cached ',"retries":0')"
expect_stderr "127.0.0.1:$NGINX_PORT/disk.img"
# ...with it, every sector comes from the cache
expect_status 0 "$VDISK" compare "$(cached "$pinned")" "$TMP/disk.raw"
echo "ok"
