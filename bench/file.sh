#!/usr/bin/env bash
# vdisk's file backend beside fio on the same 1 GiB page-cached file, same
# parameters, same run: fio io_uring (qd 32) and psync (qd 1, its only depth),
# vdisk bench at qd 32 on one queue.  REPS runs each, alternating; medians.
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
img=$WORK/file-1g.img
[[ -f $img && $(stat -c %s "$img") == 1073741824 ]] ||
	dd if=/dev/urandom of="$img" bs=1M count=1024 status=none
sync
cat "$img" >/dev/null

fio_run() { # engine depth rw
	fio --name=b --filename="$img" --size=1G --rw="$3" --bs=4k --ioengine="$1" \
		--iodepth="$2" --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based \
		--iomem_align=4096 --invalidate=0 --output-format=json 2>/dev/null | fio_iops
}
vd_run() { # rw
	"$VDISK" bench "file:path=$img" --rw "$1" --bs 4k --iodepth 32 --runtime "$RUNTIME" \
		--ramp "$RAMP" --json | jq .iops
}

echo "| workload | vdisk file qd32 | fio io_uring qd32 | fio psync | vdisk / best fio |"
echo "| --- | --- | --- | --- | --- |"
for rw in randread randwrite; do
	: >"$WORK/vd" ; : >"$WORK/fu" ; : >"$WORK/fp"
	for ((i = 0; i < REPS; i++)); do
		sync; vd_run $rw >>"$WORK/vd"
		sync; fio_run io_uring 32 $rw >>"$WORK/fu"
		sync; fio_run psync 1 $rw >>"$WORK/fp"
	done
	vd=$(median <"$WORK/vd"); fu=$(median <"$WORK/fu"); fp=$(median <"$WORK/fp")
	best=$(printf '%s\n%s\n' "$fu" "$fp" | sort -g | tail -1)
	echo "| 4K $rw | $(kiops "$vd") ($(range <"$WORK/vd")) | $(kiops "$fu") ($(range <"$WORK/fu")) |" \
		"$(kiops "$fp") ($(range <"$WORK/fp")) | $(ratio "$vd" "$best") |"
done
