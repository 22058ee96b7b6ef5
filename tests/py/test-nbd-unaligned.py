#!/usr/bin/python3
# Requests of any alignment from clients that asked for no block sizes
# (proto.md's default minimum of 1), served by reading and writing the
# sectors around them: reads, writes, write-zeroes and trims that start and
# end inside sectors, on 512-byte and 4 KiB-sector disks, checked against a
# model.  Four libnbd connections on two worker threads write unaligned
# stripes that share sectors, hundreds at once: the read-modify-writes are
# serialised, so no writer's bytes are lost to another's.  Clients that asked
# for the block sizes keep getting EINVAL.  Large requests (integrity-huge's
# 34-50 MB) pass under the default maximum payload.
# ctest-timeout: 600
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")


def loose(srv):
    """A libnbd client that does not ask for block sizes and checks nothing."""
    h = nbd.NBD()
    h.set_request_block_size(False)
    h.set_strict_mode(0)
    h.connect_unix(srv.sock)
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 1, h.get_block_size(nbd.SIZE_MINIMUM)
    return h


def drain(handles):
    for h in handles:
        while h.aio_in_flight() > 0:
            h.poll(-1)


def single_client(srv, size, rnd):
    h = loose(srv)
    model = bytearray(size)
    h.pwrite(bytes(size), 0)
    # the reference test client's oversize case: offset 1, 1 MiB + 14
    if size >= (2 << 20):
        data = os.urandom((1 << 20) + 14)
        h.pwrite(data, 1)
        model[1:1 + len(data)] = data
        assert h.pread(len(data), 1) == data
    for i in range(400):
        op = rnd.choice(["w", "w", "w", "z", "t", "r"])
        off = rnd.randrange(0, size - 1)
        ln = rnd.choice([1, 2, 511, 513, 4095, 4097, rnd.randrange(1, 70000)])
        ln = min(ln, size - off)
        if op == "w":
            data = os.urandom(ln)
            h.pwrite(data, off)
            model[off:off + ln] = data
        elif op == "z":
            h.zero(ln, off)
            model[off:off + ln] = bytes(ln)
        elif op == "t":
            # bytes a trim covers are unspecified: only the rest is checked
            h.trim(ln, off)
            model[off:off + ln] = h.pread(ln, off)
        else:
            assert h.pread(ln, off) == bytes(model[off:off + ln]), f"read {off}+{ln}"
    assert h.pread(size, 0) == bytes(model), "content differs from the model"
    # writes at the very end, and past it
    h.pwrite(b"END", size - 3)
    assert h.pread(5, size - 5) == bytes(model[size - 5:size - 3]) + b"END"
    try:
        h.pwrite(b"xx", size - 1)
        raise AssertionError("a write across the end succeeded")
    except nbd.Error as e:
        assert e.errnum == __import__("errno").ENOSPC, e
    h.shutdown()


def racing_writers(srv, size, rnd, nconn=4, rounds=6):
    # the region is cut into stripes of 1..300 bytes dealt to the writers in
    # turn: sectors hold stripes of several writers, whose bytes never overlap
    region = min(size, 24 << 10)
    stripes, pos = [], 0
    while pos < region:
        ln = min(rnd.randrange(1, 300), region - pos)
        stripes.append((pos, ln))
        pos += ln
    owner = [i % nconn for i in range(len(stripes))]
    handles = [loose(srv) for _ in range(nconn)]
    handles[0].pwrite(bytes(region), 0)
    model = bytearray(region)
    for rnd_no in range(rounds):
        bufs = []
        for k, h in enumerate(handles):
            mine = [s for s, o in zip(stripes, owner) if o == k]
            rnd.shuffle(mine)
            for off, ln in mine:
                if rnd.random() < 0.15:
                    h.aio_zero(ln, off)
                    model[off:off + ln] = bytes(ln)
                else:
                    data = bytes([(rnd_no * 37 + k * 11 + off) % 251 + 1]) * ln
                    buf = nbd.Buffer.from_bytearray(bytearray(data))
                    bufs.append(buf)
                    h.aio_pwrite(buf, off)
                    model[off:off + ln] = data
        drain(handles)
        got = handles[(rnd_no + 1) % nconn].pread(region, 0)
        if got != bytes(model):
            bad = next(i for i in range(region) if got[i] != model[i])
            raise AssertionError(f"round {rnd_no}: byte {bad} is {got[bad]}, "
                                 f"model {model[bad]}: a write was lost")
    for h in handles:
        h.shutdown()


def strict_client(srv):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_unix(srv.sock)
    ss = h.get_block_size(nbd.SIZE_MINIMUM)
    assert ss >= 512
    for fn in (lambda: h.pread(100, 0), lambda: h.pwrite(b"x", 1), lambda: h.zero(1, ss)):
        try:
            fn()
            raise AssertionError("an unaligned request of a strict client succeeded")
        except nbd.Error as e:
            assert e.errnum == __import__("errno").EINVAL, e
    h.shutdown()


def large(srv):
    # integrity-huge sends reads and writes of 34-50 MB
    h = loose(srv)
    data = os.urandom(50 << 20)
    h.pwrite(data, 3)
    assert h.pread(len(data), 3) == data
    assert h.pread(34 << 20, 1 << 20) == data[(1 << 20) - 3:(35 << 20) - 3]
    h.shutdown()


def main():
    need_env()
    rnd = random.Random(14)
    for spec in ("ram:size=4M", "ram:size=4M,sector-size=4096"):
        with Server(spec, "--threads", "2") as srv:
            single_client(srv, 4 << 20, rnd)
            racing_writers(srv, 4 << 20, rnd)
            strict_client(srv)
    tmp = tempfile.mkdtemp(prefix="vdisk-unaligned-")
    try:
        img = os.path.join(tmp, "disk.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        with Server(f"file:path={img}", "--threads", "2") as srv:
            racing_writers(srv, 64 << 20, rnd)
            large(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok")


main()
