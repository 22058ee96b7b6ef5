#!/usr/bin/env bash
# The vdisk serve command: usage errors, the pid file and the URI line, TCP on
# a loopback port, an export name that needs escaping in the URI, a Unix socket
# in use (refused) or stale (replaced), --stdio (libnbd's connect_command and a
# transcript replayed from a file), systemd socket activation (nbdinfo
# [ CMD ]), and SIGINT / SIGTERM: requests in flight finish and reach the
# disk, and the server exits 0.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdinfo qemu-io

expect_status 2 "$VDISK" serve
expect_status 2 "$VDISK" serve ram:size=1M --unix a --tcp b:1
expect_status 2 "$VDISK" serve ram:size=1M --threads 0
expect_status 2 "$VDISK" serve ram:size=1M --tls=maybe
expect_status 2 "$VDISK" serve ram:size=1M --tcp '::1:5'
expect_stderr "HOST:PORT"
expect_status 1 "$VDISK" serve nosuch:size=1M --unix "$SOCK"
expect_stderr "nosuch"
"$VDISK" serve --help | grep -c -- '--handshake-timeout' >/dev/null || fail "--help"

# pid file and URI
start_server ram:size=4M --pid-file "$TMP/pid" --export-name 'a b/c'
[[ $(cat "$TMP/pid") == "$SERVER_PID" ]] || fail "pid file: $(cat "$TMP/pid") vs $SERVER_PID"
[[ $URI == "nbd+unix:///a%20b%2Fc?socket=$SOCK" ]] || fail "URI: $URI"
nbdinfo --size "$URI" | grep -cx 4194304 >/dev/null || fail "nbdinfo on the printed URI"
# the socket is in use: a second server is refused
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK"
expect_stderr "in use"
stop_server
[[ ! -e $TMP/pid ]] || fail "pid file left behind"
[[ ! -e $SOCK ]] || fail "socket left behind"
# a stale socket file (nobody listening) is replaced
"$PYTHON" -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$SOCK"
start_server ram:size=1M
stop_server

# TCP on a free loopback port
"$VDISK" serve ram:size=2M --tcp 127.0.0.1:0 >"$TMP/tcp.out" 2>"$TMP/tcp.err" &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
for ((i = 0; i < 600; i++)); do [[ -s $TMP/tcp.out ]] && break; sleep 0.05; done
tcp_uri=$(head -1 "$TMP/tcp.out")
[[ $tcp_uri =~ ^nbd://127\.0\.0\.1:[0-9]+/$ ]] || fail "TCP URI: $tcp_uri"
nbdinfo --size "$tcp_uri" | grep -cx 2097152 >/dev/null || fail "nbdinfo over TCP"
kill -INT $pid
wait $pid || fail "SIGINT: exit $?"

# --stdio: one client on stdin/stdout
"$PYTHON" - "$VDISK" <<'PY' || fail "--stdio with connect_command"
import sys, nbd
h = nbd.NBD()
h.connect_command([sys.argv[1], "serve", "--stdio", "ram:size=1M"])
h.pwrite(b"s" * 4096, 8192)
assert h.pread(4096, 8192) == b"s" * 4096
h.shutdown()
PY
# a recorded conversation replayed from a file: options, a write, a read, DISC
"$PYTHON" - "$TMP/transcript" <<'PY'
import struct, sys
b = struct.pack(">I", 3)
b += struct.pack(">QII", 0x49484156454F5054, 8, 0)
b += struct.pack(">QII", 0x49484156454F5054, 7, 6) + struct.pack(">IH", 0, 0)
b += struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 512) + b"t" * 512
b += struct.pack(">IHHQQI", 0x25609513, 0, 0, 2, 0, 512)
b += struct.pack(">IHHQQI", 0x25609513, 0, 2, 3, 0, 0)
open(sys.argv[1], "wb").write(b)
PY
"$VDISK" serve --stdio ram:size=1M <"$TMP/transcript" >"$TMP/replies" || fail "--stdio replay"
grep -q tttt "$TMP/replies" || fail "replayed read did not return the written data"

# systemd socket activation
nbdinfo --size -- [ "$VDISK" serve ram:size=3M ] | grep -cx 3145728 >/dev/null || fail "socket activation"

# SIGTERM with writes in flight: they finish, reach the file, the server exits 0
img=$TMP/slow.img
start_server "{\"type\":\"delay\",\"write\":\"400ms\",\"inner\":{\"type\":\"file\",\"path\":\"$img\",\"create\":\"1M\"}}"
"$PYTHON" - "$SOCK" "$SERVER_PID" <<'PY' || fail "in-flight writes at SIGTERM"
import os, signal, sys, time
sys.path.insert(0, os.environ["TESTS_DIR"] + "/py")
from nbdtest import *
r = Raw(sys.argv[1])
r.greeting()
r.go()
for i in range(8):
    r.request(CMD_WRITE, i * 4096, 4096, cookie=i, data=bytes([65 + i]) * 4096)
time.sleep(0.1)
os.kill(int(sys.argv[2]), signal.SIGTERM)
done = sorted(r.read_reply()[:2] for _ in range(8))
assert done == [(i, 0) for i in range(8)], done
assert r.closed_by_server()
PY
stop_server
for i in 0 7; do
	qemu-io -f raw -r "$img" -c "read -P $((65 + i)) $((i * 4096)) 4096" >/dev/null ||
		fail "write $i is not in the file"
done
