#!/usr/bin/env bash
# The vdisk command: exit statuses (0 / 1 failure / 2 usage), messages that name
# the key or the file, `info` output in both forms, and a bench smoke run that
# checks the JSON it promises (not its speed).
source "$(dirname "$0")/functions.sh"
requires jq

expect_status 0 "$VDISK" --help
grep -q "info" "$TMP/stdout" || fail "--help lists no commands"
grep -q "ram " "$TMP/stdout" || fail "--help lists no types"
expect_status 2 "$VDISK"
expect_stderr "  ram "
expect_status 2 "$VDISK" frobnicate
expect_stderr "unknown command 'frobnicate'"
# a spec that no open can take gets no hint about --read-only
expect_status 1 "$VDISK" serve ram:size=1X --unix "$TMP/never.sock"
expect_stderr "size: '1X' is not a size"
! grep -q -- "--read-only" "$TMP/stderr" || fail "serve: a read-only hint for a bad size"
expect_status 0 "$VDISK" info --help
expect_status 2 "$VDISK" info
expect_status 2 "$VDISK" info ram:size=1M extra
expect_status 2 "$VDISK" info --bogus ram:size=1M

# failures name the key or the file
expect_status 1 "$VDISK" info zzz:size=1M
expect_stderr "unknown type 'zzz'"
expect_status 1 "$VDISK" info ram:size=1M,colour=blue
expect_stderr "unknown key 'colour'"
expect_status 1 "$VDISK" info ram:size=lots
expect_stderr "'lots' is not a size"
expect_status 1 "$VDISK" info "$TMP/missing.img"
expect_stderr "$TMP/missing.img"
expect_status 1 "$VDISK" info ram:size=1M,sector-size=1000
expect_stderr "sector-size"

# info, human and JSON
expect_status 0 "$VDISK" info ram:size=1G
grep -q "^type: *ram" "$TMP/stdout" || fail "info lacks the type"
grep -q "1073741824 bytes" "$TMP/stdout" || fail "info lacks the size"
expect_status 0 "$VDISK" info --json "file:path=$TMP/d.img,create=8M,sector-size=4096"
json=$TMP/stdout
for k in type sector_count sector_size physical_sector_size disk_id fua read_only \
	unmap_behavior optimal_unmap_sectors persistent_reservations layers; do
	jq -e "has(\"$k\")" "$json" >/dev/null || fail "info --json lacks $k"
done
[[ $(jq -r .type "$json") == file ]] || fail "type"
[[ $(jq -r .sector_count "$json") == 2048 ]] || fail "sector_count"
[[ $(jq -r .sector_size "$json") == 4096 ]] || fail "sector_size"
[[ $(jq -r .fua "$json") == true ]] || fail "fua"
[[ $(jq -r '.layers[0].config.path' "$json") == "$TMP/d.img" ]] || fail "layer config"
# a file that cannot be opened writable is shown read-only
chmod 0444 "$TMP/d.img"
expect_status 0 "$VDISK" info --read-only --json "$TMP/d.img"
[[ $(jq -r .read_only "$TMP/stdout") == true ]] || fail "--read-only"

# bench: usage errors, then a short run whose JSON has what the docs promise
expect_status 2 "$VDISK" bench ram:size=1M --bs 1000x
expect_status 2 "$VDISK" bench ram:size=1M --rw sideways
expect_stderr "--rw"
expect_status 2 "$VDISK" bench ram:size=1M --bs 1000
expect_stderr "multiple of the sector size"
expect_status 1 "$VDISK" bench ram:size=1M,read-only=on --rw randwrite
expect_stderr "read-only"
expect_status 0 "$VDISK" bench ram:size=8M --rw randrw --bs 4k --iodepth 4 --queues 2 \
	--runtime 0.2 --json
j=$TMP/stdout
for k in iops mib_per_s lat_ns.mean lat_ns.p50 lat_ns.p99 lat_ns.max; do
	jq -e ".$k > 0" "$j" >/dev/null || fail "bench --json: $k missing or zero"
done
jq -e '.per_queue | length == 2' "$j" >/dev/null || fail "bench --json: per_queue"
jq -e '.lat_ns.p50 <= .lat_ns.p99 and .lat_ns.p99 <= .lat_ns.max * 1.07' "$j" >/dev/null ||
	fail "bench --json: percentiles out of order"
jq -e '.errors == 0' "$j" >/dev/null || fail "bench reported errors"
expect_status 0 "$VDISK" bench "file:path=$TMP/b.img,create=4M" --rw write --bs 64k --runtime 0.1
grep -q "IOPS" "$TMP/stdout" || fail "bench human output"
expect_status 0 "$VDISK" bench null:size=16M --queues 2 --runtime 0.1
grep -q "^  queue 1: .* IOPS" "$TMP/stdout" || fail "bench: no per-queue lines: $(cat "$TMP/stdout")"
echo "PASS"
