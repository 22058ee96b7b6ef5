#!/usr/bin/python3
# Every error the server can send, and that none becomes success: range
# (ENOSPC for writes, EINVAL for the rest, including offset+length wrapping
# 64 bits), alignment, unknown commands and flags, oversized payloads (the
# write payload is skipped and the connection goes on), read-only (EPERM), and
# disk errors from the fault layer (EIO, ENOSPC, EPERM, ENOTSUP for a fast
# zero the disk cannot do, and only for a fast zero), with simple and with
# structured replies.
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")

SIZE = 1 << 20
U64 = (1 << 64) - 1


def check(r, cmd, offset, length, want, flags=0, data=b"", read_len=None, what=""):
    r.request(cmd, offset, length, flags=flags, cookie=0xC0FFEE, data=data)
    cookie, err, payload = r.read_reply(read_len)
    assert cookie == 0xC0FFEE, what
    assert err == want, f"{what}: error {err}, expected {want}"
    return payload


def protocol_errors(srv, structured):
    r = Raw(srv.sock)
    r.greeting()
    r.go(structured=structured, meta=False)
    mode = "structured" if structured else "simple"
    # in range: fine
    check(r, CMD_WRITE, 0, 512, 0, data=b"a" * 512, what=f"{mode} write")
    assert check(r, CMD_READ, 0, 512, 0, read_len=512, what="read") == b"a" * 512
    # out of range and wrapping
    check(r, CMD_READ, SIZE, 512, EINVAL, what="read past the end")
    check(r, CMD_READ, SIZE - 512, 1024, EINVAL, what="read across the end")
    check(r, CMD_READ, U64 - 511, 1024, EINVAL, what="read wrapping 2^64")
    check(r, CMD_WRITE, SIZE, 512, ENOSPC, data=b"b" * 512, what="write past the end")
    check(r, CMD_WRITE, U64 - 511, 1024, ENOSPC, data=b"b" * 1024, what="write wrapping")
    check(r, CMD_TRIM, SIZE - 512, 1024, EINVAL, what="trim across the end")
    check(r, CMD_TRIM, U64 - 511, 4096, EINVAL, what="trim wrapping")
    check(r, CMD_WRITE_ZEROES, SIZE, 512, ENOSPC, what="zero past the end")
    check(r, CMD_WRITE_ZEROES, U64 - 511, 1024, ENOSPC, what="zero wrapping")
    check(r, CMD_CACHE, SIZE, 512, EINVAL, what="cache past the end")
    # alignment (minimum block 512, asked for by Raw.go(): strict)
    check(r, CMD_READ, 1, 512, EINVAL, read_len=512, what="unaligned read")
    check(r, CMD_WRITE, 0, 100, EINVAL, data=b"c" * 100, what="short write")
    check(r, CMD_TRIM, 512, 1, EINVAL, what="unaligned trim")
    # unknown commands and flags
    check(r, 99, 0, 0, EINVAL, what="unknown command")
    check(r, CMD_READ, 0, 512, EINVAL, flags=1 << 7, read_len=512, what="unknown flag")
    check(r, CMD_READ, 0, 512, EINVAL, flags=1 << 3, read_len=512, what="REQ_ONE on a read")
    check(r, CMD_WRITE, 0, 512, EINVAL, flags=1 << 1, data=b"d" * 512, what="NO_HOLE on a write")
    check(r, CMD_FLUSH, 4096, 0, EINVAL, what="flush with an offset")
    check(r, CMD_BLOCK_STATUS, 0, 512, EINVAL, what="block status without a context")
    if not structured:
        check(r, CMD_READ, 0, 512, EINVAL, flags=1 << 2, read_len=512, what="DF, simple")
    # FUA is accepted on any command once offered
    assert check(r, CMD_READ, 0, 512, 0, flags=1, read_len=512, what="FUA read") == b"a" * 512
    # oversized payloads (--max-payload 256K)
    big = (256 << 10) + 512
    check(r, CMD_READ, 0, big, EOVERFLOW if structured else EINVAL, read_len=big,
          what="read over the maximum")
    check(r, CMD_WRITE, 0, big, EINVAL, data=bytes(big), what="write over the maximum")
    check(r, CMD_WRITE, 1, big, EINVAL, data=bytes(big), what="unaligned write over it")
    # the connection is still in step after all that
    check(r, CMD_WRITE, 512, 512, 0, flags=1, data=b"e" * 512, what="FUA write")
    assert check(r, CMD_READ, 0, 1024, 0, read_len=1024) == b"a" * 512 + b"e" * 512
    # zero-length requests are harmless
    check(r, CMD_READ, 0, 0, 0, what="empty read")
    check(r, CMD_WRITE, 0, 0, 0, what="empty write")
    check(r, CMD_TRIM, 0, 0, 0, what="empty trim")
    check(r, CMD_FLUSH, 0, 0, 0, what="flush")
    r.request(CMD_DISC)
    assert r.closed_by_server()


def libnbd_strict_off(srv):
    h = connect(srv)
    h.set_strict_mode(0)
    for fn, what in ((lambda: h.pread(512, SIZE), "EINVAL"),
                     (lambda: h.pwrite(b"x" * 512, SIZE), "ENOSPC"),
                     (lambda: h.trim(512, SIZE), "EINVAL"),
                     (lambda: h.pread(100, 0), "EINVAL")):
        try:
            fn()
            raise AssertionError(f"expected {what}")
        except nbd.Error as e:
            assert e.errnum == getattr(__import__("errno"), what), (e.string, what)
    h.shutdown()


def read_only():
    with Server("ram:size=1M", "--read-only") as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.go()
        assert r.eflags & 2, "READ_ONLY not set"
        assert not r.eflags & (1 << 3), "FUA offered on a read-only export"
        check(r, CMD_WRITE, 0, 512, EPERM, data=bytes(512), what="write, read-only")
        check(r, CMD_TRIM, 0, 512, EPERM, what="trim, read-only")
        check(r, CMD_WRITE_ZEROES, 0, 512, EPERM, what="zero, read-only")
        check(r, CMD_READ, 0, 512, 0, read_len=512, what="read, read-only")
        check(r, CMD_FLUSH, 0, 0, 0, what="flush, read-only")
        r.close()


def disk_errors():
    rules = [
        {"op": "read", "offset": 0, "length": 4096, "error": "io", "errno": "EIO"},
        {"op": "read", "offset": 4096, "length": 4096, "error": "medium",
         "medium": "unrecovered-read"},
        {"op": "write", "offset": 8192, "length": 4096, "error": "io", "errno": "ENOSPC"},
        {"op": "write", "offset": 12288, "length": 4096, "error": "read-only"},
        {"op": "unmap", "offset": 16384, "length": 4096, "error": "io", "errno": "EIO"},
        {"op": "write-zeroes", "offset": 20480, "length": 4096, "error": "not-supported"},
        {"op": "flush", "nth": 1, "error": "io", "errno": "EIO"},
    ]
    spec = json.dumps({"type": "fault", "inner": {"type": "ram", "size": "1M"}, "rules": rules})
    with Server(spec) as srv:
        for structured in (False, True):
            r = Raw(srv.sock)
            r.greeting()
            r.go(structured=structured)
            check(r, CMD_READ, 0, 4096, EIO, read_len=4096, what="read I/O error")
            check(r, CMD_READ, 4096, 512, EIO, read_len=512, what="medium error")
            check(r, CMD_READ, 8192, 4096, 0, read_len=4096, what="read beside the faults")
            check(r, CMD_WRITE, 8192, 512, ENOSPC, data=bytes(512), what="disk full")
            check(r, CMD_WRITE, 12288, 512, EPERM, data=bytes(512), what="disk read-only")
            check(r, CMD_TRIM, 16384, 4096, EIO, what="trim I/O error")
            if r.eflags & (1 << 11):
                check(r, CMD_WRITE_ZEROES, 20480, 4096, ENOTSUP, flags=1 << 4,
                      what="fast zero the disk cannot do")
            # without FAST_ZERO the core writes the zeros instead
            check(r, CMD_WRITE_ZEROES, 20480, 4096, 0, what="slow zero")
            if not structured:
                check(r, CMD_FLUSH, 0, 0, EIO, what="flush error")
            check(r, CMD_FLUSH, 0, 0, 0, what="flush after the error")
            r.close()


def not_supported():
    # ENOTSUP is only for a fast zero: a disk that cannot write at all fails a
    # plain write-zeroes (which the core then emulates with writes) otherwise
    rules = [{"op": "write", "error": "not-supported"},
             {"op": "write-zeroes", "error": "not-supported"}]
    spec = json.dumps({"type": "fault", "inner": {"type": "ram", "size": "1M"}, "rules": rules})
    with Server(spec) as srv:
        for structured in (False, True):
            r = Raw(srv.sock)
            r.greeting()
            r.go(structured=structured)
            assert r.eflags & (1 << 11), "fast zero not offered"
            check(r, CMD_WRITE_ZEROES, 0, 4096, EINVAL, flags=1 << 1,
                  what="write-zeroes, no hole, on a disk that cannot write")
            check(r, CMD_WRITE_ZEROES, 0, 4096, ENOTSUP, flags=1 << 4, what="fast zero")
            check(r, CMD_WRITE, 0, 512, EINVAL, data=bytes(512), what="write")
            r.close()


def error_message():
    # a structured error carries a message for the user
    with Server("ram:size=1M") as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.go()
        r.request(CMD_READ, SIZE, 512, cookie=3)
        magic, flags, rtype, cookie, length = struct.unpack(">IHHQI", r.recv_exact(20))
        payload = r.recv_exact(length)
        assert magic == STRUCT_MAGIC and flags & 1 and rtype == 0x8001 and cookie == 3
        err, mlen = struct.unpack(">IH", payload[:6])
        assert err == EINVAL and b"end of the export" in payload[6:6 + mlen], payload
        r.close()


def main():
    with Server("ram:size=1M", "--max-payload", "256K") as srv:
        protocol_errors(srv, structured=False)
        protocol_errors(srv, structured=True)
        libnbd_strict_off(srv)
    read_only()
    disk_errors()
    not_supported()
    error_message()
    print("ok")


main()
