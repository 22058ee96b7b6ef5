#!/usr/bin/python3
"""A misbehaving NBD server for the nbd backend's tests.

usage: nbdc_badserver.py MODE SOCKET

Negotiates like a plain newstyle server (no structured replies, export size
1 MiB), then, per MODE:
  close-mid-reply  after the first read request, sends its reply header and
                   half its data, then closes the connection
  unknown-cookie   answers the first request with a cookie never sent
  silent           reads requests and never answers
  close-handshake  closes the connection in the middle of the handshake
  stall-handshake  accepts the connection and never says a word
  good             answers every request with zeros (a control)
Serves connections one after another until killed.
"""
import os
import socket
import struct
import sys

SIZE = 1 << 20
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
OPT_GO, OPT_INFO, OPT_ABORT = 7, 6, 2
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 0x80000001
CMD_READ, CMD_DISC = 0, 2


def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def opt_reply(c, opt, rtype, data=b""):
    c.sendall(struct.pack(">QIII", REP_MAGIC, opt, rtype, len(data)) + data)


def handshake(c, mode):
    if mode == "stall-handshake":
        c.recv(1 << 20)  # until the client gives up
        return False
    c.sendall(b"NBDMAGIC" + struct.pack(">QH", OPT_MAGIC, 1 | 2))
    recv_exact(c, 4)
    if mode == "close-handshake":
        return False
    while True:
        magic, opt, length = struct.unpack(">QII", recv_exact(c, 16))
        assert magic == OPT_MAGIC
        recv_exact(c, length)
        if opt in (OPT_GO, OPT_INFO):
            flags = 1 | 4  # HAS_FLAGS, SEND_FLUSH
            opt_reply(c, opt, REP_INFO, struct.pack(">HQH", 0, SIZE, flags))
            opt_reply(c, opt, REP_ACK)
            if opt == OPT_GO:
                return True
        elif opt == OPT_ABORT:
            opt_reply(c, opt, REP_ACK)
            return False
        else:
            opt_reply(c, opt, REP_ERR_UNSUP)


def transmission(c, mode):
    while True:
        magic, flags, typ, cookie, offset, length = struct.unpack(
            ">IHHQQI", recv_exact(c, 28))
        assert magic == REQ_MAGIC
        if typ == CMD_DISC:
            return
        if typ == 1:  # write
            recv_exact(c, length)
        data = bytes(length) if typ == CMD_READ else b""
        if mode == "close-mid-reply" and typ == CMD_READ:
            c.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) + data[:length // 2])
            return
        if mode == "unknown-cookie":
            c.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie ^ 0x5A5A5A5A00000000) + data)
            continue
        if mode == "silent":
            continue
        c.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) + data)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path + ".tmp")
    s.listen(8)
    os.rename(path + ".tmp", path)
    parent = os.getppid()
    s.settimeout(0.5)
    while True:
        try:
            c, _ = s.accept()
        except socket.timeout:
            if os.getppid() != parent:  # the test is gone
                return
            continue
        c.settimeout(None)
        try:
            if handshake(c, mode):
                transmission(c, mode)
            if mode == "silent":
                c.recv(1 << 20)  # keep it open until the client goes
        except (EOFError, ConnectionError, AssertionError):
            pass
        c.close()


if __name__ == "__main__":
    main()
