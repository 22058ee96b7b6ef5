#!/usr/bin/env bash
# VHD images vdisk makes, judged by qemu-img (-f vpc), vhdiinfo and libvhdi:
# create (dynamic, fixed, 1 GiB, 1 GiB + 512, 127 GiB), convert raw -> vhd ->
# raw, --adopt in place, and a differencing chain written over NBD.
# ctest-timeout: 600
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/vhd-functions.sh"
requires qemu-img qemu-io jq vhdiinfo
requires_py pyvhdi
cd "$TMP"

# sizes: what was asked, what qemu sees, what libvhdi sees
for size in 1073741824 1073742336 136365211648; do
	for fixed in "" --fixed; do
		[[ $size == 136365211648 && -n $fixed ]] && continue
		expect_status 0 "$VDISK" create vhd s.vhd $size $fixed
		[[ $(qemu_size s.vhd) == "$size" ]] || fail "create $size $fixed: qemu sees $(qemu_size s.vhd)"
		[[ $(our_size s.vhd) == "$size" ]] || fail "create $size $fixed: we see $(our_size s.vhd)"
		[[ $(vhdiinfo s.vhd) == *"($size bytes)"* ]] || fail "create $size $fixed: vhdiinfo: $(vhdiinfo s.vhd)"
		[[ -z $fixed ]] || (( $(stat -c %s s.vhd) == size + 512 )) || fail "fixed: file size"
		expect_status 0 "$VDISK" check s.vhd
		rm s.vhd
	done
done
expect_status 1 "$VDISK" create vhd s.vhd 3T
expect_stderr "2040 GiB"
expect_status 2 "$VDISK" create vhd s.vhd 1000
expect_status 2 "$VDISK" create vhd s.vhd 1M --fixed --block-size 1M

# a 256 MiB + 512 raw file, half of it data
size=268435968
truncate -s $size src.raw
for i in $(seq 0 2 14); do
	dd if=/dev/urandom of=src.raw bs=1M count=16 seek=$((i * 16 + i % 3)) conv=notrunc status=none
done
dd if=/dev/urandom of=src.raw bs=512 count=1 seek=$((size / 512 - 1)) conv=notrunc status=none
for fixed in "" --fixed; do
	expect_status 0 "$VDISK" convert src.raw c.vhd --format vhd $fixed
	qemu-img compare -q -f vpc -F raw c.vhd src.raw || fail "convert $fixed: qemu-img compare"
	vhdiinfo c.vhd >/dev/null || fail "convert $fixed: vhdiinfo"
	libvhdi_equal c.vhd src.raw
	expect_status 0 "$VDISK" check c.vhd
	# and back to raw
	expect_status 0 "$VDISK" convert c.vhd back.raw
	cmp -s back.raw src.raw || fail "convert $fixed: vhd -> raw differs"
	rm -f c.vhd back.raw
done
expect_status 1 "$VDISK" convert src.raw src.raw --format vhd
expect_stderr "exists"

# --adopt: a raw file becomes a fixed VHD in place
head -c 8M /dev/urandom >a.raw
cp a.raw a.orig
expect_status 0 "$VDISK" create vhd a.raw --fixed --adopt
(( $(stat -c %s a.raw) == 8 * 1048576 + 512 )) || fail "adopt: not one footer longer"
cmp -s -n $((8 * 1048576)) a.raw a.orig || fail "adopt: moved data"
qemu-img compare -q -f vpc -F raw a.raw a.orig || fail "adopt: qemu-img compare"
expect_status 1 "$VDISK" create vhd a.raw --fixed --adopt
expect_stderr "already ends with a VHD footer"
head -c 1000 /dev/zero >odd.raw
expect_status 1 "$VDISK" create vhd odd.raw --fixed --adopt
expect_stderr "not a non-zero multiple of 512"

# differencing: base <- child; the child, written over NBD, reads as base with
# the writes on top, through vdisk and through libvhdi with the parent set
truncate -s 64M base.raw
dd if=/dev/urandom of=base.raw bs=1M count=40 conv=notrunc status=none
expect_status 0 "$VDISK" convert base.raw base.vhd --format vhd
expect_status 0 "$VDISK" create vhd child.vhd --parent base.vhd
expect_status 0 "$VDISK" info child.vhd
grep -q "kind: differencing" "$TMP/stdout" || fail "info: kind"
grep -q 'parent: .\\base.vhd' "$TMP/stdout" || fail "info: parent name: $(cat "$TMP/stdout")"
libvhdi_equal child.vhd base.raw base.vhd
cp base.raw want.raw
serve_vhd "vhd:path=child.vhd"
qemu-io -f raw "$(nbd_uri)" -c "write -P 0x61 512 512" -c "write -P 0x62 3M 5000k" \
	-c "write -P 0x63 $((64 * 1048576 - 1024)) 1024" -c "write -z 10M 1M" >/dev/null
stop_serve
qemu-io -f raw -c "write -P 0x61 512 512" -c "write -P 0x62 3M 5000k" \
	-c "write -P 0x63 $((64 * 1048576 - 1024)) 1024" -c "write -z 10M 1M" want.raw >/dev/null
expect_status 0 "$VDISK" compare child.vhd want.raw
grep -q identical "$TMP/stdout" || fail "differencing: vdisk reads other bytes"
libvhdi_equal child.vhd want.raw base.vhd
expect_status 0 "$VDISK" compare base.vhd base.raw
grep -q identical "$TMP/stdout" || fail "differencing: the parent changed"
expect_status 0 "$VDISK" check child.vhd
echo PASS
