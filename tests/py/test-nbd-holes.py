#!/usr/bin/python3
# Sparse reads: with structured replies, zeros in reads of 64 KiB or more
# come back as NBD_REPLY_TYPE_OFFSET_HOLE chunks; data comes as OFFSET_DATA
# chunks and the chunks tile the request exactly (checked chunk by chunk
# through libnbd's pread_structured callback).  Once a connection has met
# zeros, ranges the disk reports as zero are not even read (a fault layer that
# fails reads there shows it).  DF asks for
# one data chunk; simple replies and small reads carry zeros as before.
# nbdcopy --no-extents copies a 90 % sparse export byte for byte, on the ram
# and the file backends, unaligned reads included.
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")

SIZE = 16 << 20


def chunks_of(h, length, offset, flags=0):
    got = []

    def cb(subbuf, off, status, err):
        got.append((status, off, bytes(subbuf)))
        return 0

    buf = h.pread_structured(length, offset, cb, flags=flags)
    got.sort(key=lambda c: c[1])
    pos = offset
    for status, off, data in got:
        assert off == pos, f"chunks do not tile {offset}+{length}: {got[:4]}"
        pos += len(data)
        if status == nbd.READ_HOLE:
            assert data == bytes(len(data))
    assert pos == offset + length
    return buf, [(s, o, len(d)) for s, o, d in got]


def layout(h):
    """Data at 1 MiB (+64K) and at 5 MiB - 3 (+100 bytes); the rest holes."""
    h.pwrite(b"\xaa" * (64 << 10), 1 << 20)
    h.pwrite(b"\xbb" * 100, (5 << 20) - 3)
    model = bytearray(SIZE)
    model[1 << 20:(1 << 20) + (64 << 10)] = b"\xaa" * (64 << 10)
    model[(5 << 20) - 3:(5 << 20) + 97] = b"\xbb" * 100
    return model


def loose(srv):
    h = nbd.NBD()
    h.set_request_block_size(False)  # unaligned requests allowed
    h.connect_unix(srv.sock)
    return h


def check_holes(srv):
    h = loose(srv)
    model = layout(h)
    # all hole: one hole chunk and no data
    buf, ch = chunks_of(h, 1 << 20, 8 << 20)
    assert ch == [(nbd.READ_HOLE, 8 << 20, 1 << 20)], ch
    assert buf == bytes(1 << 20)
    # hole, data, hole
    buf, ch = chunks_of(h, 2 << 20, 512 << 10)
    assert [c[0] for c in ch] == [nbd.READ_HOLE, nbd.READ_DATA, nbd.READ_HOLE], ch
    assert ch[1][1:] == (1 << 20, 64 << 10), ch
    assert buf == bytes(model[512 << 10:(512 << 10) + (2 << 20)])
    # around the unaligned data, from an unaligned offset
    off = (4 << 20) + 7
    buf, ch = chunks_of(h, (2 << 20) - 5, off)
    assert nbd.READ_HOLE in [c[0] for c in ch] and nbd.READ_DATA in [c[0] for c in ch], ch
    assert buf == bytes(model[off:off + (2 << 20) - 5])
    # DF: one data chunk; small reads: data
    buf, ch = chunks_of(h, 1 << 20, 8 << 20, flags=nbd.CMD_FLAG_DF)
    assert [c[0] for c in ch] == [nbd.READ_DATA], ch
    buf, ch = chunks_of(h, 4096, 8 << 20)
    assert [c[0] for c in ch] == [nbd.READ_DATA], ch
    h.shutdown()
    # simple replies: zeros, as always
    h = nbd.NBD()
    h.set_request_structured_replies(False)
    h.connect_unix(srv.sock)
    assert h.pread(SIZE, 0) == bytes(model)
    h.shutdown()


def holes_not_read():
    # reads of [8M, 16M) fail; once a connection's reads have met zeros it
    # asks the disk for extents first, and a range reported as zero is not
    # read at all: it succeeds as a hole.  A fresh connection reads it: EIO.
    rules = [{"op": "read", "offset": 8 << 20, "length": 8 << 20, "error": "io", "errno": "EIO"}]
    spec = json.dumps({"type": "fault", "inner": {"type": "ram", "size": SIZE}, "rules": rules})
    with Server(spec) as srv:
        fresh = loose(srv)
        h = loose(srv)
        _, ch = chunks_of(h, 1 << 20, 0)
        assert ch == [(nbd.READ_HOLE, 0, 1 << 20)], ch
        _, ch = chunks_of(h, 1 << 20, 8 << 20)
        assert ch == [(nbd.READ_HOLE, 8 << 20, 1 << 20)], ch
        # data there: read (and failing), and the connection reads at once again
        h.pwrite(b"d" * 4096, 9 << 20)
        try:
            h.pread(1 << 20, 9 << 20)
            raise AssertionError("a read of failing data succeeded")
        except nbd.Error as e:
            assert e.errnum == errno.EIO, e
        try:
            fresh.pread(1 << 20, 12 << 20)
            raise AssertionError("a fresh connection did not read the range")
        except nbd.Error as e:
            assert e.errnum == errno.EIO, e
        h.shutdown()
        fresh.shutdown()


def nbdcopy_sparse(srv, tmp):
    if not shutil.which("nbdcopy"):
        return
    # 10 % data in 64 KiB pieces every 640 KiB
    h = connect(srv)
    h.zero(SIZE, 0)
    model = bytearray(SIZE)
    for off in range(0, SIZE, 640 << 10):
        piece = os.urandom(64 << 10)
        h.pwrite(piece, off)
        model[off:off + len(piece)] = piece
    h.shutdown()
    out = os.path.join(tmp, "copy.img")
    subprocess.run(["nbdcopy", "--no-extents", srv.uri, out], check=True)
    with open(out, "rb") as f:
        assert f.read() == bytes(model), "nbdcopy --no-extents copy differs"


def main():
    need_env()
    tmp = tempfile.mkdtemp(prefix="vdisk-holes-")
    try:
        holes_not_read()
        with Server(f"ram:size={SIZE}") as srv:
            check_holes(srv)
            nbdcopy_sparse(srv, tmp)
        img = os.path.join(tmp, "disk.img")
        with open(img, "wb") as f:
            f.truncate(SIZE)
        with Server(f"file:path={img}") as srv:
            check_holes(srv)
            nbdcopy_sparse(srv, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok")


main()
