#!/usr/bin/env bash
# vdisk convert beside qemu-img convert: the same 1 GiB raw file of random data
# (page-cached) to a new raw file, REPS alternating runs, output removed and
# synced before each (untimed).  Then a sparse source: 1 GiB with 64 MiB of data.
# vdisk convert ends with a flush of the output, so it is timed beside
# `qemu-img convert -t writeback` (which ends with fdatasync) and, for
# reference, beside qemu-img's default, which leaves the output unsynced.
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
src=$WORK/convert-src.img
sparse=$WORK/convert-sparse.img
[[ -f $src && $(stat -c %s "$src") == 1073741824 ]] ||
	dd if=/dev/urandom of="$src" bs=1M count=1024 status=none
if [[ ! -f $sparse ]]; then
	truncate -s 1G "$sparse"
	dd if=/dev/urandom of="$sparse" bs=1M count=64 seek=500 conv=notrunc status=none
fi
cat "$src" "$sparse" >/dev/null

timed() { # prints seconds
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

echo "| conversion | vdisk convert | qemu-img -t writeback | qemu-img (default, no sync) | vdisk / qemu-img writeback (time) | vdisk / qemu-img default (time) |"
echo "| --- | --- | --- | --- | --- | --- |"
for s in "$src" "$sparse"; do
	: >"$WORK/v"; : >"$WORK/q"; : >"$WORK/u"
	for ((i = 0; i < REPS; i++)); do
		rm -f "$WORK/out.img"; sync
		timed "$VDISK" convert "$s" "$WORK/out.img" >>"$WORK/v"
		rm -f "$WORK/out.img"; sync
		timed qemu-img convert -t writeback -f raw -O raw "$s" "$WORK/out.img" >>"$WORK/q"
		rm -f "$WORK/out.img"; sync
		timed qemu-img convert -f raw -O raw "$s" "$WORK/out.img" >>"$WORK/u"
	done
	rm -f "$WORK/out.img"
	v=$(median <"$WORK/v"); q=$(median <"$WORK/q"); u=$(median <"$WORK/u")
	name=$([[ $s == "$src" ]] && echo "1 GiB random raw -> raw" || echo "1 GiB sparse (64 MiB data) raw -> raw")
	echo "| $name | ${v} s | ${q} s | ${u} s | $(ratio "$v" "$q") | $(ratio "$v" "$u") |"
done
