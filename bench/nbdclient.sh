#!/usr/bin/env bash
# The nbd backend (vdisk's NBD client, libnbd on the queue's event loop)
# against fio's nbd engine (libnbd too), both reading and writing the same
# export in the same run: 4 KiB random reads and writes at depth 32, one
# connection, against nbdkit's memory plugin and qemu-nbd over a raw file in
# the page cache (SIZE, 512 MiB by default: the page cache holds ~0.8 GiB).
# Every repetition runs each client against each server, interleaved, so that
# the machine's drift hits them alike; medians, min-max and the ratio
# vdisk / fio are printed as Markdown.  A benchmark, never a test.
#
#   bench/nbdclient.sh           env: REPS (3) RUNTIME (5 s) RAMP (1 s) SIZE (512M)
source "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-512M}
for c in fio nbdkit qemu-nbd jq; do
	command -v "$c" >/dev/null || { echo "bench/nbdclient.sh: needs $c" >&2; exit 1; }
done
fio --enghelp=nbd >/dev/null 2>&1 || { echo "bench/nbdclient.sh: fio has no nbd engine" >&2; exit 1; }
need_build

tmp=$(mktemp -d /tmp/vdisk-bench-nbdclient.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

head -c "$SIZE" /dev/urandom >"$tmp/disk.img"
cat "$tmp/disk.img" >/dev/null

wait_sock() {
	for _ in $(seq 200); do [[ -S $1 ]] && return 0; sleep 0.05; done
	echo "bench/nbdclient.sh: no socket $1" >&2
	exit 1
}
nbdkit -f -U "$tmp/nbdkit.sock" memory size="$SIZE" 2>"$tmp/nbdkit.log" &
pids+=($!)
qemu-nbd -k "$tmp/qemu.sock" -f raw -t -e 4 --cache=writeback "$tmp/disk.img" 2>"$tmp/qemu.log" &
pids+=($!)
wait_sock "$tmp/nbdkit.sock"
wait_sock "$tmp/qemu.sock"
declare -A URI=([nbdkit]="nbd+unix:///?socket=$tmp/nbdkit.sock"
	[qemu-nbd]="nbd+unix:///?socket=$tmp/qemu.sock")
# fill nbdkit's memory so reads read data, not holes
fio --name=fill --ioengine=nbd --uri="${URI[nbdkit]}" --rw=write --bs=1M --iodepth=8 \
	--size="$SIZE" --output=/dev/null

run_fio() { # uri rw
	fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth=32 \
		--size="$SIZE" --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
		--randrepeat=0 --output-format=json | sed -n "/^{/,\$p" | fio_iops
}
run_vdisk() { # uri rw
	"$VDISK" bench "{\"type\":\"nbd\",\"uri\":\"$1\"}" --rw "$2" --bs 4k --iodepth 32 \
		--runtime "$RUNTIME" --ramp "$RAMP" --json | jq .iops
}

declare -A R
for ((rep = 0; rep < REPS; rep++)); do
	for server in nbdkit qemu-nbd; do
		for rw in randread randwrite; do
			R[$server/$rw/fio]+="$(run_fio "${URI[$server]}" $rw) "
			R[$server/$rw/vdisk]+="$(run_vdisk "${URI[$server]}" $rw) "
		done
	done
done

echo "| server | workload | fio nbd engine (median, min-max) | vdisk bench, nbd backend | ratio |"
echo "| --- | --- | --- | --- | --- |"
for server in nbdkit qemu-nbd; do
	for rw in randread randwrite; do
		f=$(tr ' ' '\n' <<<"${R[$server/$rw/fio]}" | grep . | median)
		v=$(tr ' ' '\n' <<<"${R[$server/$rw/vdisk]}" | grep . | median)
		fr=$(tr ' ' '\n' <<<"${R[$server/$rw/fio]}" | grep . | range)
		vr=$(tr ' ' '\n' <<<"${R[$server/$rw/vdisk]}" | grep . | range)
		echo "| $server | 4 KiB $rw, depth 32 | $(kiops "$f") ($fr) | $(kiops "$v") ($vr) | $(ratio "$v" "$f") |"
	done
done
