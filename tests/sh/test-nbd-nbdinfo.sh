#!/usr/bin/env bash
# nbdinfo judges what vdisk serve says about an export: size, block sizes,
# structured replies, every --can flag and --is read-only for a writable and a
# read-only export, the export list with its description, and --map against
# the real allocation of a sparse file (qemu-img map as the oracle) and of a
# RAM disk after writes and a trim.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdinfo qemu-img qemu-io jq

img=$TMP/disk.img
truncate -s 8M "$img"
dd if=/dev/urandom of="$img" bs=1M count=1 conv=notrunc status=none
dd if=/dev/urandom of="$img" bs=1M count=1 seek=3 conv=notrunc status=none

start_server "file:path=$img" --export-name disk --description "a test disk"
json=$(nbdinfo --json "$URI")
q() { jq -r ".exports[0].$1" <<<"$json"; }
[[ $(jq -r .protocol <<<"$json") == newstyle-fixed ]] || fail "protocol: $json"
[[ $(jq -r .structured <<<"$json") == true ]] || fail "structured replies not negotiated"
[[ $(q '"export-size"') == 8388608 ]] || fail "size: $(q '"export-size"')"
[[ $(q '"export-name"') == disk ]] || fail "name"
[[ $(q description) == "a test disk" ]] || fail "description: $(q description)"
[[ $(q block_size_minimum) == 512 ]] || fail "minimum block: $(q block_size_minimum)"
phys=$("$VDISK" info --json "file:path=$img" | jq -r .physical_sector_size)
[[ $(q block_size_preferred) == "$phys" ]] || fail "preferred block: $(q block_size_preferred)"
[[ $(q block_size_maximum) == 67108864 ]] || fail "maximum block: $(q block_size_maximum)"
[[ $(q is_read_only) == false ]] || fail "read-only"
jq -e '.exports[0].contexts | index("base:allocation")' <<<"$json" >/dev/null ||
	fail "no base:allocation: $json"
for can in connect read write flush fua trim zero fast-zero multi-conn cache df structured-reply; do
	nbdinfo --can "$can" "$URI" || fail "--can $can: no"
done
nbdinfo --is read-only "$URI" && fail "--is read-only: yes"
nbdinfo --list --json "$URI" | jq -e '.exports[0]["export-name"] == "disk"' >/dev/null ||
	fail "--list"

# the map against qemu-img's view of the same file: same data/hole boundaries
nbdinfo --map --json "$URI" |
	jq -c '[.[] | {o: .offset, l: .length, hole: (.type % 2 == 1)}]' >"$TMP/nbd.map"
qemu-img map -f raw --output=json "$img" |
	jq -c '[.[] | {o: .start, l: .length, hole: (.data | not)}]' >"$TMP/qemu.map"
cmp -s "$TMP/nbd.map" "$TMP/qemu.map" ||
	fail "map differs: nbd $(cat "$TMP/nbd.map") qemu $(cat "$TMP/qemu.map")"
grep -q '"hole":true' "$TMP/nbd.map" || fail "the sparse file has no hole: $(cat "$TMP/nbd.map")"
stop_server

# a read-only export says so and refuses writes
start_server "file:path=$img" --read-only
nbdinfo --is read-only "$URI" || fail "--is read-only: no"
for can in write trim zero fast-zero fua; do
	nbdinfo --can "$can" "$URI" && fail "read-only export: --can $can: yes"
done
nbdinfo --can multi-conn "$URI" || fail "read-only export: multi-conn not offered"
qemu-io -f raw -c 'write 0 512' "$URI" >/dev/null 2>&1 && fail "write to a read-only export worked"
stop_server

# a RAM disk: allocation follows writes, trims and zeroes
start_server ram:size=16M,huge-pages=off
qemu-io -f raw -c 'write -P 1 1M 64k' -c 'write -P 2 8M 1M' -c 'discard 8M 512k' \
	-c 'write -z 12M 64k' "$URI" >/dev/null
nbdinfo --map --json "$URI" | jq -c '[.[] | select(.type == 0) | [.offset, .length]]' \
	>"$TMP/ram.map"
[[ $(cat "$TMP/ram.map") == "[[1048576,65536],[8912896,524288]]" ]] ||
	fail "ram map: $(cat "$TMP/ram.map")"
# with --totals: 589824 bytes of data
nbdinfo --map --totals "$URI" | grep -cE '^ *589824 +[0-9.]+% +0 +data' >/dev/null ||
	fail "totals: $(nbdinfo --map --totals "$URI")"
stop_server
