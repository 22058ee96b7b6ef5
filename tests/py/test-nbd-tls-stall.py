#!/usr/bin/python3
# A TLS client that stops reading: once the socket is full the server waits for
# it to drain (EPOLLOUT) instead of retrying at once, so the worker it shares
# with a plain bystander (--threads 1) keeps serving the bystander, and
# SIGTERM still stops the server.  Checked while negotiating (a flood of
# NBD_OPT_LIST) and in transmission (a flood of reads), with the handshake
# timeout off so that only the shutdown grace ends the stalled client.
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403


def make_cert(tmp):
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        skip("openssl cannot make a test certificate")
    return cert, key


def tls_client(srv):
    r = Raw(srv.sock, timeout=30)
    r.greeting()
    r.opt(OPT_STARTTLS)
    assert r.reply()[1] == REP_ACK
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r.s = ctx.wrap_socket(r.s)
    return r


def flood(r, message):
    """Send message over and over until the server stops taking it: then its
    replies fill the socket and it has stopped reading."""
    r.s.settimeout(2)
    sent = 0
    try:
        while True:
            r.s.sendall(message * 64)
            sent += 1
    except (socket.timeout, ssl.SSLWantWriteError):
        pass
    assert sent > 0, "the server read nothing at all"


def bystander(srv, n):
    b = Raw(srv.sock, timeout=30)
    b.greeting()
    b.go()
    data = struct.pack(">Q", n) * 64
    b.request(CMD_WRITE, 0, len(data), cookie=1, data=data)
    assert b.read_reply()[:2] == (1, 0), "bystander's write failed"
    b.request(CMD_READ, 0, len(data), cookie=2)
    assert b.read_reply(len(data)) == (2, 0, data), "bystander's read failed"
    b.close()


def main():
    need_env()
    tmp = tempfile.mkdtemp(prefix="vdisk-nbd-tls-")
    cert, key = make_cert(tmp)
    args = ("--tls=on", "--tls-cert", cert, "--tls-key", key, "--threads", "1",
            "--handshake-timeout", "0")
    # negotiating: option replies pile up behind a full socket
    with Server("ram:size=8M", *args) as srv:
        r = tls_client(srv)
        flood(r, struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
        try:
            bystander(srv, 1)
        except socket.timeout:
            raise AssertionError("a stalled TLS client in negotiation froze the worker")
        # leaving the block stops the server: it must not wait for r forever
    r.close()
    # transmission: read replies pile up behind a full socket
    with Server("ram:size=8M", *args) as srv:
        r = tls_client(srv)
        r.go()
        flood(r, struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 1 << 20))
        try:
            bystander(srv, 2)
        except socket.timeout:
            raise AssertionError("a stalled TLS client in transmission froze the worker")
    r.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok")


main()
