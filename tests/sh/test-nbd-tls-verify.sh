#!/usr/bin/env bash
# Client certificates: with --tls-verify-peer a client must present a
# certificate signed by the CA (--tls-ca FILE, or ca-cert.pem of a
# --tls-certificates directory laid out as qemu and nbdkit lay it out).  A
# client whose certificate another CA signed (the reference test client's
# tlswrongcert), or that has none, is refused during the TLS handshake, and
# the server goes on serving; without the flag the same client is served, as
# before.  --tls-allow PATTERN also matches the certificate's subject, or the
# PSK identity.  Misuse (a CA without the flag, the flag with PSK, a subject
# pattern without the flag) is refused.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires nbdinfo nbdcopy openssl cmp

pki=$TMP/pki
mkdir -p "$pki"/{server,good,bob,wrong,none,rogue}
(
	cd "$pki"
	ca() { # DIR CN
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=$2" -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem"
	}
	cert() { # CA-DIR OUT-PREFIX CN EXT
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
			-keyout "$2-key.pem" -out "$2.csr"
		printf '%s\n' "$4" >"$2.ext"
		openssl x509 -req -in "$2.csr" -CA "$1/ca-cert.pem" -CAkey "$1/ca-key.pem" \
			-CAcreateserial -days 2 -extfile "$2.ext" -out "$2-cert.pem"
	}
	ca . vdisk-test-ca
	ca rogue rogue-ca
	cert . server/server localhost \
		"subjectAltName=DNS:localhost
extendedKeyUsage=serverAuth"
	cp ca-cert.pem server/
	cert . good/client alice "extendedKeyUsage=clientAuth"
	cert . bob/client bob "extendedKeyUsage=clientAuth"
	cert rogue wrong/client mallory "extendedKeyUsage=clientAuth"
	for d in good bob wrong none; do cp ca-cert.pem $d/; done
) >/dev/null 2>&1 || skip "openssl cannot make test certificates"
head -c 3M /dev/urandom >"$TMP/data"

uri() { echo "nbds+unix:///?socket=$SOCK&tls-certificates=$pki/$1"; }

check_refused() { # WHO
	nbdinfo --size "$(uri "$1")" >"$TMP/client.out" 2>&1 &&
		fail "a client with the $1 certificate was served"
	true
}

# the directory layout; TLS required
start_server ram:size=4M --tls=require --tls-certificates "$pki/server" --tls-verify-peer -v
nbdcopy "$TMP/data" "$(uri good)" && nbdcopy "$(uri good)" "$TMP/back" ||
	fail "a client with a certificate of the CA was refused"
cmp <(head -c 3M "$TMP/back") "$TMP/data" || fail "round trip differs"
check_refused wrong
check_refused none
grep -q "TLS handshake" "$TMP/server.err" || fail "refusal not logged: $(cat "$TMP/server.err")"
nbdinfo --size "$(uri good)" >/dev/null || fail "the server stopped serving after refusals"
stop_server

# --tls-cert / --tls-key / --tls-ca
start_server ram:size=4M --tls-cert "$pki/server/server-cert.pem" \
	--tls-key "$pki/server/server-key.pem" --tls-ca "$pki/ca-cert.pem" --tls-verify-peer
[[ $(nbdinfo --size "$(uri good)") == 4194304 ]] || fail "--tls-ca: good client refused"
check_refused wrong
stop_server

# --tls-allow: the subject must match too
start_server ram:size=4M --tls-certificates "$pki/server" --tls-verify-peer --tls-allow 'CN=ali*' -v
nbdinfo --size "$(uri good)" >/dev/null || fail "--tls-allow refused CN=alice"
check_refused bob
stop_server
grep -q "CN=bob.*does not match" "$TMP/server.err" || fail "no log: $(cat "$TMP/server.err")"
# and the PSK identity
printf 'alice:%s\nbob:%s\n' "$(openssl rand -hex 32)" "$(openssl rand -hex 32)" >"$TMP/keys"
start_server ram:size=4M --tls-psk "$TMP/keys" --tls=require --tls-allow alice
nbdinfo --size "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$TMP/keys" >/dev/null ||
	fail "--tls-allow refused PSK identity alice"
nbdinfo --size "nbds+unix://bob@/?socket=$SOCK&tls-psk-file=$TMP/keys" >/dev/null 2>&1 &&
	fail "--tls-allow let PSK identity bob in"
stop_server

# without --tls-verify-peer, any client certificate (or none) is fine
start_server ram:size=4M --tls-certificates "$pki/server"
nbdinfo --size "$(uri wrong)" >/dev/null || fail "without --tls-verify-peer a client was refused"
nbdinfo --size "$(uri none)" >/dev/null || fail "without --tls-verify-peer a client was refused"
stop_server

# misuse
expect_status 2 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-certificates "$pki/server" \
	--tls-ca "$pki/ca-cert.pem"
expect_stderr "--tls-ca is for --tls-verify-peer"
echo "alice:$(openssl rand -hex 32)" >"$TMP/psk"
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-psk "$TMP/psk" --tls-verify-peer
expect_stderr "tls-verify-peer"
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-cert "$pki/server/server-cert.pem" \
	--tls-key "$pki/server/server-key.pem" --tls-verify-peer
expect_stderr "needs a CA"
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-certificates "$TMP/nowhere"
expect_stderr "$TMP/nowhere/server-cert.pem"
expect_status 2 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls=off --tls-verify-peer
expect_status 1 "$VDISK" serve ram:size=1M --unix "$SOCK" --tls-certificates "$pki/server" \
	--tls-allow 'CN=*'
expect_stderr "needs tls-verify-peer"
echo ok
