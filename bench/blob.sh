#!/usr/bin/env bash
# The blob backend against its peers, all reading one file from the same
# private nginx on a loopback port, in the same run (rounds interleaved):
#   - sequential: `curl -o /dev/null` of the whole blob (one connection, what
#     one HTTP stream gives) against `vdisk bench --rw read` on a blob disk,
#     4 MiB reads at depth 1 (each split into 1 MiB ranges in parallel) and
#     at depth 4;
#   - random: 4 KiB random reads at depth 32 by fio's nbd engine, from
#     `vdisk serve` of a blob disk and from `nbdkit curl` of the same URL (its
#     thread model serialises requests), with each server's CPU time per read
#     (what decides the rate when the machine's CPUs are all busy).
# The file is at most 512 MiB so that it stays in the page cache.  Medians of
# REPS rounds, min-max and ratios are printed as Markdown.  A benchmark, never
# a test: nothing here fails on a figure.
#
#   bench/blob.sh [BUILD_DIR]   env: REPS (3) RUNTIME (5 s) SIZE (512M)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
VDISK=$PWD/$build/vdisk
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-512M}
for c in nginx curl fio nbdkit "$VDISK"; do
	command -v "$c" >/dev/null || { echo "bench/blob.sh: needs $c" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/vdisk-bench-blob.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

mkdir -p "$tmp/www" "$tmp/nginx/logs"
head -c "$SIZE" /dev/urandom >"$tmp/www/disk.img"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/nginx/nginx.conf" <<EOF
user $(id -un);
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path $tmp/nginx/body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	server { listen 127.0.0.1:$port; root $tmp/www; }
}
EOF
nginx -e "$tmp/nginx/logs/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
pids+=($!)
url=http://127.0.0.1:$port/disk.img
for ((i = 0; i < 100; i++)); do curl -sfI "$url" >/dev/null && break; sleep 0.05; done
spec="{\"type\":\"blob\",\"url\":\"$url\"}"

start() { # name sock cmd...
	local name=$1 sock=$2
	shift 2
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	for ((i = 0; i < 200; i++)); do
		[[ -S $sock ]] && return
		sleep 0.05
	done
	echo "bench/blob.sh: $name did not start: $(cat "$tmp/$name.log")" >&2
	exit 1
}
declare -A PID
start vdisk "$tmp/vdisk.sock" "$VDISK" serve "$spec" --unix "$tmp/vdisk.sock"
PID[vdisk]=${pids[-1]}
start nbdkit "$tmp/nbdkit.sock" nbdkit -f -r -U "$tmp/nbdkit.sock" curl "url=$url"
PID[nbdkit]=${pids[-1]}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
fio_rand() { # name -> "IOPS CPU-us-per-read" (the server's CPU time per read)
	local c0 c1 out
	c0=$(cpu_ticks "${PID[$1]}")
	out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$tmp/$1.sock" --rw=randread \
		--bs=4k --iodepth=32 --time_based --runtime="$RUNTIME" --iomem_align=4096 \
		--size="$SIZE" --output-format=json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]["read"]
print(round(j["iops"]), j["total_ios"])')
	c1=$(cpu_ticks "${PID[$1]}")
	read -r iops ios <<<"$out"
	echo "$iops $(awk -v t=$((c1 - c0)) -v n="$ios" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", t * 1e6 / hz / n }')"
}
curl_mibs() {
	curl -s -o /dev/null -w '%{speed_download}' "$url" | awk '{printf "%.0f", $1 / 1048576}'
}
vdisk_mibs() { # iodepth
	"$VDISK" bench "$spec" --rw read --bs 4M --iodepth "$1" --runtime "$RUNTIME" --json |
		/usr/bin/python3 -c 'import json, sys; print(round(json.load(sys.stdin)["mib_per_s"]))'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $(nginx -v 2>&1); $(curl --version | head -1 | cut -d' ' -f1-3); nbdkit $(nbdkit --version | cut -d' ' -f2); fio $(fio --version)" >&2
declare -A R
for ((rep = 1; rep <= REPS; rep++)); do
	cat "$tmp/www/disk.img" >/dev/null # back into the page cache
	R[curl]+="$(curl_mibs) "
	R[vdisk-qd1]+="$(vdisk_mibs 1) "
	R[vdisk-qd4]+="$(vdisk_mibs 4) "
	read -r v c <<<"$(fio_rand vdisk)"
	R[vdisk-rand]+="$v "
	R[vdisk-cpu]+="$c "
	read -r v c <<<"$(fio_rand nbdkit)"
	R[nbdkit-rand]+="$v "
	R[nbdkit-cpu]+="$c "
	echo "round $rep: curl ${R[curl]}| vdisk qd1 ${R[vdisk-qd1]}| qd4 ${R[vdisk-qd4]}| randread vdisk ${R[vdisk-rand]}(${R[vdisk-cpu]}us) | nbdkit ${R[nbdkit-rand]}(${R[nbdkit-cpu]}us)" >&2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

/usr/bin/python3 - <<PY
import statistics
R = {$(for k in "${!R[@]}"; do printf '"%s": [%s], ' "$k" "$(echo ${R[$k]} | tr ' ' ',')"; done)}
m = {k: statistics.median(v) for k, v in R.items()}
def cell(k, unit): return f"{m[k]:.0f} {unit} ({min(R[k]):.0f}–{max(R[k]):.0f})"
print("| workload | vdisk blob | peer in the same run | ratio |")
print("| --- | --- | --- | --- |")
print(f"| sequential read, 4 MiB at depth 1 (1 MiB ranges in parallel) | {cell('vdisk-qd1', 'MiB/s')} | curl -o /dev/null {cell('curl', 'MiB/s')} | {m['vdisk-qd1'] / m['curl']:.2f} |")
print(f"| sequential read, 4 MiB at depth 4 | {cell('vdisk-qd4', 'MiB/s')} | curl -o /dev/null {cell('curl', 'MiB/s')} | {m['vdisk-qd4'] / m['curl']:.2f} |")
print(f"| 4 KiB random read, depth 32, fio nbd engine | vdisk serve {cell('vdisk-rand', 'IOPS')} | nbdkit curl {cell('nbdkit-rand', 'IOPS')} | {m['vdisk-rand'] / m['nbdkit-rand']:.2f} |")
print(f"| server CPU time per 4 KiB read (lower is better) | {cell('vdisk-cpu', 'µs')} | {cell('nbdkit-cpu', 'µs')} | {m['nbdkit-cpu'] / m['vdisk-cpu']:.2f} |")
print()
print(f"Medians of {len(R['curl'])} rounds (min–max).")
PY
