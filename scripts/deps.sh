#!/usr/bin/env bash
# Install the Debian 12 packages vdisk needs to build and test.  Idempotent:
# does nothing when everything is already installed.
set -euo pipefail

BUILD_PKGS=(gcc make cmake pkg-config liburing-dev libssl-dev libsqlite3-dev libjansson-dev
            libcurl4-openssl-dev libnbd-dev librbd-dev libcmocka-dev scdoc)
# oracles and tools the tests and benchmarks run against
TEST_PKGS=(qemu-utils libnbd-bin python3-libnbd python3-cryptography nbdkit fio nbdfuse fuse3
           e2fsprogs sqlite3 openssl clang libclang-rt-14-dev jq
           clang-format libvhdi-utils python3-libvhdi qemu-block-extra nginx-light
           ceph-mon ceph-osd libiscsi-bin tgt)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then
	want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}" >&2
	SUDO=""
	[[ $(id -u) -eq 0 ]] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
