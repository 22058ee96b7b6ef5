#!/usr/bin/env bash
# Layered disks, each beside its peer in the same run (REPS alternating runs,
# median and min-max):
#  1. a RAM diff over a file, 4 KiB random reads of data present only in the
#     file (1 GiB, page-cached), beside the bare file;
#  2. 4 KiB random writes into a RAM layer, beside the ram backend alone, and
#     4 KiB random reads of data present in the RAM layer;
#  3. a SQLite layer: 4 KiB random writes and reads (512- and 4096-byte
#     sectors) with the CPU use of the queue's thread and of the SQLite worker,
#     which says what limits them.
# Knobs: REPS, RUNTIME, RAMP, WORK (see lib.sh); SQLITE_SIZE (default 256M);
# ONLY=regex runs the parts whose name matches: diff-read, ram-write,
# diff-write, ram-read, sqlite.
source "$(dirname "$0")/lib.sh"
need_build
mkdir -p "$WORK"
SQLITE_SIZE=${SQLITE_SIZE:-256M}
base=$WORK/layered-base.img
[[ -f $base && $(stat -c %s "$base") == 1073741824 ]] ||
	dd if=/dev/urandom of="$base" bs=1M count=1024 status=none
cat "$base" >/dev/null

vd() { "$VDISK" bench "$@" --runtime "$RUNTIME" --ramp "$RAMP" --json | jq .iops; }
want() { [[ -z ${ONLY:-} || $1 =~ $ONLY ]]; }

ram_over_file="{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\",\"disk\":\"file:path=$base\"}]}"
ram_layer="{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\",\"size\":\"1G\"}]}"

row() { # label, file A, file B, peer label
	local a b
	a=$(median <"$2")
	b=$(median <"$3")
	echo "| $1 | $(kiops "$a") ($(range <"$2")) | $(kiops "$b") ($(range <"$3")) | $(ratio "$a" "$b") |"
}

echo "| workload (4 KiB, qd32, 1 queue) | layered | peer | layered / peer |"
echo "| --- | --- | --- | --- |"
if want diff-read; then
	: >"$WORK/l"; : >"$WORK/p"
	for ((i = 0; i < REPS; i++)); do
		vd "$ram_over_file" --rw randread >>"$WORK/l"
		vd "file:path=$base" --rw randread >>"$WORK/p"
	done
	row "random read, RAM diff (empty) over a 1 GiB file; peer: the bare file" "$WORK/l" "$WORK/p"
fi

if want ram-write; then
	: >"$WORK/l"; : >"$WORK/p"
	for ((i = 0; i < REPS; i++)); do
		vd "$ram_layer" --rw randwrite >>"$WORK/l"
		vd "ram:size=1G" --rw randwrite >>"$WORK/p"
	done
	row "random write into a 1 GiB RAM layer; peer: the ram backend" "$WORK/l" "$WORK/p"
fi

if want diff-write; then
	: >"$WORK/l"; : >"$WORK/p"
	for ((i = 0; i < REPS; i++)); do
		vd "$ram_over_file" --rw randwrite >>"$WORK/l"
		vd "ram:size=1G" --rw randwrite >>"$WORK/p"
	done
	row "random write, RAM diff over the file; peer: the ram backend" "$WORK/l" "$WORK/p"
fi

if want ram-read; then
	: >"$WORK/l"; : >"$WORK/p"
	for ((i = 0; i < REPS; i++)); do
		vd "$ram_layer" --rw randread --fill >>"$WORK/l"
		vd "ram:size=1G" --rw randread --fill >>"$WORK/p"
	done
	row "random read of data in a RAM layer (filled); peer: the ram backend" "$WORK/l" "$WORK/p"
fi
want sqlite || exit 0

# CPU seconds of each thread of a process, by name: "name utime+stime"
thread_cpu() {
	local t
	for t in /proc/"$1"/task/*; do
		[[ -r $t/stat ]] || continue
		printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
	done
}

# One bench run with the CPU use of the queue's thread and of the sqlite worker
# over the measured part: prints "iops queue% worker%"
sqlite_run() {
	local out=$WORK/sq.json pid a b
	"$VDISK" bench "$@" --runtime "$RUNTIME" --ramp "$RAMP" --json >"$out" &
	pid=$!
	sleep "$(awk -v r="$RAMP" 'BEGIN { print r + 0.2 }')"
	a=$(thread_cpu $pid)
	sleep "$(awk -v r="$RUNTIME" 'BEGIN { print r - 0.4 }')"
	b=$(thread_cpu $pid)
	wait $pid
	local hz secs
	hz=$(getconf CLK_TCK)
	secs=$(awk -v r="$RUNTIME" 'BEGIN { print r - 0.4 }')
	printf '%s %s %s\n' "$(jq .iops "$out")" \
		"$(join <(echo "$a" | sort) <(echo "$b" | sort) | awk -v hz="$hz" -v s="$secs" \
			'$1 == "vdisk-bench" || $1 == "vdisk" { q += ($3 - $2) } END { printf "%.0f", 100 * q / hz / s }')" \
		"$(join <(echo "$a" | sort) <(echo "$b" | sort) | awk -v hz="$hz" -v s="$secs" \
			'$1 == "vdisk-sqlite" { w += ($3 - $2) } END { printf "%.0f", 100 * w / hz / s }')"
}

echo
echo "| SQLite layer, 4 KiB, qd32, 1 queue | IOPS (min-max) | queue thread CPU | SQLite worker CPU |"
echo "| --- | --- | --- | --- |"
for ss in 512 4096; do
	db=$WORK/layered-bench-$ss.dbhd
	rm -f "$db" "$db-wal" "$db-shm"
	spec="{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"$db\"}]}"
	"$VDISK" info "{\"type\":\"layered\",\"layers\":[{\"type\":\"sqlite\",\"path\":\"$db\",\"create\":true,\"size\":\"$SQLITE_SIZE\",\"sector-size\":$ss}]}" >/dev/null
	for mode in randwrite randread; do
		: >"$WORK/i"; : >"$WORK/c"
		for ((i = 0; i < REPS; i++)); do
			if [[ $mode == randread && $i == 0 ]]; then
				"$VDISK" bench "$spec" --rw write --bs 1M --runtime 1 --fill >/dev/null
			fi
			sqlite_run "$spec" --rw $mode >"$WORK/r"
			awk '{print $1}' "$WORK/r" >>"$WORK/i"
			awk '{print $2, $3}' "$WORK/r" >>"$WORK/c"
		done
		cpu=$(awk '{q += $1; w += $2} END { printf "%.0f %% | %.0f %%", q / NR, w / NR }' "$WORK/c")
		echo "| $mode, $ss-byte sectors, $SQLITE_SIZE | $(kiops "$(median <"$WORK/i")") ($(range <"$WORK/i")) | $cpu |"
	done
	rm -f "$db" "$db-wal" "$db-shm"
done
