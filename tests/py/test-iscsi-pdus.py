"""vdisk serve --iscsi at the PDU level, with a minimal initiator of our own:
CRC32C header and data digests both ways (libiscsi has no data digests), data
through R2T, NOP-Out pings, task management, logout, a login for another
target, and hostile initiators: garbage before login, a bad header digest,
an oversized data segment, an unknown opcode (Reject), a stalled login (the
login timeout) and one connection too many (the limit).  The server must
survive all of it and exit 0 on SIGTERM.  With --record DIR, the byte
streams sent are written there as a seed corpus for fuzz/fuzz_iscsi.c."""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iscsitest import Conn, Server, check, read10, write10, TARGET, INITIATOR  # noqa: E402

if not os.environ.get("VDISK"):
    print("SKIP: run through ctest (VDISK)", file=sys.stderr)
    sys.exit(77)

record_dir = None
if len(sys.argv) == 3 and sys.argv[1] == "--record":
    record_dir = sys.argv[2]
streams = {}


def conn(srv, name):
    rec = [] if record_dir else None
    if rec is not None:
        streams[name] = rec
    return Conn(srv.port, rec)


srv = Server("ram:size=16M", "--iscsi-login-timeout", "2", "--iscsi-max-connections", "3")
try:
    # digests both ways, immediate data, R2T, read back
    c = conn(srv, "digests")
    c.full_login(digests=True)
    data = bytes(range(256)) * 64  # 16 KiB: 8 KiB immediate, the rest by R2T
    st, _, sense = c.scsi(write10(8, 32), data)
    check(st == 0, "WRITE10 with digests: status %d sense %r" % (st, sense))
    st, back, _ = c.scsi(read10(8, 32), read_len=len(data))
    check(st == 0 and back == data, "READ10 with digests gave other data")
    r, d = c.nop(b"ping-payload")
    check(r[0] & 0x3F == 0x20 and d == b"ping-payload", "NOP-In echo")
    # out of range: ILLEGAL REQUEST / LBA OUT OF RANGE
    st, _, sense = c.scsi(read10(32768, 1), read_len=512)
    check(st == 2 and sense[2] & 0x0F == 5 and sense[12] == 0x21,
          "read past the end: status %d sense %r" % (st, sense[:14]))
    # a header digest that does not match: the connection is dropped
    bhs = bytearray(48)
    bhs[0] = 0x40
    bhs[1] = 0x80
    c.send_raw(bytes(bhs) + b"\0\0\0\0")
    check(c.closed(), "bad header digest: connection kept")
    c.close()

    # data digests off, an unknown opcode is rejected, TMF, logout
    c = conn(srv, "session")
    c.full_login()
    bhs = bytearray(48)
    bhs[0] = 0x1C  # not an initiator opcode
    bhs[1] = 0x80
    c.send(bhs)
    r, d = c.recv()
    check(r[0] & 0x3F == 0x3F and r[2] == 0x05 and d[:1] == b"\x1c", "Reject of an unknown opcode")
    tmf = bytearray(48)
    tmf[0] = 0x42
    tmf[1] = 0x80 | 1  # ABORT TASK of a task that does not exist
    tmf[16:20] = struct.pack(">I", 999)
    tmf[20:24] = struct.pack(">I", 12345)
    tmf[24:28] = struct.pack(">I", c.cmdsn)
    c.send(tmf)
    r, _ = c.recv()
    check(r[0] & 0x3F == 0x22, "TMF response")
    tmf[1] = 0x80 | 5  # LOGICAL UNIT RESET
    tmf[16:20] = struct.pack(">I", 1000)
    c.send(tmf)
    r, _ = c.recv()
    check(r[0] & 0x3F == 0x22 and r[2] == 0, "LUN RESET: response %d" % r[2])
    r, _ = c.logout()
    check(r[0] & 0x3F == 0x26 and r[2] == 0, "logout response")
    check(c.closed(), "connection open after logout")
    c.close()

    # a login for a target that is not here
    c = conn(srv, "wrong-target")
    st = c.login({"InitiatorName": INITIATOR, "TargetName": "iqn.2026-01.org.example:nosuch",
                  "SessionType": "Normal", "AuthMethod": "None"}, csg=0, nsg=1)
    check(st[0] == 2 and st[1] == 3, "wrong target: status %d/%d" % (st[0], st[1]))
    check(c.closed(), "connection open after a refused login")
    c.close()

    # garbage before login
    c = conn(srv, "garbage")
    c.send_raw(os.urandom(48) + b"\x01" * 100)
    check(c.closed(), "garbage kept the connection")
    c.close()

    # a data segment over the declared limit
    c = conn(srv, "oversized")
    c.full_login()
    bhs = bytearray(48)
    bhs[0] = 0x01
    bhs[1] = 0xA0
    bhs[5:8] = b"\xff\xff\xff"  # 16 MiB
    c.send_raw(bytes(bhs))
    check(c.closed(), "oversized data segment kept the connection")
    c.close()

    # the connection limit (3) and the login timeout (2 s)
    idle = [Conn(srv.port) for _ in range(3)]
    extra = Conn(srv.port)
    check(extra.closed(), "a connection over the limit was served")
    extra.close()
    for s in idle:
        check(s.closed(), "a login that never came was not timed out")
        s.close()
    time.sleep(0.2)
    c = conn(srv, "after")
    c.full_login()
    # the LUN RESET above left a unit attention for this nexus (SAM-5: every
    # I_T nexus): reported once, then gone
    st, _, sense = c.scsi(bytes(6))
    check(st == 2 and sense[2] & 0x0F == 6 and sense[12:14] == b"\x29\x03",
          "no RESET unit attention after the LUN RESET: status %d sense %r" % (st, sense[:14]))
    st, _, _ = c.scsi(bytes(6))
    check(st == 0, "the unit attention was reported twice")
    st, back, _ = c.scsi(read10(8, 32), read_len=len(data))
    check(st == 0 and back == data, "the disk after the hostile clients")
    c.logout()
    c.close()
    check(srv.alive(), "the server died: " + srv.stderr())
finally:
    rc = srv.stop()
check(rc == 0, "vdisk serve exited %d" % rc)
if record_dir:
    os.makedirs(record_dir, exist_ok=True)
    for name, chunks in streams.items():
        with open(os.path.join(record_dir, name), "wb") as f:
            f.write(b"".join(chunks))
print("ok")
