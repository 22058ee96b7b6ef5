# Helpers for the iSCSI tests: source after functions.sh.
#   start_iscsi SPEC [serve options...]: vdisk serve SPEC --iscsi 127.0.0.1:0
#     in the background; sets ISCSI_PID, ISCSI_URI (iscsi://127.0.0.1:P/IQN/0),
#     ISCSI_PORT and ISCSI_PORTAL (iscsi://127.0.0.1:P)
#   stop_iscsi: SIGTERM, and the server must exit 0
ISCSI_PID=
ISCSI_INITIATOR=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test
ISCSI_INITIATOR2=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2

start_iscsi() {
	local spec=$1
	shift
	local out=$TMP/iscsi.out
	: >"$out"
	"$VDISK" serve "$spec" --iscsi 127.0.0.1:0 "$@" >"$out" 2>"$TMP/iscsi.err" &
	ISCSI_PID=$!
	cleanup_fn "kill $ISCSI_PID 2>/dev/null; wait $ISCSI_PID 2>/dev/null"
	for _ in $(seq 1 200); do
		[[ -s $out ]] && break
		kill -0 "$ISCSI_PID" 2>/dev/null || fail "vdisk serve died: $(cat "$TMP/iscsi.err")"
		sleep 0.05
	done
	ISCSI_URI=$(head -1 "$out")
	[[ $ISCSI_URI == iscsi://127.0.0.1:*/*/0 ]] || fail "no iSCSI URI printed: '$ISCSI_URI'"
	ISCSI_PORTAL=${ISCSI_URI%/*/0}
	ISCSI_PORT=${ISCSI_PORTAL##*:}
}

stop_iscsi() {
	[[ -n $ISCSI_PID ]] || return 0
	kill -TERM "$ISCSI_PID"
	local rc=0
	wait "$ISCSI_PID" || rc=$?
	ISCSI_PID=
	[[ $rc -eq 0 ]] || fail "vdisk serve --iscsi exited $rc: $(cat "$TMP/iscsi.err")"
}
