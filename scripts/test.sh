#!/usr/bin/env bash
# Build and run every test: once normally, once under AddressSanitizer +
# UndefinedBehaviorSanitizer.  Installs what it needs on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test

jobs=$(nproc)
scripts/build.sh build
(cd build && ctest -j"$jobs" --output-on-failure --timeout 600)

scripts/build.sh build-asan -DVDISK_SANITIZE=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest -j"$jobs" --output-on-failure --timeout 900 -LE no-asan)
echo "all tests passed (normal and sanitizer builds)"
