#!/usr/bin/python3
# Every reply obeys proto.md's rules, checked chunk by chunk over thousands of
# seeded random requests (every command, valid and invalid offsets, lengths
# and flags) with simple and with structured replies, from clients held to the
# block sizes and from clients that asked for none (unaligned requests served), on a 512-byte and a
# 4 KiB-sector disk, a read-only one, and disks failing at random through the
# fault layer: the cookie echoed; no simple reply to a read once structured
# replies are on; NBD_REPLY_FLAG_DONE on the last chunk only and no other flag;
# NONE empty; OFFSET_DATA at least 9 bytes, inside the request, covering it;
# one BLOCK_STATUS chunk of 4 + 8n bytes, descriptors non-empty, a single one
# within the length with REQ_ONE, the first n-1 inside the request; error
# chunks at least 6 bytes with the message inside them and a non-zero error;
# read payloads only on success.  Also: a second NBD_OPT_SET_META_CONTEXT
# replaces the first, so block status is refused after one that selects none.
import json
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403


def reply_strict(r, req, structured):
    """(error, read data, block status descriptors) of one reply, checked."""
    cmd, off, ln, flags, cookie = req
    magic = struct.unpack(">I", r.recv_exact(4))[0]
    if magic == SIMPLE_MAGIC:
        err, ck = struct.unpack(">IQ", r.recv_exact(12))
        assert ck == cookie, (ck, req)
        assert not (structured and cmd == CMD_READ), f"simple reply to a read: {req}"
        assert cmd != CMD_BLOCK_STATUS or err, f"simple success for block status: {req}"
        data = r.recv_exact(ln) if (cmd == CMD_READ and not err) else b""
        return err, data, None
    assert structured, "a structured reply that was not negotiated"
    err, covered, data, descs = 0, 0, {}, None
    while True:
        assert magic == STRUCT_MAGIC, hex(magic)
        fl, rt, ck, length = struct.unpack(">HHQI", r.recv_exact(16))
        assert ck == cookie, (ck, req)
        assert fl & ~1 == 0, f"unknown reply flags {fl:#x}: {req}"
        p = r.recv_exact(length)
        if rt == 0:  # NONE
            assert length == 0 and fl & 1, (length, fl, req)
        elif rt in (1, 2):  # OFFSET_DATA, OFFSET_HOLE
            assert cmd == CMD_READ, req
            assert length >= 9 if rt == 1 else length == 12, (rt, length, req)
            o = struct.unpack(">Q", p[:8])[0]
            n = length - 8 if rt == 1 else struct.unpack(">I", p[8:12])[0]
            assert n and off <= o and o + n <= off + ln, f"content outside {req}"
            data[o] = p[8:] if rt == 1 else bytes(n)
            covered += n
        elif rt == 5:  # BLOCK_STATUS
            assert cmd == CMD_BLOCK_STATUS, req
            assert length >= 12 and (length - 4) % 8 == 0, (length, req)
            assert descs is None, f"two block status chunks: {req}"
            assert struct.unpack(">I", p[:4])[0] == r.ctx_id, "unknown context id"
            descs = [struct.unpack(">II", p[i:i + 8]) for i in range(4, length, 8)]
            assert all(d[0] for d in descs), f"empty descriptor: {descs}"
            if flags & 8:
                assert len(descs) == 1 and descs[0][0] <= ln, (descs, req)
            assert sum(d[0] for d in descs[:-1]) < ln, (descs, req)
        elif rt & 0x8000:  # error chunks
            assert length >= (6 if rt == 0x8001 else 14), (rt, length, req)
            e, ml = struct.unpack(">IH", p[:6])
            assert e != 0, f"error chunk without an error: {req}"
            assert rt in (0x8001, 0x8002), f"unknown error chunk {rt:#x}"
            assert ml <= length - (6 if rt == 0x8001 else 14), (ml, length)
            err = e
        else:
            raise AssertionError(f"unknown chunk type {rt}: {req}")
        if fl & 1:
            break
        magic = struct.unpack(">I", r.recv_exact(4))[0]
    if cmd == CMD_READ and not err:
        assert covered == ln, f"{covered} of {ln} bytes in the reply to {req}"
        return err, b"".join(data[k] for k in sorted(data)), None
    if cmd == CMD_BLOCK_STATUS and not err:
        assert descs is not None, f"block status success without a status chunk: {req}"
    return err, b"", descs


def run(spec, *args, seed=1, n=800, faults=False):
    rnd = random.Random(seed)
    srv = Server(spec, *args)
    try:
        # a client that asks for no block sizes gets its unaligned requests
        # served (read-modify-write, sparse reads), through the same rules
        for structured, strict in ((False, True), (True, True), (False, False), (True, False)):
            r = Raw(srv.sock, timeout=60)
            r.greeting()
            r.go(structured=structured, meta=structured,
                 infos=(INFO_BLOCK_SIZE,) if strict else ())
            size = r.size
            for i in range(n):
                cmd = rnd.choice([0, 1, 3, 4, 5, 6, 7, 9])
                off = rnd.choice([0, 512, 4096, size - 4096, size, size + 4096,
                                  rnd.randrange(0, size), (1 << 64) - 512])
                ln = rnd.choice([0, 512, 4096, 8192, 1 << 20, rnd.randrange(0, 65536),
                                 0xFFFFFE00])
                flags = rnd.choice([0, 0, 0, 1, 2, 4, 8, 16, 1 << rnd.randrange(16)])
                if cmd in (CMD_READ, CMD_WRITE) and ln > (1 << 20):
                    ln = 4096
                data = bytes([rnd.randrange(256)]) * ln if cmd == CMD_WRITE else b""
                r.request(cmd, off, ln, flags=flags, cookie=i, data=data)
                reply_strict(r, (cmd, off, ln, flags, i), structured)
            r.request(CMD_DISC)
            assert r.closed_by_server()
    except BaseException:
        srv.__exit__(*sys.exc_info())
        raise
    srv.stop(flush_may_fail=faults)


def meta_replaced():
    with Server("ram:size=1M") as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.opt(OPT_STRUCTURED_REPLY)
        assert r.reply()[1] == REP_ACK
        r.opt(OPT_SET_META_CONTEXT, meta_data())
        assert [t for t, _ in r.replies()] == [REP_META_CONTEXT, REP_ACK]
        r.opt(OPT_SET_META_CONTEXT, meta_data(b"", ()))
        assert [t for t, _ in r.replies()] == [REP_ACK]
        r.go()
        r.request(CMD_BLOCK_STATUS, 0, 4096, cookie=1)
        assert reply_strict(r, (CMD_BLOCK_STATUS, 0, 4096, 0, 1), True)[0] == EINVAL
        r.close()


def main():
    need_env()
    run("ram:size=1M")
    run("ram:size=1M,sector-size=4096", seed=2)
    run("ram:size=1M", "--read-only", seed=3)
    for seed, effect in ((4, {"error": "io", "errno": "EIO"}), (5, {"effect": "short"})):
        rules = [dict({"op": "any", "probability": 0.3, "seed": seed}, **effect)]
        run(json.dumps({"type": "fault", "inner": {"type": "ram", "size": "1M"},
                        "rules": rules}), seed=seed, faults=True)
    meta_replaced()
    print("ok")


main()
