#!/usr/bin/python3
# Hostile clients: every one gets a clean refusal or a disconnect of its own
# connection, and a well-behaved client connected all along keeps working.
# Option lengths up to 4 GiB, names longer than their option, 4096-byte names
# (accepted) and 4097-byte ones (refused), information and query counts past
# the end of the option, unknown client flags, requests sent before
# negotiation, pipelined negotiation, writes above --max-payload (aligned or
# not), unaligned requests at the end of the export, disconnects in the middle
# of an option, of a payload (of an unaligned write too) and of a reply, a client that never reads
# its replies (memory stays bounded), slow clients (the handshake timeout), and
# connection floods past --max-connections.
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd  # noqa: F401
except ImportError:
    skip("needs python3-libnbd")

NAME = b"n" * 4096
MAX_CONNS = 40


class Bystander:
    """A libnbd client that keeps using the export while the others misbehave."""

    def __init__(self, srv):
        self.h = connect(srv, NAME.decode())
        self.n = 0

    def check(self, what):
        self.n += 1
        data = struct.pack(">Q", self.n) * 64
        self.h.pwrite(data, 4096)
        assert self.h.pread(512, 4096) == data, f"bystander broken after {what}"


def hs(srv, flags=3):
    r = Raw(srv.sock)
    r.greeting(flags)
    return r


def option_lengths(srv, by):
    # 4 GiB of an unknown option: skipped as it comes; the client leaves
    r = hs(srv)
    r.send(struct.pack(">QII", IHAVEOPT, 0x77, 0xFFFFFFFF) + b"x" * 100000)
    r.close()
    by.check("a 4 GiB option")
    # longer than the server keeps, but sent in full: refused, haggling goes on
    r = hs(srv)
    r.opt(0x77, b"y" * (200 << 10))
    assert r.reply()[1] == REP_ERR_TOO_BIG
    r.opt(OPT_LIST)
    assert r.replies()[-1][0] == REP_ACK
    r.close()
    # an oversized GO is refused the same way
    r = hs(srv)
    r.opt(OPT_GO, struct.pack(">I", 70000) + b"z" * 70000 + b"\0\0")
    assert r.reply()[1] == REP_ERR_TOO_BIG
    r.close()
    # EXPORT_NAME cannot be answered with an error: a 4 GiB one disconnects
    r = hs(srv)
    r.send(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 0xFFFFFFFF))
    assert r.closed_by_server()
    by.check("4 GiB EXPORT_NAME")


def names(srv, by):
    r = hs(srv)
    # name length past the option, and past 4 GiB
    for nl in (7, 0xFFFFFFFF, 0xFFFFFFFA):
        r.opt(OPT_GO, struct.pack(">I", nl) + b"abc" + b"\0\0")
        assert r.reply()[1] == REP_ERR_INVALID, nl
    # info count past the end, and short of it
    r.opt(OPT_INFO, struct.pack(">I", 0) + struct.pack(">H", 100) + b"\0\3")
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_INFO, struct.pack(">I", 0) + struct.pack(">H", 0) + b"\0\3")
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_INFO, b"\0\0")
    assert r.reply()[1] == REP_ERR_INVALID
    # 4097 bytes: longer than any NBD string
    r.opt(OPT_INFO, go_data(NAME + b"n"))
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_STRUCTURED_REPLY)
    assert r.reply()[1] == REP_ACK
    # meta-context queries past the end, longer than allowed, too many
    bad = [struct.pack(">I", len(NAME)) + NAME + struct.pack(">I", 0xFFFFFFFF),
           struct.pack(">I", len(NAME)) + NAME + struct.pack(">II", 1, 50) + b"base:",
           struct.pack(">I", len(NAME)) + NAME + struct.pack(">II", 1, 4097) + b"b" * 4097,
           struct.pack(">I", 0xFFFFFFF0) + b"abcd",
           b"\0\0\0"]
    for data in bad:
        for opt in (OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT):
            r.opt(opt, data)
            assert r.reply()[1] == REP_ERR_INVALID, (opt, data[:8])
    # 4096 bytes is allowed, and is this export's name
    r.opt(OPT_SET_META_CONTEXT, meta_data(NAME))
    assert [x[0] for x in r.replies()] == [REP_META_CONTEXT, REP_ACK]
    r.go(NAME, structured=False, meta=False)
    r.request(CMD_BLOCK_STATUS, 0, 4096, cookie=2)
    assert r.read_reply()[:2] == (2, 0)
    r.close()
    # 4097 bytes through EXPORT_NAME: disconnect
    r = hs(srv)
    r.opt(OPT_EXPORT_NAME, NAME + b"n")
    assert r.closed_by_server()
    by.check("names")


def bad_starts(srv, by):
    # unknown client flags
    r = hs(srv, flags=0x80000003)
    assert r.closed_by_server()
    # a request where an option belongs
    r = hs(srv)
    r.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 512))
    assert r.closed_by_server()
    # garbage instead of the client flags and options
    r = Raw(srv.sock)
    r.send(os.urandom(4096))
    assert r.closed_by_server()
    # everything pipelined before reading a byte: options, GO and requests
    r = Raw(srv.sock)
    r.send(struct.pack(">I", 3) +
           struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED_REPLY, 0) +
           struct.pack(">QII", IHAVEOPT, OPT_GO, len(go_data(NAME))) + go_data(NAME) +
           struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 7, 0, 512) + b"p" * 512 +
           struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 8, 0, 512))
    r.recv_exact(18)
    assert r.reply()[1] == REP_ACK
    assert r.replies()[-1][0] == REP_ACK
    got = {}
    for _ in range(2):
        cookie, err, data = r.read_reply()
        got[cookie] = (err, data)
    assert got[7] == (0, b"") and got[8] == (0, b"p" * 512), got
    r.close()
    by.check("bad starts")


def transmission(srv, by):
    r = hs(srv)
    r.go(NAME, structured=True)
    # a write above --max-payload: refused; its payload is skipped, the stream
    # stays in step; the same unaligned
    big = (8 << 20) + 4096
    r.request(CMD_WRITE, 0, big, cookie=1, data=b"\xee" * big)
    assert r.read_reply()[:2] == (1, EINVAL)
    r.request(CMD_WRITE, 7, big - 4095, cookie=1, data=b"\xee" * (big - 4095))
    assert r.read_reply()[:2] == (1, EINVAL)
    r.request(CMD_READ, 0, 512, cookie=2)
    assert r.read_reply()[:2] == (2, 0)
    r.close()
    # unaligned requests of a client that asked for no block sizes: a read and a
    # write-zeroes at the very end, a write whose payload never comes
    r = hs(srv)
    r.go(NAME, infos=())
    r.request(CMD_READ, r.size - 3, 3, cookie=5)
    r.request(CMD_WRITE_ZEROES, r.size - 1, 1, cookie=6)
    r.request(CMD_READ, r.size - 1, 2, cookie=7)
    got = {}
    for _ in range(3):
        cookie, err, _data = r.read_reply()
        got[cookie] = err
    assert got == {5: 0, 6: 0, 7: EINVAL}, got
    r.request(CMD_WRITE, 1, (8 << 20) - 1, cookie=8, data=b"u" * 1000)
    # a write whose payload never comes
    r.request(CMD_WRITE, 0, 1 << 20, cookie=3, data=b"q" * 1000)
    r.close()
    # a 4 GiB write header, then nothing
    r = hs(srv)
    r.go(NAME)
    r.request(CMD_WRITE, 0, 0xFFFFFFFF, cookie=4, data=b"w" * 100)
    r.close()
    # disconnect in the middle of an option
    r = hs(srv)
    r.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"x" * 40)
    r.close()
    # disconnect in the middle of a request header
    r = hs(srv)
    r.go(NAME)
    r.send(struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_READ))
    r.close()
    # disconnect in the middle of replies: 64 MiB of reads asked, none read
    r = hs(srv)
    r.go(NAME)
    for i in range(8):
        r.request(CMD_READ, 0, 8 << 20, cookie=i)
    r.close()
    by.check("transmission")


def never_reads(srv, by):
    # a client that sends and sends but never reads: the server stops reading
    # it, and its memory stays bounded
    base = srv.rss_kib()
    r = hs(srv)
    r.go(NAME)
    r.s.setblocking(False)
    req = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 1 << 20)
    sent = 0
    deadline = time.time() + 3
    while time.time() < deadline:
        try:
            sent += r.s.send(req * 64)
        except BlockingIOError:
            time.sleep(0.01)
    grown = srv.rss_kib() - base
    assert sent > 100 * len(req), "the server read nothing at all"
    # 64 MiB of payload in flight for the connection, plus the worker's cache of
    # free buffers (64 MiB at most), plus slack
    assert grown < 200 * 1024, f"server grew by {grown} KiB for one client"
    by.check("a client that never reads")
    r.close()


def slow_and_flood(srv, by):
    # slow: a byte a second, never finishing the handshake
    slow = hs(srv)
    slow.send(struct.pack(">QI", IHAVEOPT, OPT_GO)[:5])
    # a flood past --max-connections: the extra ones are closed at once
    flood = []
    for _ in range(MAX_CONNS + 30):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(srv.sock)
        flood.append(s)
    refused = 0
    for s in flood:
        try:
            data = s.recv(18)
            if not data:
                refused += 1
        except (ConnectionResetError, socket.timeout):
            refused += 1
    assert refused >= 30, f"only {refused} of {len(flood)} refused"
    for s in flood:
        s.close()
    # the handshake timeout (2 s) ends the slow client
    assert slow.closed_by_server(timeout=10), "slow client never timed out"
    # and new clients are served again
    wait_for(lambda: try_connect(srv), what="the server to accept again")
    by.check("a flood")


def try_connect(srv):
    try:
        h = connect(srv, NAME.decode())
        h.shutdown()
        return True
    except Exception:
        return False


def main():
    with Server("ram:size=64M", "--max-payload", "8M", "--export-name", NAME.decode(),
                "--max-connections",
                str(MAX_CONNS), "--handshake-timeout", "2") as srv:
        by = Bystander(srv)
        option_lengths(srv, by)
        names(srv, by)
        bad_starts(srv, by)
        transmission(srv, by)
        never_reads(srv, by)
        slow_and_flood(srv, by)
        by.h.shutdown()
        assert srv.alive()
    print("ok")


main()
