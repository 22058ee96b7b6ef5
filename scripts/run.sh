#!/usr/bin/env bash
# The main job on a built-in default: build, then show and benchmark a 1 GiB
# RAM disk through the public API.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
spec=${1:-ram:size=1G}
build/vdisk info "$spec"
build/vdisk bench "$spec" --rw randwrite --runtime 2
build/vdisk bench "$spec" --rw randread --runtime 2
