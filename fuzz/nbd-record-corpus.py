#!/usr/bin/python3
"""Record the seed corpus of fuzz_nbd: what real NBD clients send.

    fuzz/nbd-record-corpus.py VDISK [OUTDIR]     (default fuzz/corpus/nbd)

Starts `vdisk serve` on a small RAM disk, puts a recording proxy in front of
it, runs each client below through the proxy and saves the bytes the client
sent, one file per connection, named after the client.  Hand-made hostile
streams (oversized options, bad lengths, early disconnects) are added beside
them.  Re-run it when the server learns something new; the files are small.
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

VDISK = sys.argv[1] if len(sys.argv) > 1 else "build/vdisk"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "corpus", "nbd")
PY = "/usr/bin/python3"

tmp = tempfile.mkdtemp(prefix="nbd-corpus-")
server_sock = os.path.join(tmp, "server.sock")
proxy_sock = os.path.join(tmp, "proxy.sock")
proxy_uri = f"nbd+unix:///?socket={proxy_sock}"
recordings = []  # bytes of each connection, in order


def pump(src, dst, keep):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if keep is not None:
                keep.append(b)
            dst.sendall(b)
    except OSError:
        pass
    for s in (dst,):
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def proxy():
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(proxy_sock)
    ls.listen(16)
    while True:
        c, _ = ls.accept()
        s = socket.socket(socket.AF_UNIX)
        s.connect(server_sock)
        keep = []
        recordings.append(keep)
        threading.Thread(target=pump, args=(c, s, keep), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, None), daemon=True).start()


def run(name, argv):
    before = len(recordings)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    for i, rec in enumerate(recordings[before:]):
        data = b"".join(rec)
        if data:
            path = os.path.join(OUT, f"{name}-{i}" if i else name)
            with open(path, "wb") as f:
                f.write(data)


NBDSH = """
import nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(%r)
h.pwrite(b"a" * 4096, 0, nbd.CMD_FLAG_FUA)
h.pread(4096, 0)
h.pread_structured(4096, 4096, lambda *a: 0, nbd.CMD_FLAG_DF)
h.zero(65536, 8192, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 131072, nbd.CMD_FLAG_FAST_ZERO)
h.trim(4096, 0)
h.cache(65536, 0)
h.flush()
h.block_status(1 << 20, 0, lambda *a: 0)
h.block_status(1 << 20, 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE)
h.shutdown()
""" % proxy_uri

# a client that asks for no block sizes: requests of any alignment, and
# reads large enough to come back with holes
NBDSH_UNALIGNED = """
import nbd
h = nbd.NBD()
h.set_request_block_size(False)
h.add_meta_context("base:allocation")
h.set_strict_mode(0)
h.connect_uri(%r)
h.pwrite(b"u" * 1000, 3)
h.pwrite(b"v" * 3, 4094, nbd.CMD_FLAG_FUA)
h.pread(5000, 1)
h.zero(700, 100)
h.zero(513, 8191)
h.trim(5000, 1)
h.cache(100, 7)
h.block_status(1000, 1, lambda *a: 0)
h.pread_structured(200000, 300001, lambda *a: 0)
h.shutdown()
""" % proxy_uri


def hostile():
    IHAVEOPT = 0x49484156454F5054

    def opt(o, data=b"", length=None):
        return struct.pack(">QII", IHAVEOPT, o, len(data) if length is None else length) + data

    def req(cmd, off, length, flags=0, data=b""):
        return struct.pack(">IHHQQI", 0x25609513, flags, cmd, 1, off, length) + data

    go = opt(7, struct.pack(">IH", 0, 0))
    start = struct.pack(">I", 3)
    return {
        "hostile-4g-option": start + opt(0x77, b"x" * 64, 0xFFFFFFFF),
        "hostile-big-option": start + opt(0x77, b"y" * 70000) + opt(3),
        "hostile-name-past-option": start + opt(7, struct.pack(">I", 99) + b"ab\0\0"),
        "hostile-info-count": start + opt(6, struct.pack(">IH", 0, 900) + b"\0\3"),
        "hostile-meta-count": start + opt(8) +
        opt(10, struct.pack(">II", 0, 0xFFFFFFFF)),
        "hostile-name-4097": start + opt(6, struct.pack(">I", 4097) + b"n" * 4097 + b"\0\0"),
        "hostile-export-name-4g": start + opt(1, b"", 0xFFFFFFFF),
        "hostile-bad-flags": struct.pack(">I", 0xFFFFFFFF) + go,
        "hostile-request-first": start + req(0, 0, 512),
        "hostile-write-33m": start + go + req(1, 0, (32 << 20) + 512, data=b"z" * 1000),
        "hostile-write-65m": start + go + req(1, 0, (64 << 20) + 512, data=b"z" * 1000),
        "hostile-unaligned": start + opt(8) + go + req(1, (1 << 20) - 3, 3, data=b"end") +
        req(6, (1 << 20) - 1, 2) + req(0, 1, (1 << 20) - 1) + req(4, 7, 1) +
        req(6, 5, 9, flags=16) + req(1, 1, (64 << 20) - 1, data=b"w" * 3000),
        "hostile-wrap": start + opt(8) + go + req(0, (1 << 64) - 512, 1024) +
        req(1, (1 << 64) - 512, 1024, data=bytes(1024)) + req(4, (1 << 64) - 512, 4096),
        "hostile-unknown-cmd-flags": start + go + req(99, 0, 0) + req(0, 0, 512, flags=0xFF) +
        req(3, 512, 0) + req(7, 0, 512),
        "hostile-mid-payload": start + go + req(1, 0, 65536, data=b"p" * 100),
        "hostile-starttls-garbage": start + opt(5) + b"\x16\x03\x01" + os.urandom(200),
        "hostile-export-name-no-zeroes": struct.pack(">I", 1) + opt(1) + req(0, 0, 512) +
        req(2, 0, 0),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    srv = subprocess.Popen([VDISK, "serve", "ram:size=1M,huge-pages=off", "--unix", server_sock],
                           stdout=subprocess.PIPE)
    srv.stdout.readline()
    threading.Thread(target=proxy, daemon=True).start()
    while not os.path.exists(proxy_sock):
        pass
    try:
        run("nbdinfo-json", ["nbdinfo", "--json", proxy_uri])
        run("nbdinfo-map", ["nbdinfo", "--map", proxy_uri])
        run("nbdinfo-list", ["nbdinfo", "--list", proxy_uri])
        data = os.path.join(tmp, "data")
        with open(data, "wb") as f:
            f.write(os.urandom(48 << 10) + bytes(80 << 10))
        run("nbdcopy-to", ["nbdcopy", "--connections=1", data, proxy_uri])
        run("nbdcopy-from", ["nbdcopy", "--connections=1", proxy_uri, os.path.join(tmp, "back")])
        run("qemu-io", ["qemu-io", "-f", "raw", proxy_uri, "-c", "write -P 1 0 4k",
                        "-c", "write -f -P 2 4k 4k", "-c", "write -z 8k 4k", "-c", "discard 64k 64k",
                        "-c", "aio_write -P 3 128k 8k", "-c", "aio_flush", "-c", "read -P 3 128k 8k"])
        run("libnbd-all-commands", [PY, "-c", NBDSH])
        run("libnbd-unaligned", [PY, "-c", NBDSH_UNALIGNED])
    finally:
        srv.terminate()
        srv.wait()
    for name, data in hostile().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(os.listdir(OUT))} files in {OUT}")


main()
