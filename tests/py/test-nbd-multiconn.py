#!/usr/bin/python3
# Several connections at once and many requests in flight on each: a write on
# one connection, a flush on a second and a read on a third agree
# (NBD_FLAG_CAN_MULTI_CONN); four connections write interleaved regions with
# 64 requests in flight each and every byte is checked; and replies come back
# in the order the disk finishes, not the order asked (a delay layer makes
# reads slow).
import json
import os
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")


def coherence(srv):
    hs = [connect(srv) for _ in range(3)]
    for h in hs:
        assert h.can_multi_conn(), "CAN_MULTI_CONN not offered"
    for i in range(20):
        data = os.urandom(4096)
        off = i * 65536
        hs[0].pwrite(data, off)
        hs[1].flush()
        assert hs[2].pread(4096, off) == data, f"round {i}: third connection disagrees"
        hs[2].zero(4096, off, nbd.CMD_FLAG_FUA)
        assert hs[0].pread(4096, off) == bytes(4096)
    for h in hs:
        h.shutdown()


def parallel(srv, nconn=4, depth=64, bs=16384):
    hs = [connect(srv) for _ in range(nconn)]
    expect = {}
    pending = []
    for i in range(nconn * depth * 4):
        h = hs[i % nconn]
        off = i * bs
        buf = nbd.Buffer.from_bytearray(bytearray(struct.pack(">Q", i) * (bs // 8)))
        pending.append((h, h.aio_pwrite(buf, off), buf))
        expect[off] = struct.pack(">Q", i) * (bs // 8)
        while h.aio_in_flight() >= depth:
            h.poll(-1)
    for h in hs:
        while h.aio_in_flight():
            h.poll(-1)
    for h, cookie, _ in pending:
        assert h.aio_command_completed(cookie)
    reads = []
    for i, off in enumerate(sorted(expect)):
        h = hs[(i + 1) % nconn]
        buf = nbd.Buffer(bs)
        reads.append((off, buf, h.aio_pread(buf, off)))
        while h.aio_in_flight() >= depth:
            h.poll(-1)
    for h in hs:
        while h.aio_in_flight():
            h.poll(-1)
    for off, buf, _ in reads:
        assert buf.to_bytearray() == expect[off], f"data at {off} wrong"
    for h in hs:
        h.shutdown()


def out_of_order():
    spec = json.dumps({"type": "delay", "read": "300ms",
                       "inner": {"type": "ram", "size": "1M"}})
    with Server(spec) as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.go()
        t0 = time.time()
        r.request(CMD_READ, 0, 4096, cookie=1)
        r.request(CMD_WRITE, 4096, 512, cookie=2, data=b"w" * 512)
        r.request(CMD_FLUSH, cookie=3)
        order = [r.read_reply()[0] for _ in range(3)]
        assert order[-1] == 1, f"replies in order {order}: the slow read did not come last"
        assert time.time() - t0 >= 0.25
        r.close()


def main():
    with Server("ram:size=64M") as srv:
        coherence(srv)
        parallel(srv)
    tmp = tempfile.mkdtemp(prefix="vdisk-nbd-mc-")
    try:
        with Server(f"file:path={tmp}/disk.img,create=64M", "--threads", "2", tmp=tmp) as srv:
            coherence(srv)
            parallel(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_of_order()
    print("ok")


main()
