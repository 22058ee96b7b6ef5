#!/usr/bin/python3
# ctest-labels: no-asan
# The crypt decorator against an independent XTS implementation
# (python3-cryptography, i.e. OpenSSL through another door, with its own tweak
# handling): whole 512- and 4096-byte sectors at sector 0, at small and at
# large sector numbers (the tweak is the sector number, 64-bit little-endian,
# zero-extended), in both directions, for every implementation of the layer.
# The library is driven through ctypes; the image is read and written as a
# plain file.  (Not run under ASan: the sanitized library cannot be loaded
# into an unsanitized interpreter.)
import ctypes
import os
import random
import sys
import tempfile

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:
    print("SKIP: needs python3-cryptography", file=sys.stderr)
    sys.exit(77)

build = os.environ.get("BUILD_DIR")
if not build:
    print("SKIP: run through ctest (BUILD_DIR)", file=sys.stderr)
    sys.exit(77)


class Status(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_uint8), ("medium", ctypes.c_uint8),
                ("reserved", ctypes.c_uint16), ("errnum", ctypes.c_int32)]


lib = ctypes.CDLL(os.path.join(build, "libvdisk.so"))
lib.vdisk_open.restype = ctypes.c_void_p
lib.vdisk_open.argtypes = [ctypes.c_char_p, ctypes.c_uint]
lib.vdisk_unref.argtypes = [ctypes.c_void_p]
lib.vdisk_errmsg.restype = ctypes.c_char_p
for fn in (lib.vdisk_pread, lib.vdisk_pwrite):
    fn.restype = Status
lib.vdisk_pread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64]
lib.vdisk_pwrite.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64,
                             ctypes.c_uint]
lib.vdisk_flush_sync.restype = Status
lib.vdisk_flush_sync.argtypes = [ctypes.c_void_p]

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def xts(key, sector, data, encrypt):
    c = Cipher(algorithms.AES(key), modes.XTS(sector.to_bytes(16, "little")))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def open_disk(spec):
    d = lib.vdisk_open(spec.encode(), 0)
    if not d:
        raise SystemExit("cannot open %s: %s" % (spec, lib.vdisk_errmsg().decode()))
    return d


rng = random.Random(1619)
key = bytes(rng.getrandbits(8) for _ in range(64))
assert key[:32] != key[32:]

with tempfile.TemporaryDirectory(prefix="vdisk-crypt-oracle.") as tmp:
    for ss in (512, 4096):
        # sparse, so that large sector numbers exist (above 2^32 for 512-byte
        # sectors; ext4 files end at 16 TiB)
        count = (1 << 32) + 64 if ss == 512 else (1 << 32) - 16
        size = count * ss
        sectors = [0, 5, 9, 255, 0x1234, 0xfedcba9, count - 40, count - 3]
        for impl in ("auto", "xts", "xts-evp", "ecb", "ecb-generic"):
            path = os.path.join(tmp, "d-%d-%s.img" % (ss, impl))
            spec = ('{"type":"crypt","implementation":"%s","key-hex":"%s","inner":'
                    '{"type":"file","path":"%s","create":%d,"sector-size":%d}}'
                    % (impl, key.hex(), path, size, ss))
            d = open_disk(spec)
            plain = {}
            # 1. written through the layer, decrypted by the oracle
            for s in sectors:
                n = 3 if s + 3 <= size // ss else 1
                data = bytes(rng.getrandbits(8) for _ in range(n * ss))
                buf = ctypes.create_string_buffer(data, len(data))
                st = lib.vdisk_pwrite(d, buf, len(data), s * ss, 0)
                check(st.kind == 0, "%s/%d: write at %d: kind %d" % (impl, ss, s, st.kind))
                check(buf.raw == data, "%s/%d: the caller's buffer changed" % (impl, ss))
                plain[s] = data
            check(lib.vdisk_flush_sync(d).kind == 0, "flush")
            with open(path, "rb") as f:
                for s, data in plain.items():
                    f.seek(s * ss)
                    raw = f.read(len(data))
                    for i in range(len(data) // ss):
                        got = xts(key, s + i, raw[i * ss:(i + 1) * ss], False)
                        check(got == data[i * ss:(i + 1) * ss],
                              "%s/%d: sector %d does not decrypt with the oracle" % (impl, ss, s + i))
                        check(raw[i * ss:(i + 1) * ss] != data[i * ss:(i + 1) * ss],
                              "%s/%d: sector %d stored in the clear" % (impl, ss, s + i))
            # 2. encrypted by the oracle, read through the layer
            with open(path, "r+b") as f:
                for s in sectors:
                    data = bytes(rng.getrandbits(8) for _ in range(ss))
                    f.seek(s * ss)
                    f.write(xts(key, s, data, True))
                    plain[s] = data
            for s in sectors:
                buf = ctypes.create_string_buffer(ss)
                st = lib.vdisk_pread(d, buf, ss, s * ss)
                check(st.kind == 0 and buf.raw == plain[s],
                      "%s/%d: oracle ciphertext at %d does not decrypt" % (impl, ss, s))
            lib.vdisk_unref(d)
            os.unlink(path)

if failures:
    print("%d failures" % failures)
    sys.exit(1)
print("crypt matches the python3-cryptography XTS oracle")
