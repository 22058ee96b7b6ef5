#!/usr/bin/env bash
# vdisk's file backend on a block device beside fio's io_uring engine on the
# same device, same run: a loop device in direct-I/O mode (losetup
# --direct-io=on) over a 512 MiB file of random data, 4 KiB random reads and
# writes at depth 32, O_DIRECT on both sides.  fio runs twice: as it comes,
# and submitting in batches of up to 32 (as vdisk does).  REPS rounds, the
# order rotating inside each round; medians, and min-max.  Needs root.
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

fio_run() { # rw [fio options]
	local rw=$1
	shift
	fio --name=b --filename="$dev" --size=512M --rw="$rw" --bs=4k --ioengine=io_uring \
		--direct=1 --iodepth=32 --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based \
		--iomem_align=4096 --invalidate=0 "$@" --output-format=json 2>/dev/null | fio_iops
}
fio_batched() { fio_run "$1" --iodepth_batch_submit=32 --iodepth_batch_complete_min=1; }
vd_run() { # rw
	"$VDISK" bench "file:path=$dev" --rw "$1" --bs 4k --iodepth 32 --runtime "$RUNTIME" \
		--ramp "$RAMP" --json | jq .iops
}

echo "device $dev: $(cat /sys/block/"${dev#/dev/}"/loop/dio 2>/dev/null | sed 's/1/direct-io on/;s/0/direct-io off/')"
echo "| workload | vdisk file qd32 | fio io_uring qd32 | fio io_uring qd32, batched submit | vdisk / best fio |"
echo "| --- | --- | --- | --- | --- |"
for rw in randread randwrite; do
	: >"$WORK/vd"; : >"$WORK/fu"; : >"$WORK/fb"
	for ((i = 0; i < REPS; i++)); do
		case $((i % 3)) in
		0) vd_run $rw >>"$WORK/vd"; fio_run $rw >>"$WORK/fu"; fio_batched $rw >>"$WORK/fb" ;;
		1) fio_run $rw >>"$WORK/fu"; fio_batched $rw >>"$WORK/fb"; vd_run $rw >>"$WORK/vd" ;;
		2) fio_batched $rw >>"$WORK/fb"; vd_run $rw >>"$WORK/vd"; fio_run $rw >>"$WORK/fu" ;;
		esac
	done
	vd=$(median <"$WORK/vd"); fu=$(median <"$WORK/fu"); fb=$(median <"$WORK/fb")
	best=$(printf '%s\n%s\n' "$fu" "$fb" | sort -g | tail -1)
	echo "| 4K $rw | $(kiops "$vd") ($(range <"$WORK/vd")) | $(kiops "$fu") ($(range <"$WORK/fu")) |" \
		"$(kiops "$fb") ($(range <"$WORK/fb")) | $(ratio "$vd" "$best") |"
done
