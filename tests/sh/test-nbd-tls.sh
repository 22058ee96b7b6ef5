#!/usr/bin/env bash
# TLS: with an X.509 certificate (checked by the client against its CA) and
# with pre-shared keys; --tls=require refuses plain clients (options answered
# NBD_REP_ERR_TLS_REQD), --tls=on serves both; a wrong key or an unknown
# identity fails the handshake; data round-trips over TLS.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdinfo nbdcopy openssl cmp

pki=$TMP/pki
mkdir -p "$pki"
(
	cd "$pki"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=vdisk-test-ca -keyout ca-key.pem -out ca-cert.pem
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
		-keyout server-key.pem -out server.csr
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
		-days 2 -extfile ext.cnf -out server-cert.pem
) >/dev/null 2>&1 || skip "openssl cannot make test certificates"
echo "alice:$(openssl rand -hex 32)" >"$TMP/psk"
echo "alice:$(openssl rand -hex 32)" >"$TMP/wrong-psk"
head -c 6M /dev/urandom >"$TMP/data"

tls_uri() { echo "nbds+unix:///?socket=$SOCK&$1"; }

# certificates, TLS required
start_server ram:size=8M --tls=require --tls-cert "$pki/server-cert.pem" \
	--tls-key "$pki/server-key.pem"
[[ $URI == nbds+unix:* ]] || fail "URI does not say TLS: $URI"
cert=$(tls_uri "tls-certificates=$pki")
out=$(nbdinfo "$cert") || fail "nbdinfo over TLS"
grep -q 'with TLS' <<<"$out" || fail "not TLS: $out"
nbdcopy "$TMP/data" "$cert" && nbdcopy "$cert" "$TMP/back" || fail "nbdcopy over TLS"
cmp <(head -c 6M "$TMP/back") "$TMP/data" || fail "TLS round trip differs"
nbdinfo "nbd+unix:///?socket=$SOCK" >"$TMP/plain.out" 2>&1 && fail "plain client served"
"$PYTHON" - "$SOCK" <<'PY' || fail "plain options were not refused with TLS_REQD"
import sys, os
sys.path.insert(0, os.environ["TESTS_DIR"] + "/py")
from nbdtest import *
r = Raw(sys.argv[1])
r.greeting()
for opt, data in ((OPT_LIST, b""), (OPT_GO, go_data()), (OPT_STRUCTURED_REPLY, b""), (0x99, b"")):
    r.opt(opt, data)
    assert r.reply()[1] == REP_ERR_TLS_REQD, opt
r.opt(OPT_EXPORT_NAME, b"")
assert r.closed_by_server()
PY
stop_server

# over TCP the client checks the certificate against its CA and the host name
"$VDISK" serve ram:size=8M --tcp 127.0.0.1:0 --tls=require --tls-cert "$pki/server-cert.pem" \
	--tls-key "$pki/server-key.pem" >"$TMP/tcp.out" 2>"$TMP/tcp.err" &
tcp_pid=$!
cleanup_fn "kill $tcp_pid 2>/dev/null"
for ((i = 0; i < 600; i++)); do [[ -s $TMP/tcp.out ]] && break; sleep 0.05; done
port=$(sed -n 's|^nbds://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/tcp.out")
[[ -n $port ]] || fail "TCP URI: $(cat "$TMP/tcp.out" "$TMP/tcp.err")"
nbdinfo --size "nbds://localhost:$port/?tls-certificates=$pki" >/dev/null ||
	fail "TCP with the right CA"
mkdir -p "$TMP/otherca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=other \
	-keyout "$TMP/otherca/ca-key.pem" -out "$TMP/otherca/ca-cert.pem" >/dev/null 2>&1
nbdinfo --size "nbds://localhost:$port/?tls-certificates=$TMP/otherca" >/dev/null 2>&1 &&
	fail "a server the client's CA did not sign was accepted"
kill -TERM $tcp_pid
wait $tcp_pid || fail "TCP server exited $?: $(cat "$TMP/tcp.err")"

# certificates, TLS offered: STARTTLS forgets what was negotiated before it, and
# cannot be repeated
start_server ram:size=8M --tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem"
"$PYTHON" - "$SOCK" <<'PY' || fail "STARTTLS did not reset the negotiation"
import os, ssl, struct, sys
sys.path.insert(0, os.environ["TESTS_DIR"] + "/py")
from nbdtest import *
r = Raw(sys.argv[1])
r.greeting()
r.opt(OPT_STRUCTURED_REPLY)
assert r.reply()[1] == REP_ACK
r.opt(OPT_STARTTLS)
assert r.reply()[1] == REP_ACK
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
r.s = ctx.wrap_socket(r.s)
# structured replies were asked for before TLS: forgotten
r.opt(OPT_SET_META_CONTEXT, meta_data())
assert r.reply()[1] == REP_ERR_INVALID, "structured replies survived STARTTLS"
r.opt(OPT_STARTTLS)
assert r.reply()[1] == REP_ERR_INVALID, "a second STARTTLS was accepted"
r.go(meta=True)
r.request(CMD_BLOCK_STATUS, 0, 4096, cookie=5)
assert r.read_reply()[:2] == (5, 0)
r.request(CMD_WRITE, 0, 512, cookie=6, data=b"t" * 512)
r.request(CMD_READ, 0, 512, cookie=7)
got = dict(r.read_reply()[::2] for _ in range(2))
assert got[7] == b"t" * 512, got
r.close()
PY
stop_server

# pre-shared keys, TLS offered but optional
start_server ram:size=8M --tls-psk "$TMP/psk"
psk="nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$TMP/psk"
nbdinfo "$psk" | grep -c 'with TLS' >/dev/null || fail "PSK: no TLS"
nbdcopy "$TMP/data" "$psk" && nbdcopy "$psk" "$TMP/back" || fail "nbdcopy over PSK"
cmp <(head -c 6M "$TMP/back") "$TMP/data" || fail "PSK round trip differs"
nbdinfo "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$TMP/wrong-psk" >/dev/null 2>&1 &&
	fail "wrong key accepted"
nbdinfo "nbds+unix://mallory@/?socket=$SOCK&tls-psk-file=$TMP/psk" >/dev/null 2>&1 &&
	fail "unknown identity accepted"
nbdinfo "nbd+unix:///?socket=$SOCK" | grep -c 'without TLS' >/dev/null || fail "--tls=on refused a plain client"
stop_server

# bad credentials are refused at start
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-cert "$pki/server-cert.pem" \
	--tls-key "$pki/ca-key.pem"
expect_stderr "tls-key"
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls=require
expect_stderr "needs a certificate"
