#!/usr/bin/env bash
# vdisk serve --iscsi against tgt (tgtd 1.0.85, the peer target), both
# serving the same 256 MiB file from the page cache on loopback TCP, in the
# same run:
#   - iscsi-perf (libiscsi-bin), 4 KiB random reads, 32 in flight, one session;
#   - the same with two sessions at once (two iscsi-perf), summed;
#   - qemu-img bench (qemu's iscsi:// driver), 4 KiB writes, depth 32.
# Every configuration runs REPS times with the two targets interleaved within
# each repetition, so drift on the (shared, loaded) machine hits both alike.
# Medians and ratios are printed as Markdown.  A benchmark, never a test.
#
#   bench/iscsi.sh [BUILD_DIR]     env: REPS (3) RUNTIME (5 s) SIZE (256M)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
VDISK=$PWD/$build/vdisk
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-256M}
for c in tgtd tgtadm iscsi-perf qemu-img; do
	command -v $c >/dev/null || { echo "bench/iscsi.sh: needs $c" >&2; exit 1; }
done
[[ -x $VDISK ]] || scripts/build.sh "$build" >/dev/null

W=$(mktemp -d /tmp/vdisk-bench-iscsi.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	sleep 1
	# tgtd ignores SIGTERM while it has targets
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

head -c "$SIZE" /dev/zero >"$W/disk.img"
cat "$W/disk.img" >/dev/null # into the page cache

# vdisk
"$VDISK" serve "file:path=$W/disk.img" --iscsi 127.0.0.1:0 >"$W/vdisk.out" 2>"$W/vdisk.err" &
pids+=($!)
for _ in $(seq 100); do [[ -s $W/vdisk.out ]] && break; sleep 0.1; done
VURI=$(head -1 "$W/vdisk.out")

# tgt on a free port, with a private control port
TPORT=$(free_port)
CPORT=$((1000 + RANDOM % 30000)) # the control "port" names a Unix socket; tgtadm takes < 32768
tgtd -f -C "$CPORT" --iscsi portal=127.0.0.1:"$TPORT" >"$W/tgtd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do tgtadm -C "$CPORT" --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C "$CPORT" --lld iscsi --op new --mode target --tid 1 -T iqn.2026-01.org.vdisk:tgt
tgtadm -C "$CPORT" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$W/disk.img"
tgtadm -C "$CPORT" --lld iscsi --op bind --mode target --tid 1 -I ALL
TURI=iscsi://127.0.0.1:$TPORT/iqn.2026-01.org.vdisk:tgt/1

perf() { # URI [initiator] -> IOPS
	timeout $((RUNTIME + 30)) iscsi-perf -i "${2:-iqn.2026-01.org.example:bench}" -m 32 -b 8 \
		-t "$RUNTIME" -r "$1" 2>&1 | tr '\r' '\n' | sed -n 's/.*iops average \([0-9]*\).*/\1/p' | tail -1
}
perf2() { # two sessions at once (two initiator names), summed
	perf "$1" iqn.2026-01.org.example:a >"$W/p1" &
	local a=$!
	perf "$1" iqn.2026-01.org.example:b >"$W/p2"
	wait $a
	echo $(($(cat "$W/p1") + $(cat "$W/p2")))
}
qbench() { # URI -> writes/s
	local n=$((20000))
	local t0 t1
	t0=$(date +%s.%N)
	qemu-img bench -w -f raw -t none -c $n -d 32 -s 4096 -S 8192 "$1" >/dev/null 2>&1 || { echo 0; return; }
	t1=$(date +%s.%N)
	awk -v n=$n -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

declare -A r
for rep in $(seq "$REPS"); do
	for target in vdisk tgt; do
		uri=$VURI
		[[ $target == tgt ]] && uri=$TURI
		r[$target,read1]+="$(perf "$uri") "
		r[$target,read2]+="$(perf2 "$uri") "
		r[$target,write]+="$(qbench "$uri") "
	done
	echo "round $rep: ${r[vdisk,read1]}| ${r[tgt,read1]}" >&2
done

med() { tr ' ' '\n' | grep -v '^$' | median; }
echo "| workload (same 256 MiB file, page cache) | vdisk serve --iscsi | tgt 1.0.85 | vdisk / tgt |"
echo "|---|---|---|---|"
for w in read1 read2 write; do
	v=$(echo "${r[vdisk,$w]}" | med)
	t=$(echo "${r[tgt,$w]}" | med)
	case $w in
	read1) name="iscsi-perf 4 KiB random read, 32 in flight, 1 session" ;;
	read2) name="iscsi-perf 4 KiB random read, 32 in flight each, 2 sessions" ;;
	write) name="qemu-img bench 4 KiB writes, depth 32" ;;
	esac
	echo "| $name | $v/s | $t/s | $(ratio "$v" "$t")× |"
done
v1=$(echo "${r[vdisk,read1]}" | med)
v2=$(echo "${r[vdisk,read2]}" | med)
t1=$(echo "${r[tgt,read1]}" | med)
t2=$(echo "${r[tgt,read2]}" | med)
echo
echo "two sessions / one: vdisk $(ratio "$v2" "$v1")×, tgt $(ratio "$t2" "$t1")×"
echo "(REPS=$REPS, RUNTIME=${RUNTIME}s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
