# Helpers for shell tests: source it first.  Each test runs with `set -euo
# pipefail`, in a private temporary directory that is removed on exit.
set -euo pipefail
: "${VDISK:?run through ctest (VDISK is the vdisk binary)}"
: "${PYTHON:=/usr/bin/python3}"

TEST_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "/tmp/vdisk-${TEST_NAME}.XXXXXX")
_cleanups=()
cleanup_fn() { _cleanups+=("$*"); }
_run_cleanups() {
	local rc=$?
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}" || true; done
	rm -rf "$TMP"
	exit $rc
}
trap _run_cleanups EXIT INT TERM

fail() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }
skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
# requires CMD...: skip unless every command exists
requires() { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "needs $c"; done; }
requires_py() { "$PYTHON" -c "import $1" 2>/dev/null || skip "needs python3 module $1"; }

# expect_status N CMD...: run CMD, which must exit with status N; its stderr is
# kept in $TMP/stderr
expect_status() {
	local want=$1
	shift
	local got=0
	"$@" >"$TMP/stdout" 2>"$TMP/stderr" || got=$?
	[[ $got -eq $want ]] || fail "'$*' exited $got, expected $want; stderr: $(cat "$TMP/stderr")"
}
# expect_stderr TEXT: the last expect_status's stderr contains TEXT
expect_stderr() { grep -qF -- "$1" "$TMP/stderr" || fail "stderr lacks '$1': $(cat "$TMP/stderr")"; }
