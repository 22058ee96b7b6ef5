#!/usr/bin/env bash
# VHDX images (read-only), each figure beside its peer in the same run (REPS
# interleaved rounds, medians), on a 256 MiB dynamic image qemu-img made and
# qemu-io wrote full (32 MiB blocks, qemu's default):
#  - sequential 4 KiB reads at depth 32 (qemu-img bench is sequential):
#    vdisk bench --rw read against qemu-img bench -f vhdx -t writeback -d 32;
#  - random 4 KiB reads at depth 32: the vhdx type against the bare file
#    backend on the same data as a raw file; and two queues against one;
#  - convert VHDX -> raw: vdisk convert (ends with one fsync) against
#    qemu-img convert -t writeback (flushes at the end).
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
cd "$WORK"
QB=$((256 * 1024 * 1024 / 4096))

rm -f b.vhdx b.raw
qemu-img create -q -f vhdx b.vhdx 256M
qemu-io -f vhdx -c "write -P 0x5a 0 256M" b.vhdx >/dev/null
qemu-img convert -f vhdx -O raw b.vhdx b.raw
SPEC="vhdx:path=b.vhdx,read-only=on"

qemu_iops() {
	local t
	t=$(qemu-img bench -f vhdx -t writeback -d 32 -s 4k -c $QB "$@" 2>&1 |
		sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p')
	awk -v n=$QB -v t="$t" 'BEGIN { printf "%.0f\n", n / t }'
}
vd_iops() { # spec rw [extra]
	"$VDISK" bench "$1" --rw "$2" --bs 4k --iodepth 32 --runtime "$RUNTIME" "${@:3}" --json | jq .iops
}

: >vs; : >qs; : >vr; : >fr; : >v2
for ((i = 0; i < REPS; i++)); do
	vd_iops "$SPEC" read >>vs
	qemu_iops b.vhdx >>qs
	vd_iops "$SPEC" randread >>vr
	vd_iops "file:path=b.raw,read-only=on" randread >>fr
	vd_iops "$SPEC" randread --queues 2 >>v2
done
vsq=$(median <vs); qsq=$(median <qs); vrr=$(median <vr); frr=$(median <fr); v2r=$(median <v2)

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f\n", b - a }'; }
: >vc; : >qc
for ((i = 0; i < REPS; i++)); do
	rm -f v.raw q.raw
	secs "$VDISK" convert "$SPEC" v.raw >>vc
	secs qemu-img convert -t writeback -f vhdx -O raw b.vhdx q.raw >>qc
done
vct=$(median <vc); qct=$(median <qc)
rm -f v.raw q.raw b.vhdx b.raw

echo "| workload | vdisk | peer | vdisk / peer |"
echo "| --- | --- | --- | --- |"
echo "| sequential 4 KiB read, depth 32 | $(kiops "$vsq") | qemu-img bench $(kiops "$qsq") | $(ratio "$vsq" "$qsq") |"
echo "| random 4 KiB read, depth 32 | $(kiops "$vrr") | file backend on the raw data $(kiops "$frr") | $(ratio "$vrr" "$frr") |"
echo "| random 4 KiB read, two queues | $(kiops "$v2r") | one queue $(kiops "$vrr") | $(ratio "$v2r" "$vrr") |"
echo "| convert 256 MiB VHDX -> raw | ${vct} s | qemu-img convert ${qct} s | $(ratio "$qct" "$vct")x faster |"
