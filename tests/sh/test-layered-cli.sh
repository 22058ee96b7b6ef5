#!/usr/bin/env bash
# Layered disks through the vdisk command: a sqlite diff over a base image,
# written with convert and checked with compare and map; a RAM diff written by
# bench; the base image never changes; bad stacks fail with status 1 and a
# message naming the layer.
source "$(dirname "$0")/functions.sh"
requires sha256sum

base=$TMP/base.img
dd if=/dev/urandom of="$base" bs=1M count=4 status=none
sum0=$(sha256sum <"$base")
diff_new="{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"$TMP/d.dbhd\",\"create\":true},{\"type\":\"disk\",\"disk\":\"file:path=$base\"}]}"
diff="{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"$TMP/d.dbhd\"},{\"type\":\"disk\",\"disk\":\"file:path=$base\"}]}"

expect_status 0 "$VDISK" info "$diff_new"
grep -q "^type: *layered" "$TMP/stdout" || fail "info: $(cat "$TMP/stdout")"
grep -q "layers\[1\].disk: file" "$TMP/stdout" || fail "info lacks the disk layer: $(cat "$TMP/stdout")"
# create never runs twice
expect_status 1 "$VDISK" info "$diff_new"
expect_stderr "layers[0] (sqlite): path '$TMP/d.dbhd': exists; create refuses to overwrite it"

# a fresh diff reads as its base
expect_status 0 "$VDISK" compare "$diff" "$base"

# write a patch through the diff: 1 MiB of data, then zeros
patch=$TMP/patch.img
truncate -s 4M "$patch"
dd if=/dev/urandom of="$patch" bs=1M count=1 conv=notrunc status=none
expect_status 0 "$VDISK" convert "$patch" "$diff"
expect_status 0 "$VDISK" compare "$diff" "$patch"
expect_status 1 "$VDISK" compare "$diff" "$base"
[[ $(sha256sum <"$base") == "$sum0" ]] || fail "the base image changed"

# the map: data where the patch has data, zeros after it
expect_status 0 "$VDISK" map "$diff" --json
"$PYTHON" - "$TMP/stdout" <<'EOF' || fail "map: $(cat "$TMP/stdout")"
import json, sys
m = json.load(open(sys.argv[1]))
assert m[0]["offset"] == 0 and m[0]["length"] >= 1 << 20 and not m[0]["zero"], m
assert all(e["zero"] for e in m if e["offset"] >= 1 << 20), m
assert sum(e["length"] for e in m) == 4 << 20, m
EOF

# JSON info: the stack with each layer's state
expect_status 0 "$VDISK" info "$diff" --json
"$PYTHON" - "$TMP/stdout" <<'EOF' || fail "info --json: $(cat "$TMP/stdout")"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["type"] == "layered" and o["unmap_behavior"] == "zeroes" and not o["fua"], o
stack = o["layers"][0]["stack"]
assert [l["type"] for l in stack] == ["sqlite", "disk"], stack
assert stack[0]["write_path"] and not stack[1]["write_path"], stack
assert stack[1]["opened_read_only"], stack
EOF

# a RAM diff over the base takes writes and forgets them
ram="{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\",\"disk\":\"file:path=$base\"}]}"
expect_status 0 "$VDISK" bench "$ram" --rw randwrite --runtime 0.3
expect_status 0 "$VDISK" compare "$ram" "$base"
[[ $(sha256sum <"$base") == "$sum0" ]] || fail "the base image changed under a RAM diff"

# bad stacks: status 1, the layer named
expect_status 1 "$VDISK" info '{"type":"layered","layers":[]}'
expect_stderr "layers: at least one layer is required"
expect_status 0 "$VDISK" info "{\"type\":\"layered\",\"read-only\":true,\"layers\":[{\"type\":\"disk\",\"disk\":\"file:path=$base,read-only=on\"}]}"
expect_status 1 "$VDISK" info "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"write-through\":true},{\"type\":\"ram\",\"size\":\"1M\"},{\"type\":\"disk\",\"disk\":\"file:path=$base\",\"write-through\":true}]}"
expect_stderr "layers[2] (disk): write-through"
printf 'not a database, not at all' >"$TMP/junk.dbhd"
expect_status 1 "$VDISK" info "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"$TMP/junk.dbhd\"}]}"
expect_stderr "layers[0] (sqlite)"
echo "ok"
