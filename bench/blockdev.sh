#!/usr/bin/env bash
# vdisk's file backend on a block device beside fio's io_uring engine on the
# same device, same run: a loop device in direct-I/O mode (losetup
# --direct-io=on) over a 512 MiB file of random data, 4 KiB random reads and
# writes at depth 32, O_DIRECT on both sides.  REPS rounds, the two
# alternating inside each round; medians, and min-max.  Needs root.
source "$(dirname "$0")/lib.sh"
need_build
command -v fio >/dev/null || { echo "needs fio" >&2; exit 1; }
[[ -w /dev/loop-control ]] || { echo "needs root and /dev/loop-control" >&2; exit 1; }
mkdir -p "$WORK"
img=$WORK/blockdev-512m.img
[[ -f $img && $(stat -c %s "$img") == 536870912 ]] ||
	dd if=/dev/urandom of="$img" bs=1M count=512 status=none
dev=$(losetup -f --show --direct-io=on "$img")
trap 'losetup -d "$dev"' EXIT
sync

fio_run() { # rw
	fio --name=b --filename="$dev" --size=512M --rw="$1" --bs=4k --ioengine=io_uring \
		--direct=1 --iodepth=32 --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based \
		--iomem_align=4096 --invalidate=0 --output-format=json 2>/dev/null | fio_iops
}
vd_run() { # rw
	"$VDISK" bench "file:path=$dev" --rw "$1" --bs 4k --iodepth 32 --runtime "$RUNTIME" \
		--ramp "$RAMP" --json | jq .iops
}

echo "device $dev: $(cat /sys/block/"${dev#/dev/}"/loop/dio 2>/dev/null | sed 's/1/direct-io on/;s/0/direct-io off/')"
echo "| workload | vdisk file qd32 | fio io_uring qd32 | vdisk / fio |"
echo "| --- | --- | --- | --- |"
for rw in randread randwrite; do
	: >"$WORK/vd"; : >"$WORK/fu"
	for ((i = 0; i < REPS; i++)); do
		if ((i % 2)); then
			fio_run $rw >>"$WORK/fu"; vd_run $rw >>"$WORK/vd"
		else
			vd_run $rw >>"$WORK/vd"; fio_run $rw >>"$WORK/fu"
		fi
	done
	vd=$(median <"$WORK/vd"); fu=$(median <"$WORK/fu")
	echo "| 4K $rw | $(kiops "$vd") ($(range <"$WORK/vd")) | $(kiops "$fu") ($(range <"$WORK/fu")) |" \
		"$(ratio "$vd" "$fu") |"
done
