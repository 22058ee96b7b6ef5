"""Record seed sessions for fuzz/fuzz_iscsi.c: run a vdisk serve --iscsi
(VDISK=path/to/vdisk) and write the bytes an initiator sends to
fuzz/corpus/iscsi/: the sessions of tests/py/test-iscsi-pdus.py (run it with
--record) plus one here that issues every SCSI command the target knows."""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "py"))
from iscsitest import Conn, Server  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "iscsi")
srv = Server("ram:size=4M")
rec = []
c = Conn(srv.port, rec)
c.full_login()
blk = b"\xa5" * 512
param_pr = struct.pack(">QQIB3x", 0x1234, 0, 0, 0)
cmds = [
    (bytes([0x00, 0, 0, 0, 0, 0]), b"", 0),                      # TEST UNIT READY
    (bytes([0x12, 0, 0, 0, 255, 0]), b"", 255),                  # INQUIRY
    *[(bytes([0x12, 1, p, 0, 255, 0]), b"", 255) for p in (0, 0x80, 0x83, 0xb0, 0xb1, 0xb2)],
    (bytes([0x25] + [0] * 9), b"", 8),                           # READ CAPACITY 10
    (bytes([0x9e, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0]), b"", 32),
    (bytes([0x9e, 0x12] + [0] * 8 + [0, 0, 0, 64, 0, 0]), b"", 64),  # GET LBA STATUS
    (bytes([0x1a, 0, 0x3f, 0, 255, 0]), b"", 255),               # MODE SENSE 6
    (bytes([0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255, 0]), b"", 255),   # MODE SENSE 10
    (bytes([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), b"", 256),  # REPORT LUNS
    (bytes([0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0]), b"", 4096),
    (bytes([0x03, 0, 0, 0, 18, 0]), b"", 18),                    # REQUEST SENSE
    (bytes([0x0a, 0, 0, 1, 1, 0]), blk, 0),                      # WRITE 6
    (bytes([0x08, 0, 0, 1, 1, 0]), b"", 512),                    # READ 6
    (bytes([0x8a, 0x08] + [0] * 7 + [2, 0, 0, 0, 1, 0, 0]), blk, 0),  # WRITE 16 FUA
    (bytes([0x2f, 0x02, 0, 0, 0, 2, 0, 0, 1, 0]), blk, 0),       # VERIFY 10 BYTCHK
    (bytes([0x2e, 0, 0, 0, 0, 3, 0, 0, 1, 0]), blk, 0),          # WRITE AND VERIFY 10
    (bytes([0x41, 0x08, 0, 0, 0, 4, 0, 0, 8, 0]), b"\0" * 512, 0),  # WRITE SAME 10 UNMAP
    (bytes([0x93, 0] + [0] * 7 + [16, 0, 0, 0, 8, 0, 0]), blk, 0),  # WRITE SAME 16
    (bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
     struct.pack(">HH4xQI4x", 22, 16, 32, 8), 0),                 # UNMAP
    (bytes([0x89, 0] + [0] * 7 + [1, 0, 0, 0, 1, 0, 0]), blk + blk, 0),  # COMPARE AND WRITE
    (bytes([0x35] + [0] * 9), b"", 0),                           # SYNCHRONIZE CACHE
    (bytes([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0]), param_pr, 0),    # PROUT REGISTER
    (bytes([0x5f, 1, 0x01, 0, 0, 0, 0, 0, 24, 0]), param_pr, 0), # PROUT RESERVE WE
    (bytes([0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0]), b"", 256),        # PRIN READ KEYS
    (bytes([0x5e, 3, 0, 0, 0, 0, 0, 1, 0, 0]), b"", 256),        # PRIN READ FULL STATUS
    (bytes([0x5f, 3, 0, 0, 0, 0, 0, 0, 24, 0]), param_pr, 0),    # PROUT CLEAR
    (bytes([0x16, 0, 0, 0, 0, 0]), b"", 0),                      # RESERVE 6
    (bytes([0x17, 0, 0, 0, 0, 0]), b"", 0),                      # RELEASE 6
    (bytes([0x1b, 0, 0, 0, 0x01, 0]), b"", 0),                   # START STOP UNIT
    (bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 8, 0]), b"", 0),          # PRE-FETCH 10
]
for cdb, data, rl in cmds:
    c.scsi(cdb, data, read_len=rl)
c.logout()
c.close()
srv.stop()
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "commands"), "wb") as f:
    f.write(b"".join(rec))
print("wrote", os.path.join(out, "commands"))
