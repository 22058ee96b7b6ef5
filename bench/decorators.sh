#!/usr/bin/env bash
# The decorators beside their peers, in the same run:
#  1. crypt (XTS-AES-256) throughput on one queue, over the null backend, beside
#     `openssl speed -evp aes-256-xts -bytes S` (S = the sector size; -decrypt
#     for reads), alternating runs;
#  2. the latency a pass-through decorator adds, at iodepth 1 over the null
#     backend: delay at 0, prwrap with no reservation, fault with no rule (and
#     striped over one member, for comparison), one layer and four stacked.
# REPS, RUNTIME, RAMP as in lib.sh.
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f

vd_mbs() { # MB/s (10^6 bytes)
	"$VDISK" bench "$@" --runtime "$RUNTIME" --ramp "$RAMP" --iodepth 1 --json |
		jq '.mib_per_s * 1.048576'
}
ossl_mbs() { # openssl speed's figure for one size, MB/s
	openssl speed -evp aes-256-xts -bytes "$1" -seconds "$RUNTIME" ${2:+-decrypt} 2>/dev/null |
		awk '/^AES-256-XTS/ { sub(/k$/, "", $2); printf "%.0f\n", $2 / 1000 }'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| crypt, one queue, iodepth 1 | vdisk (MB/s) | openssl speed -evp aes-256-xts (MB/s) | ratio |"
echo "| --- | --- | --- | --- |"
for ss in 512 4096; do
	for rw in write read; do
		for bs in 64k 4k; do
			: >"$WORK/v"; : >"$WORK/o"
			spec="{\"type\":\"crypt\",\"key-hex\":\"$KEY\",\"inner\":\"null:size=4G,sector-size=$ss\"}"
			for ((i = 0; i < REPS; i++)); do
				vd_mbs "$spec" --rw $rw --bs $bs >>"$WORK/v"
				ossl_mbs $ss $([[ $rw == read ]] && echo d) >>"$WORK/o"
			done
			v=$(median <"$WORK/v"); o=$(median <"$WORK/o")
			what=$([[ $rw == write ]] && echo "encrypt (write)" || echo "decrypt (read)")
			printf "| %s-byte sectors, %s, %s requests | %.0f (%s) | %.0f (%s) | %s |\n" $ss "$what" $bs \
				"$v" "$(sort -g "$WORK/v" | awk 'NR==1{l=$1}{h=$1}END{printf "%.0f-%.0f", l, h}')" \
				"$o" "$(sort -g "$WORK/o" | awk 'NR==1{l=$1}{h=$1}END{printf "%.0f-%.0f", l, h}')" \
				"$(ratio "$v" "$o")"
		done
	done
done

lat() { # mean latency in ns
	"$VDISK" bench "$1" --rw randread --bs 512 --iodepth 1 --runtime "$RUNTIME" --ramp "$RAMP" --json |
		jq '.lat_ns.mean'
}
nest() { # nest TYPE-JSON-PREFIX DEPTH: TYPE layers over null
	local s='"null:size=1G"' i
	for ((i = 0; i < $2; i++)); do s="{$1,\"inner\":$s}"; done
	echo "$s"
}
echo
echo "| pass-through layer over null, 512 B random read, iodepth 1 | mean latency | added per layer |"
echo "| --- | --- | --- |"
specs=("null:size=1G")
names=("null alone")
for t in '"type":"delay"' '"type":"prwrap"' '"type":"fault"'; do
	for depth in 1 4; do
		specs+=("$(nest "$t" $depth)")
		names+=("${t#*:} x$depth")
	done
done
specs+=('{"type":"striped","disks":["null:size=1G"]}')
names+=('"striped" (1 member) x1')
for ((k = 0; k < ${#specs[@]}; k++)); do : >"$WORK/l$k"; done
for ((i = 0; i < REPS; i++)); do
	for ((k = 0; k < ${#specs[@]}; k++)); do lat "${specs[k]}" >>"$WORK/l$k"; done
done
base=$(median <"$WORK/l0")
for ((k = 0; k < ${#specs[@]}; k++)); do
	m=$(median <"$WORK/l$k")
	depth=$(sed -n 's/.* x\([0-9]\)$/\1/p' <<<"${names[k]}")
	added=$([[ $k == 0 ]] && echo "-" || awk -v m="$m" -v b="$base" -v d="$depth" 'BEGIN { printf "%.0f ns", (m - b) / d }')
	range=$(sort -g "$WORK/l$k" | awk 'NR==1{l=$1}{h=$1}END{printf "%.0f-%.0f", l, h}')
	printf "| %s | %.0f ns (%s) | %s |\n" "${names[k]}" "$m" "$range" "$added"
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
