# Image locking: a file or a SQLite layer that one process writes cannot be
# opened by a second writer -- another `vdisk serve`, `vdisk convert` onto it,
# or qemu (whose OFD lock bytes vdisk shares), and the reverse; readers
# coexist; locking=off opts out.
# ctest-timeout: 300
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires qemu-io qemu-img

img=$TMP/disk.img
"$VDISK" create raw "$img" 4M

# --- vdisk serve holds a file: a second writer is refused, naming it --------
start_server "file:path=$img"
expect_status 1 "$VDISK" serve "file:path=$img" --unix "$TMP/second.sock"
expect_stderr "'$img' is in use"
expect_stderr "for writing"
"$VDISK" create raw "$TMP/src.img" 4M
expect_status 1 "$VDISK" convert "$TMP/src.img" "$img"
expect_stderr "in use"
# qemu: a writer is refused while vdisk writes (qemu-io -r shares writing, by
# qemu's own choice, so it is let in)
expect_status 1 qemu-io -f raw -c 'write -P 0x55 0 4k' "$img"
grep -qi '"write" lock' "$TMP/stdout" "$TMP/stderr" ||
	fail "qemu-io was not refused by the lock: $(cat "$TMP/stdout" "$TMP/stderr")"
# readers share the file with its writer, as qemu-io -r does
expect_status 0 "$VDISK" info "file:path=$img,read-only=on"
expect_status 0 qemu-io -r -f raw -c 'read 0 4k' "$img"
# locking=off: a second writer is let in, at the user's risk
expect_status 0 "$VDISK" info "file:path=$img,locking=off"
stop_server
# released with the server
expect_status 0 qemu-io -f raw -c 'write -P 0x55 0 4k' "$img"

# --- readers coexist, and let one writer in ----------------------------------
start_server "file:path=$img" --read-only
expect_status 0 "$VDISK" info "file:path=$img,read-only=on"
expect_status 0 qemu-io -r -f raw -c 'read -P 0x55 0 4k' "$img"
expect_status 0 qemu-io -f raw -c 'write -P 0x55 0 4k' "$img"
stop_server

# --- the reverse: qemu holds the file open for writing -----------------------
mkfifo "$TMP/qin"
qemu-io -f raw "$img" <"$TMP/qin" >"$TMP/qout" 2>&1 &
qpid=$!
exec 3>"$TMP/qin"
cleanup_fn "exec 3>&-; kill $qpid 2>/dev/null; wait $qpid 2>/dev/null"
echo "read -P 0x55 0 4k" >&3
for ((i = 0; i < 200; i++)); do
	grep -q "read 4096/4096" "$TMP/qout" && break
	kill -0 $qpid 2>/dev/null || fail "qemu-io exited: $(cat "$TMP/qout")"
	sleep 0.05
done
grep -q "read 4096/4096" "$TMP/qout" || fail "qemu-io did not answer: $(cat "$TMP/qout")"
expect_status 1 "$VDISK" serve "file:path=$img" --unix "$TMP/second.sock"
expect_stderr "'$img' is in use: already open for writing"
expect_status 1 "$VDISK" convert "$TMP/src.img" "$img"
expect_stderr "in use"
expect_status 0 "$VDISK" info "file:path=$img,read-only=on"
echo "quit" >&3
exec 3>&-
wait $qpid || true
expect_status 0 "$VDISK" info "file:path=$img,read-only=on"

# --- two servers on one SQLite layer -----------------------------------------
db=$TMP/vm.dbhd
layered() { printf '{"type":"layered","layers":[{"type":"sqlite","path":"%s"%s}]}' "$db" "${1:-}"; }
expect_status 0 "$VDISK" info "$(layered ',"create":true,"size":"4M"')"
start_server "$(layered)"
expect_status 1 "$VDISK" serve "$(layered)" --unix "$TMP/second.sock"
expect_stderr "'$db' is in use"
expect_stderr "locking=off"
stop_server
# readers of it coexist with each other, and a writer joins them
start_server "$(layered)" --read-only
expect_status 0 "$VDISK" info --read-only "$(layered)"
expect_status 0 "$VDISK" info "$(layered)"
stop_server
# locking=off lets a second writer in
start_server "$(layered)"
expect_status 0 "$VDISK" info "$(layered ',"locking":false')"
stop_server
echo "locking ok"
