#!/usr/bin/env bash
# vdisk check over a layered disk: a SQLite diff with a damaged sector is found
# by the layer's own check and by the read pass, at the right offset.
source "$(dirname "$0")/functions.sh"
requires sqlite3 jq

cd "$TMP"
"$VDISK" create raw base.img 4M >/dev/null
dd if=/dev/urandom of=src.img bs=1M count=4 status=none
diff_new='{"type":"layered","layers":[{"type":"sqlite","path":"'"$TMP"'/d.dbhd","create":true},{"type":"disk","disk":"file:path='"$TMP"'/base.img"}]}'
diff='{"type":"layered","layers":[{"type":"sqlite","path":"'"$TMP"'/d.dbhd"},{"type":"disk","disk":"file:path='"$TMP"'/base.img"}]}'
expect_status 0 "$VDISK" convert --bs 64k src.img "$diff_new"
expect_status 0 "$VDISK" check --read "$diff"
grep -q "no problem found: 2 layer(s), 2 with checks of their own, 4.0 MiB read" "$TMP/stdout" ||
	fail "clean check: $(cat "$TMP/stdout")"

# a stored sector of the wrong length: reads of it fail, check names it
sqlite3 d.dbhd "UPDATE sectors SET data = x'0102' WHERE sector = 777"
expect_status 1 "$VDISK" check "$diff"
grep -q "layers\[0\] (sqlite '$TMP/d.dbhd'): sector 777: stored 2 bytes, not 512" "$TMP/stdout" ||
	fail "damaged sector: $(cat "$TMP/stdout")"
expect_status 1 "$VDISK" check --read --json "$diff"
[[ $(jq -c '[.problems_total, .problems[1].offset, .problems[1].length]' "$TMP/stdout") == "[2,$((777 * 512)),512]" ]] ||
	fail "check --read: $(cat "$TMP/stdout")"
# the base image is never written by a check
cmp -s base.img <(head -c 4M /dev/zero) || fail "check wrote to the base image"
