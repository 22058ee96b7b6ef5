#!/usr/bin/env bash
# VHD images, each figure beside its peer on the same image in the same run
# (REPS interleaved rounds, medians):
#  - dynamic VHD, 4 KiB at depth 32, sequential (qemu-img bench is sequential):
#    vdisk bench --rw read on a 256 MiB image written full, and --rw write
#    into a fresh empty 1 GiB image (every 512th write allocates a block)
#    against qemu-img bench -f vpc -t writeback -d 32 on the same images;
#  - fixed VHD 4 KiB random read at depth 32: the vhd type against the bare
#    file backend on the same file;
#  - convert raw -> dynamic VHD and back, 1 GiB half full: vdisk convert (ends
#    with one fsync) against qemu-img convert -t writeback (flushes at the end).
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
cd "$WORK"
QB=$((256 * 1024 * 1024 / 4096)) # qemu-img bench requests: 256 MiB

qemu_iops() { # image [-w]
	local t
	t=$(qemu-img bench -f vpc -t writeback -d 32 -s 4k -c $QB "$@" 2>&1 |
		sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p')
	awk -v n=$QB -v t="$t" 'BEGIN { printf "%.0f\n", n / t }'
}
vd_iops() { # spec rw [extra]
	"$VDISK" bench "$1" --rw "$2" --bs 4k --iodepth 32 --runtime "$RUNTIME" "${@:3}" --json | jq .iops
}

# --- dynamic: sequential read of a full 256 MiB image ----------------------
rm -f dyn-r.vhd
"$VDISK" create vhd dyn-r.vhd 256M
"$VDISK" bench "vhd:path=dyn-r.vhd" --rw write --bs 1M --runtime 3 >/dev/null
: >vd; : >qi
for ((i = 0; i < REPS; i++)); do
	vd_iops "vhd:path=dyn-r.vhd" read >>vd
	qemu_iops dyn-r.vhd >>qi
done
vdr=$(median <vd); qir=$(median <qi)

# --- dynamic: writes into an empty image (they allocate) --------------------
: >vd; : >qi
for ((i = 0; i < REPS; i++)); do
	rm -f dyn-w.vhd; "$VDISK" create vhd dyn-w.vhd 1G
	RUNTIME=1 vd_iops "vhd:path=dyn-w.vhd" write >>vd
	rm -f dyn-w.vhd; qemu-img create -q -f vpc dyn-w.vhd 1G
	qemu_iops dyn-w.vhd -w >>qi
done
vdw=$(median <vd); qiw=$(median <qi)
rm -f dyn-w.vhd

# --- fixed: random read against the file backend on the same file ----------
rm -f fixed.vhd
"$VDISK" create vhd fixed.vhd 256M --fixed
"$VDISK" bench "vhd:path=fixed.vhd" --rw write --bs 1M --runtime 3 >/dev/null
: >vd; : >fb
for ((i = 0; i < REPS; i++)); do
	vd_iops "vhd:path=fixed.vhd" randread >>vd
	vd_iops "file:path=fixed.vhd,read-only=on" randread --size 256M >>fb
done
vdf=$(median <vd); fbf=$(median <fb)

# --- convert, 1 GiB half full ----------------------------------------------
rm -f half.raw
truncate -s 1G half.raw
for i in $(seq 0 2 31); do
	dd if=/dev/urandom of=half.raw bs=1M count=32 seek=$((i * 32)) conv=notrunc status=none
done
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f\n", b - a }'; }
: >v1; : >q1; : >v2; : >q2
for ((i = 0; i < REPS; i++)); do
	rm -f v.vhd q.vhd v.raw q.raw
	secs "$VDISK" convert half.raw v.vhd --format vhd >>v1
	secs qemu-img convert -t writeback -f raw -O vpc half.raw q.vhd >>q1
	secs "$VDISK" convert v.vhd v.raw >>v2
	secs qemu-img convert -t writeback -f vpc -O raw q.vhd q.raw >>q2
done
c1v=$(median <v1); c1q=$(median <q1); c2v=$(median <v2); c2q=$(median <q2)
rm -f v.vhd q.vhd v.raw q.raw

echo "| workload | vdisk | peer | vdisk / peer |"
echo "| --- | --- | --- | --- |"
echo "| dynamic VHD, 4K sequential read qd32 (256 MiB, full) | $(kiops "$vdr") | qemu-img bench $(kiops "$qir") | $(ratio "$vdr" "$qir") |"
echo "| dynamic VHD, 4K sequential write qd32 into an empty image | $(kiops "$vdw") | qemu-img bench $(kiops "$qiw") | $(ratio "$vdw" "$qiw") |"
echo "| fixed VHD, 4K random read qd32 | $(kiops "$vdf") | file backend $(kiops "$fbf") | $(ratio "$vdf" "$fbf") |"
echo "| convert raw -> dynamic VHD, 1 GiB half full | ${c1v}s | qemu-img convert ${c1q}s | $(ratio "$c1q" "$c1v") (speed) |"
echo "| convert dynamic VHD -> raw | ${c2v}s | qemu-img convert ${c2q}s | $(ratio "$c2q" "$c2v") (speed) |"
