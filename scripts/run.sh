#!/usr/bin/env bash
# The main job: build, then serve a disk stack over NBD until Ctrl-C.
#
#   scripts/run.sh [SPEC [vdisk serve options...]]
#
# The default is a built-in 1 GiB RAM disk on a Unix socket in a private
# directory.  Once the server is up this prints how to connect (and, when
# nbdinfo is installed, what a real client sees); Ctrl-C (or SIGTERM) stops
# the server cleanly: in-flight requests finish, the disk is flushed, exit 0.
# With --tcp HOST:PORT among the options the socket is TCP instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build

spec=${1:-ram:size=1G}
shift || true
dir=$(mktemp -d /tmp/vdisk-serve.XXXXXX)
server=""
cleanup() {
	if [[ -n $server ]]; then
		kill -TERM "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

where=(--unix "$dir/nbd.sock")
for a in "$@"; do
	[[ $a == --tcp* ]] && where=()
done
mkfifo "$dir/uri"
build/vdisk serve "$spec" "${where[@]}" "$@" >"$dir/uri" &
server=$!
# Ctrl-C reaches the server too (same process group); this shell just waits
trap 'kill -INT "$server" 2>/dev/null || true' INT TERM
read -r uri <"$dir/uri" || { wait "$server" || exit $?; exit 1; }

build/vdisk info "$spec" | sed -n '1,3p'
cat <<EOF

Serving $spec at
    $uri

Connect with any NBD client, for example:
    nbdinfo '$uri'
    nbdcopy '$uri' copy.img
    qemu-img info '$uri'
    qemu-io -f raw -c 'write -P 0xab 0 1M' '$uri'
    nbdfuse /tmp/mnt/disk '$uri'        (the export as a file)
    fio --ioengine=nbd --uri='$uri' --rw=randread --bs=4k --iodepth=32 --name=x

Press Ctrl-C to stop.
EOF
if command -v nbdinfo >/dev/null; then
	echo
	nbdinfo "$uri" || true
fi

rc=0
wait "$server" || rc=$?
# interrupted by the trapped signal: the server is still finishing
while kill -0 "$server" 2>/dev/null; do
	rc=0
	wait "$server" || rc=$?
done
server=""
echo "server stopped (exit $rc)"
exit "$rc"
