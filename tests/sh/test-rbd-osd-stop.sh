#!/bin/bash
# The OSD stops answering (SIGSTOP) while writes are in flight through vdisk
# serve: nothing is reported done while it is away, everything completes once
# it returns, and every write reported done reads back.  Then with a short
# timeout the writes fail instead, and those reported done are still there.
# ctest-labels: ceph slow soak
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires_py nbd
ceph_start
OSD_PID=$(cat "$CEPH_DIR/run/osd.0.pid")
cleanup_fn "kill -CONT $OSD_PID"

writer() { # image timeout stop-seconds
	"$PYTHON" - "$URI" "$OSD_PID" "$3" "$TMP/$1.json" <<'PY'
import json, os, signal, sys, time, nbd
uri, osd, stop, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
h = nbd.NBD()
h.connect_uri(uri)
bs = 4096
done = {}
def cb(blk, d, err):
    if err.value == 0:
        done[blk] = d
    return 0
for i in range(32):
    d = bytes([i + 1]) * bs
    h.aio_pwrite(d, i * bs, completion=lambda err, i=i, d=d: cb(i, d, err))
while h.aio_in_flight() > 0:
    h.poll(-1)
assert len(done) == 32, "writes failed before the OSD stopped"
done.clear()
os.kill(osd, signal.SIGSTOP)
t0 = time.time()
for i in range(32, 96):
    d = bytes([i + 1]) * bs
    h.aio_pwrite(d, i * bs, completion=lambda err, i=i, d=d: cb(i, d, err))
while time.time() - t0 < stop:
    h.poll(100)
early = len(done)
os.kill(osd, signal.SIGCONT)
while h.aio_in_flight() > 0:
    h.poll(-1)
json.dump({"early": early, "done": sorted(done)}, open(out, "w"))
PY
}

# a short stop, the default timeout: everything completes after the OSD returns
rbdc create --size 8M rbd/a
start_server "rbd:conf=$CEPH_CONF,pool=rbd,image=a"
writer a 30s 3 || fail "writer failed"
stop_server
"$PYTHON" - "$TMP/a.json" <<'PY' || fail "writes during the OSD's stop"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["early"] == 0, f"{j['early']} writes reported done while the OSD was stopped"
assert len(j["done"]) == 64, f"only {len(j['done'])} of 64 writes completed after it returned"
PY
rbdc export --no-progress rbd/a "$TMP/a.img" >/dev/null
"$PYTHON" - "$TMP/a.img" <<'PY' || fail "a write reported done is not in the image"
import sys
img = open(sys.argv[1], "rb").read()
for i in range(96):
    assert img[i * 4096:(i + 1) * 4096] == bytes([i + 1]) * 4096, f"block {i}"
PY

# a stop longer than the timeout: the writes fail (none is reported done that
# is not in the image)
rbdc create --size 8M rbd/b
start_server "rbd:conf=$CEPH_CONF,pool=rbd,image=b,timeout=2s"
writer b 2s 8 || fail "writer failed"
stop_server
"$PYTHON" - "$TMP/b.json" <<'PY' || fail "writes with a timeout"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["early"] == 0, f"{j['early']} writes reported done while the OSD was stopped"
assert len(j["done"]) < 64, "every write succeeded although the OSD was away past the timeout"
print(f"{64 - len(j['done'])} of 64 writes failed with the OSD away longer than the timeout")
PY
rbdc export --no-progress rbd/b "$TMP/b.img" >/dev/null
"$PYTHON" - "$TMP/b.img" "$TMP/b.json" <<'PY' || fail "a write reported done is not in the image"
import json, sys
img = open(sys.argv[1], "rb").read()
for i in list(range(32)) + json.load(open(sys.argv[2]))["done"]:
    assert img[i * 4096:(i + 1) * 4096] == bytes([i + 1]) * 4096, f"block {i}"
PY
