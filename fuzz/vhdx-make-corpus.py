#!/usr/bin/python3
"""Make the seed corpora of fuzz_vhdx (images as patch lists over a zero file)
and fuzz_vhdxlog (a log GUID and a log) from images qemu-img and
tests/py/vhdxgen.py write.  Run from the source tree; rewrites
fuzz/corpus/vhdx/ and fuzz/corpus/vhdxlog/."""
import os
import struct
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "py"))
import vhdxgen  # noqa: E402

MiB = 1 << 20


def patches(img):
    data = open(img, "rb").read()
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i:i + 512] == bytes(512):
            i += 512
            continue
        j = i
        while j < len(data) and data[j:j + 512] != bytes(512) and j - i < 60 * 1024:
            j += 512
        out += struct.pack("<IH", i, j - i) + data[i:j]
        i = j
    # the file's length: a last patch of one zero byte at its end
    out += struct.pack("<IH", len(data) - 1, 1) + b"\0"
    return bytes(out)


def log_of(img):
    data = open(img, "rb").read()
    h1, h2 = data[64 * 1024:68 * 1024], data[128 * 1024:132 * 1024]
    h = h1 if struct.unpack_from("<Q", h1, 8)[0] > struct.unpack_from("<Q", h2, 8)[0] else h2
    ln, off = struct.unpack_from("<IQ", h, 68)
    log = data[off:off + ln].rstrip(b"\0")
    log += bytes(-len(log) % 4096)
    return h[48:64] + log


def main():
    cdir = os.path.join(here, "corpus", "vhdx")
    ldir = os.path.join(here, "corpus", "vhdxlog")
    for d in (cdir, ldir):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    tmp = tempfile.mkdtemp()
    imgs = {}
    for name, opts in (("qemu-1m", "block_size=1M"), ("qemu-zero-off", "block_size=1M,block_state_zero=off")):
        p = os.path.join(tmp, name + ".vhdx")
        subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, p, "4M"], check=True)
        subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 0 4k", "-c",
                        "write -P 0x33 2M 8k", p], check=True, capture_output=True)
        imgs[name] = p
    g = os.path.join(tmp, "gen-4k.vhdx")
    vhdxgen.make(g, 4 * MiB, [(0, b"\x11" * 8192), (3 * MiB, b"\x22" * 4096)], lss=4096)
    imgs["gen-4k"] = g
    dpath = os.path.join(tmp, "gen-dirty.vhdx")
    vhdxgen.make(dpath, 4 * MiB, [(0, b"\x44" * 4096)], dirty=True)
    imgs["gen-dirty"] = dpath
    base = os.path.join(tmp, "base.vhdx")
    vhdxgen.make(base, 4 * MiB, [(0, b"\x55" * MiB)])
    child = os.path.join(tmp, "child.vhdx")
    vhdxgen.make(child, 4 * MiB, [(512, b"\x66" * 1024)], parent=base)
    imgs["gen-child-no-parent"] = child
    for name, p in imgs.items():
        with open(os.path.join(cdir, name), "wb") as f:
            f.write(patches(p))
    with open(os.path.join(ldir, "gen-dirty"), "wb") as f:
        f.write(log_of(dpath))
    with open(os.path.join(ldir, "qemu-1m"), "wb") as f:
        # qemu clears the log GUID after each flush: seed with its entries' GUID
        raw = log_of(imgs["qemu-1m"])
        f.write(raw[16 + 32:16 + 48] + raw[16:])
    for root, _, files in os.walk(tmp):
        for f in files:
            os.unlink(os.path.join(root, f))
    os.rmdir(tmp)


main()
