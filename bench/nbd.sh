#!/usr/bin/env bash
# vdisk serve against nbdkit (file plugin) and qemu-nbd, all serving the same
# 1 GiB file from the page cache on Unix sockets, in the same run:
#   - fio's nbd engine, 4 KiB random read and random write, iodepth 32,
#     1 connection and 2 connections (numjobs=2, one connection each);
#   - nbdcopy of the whole export to null:;
#   - nbdcopy --no-extents of a second 1 GiB export that is 90 % holes (1 MiB
#     of data every 10 MiB, a sparse file): every byte is read, so what counts
#     is whether the server sends the holes as holes or as zeros;
#   - the client's own ceiling: nbdkit's null plugin and vdisk serve null:,
#     which serve no data at all, so what they reach is what fio's nbd engine
#     (libnbd) can drive on this machine;
#   - "pinned": 1 connection again with fio on CPU 0 and the server's threads
#     on CPU 1.  Unpinned, the scheduler often puts fio and a server on the
#     same CPU (a sync wake-up pulls the woken client next to the server),
#     which roughly halves what either gets; runs flip between the two cases,
#     so the unpinned rows are bimodal and the pinned ones are the steady
#     comparison.
# Every configuration runs REPS times, the servers interleaved within each
# repetition so drift hits them alike; a run during which other processes on
# the (shared) machine used more than MAX_FOREIGN % of a CPU is repeated.
# Medians, min-max and ratios are printed as Markdown.  A benchmark, never a
# test: nothing here fails on a figure.
#
#   bench/nbd.sh [BUILD_DIR]     env: REPS (3) RUNTIME (8 s) RAMP (2 s) SIZE (1G)
#                                     MAX_FOREIGN (10) TRIES (4)
#                                     QUICK=1 (randread 1 connection only)
#                                     TESTS="nbdcopy nbdcopy-sparse" (a subset)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
VDISK=$PWD/$build/vdisk
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-8}
RAMP=${RAMP:-2}
SIZE=${SIZE:-1G}
for c in fio nbdkit qemu-nbd nbdcopy "$VDISK"; do
	command -v "$c" >/dev/null || { echo "bench/nbd.sh: needs $c" >&2; exit 1; }
done
fio --enghelp=nbd >/dev/null 2>&1 || { echo "bench/nbd.sh: fio has no nbd engine" >&2; exit 1; }

tmp=$(mktemp -d /tmp/vdisk-bench-nbd.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

img=$tmp/disk.img
head -c "$SIZE" /dev/urandom >"$img"
cat "$img" >/dev/null # into the page cache
sparse=$tmp/sparse.img
truncate -s "$SIZE" "$sparse"
sparse_bytes=$(numfmt --from=iec "$SIZE")
for ((off = 0; off < sparse_bytes; off += 10 << 20)); do
	head -c 1M /dev/urandom | dd of="$sparse" bs=1M seek=$((off >> 20)) conv=notrunc status=none
done
nproc=$(nproc)

# name -> socket; each server is started once and serves every repetition
declare -A SOCK
declare -A PID # name -> pid, to pin a server's threads
start() {
	local name=$1
	shift
	local sock=$tmp/$name.sock
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	PID[$name]=$!
	for ((i = 0; i < 200; i++)); do
		[[ -S $sock ]] && break
		sleep 0.05
	done
	[[ -S $sock ]] || { echo "bench/nbd.sh: $name did not start: $(cat "$tmp/$name.log")" >&2; exit 1; }
	SOCK[$name]=$sock
}
start vdisk "$VDISK" serve "file:path=$img" --unix "$tmp/vdisk.sock"
start nbdkit nbdkit -f -U "$tmp/nbdkit.sock" file "$img"
start qemu-nbd qemu-nbd -f raw -k "$tmp/qemu-nbd.sock" -t -e 8 --cache=writeback \
	--aio=io_uring "$img"
start vdisk-null "$VDISK" serve null:size=$SIZE --unix "$tmp/vdisk-null.sock"
start nbdkit-null nbdkit -f -U "$tmp/nbdkit-null.sock" null size=$SIZE
start vdisk-sparse "$VDISK" serve "file:path=$sparse" --unix "$tmp/vdisk-sparse.sock"
start nbdkit-sparse nbdkit -f -U "$tmp/nbdkit-sparse.sock" file "$sparse"
start qemu-nbd-sparse qemu-nbd -f raw -k "$tmp/qemu-nbd-sparse.sock" -t -e 8 \
	--cache=writeback --aio=io_uring "$sparse"

servers=(vdisk nbdkit qemu-nbd vdisk-null nbdkit-null)
declare -A R # "test|server" -> space-separated results

# measure SERVER CMD...: run a client command and print its stdout's last line,
# the CPU that neither the client nor the server used while it ran, in % of
# one CPU (other people's work on the machine, which a clean run must not
# have), and the CPU seconds the client and the server used together (what a
# copy costs, which a busy machine stretches less than the wall time).
cat >"$tmp/measure.py" <<'PY'
import os, resource, subprocess, sys, time
pid, cmd = int(sys.argv[1]), sys.argv[2:]
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4]  # everything but idle and iowait
def server():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
hz = os.sysconf("SC_CLK_TCK")
c0, b0, s0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), server(), time.time()
out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
c1, b1, s1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), server(), time.time()
client = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
foreign = (b1 - b0 - (s1 - s0)) / hz - client
print(out.strip().splitlines()[-1] if out.strip() else "?", f"{100 * max(foreign, 0) / (t1 - t0):.0f}",
      f"{client + (s1 - s0) / hz:.3f}")
PY

# A run is kept when others used less than MAX_FOREIGN % of a CPU during it;
# else it is repeated (up to TRIES times; the last one is kept and marked).
MAX_FOREIGN=${MAX_FOREIGN:-10}
TRIES=${TRIES:-4}
measure() { # server cmd...
	local server=$1 out=() try
	shift
	for ((try = 1; try <= TRIES; try++)); do
		read -r -a out < <(/usr/bin/python3 "$tmp/measure.py" "${PID[$server]}" "$@")
		((out[1] < MAX_FOREIGN)) && break
	done
	echo "${out[0]} ${out[1]} ${out[2]}"
}

fio_cmd() { # server rw jobs
	echo fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=${SOCK[$1]}" --rw="$2" \
		--bs=4k --iodepth=32 --numjobs="$3" --group_reporting --time_based \
		--runtime="$RUNTIME" --ramp_time="$RAMP" --iomem_align=4096 --size="$SIZE" \
		--output-format=json
}

fio_iops() { # server rw jobs [pinned] -> "IOPS FOREIGN%"
	local pin=() res
	sync
	if [[ ${4:-} == pinned ]]; then
		taskset -a -p -c 1 "${PID[$1]}" >/dev/null
		pin=(taskset -c 0)
	fi
	# shellcheck disable=SC2046
	res=$(measure "$1" "${pin[@]}" /usr/bin/python3 -c '
import json, subprocess, sys
out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
j = json.loads(out[out.index("{"):])["jobs"][0]
print(round(j["read"]["iops"] + j["write"]["iops"]))' $(fio_cmd "$1" "$2" "$3"))
	if [[ ${4:-} == pinned ]]; then
		taskset -a -p -c 0-$((nproc - 1)) "${PID[$1]}" >/dev/null
	fi
	echo "$res"
}

copy_secs() { # server [nbdcopy options] -> "SECONDS FOREIGN%"
	local server=$1
	shift
	measure "$server" /usr/bin/python3 -c '
import subprocess, sys, time
t = time.time()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.time() - t:.3f}")' nbdcopy "$@" "nbd+unix:///?socket=${SOCK[$server]}" null:
}

tests=(randread-1 randwrite-1 randread-2 randwrite-2 randread-1-pinned randwrite-1-pinned nbdcopy
	nbdcopy-sparse)
[[ ${QUICK:-0} == 1 ]] && tests=(randread-1)
[[ -n ${TESTS:-} ]] && read -r -a tests <<<"$TESTS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $nproc CPUs; fio $(fio --version); nbdkit $(nbdkit --version | cut -d' ' -f2); $(qemu-nbd --version | head -1)" >&2
FOREIGN_MAX=0
for ((rep = 1; rep <= REPS; rep++)); do
	cat "$img" >/dev/null # again: others on the machine may have evicted it
	for t in "${tests[@]}"; do
		for s in "${servers[@]}"; do
			if [[ $t == nbdcopy ]]; then
				[[ $s == *null ]] && continue
				v=$(copy_secs "$s")
			elif [[ $t == nbdcopy-sparse ]]; then
				[[ $s == *null ]] && continue
				v=$(copy_secs "$s-sparse" --no-extents)
			else
				IFS=- read -r rw jobs pinned <<<"$t"
				v=$(fio_iops "$s" "$rw" "$jobs" "${pinned:-}")
			fi
			read -r v foreign cpu <<<"$v"
			R[$t|$s]+="$v "
			[[ $t == nbdcopy* ]] && R[$t-cpu|$s]+="$cpu "
			((foreign > FOREIGN_MAX)) && FOREIGN_MAX=$foreign
			echo "rep $rep $t $s $v (others used ${foreign}% of a CPU)" >&2
		done
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); the most other processes used during a kept run: ${FOREIGN_MAX}% of a CPU" >&2

rows=()
for t in "${tests[@]}"; do
	rows+=("$t")
	[[ $t == nbdcopy* ]] && rows+=("$t-cpu")
done
/usr/bin/python3 - "$REPS" "${rows[*]}" "${servers[*]}" <<PY
import statistics, sys
R = {}
$(for k in "${!R[@]}"; do echo "R['$k'] = [float(x) for x in '${R[$k]}'.split()]"; done)
tests = sys.argv[2].split(); servers = sys.argv[3].split()
def med(k): return statistics.median(R[k])
def fmt(t, v): return f"{v:.3f} s" if t.startswith("nbdcopy") else f"{v/1000:.1f}K"
print(f"| test | " + " | ".join(servers) + " | vdisk / nbdkit | vdisk / qemu-nbd | vdisk / nbdkit null |")
print("| --- " * (len(servers) + 4) + "|")
for t in tests:
    row = []
    for s in servers:
        k = f"{t}|{s}"
        if k in R:
            lo, hi = min(R[k]), max(R[k])
            row.append(f"{fmt(t, med(k))} ({fmt(t, lo)}–{fmt(t, hi)})")
        else:
            row.append("–")
    def ratio(a, b):
        ka, kb = f"{t}|{a}", f"{t}|{b}"
        if ka not in R or kb not in R: return "–"
        r = med(kb) / med(ka) if t.startswith("nbdcopy") else med(ka) / med(kb)
        return f"{r:.2f}×"
    print(f"| {t} | " + " | ".join(row) + f" | {ratio('vdisk','nbdkit')} | {ratio('vdisk','qemu-nbd')} | {ratio('vdisk','nbdkit-null')} |")
print()
print("IOPS for fio rows (median of %s, min–max); seconds for nbdcopy (lower is better, ratios inverted so >1 means vdisk is faster); -cpu rows: CPU seconds of client and server together." % sys.argv[1])
PY
