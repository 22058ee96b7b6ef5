#!/usr/bin/env bash
# VHD images qemu made (dynamic and fixed, with and without force_size, at 1 GiB,
# 1 GiB + 512 and 127 GiB), filled by qemu-io: vdisk sees qemu's size and
# exactly the bytes `qemu-img convert -f vpc -O raw` gives; map agrees with
# qemu-img map; a bare path opens read-only.
# ctest-timeout: 600
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/vhd-functions.sh"
requires qemu-img qemu-io jq
cd "$TMP"

for size in 1G 1073742336 127G; do
	for kind in dynamic dynamic-force fixed fixed-force; do
		[[ $size == 127G && $kind == fixed* ]] && continue
		img=$kind-$size.vhd
		opts=subformat=${kind%-force}
		[[ $kind == *-force ]] && opts+=,force_size=on
		qemu-img create -q -f vpc -o "$opts" "$img" "$size"
		qsize=$(qemu_size "$img")
		[[ $(our_size "$img") == "$qsize" ]] ||
			fail "$img: size $(our_size "$img"), qemu says $qsize"
		[[ $size == 127G ]] && last=$((qsize - 2 * 1048576 - 4096)) || last=$((qsize - 4096))
		qemu-io -f vpc -c "write -P 0x5a 0 64k" -c "write -P 0xa5 3M 1536" \
			-c "write -P 0x33 $((qsize / 2 - 512)) 1024" -c "write -P 0x77 $last 4096" \
			"$img" >/dev/null
		if [[ $size != 127G ]]; then
			qemu-img convert -f vpc -O raw "$img" "$img.raw"
			expect_status 0 "$VDISK" compare "$img" "$img.raw"
			grep -q identical "$TMP/stdout" || fail "$img: vdisk reads other bytes than qemu"
			rm -f "$img.raw"
		fi
		if [[ $kind == dynamic* ]]; then
			# allocation as qemu sees it
			expect_status 0 "$VDISK" map --json "$img"
			jq -c '[.[] | select(.zero == false) | [.offset, .length]]' "$TMP/stdout" >ours
			qemu-img map -f vpc --output=json "$img" |
				jq -c '[.[] | select(.data == true) | [.start, .length]]' >theirs
			# qemu reports sub-block extents; compare which 2 MiB blocks hold data
			blocks() { jq -c '[.[] | range(.[0] / 2097152 | floor; (.[0] + .[1] + 2097151) / 2097152 | floor)] | unique' "$1"; }
			[[ "$(blocks ours)" == "$(blocks theirs)" ]] ||
				fail "$img: allocated blocks $(blocks ours), qemu-img map $(blocks theirs)"
			expect_status 0 "$VDISK" check "$img"
		fi
		# a bare path opens as vhd, and only read-only
		expect_status 0 "$VDISK" info --json "$img"
		jq -e '.read_only == true and (.layers[0].type | test("^vhd1?$"))' "$TMP/stdout" >/dev/null ||
			fail "$img: a bare path did not open read-only as VHD"
		rm -f "$img"
	done
done

# writes through vdisk into a qemu-made dynamic image, read back by qemu
qemu-img create -q -f vpc q.vhd 64M
qemu-io -f vpc -c "write -P 0x11 1M 1M" q.vhd >/dev/null
head -c 8M /dev/urandom >patch.raw
qemu-img convert -f vpc -O raw q.vhd want.raw
dd if=patch.raw of=want.raw bs=1M seek=20 conv=notrunc status=none
serve_vhd "vhd:path=q.vhd"
qemu-io -f raw "$(nbd_uri)" -c "write -s patch.raw 20M 8M" >/dev/null
stop_serve
qemu-img compare -q -f vpc -F raw q.vhd want.raw || fail "qemu reads our writes wrong"
expect_status 0 "$VDISK" check q.vhd
echo PASS
