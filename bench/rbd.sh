#!/usr/bin/env bash
# vdisk's rbd backend against its peers, all on one image of a private
# single-node cluster (one monitor, one memstore OSD, started here as the tests
# start it), in the same run, rounds interleaved:
#   - 4 KiB random read and random write at depth 32: `vdisk bench` on rbd,
#     fio's rbd engine, and `qemu-img bench -f raw rbd:pool/image` (which has no
#     random mode: it steps 1 MiB + 4 KiB through the image, wrapping, so that
#     consecutive requests land on different objects);
#   - the image served over NBD with two connections (fio's nbd engine,
#     numjobs=2): `vdisk serve` against `qemu-nbd -e 2`.
# Every client runs with librbd's cache off (rbd cache = false in the
# cluster's configuration) so each write is a round trip to the OSD for all.
# Medians of REPS rounds and ratios, as Markdown.  A benchmark, never a test.
#
#   bench/rbd.sh [BUILD_DIR]   env: REPS (3) RUNTIME (5 s) SIZE (256M) QCOUNT (20000)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
export VDISK=$PWD/$build/vdisk PYTHON=/usr/bin/python3
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-256M}
QCOUNT=${QCOUNT:-20000}
for c in fio qemu-img qemu-nbd jq "$VDISK"; do
	command -v "$c" >/dev/null || { echo "bench/rbd.sh: needs $c" >&2; exit 1; }
done
fio --enghelp=rbd >/dev/null 2>&1 || { echo "bench/rbd.sh: fio has no rbd engine" >&2; exit 1; }
source tests/sh/functions.sh
source tests/sh/ceph-functions.sh
ceph_start
printf '[client]\nrbd cache = false\n' >>"$CEPH_CONF"
export CEPH_CONF
rbdc create --size "$SIZE" rbd/bench
"$VDISK" bench "rbd:conf=$CEPH_CONF,pool=rbd,image=bench" --rw write --bs 1M --fill \
	--runtime 1 >/dev/null
SPEC="rbd:conf=$CEPH_CONF,pool=rbd,image=bench"
bytes=$(rbdc info --format json rbd/bench | jq .size)

med() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
declare -A R

vdisk_run() { "$VDISK" bench "$SPEC" --rw "$1" --iodepth 32 --runtime "$RUNTIME" --ramp 1 --json | jq .iops; }
fio_rbd_run() {
	fio --name=b --ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench --rw="$1" \
		--bs=4k --iodepth=32 --time_based --runtime="$RUNTIME" --ramp_time=1 \
		--output-format=json 2>/dev/null | jq '[.jobs[0].read.iops, .jobs[0].write.iops] | add'
}
qemu_run() {
	local w=""
	[[ $1 == randwrite ]] && w=-w
	qemu-img bench -f raw -t none -c "$QCOUNT" -d 32 -s 4096 -S $((1048576 + 4096)) $w \
		"rbd:rbd/bench:conf=$CEPH_CONF" |
		awk -v n="$QCOUNT" '/Run completed in/ {printf "%.0f\n", n / $4}'
}
serve_run() { # server rw
	local sock=$TMP/$1.sock pid
	rm -f "$sock"
	if [[ $1 == vdisk ]]; then
		"$VDISK" serve "$SPEC" --unix "$sock" >/dev/null 2>"$TMP/serve.err" &
	else
		qemu-nbd -f raw -k "$sock" -t -e 2 --cache=none "rbd:rbd/bench:conf=$CEPH_CONF" \
			2>"$TMP/serve.err" &
	fi
	pid=$!
	for ((i = 0; i < 200; i++)); do [[ -S $sock ]] && break; sleep 0.05; done
	fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$2" --bs=4k \
		--iodepth=32 --numjobs=2 --group_reporting --time_based --runtime="$RUNTIME" \
		--ramp_time=1 --size="$bytes" --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
		jq '[.jobs[0].read.iops, .jobs[0].write.iops] | add'
	kill "$pid"
	wait "$pid" 2>/dev/null || true
}

for ((rep = 1; rep <= REPS; rep++)); do
	for rw in randread randwrite; do
		R[$rw|vdisk]+=" $(vdisk_run $rw)"
		R[$rw|fio]+=" $(fio_rbd_run $rw)"
		R[$rw|qemu-img]+=" $(qemu_run $rw)"
		R[$rw|serve]+=" $(serve_run vdisk $rw)"
		R[$rw|qemu-nbd]+=" $(serve_run qemu-nbd $rw)"
	done
	echo "round $rep done" >&2
done

m() { tr ' ' '\n' <<<"${R[$1]}" | grep -v '^$' | med; }
echo "| 4 KiB, depth 32 | vdisk bench rbd | fio rbd | qemu-img bench | vdisk/fio | vdisk/qemu-img |"
echo "|---|---|---|---|---|---|"
for rw in randread randwrite; do
	v=$(m "$rw|vdisk") f=$(m "$rw|fio") q=$(m "$rw|qemu-img")
	printf '| %s | %.0f | %.0f | %.0f | %s | %s |\n' $rw "$v" "$f" "$q" "$(ratio "$v" "$f")" "$(ratio "$v" "$q")"
done
echo
echo "| NBD, 2 connections, 4 KiB, depth 32 each | vdisk serve | qemu-nbd | ratio |"
echo "|---|---|---|---|"
for rw in randread randwrite; do
	v=$(m "$rw|serve") q=$(m "$rw|qemu-nbd")
	printf '| %s | %.0f | %.0f | %s |\n' $rw "$v" "$q" "$(ratio "$v" "$q")"
done
echo
echo "raw IOPS per round:"
for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
