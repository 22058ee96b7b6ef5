#!/usr/bin/env bash
# vdisk create / map / convert / compare, judged by qemu-img on the same files.
source "$(dirname "$0")/functions.sh"
requires qemu-img jq

cd "$TMP"
# create: a sparse raw file, never over an existing one
expect_status 0 "$VDISK" create raw a.img 64M
[[ $(stat -c %s a.img) == 67108864 ]] || fail "create: wrong size"
(( $(stat -c %b a.img) < 64 )) || fail "create: not sparse"
expect_status 1 "$VDISK" create raw a.img 32M
expect_stderr "refusing to overwrite"
[[ $(stat -c %s a.img) == 67108864 ]] || fail "create changed an existing file"
expect_status 2 "$VDISK" create qcow7 b.img 1M
expect_stderr "unknown format 'qcow7'"
expect_status 2 "$VDISK" create raw b.img 1000
expect_status 0 "$VDISK" create raw c4k.img 1M --sector-size 4096

# some data in the middle, some zeros written as data at the end
dd if=/dev/urandom of=a.img bs=1M count=3 seek=10 conv=notrunc status=none
dd if=/dev/zero of=a.img bs=1M count=2 seek=40 conv=notrunc status=none

# map agrees with qemu-img map about what is data
expect_status 0 "$VDISK" map --json a.img
jq -c '.[] | select(.zero == false) | [.offset, .length]' "$TMP/stdout" >ours
qemu-img map -f raw --output=json a.img | jq -c '.[] | select(.data == true) | [.start, .length]' >theirs
diff ours theirs || fail "vdisk map and qemu-img map disagree on data extents"
expect_status 0 "$VDISK" map a.img
grep -q "10485760 *3145728  data" "$TMP/stdout" || fail "human map output"

# a small island of data that starts and ends inside a 1 MiB block
dd if=/dev/urandom of=a.img bs=4096 count=25 seek=$((50 * 256 + 3)) conv=notrunc status=none

# convert to a new file: same bytes, sparse (the written zeros are not copied)
expect_status 0 "$VDISK" convert a.img b.img
qemu-img compare -q -f raw -F raw a.img b.img || fail "convert output differs (qemu-img compare)"
(( $(stat -c %b b.img) * 512 <= 3 * 1048576 + 2 * 65536 )) || fail "convert output not sparse"
expect_status 0 "$VDISK" compare a.img b.img
grep -q "identical" "$TMP/stdout" || fail "compare output"

# convert into an existing, larger, dirty disk: zeros must be written
dd if=/dev/urandom of=big.img bs=1M count=80 status=none
expect_status 0 "$VDISK" convert --depth 3 --bs 64k a.img "file:path=$TMP/big.img"
cmp -n 67108864 a.img big.img || fail "convert into an existing disk left old data"
# and with 4096-byte sectors on the destination, no sparseness
expect_status 0 "$VDISK" convert --no-sparse a.img "file:path=$TMP/big.img,sector-size=4096"
cmp -n 67108864 a.img big.img || fail "convert --no-sparse"

# compare: a different byte, different sizes, unreadable sources
printf 'x' | dd of=b.img bs=1 seek=12345678 conv=notrunc status=none
expect_status 1 "$VDISK" compare a.img b.img
grep -q "Content mismatch at offset 12345678" "$TMP/stdout" || fail "compare mismatch offset"
expect_status 1 "$VDISK" compare null:size=32M ram:size=64M
grep -q "Sizes differ" "$TMP/stdout" || fail "compare sizes"
expect_status 1 "$VDISK" compare a.img missing.img
expect_stderr "missing.img"
expect_status 2 "$VDISK" compare a.img

# convert failures: smaller destination, read-only destination, bad options
expect_status 1 "$VDISK" convert a.img "ram:size=1M"
expect_stderr "smaller than the source"
expect_status 1 "$VDISK" convert a.img "file:path=$TMP/big.img,read-only=on"
expect_stderr "read-only"
expect_status 2 "$VDISK" convert --bs 3000 a.img x.img
[[ ! -e x.img ]] || fail "a refused convert created its destination"
echo PASS

# check: a clean image, unreadable sectors (fault rules), usage
expect_status 0 "$VDISK" check --read a.img
grep -q "no problem found" "$TMP/stdout" || fail "check: clean output"
bad='{"type":"fault","inner":"file:path='"$TMP"'/a.img","rules":[{"op":"read","offset":"10M","length":512,"sticky":true,"error":"io"}]}'
expect_status 0 "$VDISK" check "$bad"
expect_status 1 "$VDISK" check --read --json "$bad"
[[ $(jq -c '[.problems_total, .problems[0].offset, .problems[0].length]' "$TMP/stdout") == "[1,10485760,512]" ]] ||
	fail "check --read: $(cat "$TMP/stdout")"
expect_status 1 "$VDISK" check missing.img
expect_stderr "missing.img"
expect_status 2 "$VDISK" check
expect_status 2 "$VDISK" check --bogus a.img
