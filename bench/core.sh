#!/usr/bin/env bash
# The core's own cost: the null backend through the public async API, and the
# ram backend beside a loop that only memcpy's random 4 KiB blocks (the same
# memory backing: anonymous, transparent huge pages, 1 GiB prefilled).
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
cc -O2 -o "$WORK/memcpy-loop" "$BENCH_DIR/memcpy-loop.c"

vd() { "$VDISK" bench "$@" --runtime "$RUNTIME" --ramp "$RAMP" --json | jq .iops; }

echo "| workload | vdisk | peer | ratio |"
echo "| --- | --- | --- | --- |"
for bs in 512 4k; do
	: >"$WORK/n"
	for ((i = 0; i < REPS; i++)); do vd null:size=1G --bs $bs --iodepth 32 >>"$WORK/n"; done
	n=$(median <"$WORK/n")
	echo "| null, $bs random read, qd32, 1 queue | $(kiops "$n") ($(range <"$WORK/n")) | target 5M | $(ratio "$n" 5000000) |"
done
: >"$WORK/r" ; : >"$WORK/m"
for ((i = 0; i < REPS; i++)); do
	vd ram:size=1G --fill --bs 4k --iodepth 32 >>"$WORK/r"
	"$WORK/memcpy-loop" $((1 << 30)) "$RUNTIME" >>"$WORK/m"
done
r=$(median <"$WORK/r"); m=$(median <"$WORK/m")
echo "| ram, 4K random read, qd32, 1 queue | $(kiops "$r") ($(range <"$WORK/r")) | memcpy loop $(kiops "$m") ($(range <"$WORK/m")) | $(ratio "$r" "$m") |"
: >"$WORK/w"
for ((i = 0; i < REPS; i++)); do vd ram:size=1G --fill --rw randwrite --bs 4k --iodepth 32 >>"$WORK/w"; done
w=$(median <"$WORK/w")
echo "| ram, 4K random write, qd32, 1 queue | $(kiops "$w") ($(range <"$WORK/w")) | memcpy loop (reads) $(kiops "$m") | $(ratio "$w" "$m") |"
