# Helpers for the NBD server's shell tests: source after functions.sh.
#   start_server SPEC [ARGS...]   vdisk serve on $TMP/nbd.sock; sets URI, SOCK, SERVER_PID
#   stop_server                   SIGTERM; the server must exit 0 with a clean stderr
SOCK=$TMP/nbd.sock

start_server() {
	rm -f "$SOCK" "$TMP/server.out"
	"$VDISK" serve "$@" --unix "$SOCK" >"$TMP/server.out" 2>"$TMP/server.err" &
	SERVER_PID=$!
	cleanup_fn "kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null"
	local i
	for ((i = 0; i < 600; i++)); do # 30 s: sanitizer builds on a busy machine start slowly
		[[ -s $TMP/server.out ]] && break
		kill -0 "$SERVER_PID" 2>/dev/null || fail "server died: $(cat "$TMP/server.err")"
		sleep 0.05
	done
	URI=$(head -1 "$TMP/server.out")
	[[ $URI == nbd*unix* ]] || fail "server printed no URI: $(cat "$TMP/server.err")"
}

stop_server() {
	local rc=0
	kill -TERM "$SERVER_PID" 2>/dev/null || true # it may have been stopped already
	wait "$SERVER_PID" || rc=$?
	[[ $rc -eq 0 ]] || fail "server exited $rc: $(cat "$TMP/server.err")"
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP/server.err"; then
		fail "sanitizer: $(cat "$TMP/server.err")"
	fi
}
