# Helpers for the nbd backend's tests (the NBD client): source after functions.sh.
#   start_nbdkit NAME ARGS...     nbdkit on $TMP/NAME.sock; sets NBDKIT_URI
#   start_qemu_nbd NAME ARGS...   qemu-nbd on $TMP/NAME.sock; sets QEMU_URI
#   nbd_spec URI [KEY VALUE...]   a JSON spec of the nbd backend
CONFORMANCE=${BUILD_DIR:?run through ctest}/tests/vdisk-conformance

# wait_sock PATH PID WHAT: until PATH is a socket (or fail if PID died)
wait_sock() {
	local i
	for ((i = 0; i < 200; i++)); do
		[[ -S $1 ]] && return 0
		kill -0 "$2" 2>/dev/null || fail "$3 died: $(cat "$TMP/$3.err" 2>/dev/null)"
		sleep 0.05
	done
	fail "$3: no socket $1"
}

start_nbdkit() {
	local name=$1
	shift
	local sock=$TMP/$name.sock
	nbdkit -f -U "$sock" "$@" 2>"$TMP/$name.err" &
	local pid=$!
	cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
	wait_sock "$sock" "$pid" "$name"
	NBDKIT_URI="nbd+unix:///?socket=$sock"
}

start_qemu_nbd() {
	local name=$1
	shift
	local sock=$TMP/$name.sock
	qemu-nbd -k "$sock" "$@" 2>"$TMP/$name.err" &
	local pid=$!
	cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
	wait_sock "$sock" "$pid" "$name"
	QEMU_URI="nbd+unix:///?socket=$sock"
}

nbd_spec() {
	local s="{\"type\":\"nbd\",\"uri\":\"$1\""
	shift
	while (($# >= 2)); do
		s+=",\"$1\":\"$2\""
		shift 2
	done
	echo "$s}"
}

# no_sanitizer_reports FILE: fail if FILE holds a sanitizer's report
no_sanitizer_reports() {
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$1"; then
		fail "sanitizer: $(cat "$1")"
	fi
}
