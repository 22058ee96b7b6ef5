#!/usr/bin/python3
"""Writes the seed corpus of fuzz_vhd (fuzz/corpus/vhd/): images qemu-img makes
(dynamic, fixed, force_size) filled by qemu-io, and malformed images built here
byte by byte from the VHD specification (bad-*), each broken in one field.
tests/sh/test-vhd-bad.sh opens every bad-* image and expects the error to name
that field.  Run from the source tree: fuzz/vhd-make-corpus.py"""
import os
import struct
import subprocess
import sys
import tempfile
import uuid

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "vhd")
FREE = 0xFFFFFFFF


def csum(b, skip):
    return (~(sum(b[:skip]) + sum(b[skip + 4:]))) & 0xFFFFFFFF


def footer(size, dtype, data_offset, creator=b"vdsk", geom=(65535, 16, 255), cookie=b"conectix",
           version=0x00010000, bad_sum=False):
    f = bytearray(512)
    f[0:8] = cookie
    struct.pack_into(">IIQI", f, 8, 2, version, data_offset, 0)
    f[28:32] = creator
    struct.pack_into(">I", f, 32, 0x00010000)
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQHBBI", f, 40, size, size, geom[0], geom[1], geom[2], dtype)
    f[68:84] = uuid.UUID(int=0x1234).bytes
    struct.pack_into(">I", f, 64, csum(f, 64) ^ (1 if bad_sum else 0))
    return bytes(f)


def header(entries, block, bat_off=1536, cookie=b"cxsparse", locators=(), parent_name="",
           bad_sum=False, parent_id=b"\0" * 16):
    h = bytearray(1024)
    h[0:8] = cookie
    struct.pack_into(">QQIII", h, 8, 0xFFFFFFFFFFFFFFFF, bat_off, 0x00010000, entries, block)
    h[40:56] = parent_id
    name = parent_name.encode("utf-16-be")
    h[64:64 + len(name)] = name
    for i, (code, off, data) in enumerate(locators):
        struct.pack_into(">4sIIIQ", h, 576 + 24 * i, code, 512, data, 0, off)
    struct.pack_into(">I", h, 36, csum(h, 36) ^ (1 if bad_sum else 0))
    return bytes(h)


def dynamic(size=1 << 20, block=64 << 10, entries=None, bat=None, dtype=3, blocks=(),
            hdr=None, foot=None, extra=b"", locdata=b""):
    """A dynamic image: footer copy, header, BAT, locator data, blocks, footer."""
    if entries is None:
        entries = (size + block - 1) // block
    bat_bytes = (entries * 4 + 511) // 512 * 512
    pos = 1536 + bat_bytes + len(locdata)
    table = [FREE] * entries
    body = bytearray()
    bm = (block // 512 + 7) // 8
    bm = (bm + 511) // 512 * 512
    for idx, fill in blocks:
        table[idx] = (pos + len(body)) // 512
        body += b"\xff" * bm + bytes([fill]) * block
    if bat is not None:
        table = bat(table, pos)
    f = foot or footer(size, dtype, 512)
    h = hdr or header(entries, block)
    t = b"".join(struct.pack(">I", e) for e in table[:entries]).ljust(bat_bytes, b"\xff")
    return f + h + t + locdata + bytes(body) + extra + f


def put(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def qemu_seeds(tmp):
    runs = [
        ("qemu-dynamic", "subformat=dynamic", "4M"),
        ("qemu-dynamic-force", "subformat=dynamic,force_size=on", "3M"),
        ("qemu-dynamic-empty", "subformat=dynamic", "100M"),
        ("qemu-fixed", "subformat=fixed", "256k"),
        ("qemu-fixed-force", "subformat=fixed,force_size=on", "257k"),
    ]
    for name, opts, size in runs:
        p = os.path.join(tmp, name)
        subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", opts, p, size], check=True)
        if name in ("qemu-dynamic", "qemu-fixed", "qemu-fixed-force"):
            subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x5a 0 4k", "-c",
                            "write -P 0xa5 64k 1k", p], check=True, stdout=subprocess.DEVNULL)
        with open(p, "rb") as f:
            data = f.read()
        put(name, data)


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        qemu_seeds(tmp)
    put("ok-dynamic", dynamic(blocks=[(0, 0x11), (3, 0x22)]))
    put("ok-dynamic-odd", dynamic(size=(1 << 20) + 512, block=4096, blocks=[(256, 0x33)]))
    put("ok-fixed", bytes(range(256)) * 64 + footer(16384, 2, 0xFFFFFFFFFFFFFFFF))

    # truncated, or no footer at all
    put("bad-truncated-footer", dynamic(blocks=[(0, 1)])[:-300])
    put("bad-tiny", b"conectix" + b"\0" * 100)
    put("bad-cookie", b"\0" * 4096 + footer(4096, 2, 0xFFFFFFFFFFFFFFFF, cookie=b"conectiy"))
    put("bad-checksum", b"\0" * 4096 + footer(4096, 2, 0xFFFFFFFFFFFFFFFF, bad_sum=True))
    put("bad-version", b"\0" * 4096 + footer(4096, 2, 0xFFFFFFFFFFFFFFFF, version=0x00020000))
    put("bad-disk-type", b"\0" * 4096 + footer(4096, 7, 0xFFFFFFFFFFFFFFFF))
    put("bad-size-not-512", b"\0" * 4096 + footer(4000, 2, 0xFFFFFFFFFFFFFFFF))
    put("bad-fixed-too-big", b"\0" * 4096 + footer(8192, 2, 0xFFFFFFFFFFFFFFFF))
    put("bad-size-huge", dynamic(foot=footer(1 << 60, 3, 512)))
    # the dynamic header
    put("bad-header-cookie", dynamic(hdr=header(16, 64 << 10, cookie=b"cxsparsf")))
    put("bad-header-checksum", dynamic(hdr=header(16, 64 << 10, bad_sum=True)))
    put("bad-data-offset", dynamic(foot=footer(1 << 20, 3, 1 << 40)))
    put("bad-block-size-0", dynamic(hdr=header(16, 0)))
    put("bad-block-size-pow2", dynamic(hdr=header(16, 3 << 20)))
    put("bad-block-size-huge", dynamic(hdr=header(16, 1 << 30)))
    put("bad-entries-huge", dynamic(hdr=header(0xFFFFFFFF, 64 << 10)))
    put("bad-entries-small", dynamic(hdr=header(3, 64 << 10)))
    put("bad-bat-offset", dynamic(hdr=header(16, 64 << 10, bat_off=1 << 40)))
    # BAT entries
    put("bad-bat-past-end", dynamic(blocks=[(0, 1)], bat=lambda t, p: t[:5] + [0x00FFFFFF] + t[6:]))
    put("bad-bat-over-header", dynamic(blocks=[(0, 1)], bat=lambda t, p: [1] + t[1:]))
    put("bad-bat-overlap", dynamic(blocks=[(0, 1), (1, 2)], bat=lambda t, p: [t[0], t[0] + 8] + t[2:]))
    # differencing: locators
    put("bad-locator-past-end",
        dynamic(dtype=4, foot=footer(1 << 20, 4, 512),
                hdr=header(16, 64 << 10, locators=[(b"W2ru", 1 << 30, 512)])))
    lone = "\ud800".encode("utf-16-le", "surrogatepass") + "x.vhd".encode("utf-16-le")
    put("bad-locator-name",
        dynamic(dtype=4, foot=footer(1 << 20, 4, 512), locdata=lone.ljust(512, b"\0"),
                hdr=header(16, 64 << 10, locators=[(b"W2ru", 1536 + 512, len(lone))])))
    abs_name = "/etc/passwd".encode("utf-16-le")
    put("bad-locator-absolute",
        dynamic(dtype=4, foot=footer(1 << 20, 4, 512), locdata=abs_name.ljust(512, b"\0"),
                hdr=header(16, 64 << 10, locators=[(b"W2ku", 1536 + 512, len(abs_name))])))
    dotdot = "..\\x.vhd".encode("utf-16-le")
    put("bad-locator-dotdot",
        dynamic(dtype=4, foot=footer(1 << 20, 4, 512), locdata=dotdot.ljust(512, b"\0"),
                hdr=header(16, 64 << 10, locators=[(b"W2ru", 1536 + 512, len(dotdot))])))
    # a parent loop: the image names itself as its parent
    me = ".\\bad-parent-loop".encode("utf-16-le")
    put("bad-parent-loop",
        dynamic(dtype=4, foot=footer(1 << 20, 4, 512), locdata=me.ljust(512, b"\0"),
                hdr=header(16, 64 << 10, locators=[(b"W2ru", 1536 + 512, len(me))],
                           parent_id=uuid.UUID(int=0x1234).bytes)))


if __name__ == "__main__":
    sys.exit(main())
