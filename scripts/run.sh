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
		stop
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

where=(--unix "$dir/nbd.sock")
pidfile=$dir/pid
prev=""
for a in "$@"; do
	[[ $a == --tcp* ]] && where=()
	[[ $prev == --pid-file ]] && pidfile=$a
	[[ $a == --pid-file=* ]] && pidfile=${a#--pid-file=}
	prev=$a
done
mkfifo "$dir/uri"
# the subshell keeps the server's exit status: a `wait` cut short by a trapped
# signal cannot tell it
(
	rc=0
	build/vdisk serve "$spec" "${where[@]}" --pid-file "$dir/pid" "$@" >"$dir/uri" || rc=$?
	echo "$rc" >"$dir/status"
) &
server=$!
# Ctrl-C reaches the server too (same process group); a SIGTERM to this
# script alone is passed on to the server
stop() { kill -INT "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || true; }
trap stop INT TERM
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

while kill -0 "$server" 2>/dev/null; do
	wait "$server" || true
done
rc=$(cat "$dir/status" 2>/dev/null || echo 1)
server=""
echo "server stopped (exit $rc)"
exit "$rc"
