"""Helpers for the NBD server tests (tests/py/test-nbd-*.py).

Server starts `vdisk serve` on a private Unix socket and checks, when it
stops, that it exited 0 and that no sanitizer complained.  The raw-protocol
helpers talk to it byte by byte, for what libnbd will not send."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

VDISK = os.environ.get("VDISK")

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_TLS_REQD = 0x80000005
REP_ERR_UNKNOWN = 0x80000006
REP_ERR_BLOCK_SIZE_REQD = 0x80000008
REP_ERR_TOO_BIG = 0x80000009
INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7
EPERM, EIO, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP = 1, 5, 22, 28, 75, 95


def skip(why):
    print(f"SKIP: {why}", file=sys.stderr)
    sys.exit(77)


def need_env():
    if not VDISK:
        skip("run through ctest (VDISK is the vdisk binary)")


class Server:
    """`vdisk serve SPEC --unix SOCK ARGS...`; stop() checks a clean exit."""

    def __init__(self, spec, *args, sock=None, tmp=None):
        need_env()
        self.tmp = tmp or tempfile.mkdtemp(prefix="vdisk-nbd-")
        self.own_tmp = tmp is None
        self.sock = sock or os.path.join(self.tmp, "nbd.sock")
        self.errlog = open(os.path.join(self.tmp, "server.err"), "w+")
        cmd = [VDISK, "serve", spec, "--unix", self.sock, *args]
        if os.environ.get("NBDTEST_VERBOSE"):
            cmd.append("-vv")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        line = self.proc.stdout.readline().strip()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(f"server did not start: {self.stderr()}")
        self.uri = line

    def stderr(self):
        self.errlog.flush()
        self.errlog.seek(0)
        return self.errlog.read()

    def alive(self):
        return self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=30, flush_may_fail=False):
        if self.alive():
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout}s: {self.stderr()}")
        err = self.stderr()
        self.errlog.close()
        if os.environ.get("NBDTEST_VERBOSE"):
            sys.stderr.write(err)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "internal error"):
            assert bad not in err, f"server stderr has {bad!r}:\n{err}"
        if flush_may_fail and rc == 1 and "flush at shutdown" in err:
            rc = 0  # a disk that fails at random may fail the last flush too
        assert rc == 0, f"server exited {rc}:\n{err}"
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        else:
            if self.alive():
                self.proc.kill()
                self.proc.wait()
            sys.stderr.write(self.stderr())


def connect(srv, name=""):
    import nbd

    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.set_export_name(name)
    h.connect_unix(srv.sock)
    return h


# --------------------------------------------------------------------------
# The protocol by hand


class Raw:
    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)

    def close(self):
        self.s.close()

    def send(self, b):
        self.s.sendall(b)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"server closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def closed_by_server(self, timeout=10):
        """True if the server closes the connection (EOF or reset) in time."""
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # handshake
    def greeting(self, flags=3):
        magic, opt, hflags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
        assert hflags & 1, "server is not fixed newstyle"
        self.send(struct.pack(">I", flags))
        return hflags

    def opt(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        return opt, rtype, self.recv_exact(length)

    def replies(self):
        """Every reply to one option, up to its final one."""
        out = []
        while True:
            opt, rtype, data = self.reply()
            out.append((rtype, data))
            if rtype not in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                return out

    def go(self, name=b"", infos=(INFO_BLOCK_SIZE,), structured=True, meta=False):
        if structured:
            self.opt(OPT_STRUCTURED_REPLY)
            assert self.reply()[1] == REP_ACK
        if meta:
            q = b"base:allocation"
            self.opt(OPT_SET_META_CONTEXT, struct.pack(">I", len(name)) + name +
                     struct.pack(">II", 1, len(q)) + q)
            r = self.replies()
            assert r[-1][0] == REP_ACK and r[0][0] == REP_META_CONTEXT, r
            self.ctx_id = struct.unpack(">I", r[0][1][:4])[0]
        self.opt(OPT_GO, go_data(name, infos))
        r = self.replies()
        assert r[-1][0] == REP_ACK, f"GO failed: {r}"
        for rtype, data in r:
            if rtype == REP_INFO and struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                self.size, self.eflags = struct.unpack(">QH", data[2:12])
        self.structured = structured
        return r

    # transmission
    def request(self, cmd, offset=0, length=0, flags=0, cookie=1, data=b""):
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + data)

    def read_reply(self, read_len=None):
        """(cookie, error, payload) of a whole reply: simple, or structured
        chunks up to the one marked done (data chunks concatenated)."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv_exact(12))
            data = self.recv_exact(read_len) if (read_len and not err) else b""
            return cookie, err, data
        err, data = 0, b""
        while True:
            assert magic == STRUCT_MAGIC, f"bad reply magic {magic:#x}"
            flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length)
            if rtype & 0x8000:
                err = struct.unpack(">I", payload[:4])[0]
            elif rtype == 1:
                data += payload[8:]
            elif rtype == 5:
                data += payload
            if flags & 1:
                return cookie, err, data
            magic = struct.unpack(">I", self.recv_exact(4))[0]


def go_data(name=b"", infos=(INFO_BLOCK_SIZE,)):
    return (struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) +
            b"".join(struct.pack(">H", i) for i in infos))


def meta_data(name=b"", queries=(b"base:allocation",)):
    return (struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries)) +
            b"".join(struct.pack(">I", len(q)) + q for q in queries))


def wait_for(pred, timeout=10, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
