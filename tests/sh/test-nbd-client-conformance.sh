#!/usr/bin/env bash
# ctest-labels: conformance
# The conformance suite over the nbd backend, against three real servers, each
# started here on a private Unix socket: nbdkit's memory plugin (512-byte and,
# through the blocksize-policy filter, 4096-byte blocks), qemu-nbd over a raw
# file, and `vdisk serve` over a RAM disk.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
source "$(dirname "$0")/nbdc-functions.sh"
requires nbdkit qemu-nbd

conformance() {
	local what=$1 spec=$2
	"$CONFORMANCE" "$spec" >"$TMP/conf.out" 2>&1 ||
		fail "$what: $(cat "$TMP/conf.out")"
	grep -q ' 0 failures' "$TMP/conf.out" || fail "$what: $(cat "$TMP/conf.out")"
	no_sanitizer_reports "$TMP/conf.out"
	echo "ok $what: $(tail -1 "$TMP/conf.out")"
}

start_nbdkit mem memory size=32M
conformance "nbdkit memory" "$(nbd_spec "$NBDKIT_URI")"

start_nbdkit mem4k --filter=blocksize-policy memory size=32M \
	blocksize-minimum=4096 blocksize-preferred=65536 blocksize-maximum=1M
spec=$(nbd_spec "$NBDKIT_URI")
"$VDISK" info "$spec" --json >"$TMP/info.json"
"$PYTHON" - "$TMP/info.json" <<'PY' || fail "nbdkit 4k block sizes: $(cat "$TMP/info.json")"
import json, sys
i = json.load(open(sys.argv[1]))
assert i["sector_size"] == 4096, i["sector_size"]
assert i["physical_sector_size"] == 65536, i["physical_sector_size"]
assert i["layers"][0]["block_size"]["maximum"] == 1 << 20
PY
conformance "nbdkit memory, 4096-byte blocks" "$spec"

truncate -s 32M "$TMP/raw.img"
start_qemu_nbd qemu -f raw -t -e 16 --cache=writeback --discard=unmap "$TMP/raw.img"
conformance "qemu-nbd raw file" "$(nbd_spec "$QEMU_URI")"

start_server ram:size=32M
conformance "vdisk serve ram" "$(nbd_spec "$URI")"
stop_server
