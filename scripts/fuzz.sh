#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for a while on a copy of
# its corpus: scripts/fuzz.sh [SECONDS per target, default 60] [TARGET...]
# New inputs that raise coverage are left in build-fuzz/corpus/<target>; copy
# the interesting ones into fuzz/corpus/<target>.  Not part of the test run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
secs=${1:-60}
shift || true
CC=clang cmake -S . -B build-fuzz -DVDISK_FUZZ=ON -DVDISK_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)"
targets=("$@")
if ((${#targets[@]} == 0)); then
	for f in build-fuzz/fuzz/fuzz-*; do targets+=("${f##*/fuzz-}"); done
fi
for t in "${targets[@]}"; do
	work=build-fuzz/corpus/$t
	mkdir -p "$work"
	cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
	echo "== fuzz-$t for ${secs}s"
	build-fuzz/fuzz/fuzz-"$t" -max_total_time="$secs" -print_final_stats=1 "$work"
done
