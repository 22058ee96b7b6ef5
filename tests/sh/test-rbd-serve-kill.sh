#!/bin/bash
# vdisk serve of an RBD image, killed (SIGKILL) in the middle of writes: every
# write that a completed flush covered is in the image afterwards; each block
# written after the last flush holds its old or its new data.
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
source "$(dirname "$0")/nbd-functions.sh"
requires_py nbd
ceph_start
rbdc create --size 16M rbd/k
start_server "rbd:conf=$CEPH_CONF,pool=rbd,image=k"

"$PYTHON" - "$URI" "$SERVER_PID" "$TMP/state.json" <<'PY' || fail "writer failed"
import hashlib, json, os, random, signal, sys, nbd
uri, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
h = nbd.NBD()
h.connect_uri(uri)
bs, nblk = 4096, h.get_size() // 4096
rnd = random.Random(1234)
allowed = {}  # block -> digests it may hold after the crash
def data(tag):
    return (tag.encode() * (bs // len(tag) + 1))[:bs]
def dig(b):
    return hashlib.sha256(b).hexdigest()
zero = dig(bytes(bs))
for rnd_no in range(40):
    batch = {}
    for i in range(24):
        blk = rnd.randrange(nblk)
        if blk in batch:  # two writes in flight to one block may land in either order
            continue
        d = data(f"r{rnd_no}i{i}b{blk};")
        batch[blk] = d
        h.aio_pwrite(d, blk * bs)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    for blk, d in batch.items():
        allowed[blk] = [dig(d)]
# writes that no flush covers, killed while in flight
for i in range(64):
    blk = rnd.randrange(nblk)
    d = data(f"late{i}b{blk};")
    h.aio_pwrite(d, blk * bs)
    allowed.setdefault(blk, [zero]).append(dig(d))
h.poll(0)
os.kill(pid, signal.SIGKILL)
json.dump({"bs": bs, "allowed": {str(k): v for k, v in allowed.items()}}, open(out, "w"))
PY
wait "$SERVER_PID" 2>/dev/null || true
# read back what the cluster holds (a new client, as after a host crash)
rbdc export --no-progress rbd/k "$TMP/after" >/dev/null
"$PYTHON" - "$TMP/state.json" "$TMP/after" <<'PY' || fail "the image lost flushed writes"
import hashlib, json, sys
st = json.load(open(sys.argv[1])); img = open(sys.argv[2], "rb").read(); bs = st["bs"]
bad = []
for blk, ok in st["allowed"].items():
    b = int(blk)
    got = hashlib.sha256(img[b * bs:(b + 1) * bs]).hexdigest()
    if got not in ok:
        bad.append(b)
if bad:
    sys.exit(f"{len(bad)} blocks hold data that was never written or lost a flushed write: {bad[:10]}")
print(f"{len(st['allowed'])} blocks checked")
PY
