"""A minimal iSCSI initiator for tests of `vdisk serve --iscsi`: raw PDUs,
login with any keys, CRC32C digests, SCSI commands with immediate data."""
import os
import socket
import struct
import subprocess
import sys
import tempfile

VDISK = os.environ.get("VDISK")
TARGET = "iqn.2026-01.org.vdisk:disk"
INITIATOR = "iqn.2026-01.org.example:test"


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Server:
    """vdisk serve SPEC --iscsi 127.0.0.1:0 [args]"""

    def __init__(self, spec, *args):
        self.tmp = tempfile.TemporaryDirectory(prefix="vdisk-iscsi-py.")
        self.err = open(os.path.join(self.tmp.name, "stderr"), "w+")
        self.p = subprocess.Popen([VDISK, "serve", spec, "--iscsi", "127.0.0.1:0", *args],
                                  stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.uri = self.p.stdout.readline().strip()
        if not self.uri.startswith("iscsi://"):
            self.stop()
            raise SystemExit("FAIL: no URI; stderr: " + self.stderr())
        self.port = int(self.uri.split("/")[2].split(":")[1])

    def stderr(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        rc = self.p.wait(timeout=60)
        self.tmp.cleanup()
        return rc


class Conn:
    def __init__(self, port, record=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.hd = self.dd = False
        self.itt = 1
        self.cmdsn = 1
        self.statsn = 0
        self.record = record  # a list of bytes sent, for fuzz corpora

    def close(self):
        self.s.close()

    def send_raw(self, b):
        if self.record is not None:
            self.record.append(b)
        self.s.sendall(b)

    def send(self, bhs, data=b""):
        bhs = bytearray(bhs)
        bhs[4] = 0
        bhs[5:8] = len(data).to_bytes(3, "big")
        out = bytes(bhs)
        if self.hd:
            out += struct.pack("<I", crc32c(bhs))
        if data:
            pad = b"\0" * ((4 - len(data) % 4) % 4)
            out += data + pad
            if self.dd:
                out += struct.pack("<I", crc32c(data + pad))
        self.send_raw(out)

    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise EOFError("connection closed")
            b += chunk
        return b

    def recv(self):
        bhs = self.recv_exact(48)
        if self.hd:
            (d,) = struct.unpack("<I", self.recv_exact(4))
            assert d == crc32c(bhs), "bad header digest from the target"
        dlen = int.from_bytes(bhs[5:8], "big")
        data = b""
        if dlen:
            pad = (4 - dlen % 4) % 4
            raw = self.recv_exact(dlen + pad)
            if self.dd:
                (d,) = struct.unpack("<I", self.recv_exact(4))
                assert d == crc32c(raw), "bad data digest from the target"
            data = raw[:dlen]
        return bhs, data

    def closed(self):
        """True once the target closed the connection (reads to EOF)."""
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def login(self, keys, isid=b"\x80\x00\x00\x00\x00\x01", csg=1, nsg=3, transit=True):
        bhs = bytearray(48)
        bhs[0] = 0x43
        bhs[1] = (0x80 if transit else 0) | csg << 2 | nsg
        bhs[8:14] = isid
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[24:28] = struct.pack(">I", self.cmdsn)
        bhs[28:32] = struct.pack(">I", self.statsn)
        data = b"".join(k.encode() + b"=" + v.encode() + b"\0" for k, v in keys.items())
        self.send(bhs, data)
        r, d = self.recv()
        assert r[0] & 0x3F == 0x23, "not a login response: %r" % r[:4]
        self.statsn = struct.unpack(">I", r[24:28])[0] + 1
        got = dict(kv.split("=", 1) for kv in d.decode().split("\0") if kv)
        return r[36], r[37], r[1], got

    def full_login(self, digests=False, **extra):
        keys = {"InitiatorName": INITIATOR, "TargetName": TARGET, "SessionType": "Normal",
                "AuthMethod": "None"}
        st = self.login(keys, csg=0, nsg=1)
        assert st[0] == 0, "security stage refused: %r" % (st,)
        keys = {"HeaderDigest": "CRC32C" if digests else "None",
                "DataDigest": "CRC32C" if digests else "None",
                "ImmediateData": "Yes", "InitialR2T": "Yes",
                "MaxRecvDataSegmentLength": "65536"}
        keys.update(extra)
        st = self.login(keys, csg=1, nsg=3)
        assert st[0] == 0 and st[2] & 0x80 and st[2] & 3 == 3, "login refused: %r" % (st,)
        if digests:
            assert st[3].get("HeaderDigest") == "CRC32C", st[3]
            assert st[3].get("DataDigest") == "CRC32C", st[3]
            self.hd = self.dd = True
        return st[3]

    def scsi(self, cdb, data=b"", read_len=0):
        """A SCSI command with its data-out as immediate data (short) or
        answering R2Ts; returns (status, data-in, sense)."""
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = 0x80 | (0x40 if read_len else 0) | (0x20 if data else 0)
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[20:24] = struct.pack(">I", read_len or len(data))
        bhs[24:28] = struct.pack(">I", self.cmdsn)
        bhs[28:32] = struct.pack(">I", self.statsn)
        bhs[32:32 + len(cdb)] = cdb
        itt = self.itt
        self.itt += 1
        self.cmdsn += 1
        imm = data[:8192]
        self.send(bhs, imm)
        datain = b""
        while True:
            r, d = self.recv()
            op = r[0] & 0x3F
            if op == 0x31:  # R2T
                ttt = r[20:24]
                off, length = struct.unpack(">II", r[40:48])
                sn = 0
                pos = off
                while pos < off + length:
                    n = min(8192, off + length - pos)
                    o = bytearray(48)
                    o[0] = 0x05
                    o[1] = 0x80 if pos + n == off + length else 0
                    o[16:20] = struct.pack(">I", itt)
                    o[20:24] = ttt
                    o[36:40] = struct.pack(">I", sn)
                    o[40:44] = struct.pack(">I", pos)
                    self.send(o, data[pos:pos + n])
                    pos += n
                    sn += 1
            elif op == 0x25:  # Data-In
                datain += d
                if r[1] & 0x01:
                    self.statsn = struct.unpack(">I", r[24:28])[0] + 1
                    return r[3], datain, b""
            elif op == 0x21:
                self.statsn = struct.unpack(">I", r[24:28])[0] + 1
                sense = d[2:] if d else b""
                return r[3], datain, sense
            else:
                raise AssertionError("unexpected opcode 0x%02x" % op)

    def nop(self, payload):
        bhs = bytearray(48)
        bhs[0] = 0x40
        bhs[1] = 0x80
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[20:24] = b"\xff\xff\xff\xff"
        bhs[24:28] = struct.pack(">I", self.cmdsn)
        self.itt += 1
        self.send(bhs, payload)
        return self.recv()

    def logout(self):
        bhs = bytearray(48)
        bhs[0] = 0x46
        bhs[1] = 0x80
        bhs[16:20] = struct.pack(">I", self.itt)
        bhs[24:28] = struct.pack(">I", self.cmdsn)
        self.itt += 1
        self.send(bhs)
        return self.recv()


def read10(lba, n):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def write10(lba, n):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def check(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)
