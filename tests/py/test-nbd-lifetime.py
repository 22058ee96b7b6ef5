#!/usr/bin/python3
# A server started for one client does not outlive it.  --once: the server
# exits 0 once the last client has disconnected (two connections at once
# keep it up until both are gone).  --exit-with-parent: a server whose parent
# dies stops cleanly (exit 0, checked by adopting it as a subreaper), also
# when libnbd started it through nbd_connect_systemd_socket_activation or
# nbd_connect_command and the program exits without closing.  Also
# --max-payload: advertised, enforced, and its bad values refused.
import ctypes
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")

PR_SET_CHILD_SUBREAPER = 36


def once():
    srv = Server("ram:size=1M", "--once")
    a, b = connect(srv), connect(srv)
    a.pwrite(b"x" * 512, 0)
    a.shutdown()
    del a
    time.sleep(0.5)
    assert srv.alive(), "--once stopped with a client still connected"
    assert b.pread(512, 0) == b"x" * 512
    b.shutdown()
    del b
    srv.proc.wait(20)  # exits by itself
    srv.stop()  # checks the status (0) and the log


def reap(pid, timeout=20):
    """Exit status of an orphan we adopted as subreaper."""
    end = time.time() + timeout
    while time.time() < end:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"server {pid} outlived its parent")


# The parent: starts a server the way it is told, prints the server's pid,
# and dies without cleaning up.
PARENT = r"""
import os, sys, time, subprocess, nbd
how, vdisk, sock = sys.argv[1:4]
if how == "plain":
    p = subprocess.Popen([vdisk, "serve", "ram:size=1M", "--unix", sock, "--exit-with-parent"],
                         stdout=subprocess.PIPE)
    p.stdout.readline()
    pid = p.pid
else:
    h = nbd.NBD()
    cmd = [vdisk, "serve", "ram:size=1M", "--exit-with-parent"]
    if how == "command":
        h.connect_command(cmd + ["--stdio"])
    else:
        h.connect_systemd_socket_activation(cmd)
    h.pwrite(b"p" * 512, 0)
    kids = open(f"/proc/self/task/{os.getpid()}/children").read().split()
    pid = int(kids[0])
print(pid, flush=True)
os._exit(0)
"""


def exit_with_parent(tmp):
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    for how in ("plain", "socket-activation", "command"):
        sock = os.path.join(tmp, f"{how}.sock")
        out = subprocess.run([sys.executable, "-c", PARENT, how, VDISK, sock],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        pid = int(out.split()[0])
        rc = reap(pid)
        assert rc == 0, f"{how}: server exited {rc} after its parent died"


def max_payload():
    with Server("ram:size=8M", "--max-payload", "1M") as srv:
        h = connect(srv)
        assert h.get_block_size(nbd.SIZE_MAXIMUM) == 1 << 20
        h.set_strict_mode(0)
        h.pwrite(b"m" * (1 << 20), 0)
        try:
            h.pread((1 << 20) + 512, 0)
            raise AssertionError("a read over --max-payload succeeded")
        except nbd.Error as e:
            assert e.errnum in (__import__("errno").EINVAL, __import__("errno").EOVERFLOW), e
        assert h.pread(512, (1 << 20) - 512) == b"m" * 512, "connection unusable after EINVAL"
        h.shutdown()
    for bad in ("0", "1000", "512M", "lots"):
        p = subprocess.run([VDISK, "serve", "ram:size=1M", "--stdio", "--max-payload", bad],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        assert p.returncode in (1, 2) and "max" in p.stderr, (bad, p.returncode, p.stderr)


def main():
    need_env()
    once()
    tmp = tempfile.mkdtemp(prefix="vdisk-lifetime-")
    try:
        exit_with_parent(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    max_payload()
    print("ok")


main()
