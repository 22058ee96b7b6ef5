#!/bin/bash
# vdisk create/info/map/convert/compare/check on RBD specs, crypt over RBD, and
# the errors of bad input: a cluster that is down (within the timeout), a
# missing pool, image or snapshot, unknown keys, a snapshot opened read-only.
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
requires qemu-img
ceph_start
S="rbd:conf=$CEPH_CONF,pool=rbd"

# create: a new image of the size asked; an existing one is never replaced
"$VDISK" create "$S,image=a" 32M || fail "vdisk create on rbd failed"
[[ $(rbdc info --format json rbd/a | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["size"])') == 33554432 ]] ||
	fail "vdisk create made an image of the wrong size"
expect_status 1 "$VDISK" create "$S,image=a" 32M
expect_stderr "exists; refusing to overwrite it"
expect_status 1 "$VDISK" info "$S,image=b,create=8M,sector-size=4096,bogus=1"
expect_stderr "unknown key 'bogus'"

# info: type, size, the image's identity and an id that follows the image
"$VDISK" info "$S,image=a" --json >"$TMP/info.json"
"$PYTHON" - "$TMP/info.json" "$(rbdc info --format json rbd/a)" <<'PY' || fail "vdisk info --json: $(cat "$TMP/info.json")"
import json, sys
j = json.load(open(sys.argv[1])); rb = json.loads(sys.argv[2])
l = j["layers"][0]
assert j["type"] == "rbd" and j["sector_count"] * j["sector_size"] == rb["size"], j
assert l["pool"] == "rbd" and l["image"] == "a" and l["image_id"] == rb["id"], l
assert l["cluster"]["name"] == "ceph" and len(l["cluster"]["fsid"]) == 36, l
assert len(j["disk_id"]) == 32, j
PY
id1=$("$VDISK" info "$S,image=a" --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["disk_id"])')
"$VDISK" create "$S,image=c" 32M
id2=$("$VDISK" info "$S,image=c" --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["disk_id"])')
[[ $id1 != "$id2" ]] || fail "two images share a disk id"

# convert in: a sparse raw file into the image; map and compare agree, and
# qemu's own rbd driver reads the same bytes
truncate -s 32M "$TMP/src.raw"
head -c 1M /dev/urandom | dd of="$TMP/src.raw" bs=1M seek=5 conv=notrunc status=none
head -c 64k /dev/urandom | dd of="$TMP/src.raw" bs=64k seek=300 conv=notrunc status=none
"$VDISK" convert "$TMP/src.raw" "$S,image=a" || fail "convert into rbd"
"$VDISK" compare "$TMP/src.raw" "$S,image=a" || fail "compare after convert into rbd"
"$VDISK" check "$S,image=a" || fail "vdisk check on rbd"
qemu-img compare -f raw -F raw "$TMP/src.raw" "rbd:rbd/a:conf=$CEPH_CONF" >/dev/null ||
	fail "qemu-img reads other data from the image than was converted in"
"$VDISK" map "$S,image=a" --json >"$TMP/map.json"
"$PYTHON" - "$TMP/map.json" <<'PY' || fail "vdisk map: $(cat "$TMP/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
ext = m["extents"] if isinstance(m, dict) else m
data = [(e["offset"], e["length"]) for e in ext if not ("zero" in str(e.get("flags", e.get("kind", ""))) or e.get("zero"))]
covered = lambda a, b: any(o <= a and a + b <= o + l for o, l in data)
assert covered(5 << 20, 1 << 20) and covered(300 * 65536, 65536), data
# the rest is reported unallocated (whole 4 MiB objects at most are data)
assert sum(l for o, l in data) <= 3 * (4 << 20), data
PY

# convert out, sparse, and compare
"$VDISK" convert "$S,image=a" "$TMP/out.raw" || fail "convert out of rbd"
cmp "$TMP/src.raw" "$TMP/out.raw" || fail "convert out of rbd changed the data"

# crypt over rbd: what is written reads back through crypt, and the image
# holds ciphertext
head -c 64 /dev/urandom >"$TMP/key"
CR="{\"type\":\"crypt\",\"key-file\":\"$TMP/key\",\"inner\":{\"type\":\"rbd\",\"conf\":\"$CEPH_CONF\",\"pool\":\"rbd\",\"image\":\"c\"}}"
head -c 2M /dev/urandom >"$TMP/plain"
truncate -s 32M "$TMP/plain"
"$VDISK" convert "$TMP/plain" "$CR" || fail "convert into crypt over rbd"
"$VDISK" compare "$TMP/plain" "$CR" || fail "crypt over rbd reads back other data"
rbdc export --no-progress rbd/c "$TMP/cipher" >/dev/null
cmp -s -n 2097152 "$TMP/plain" "$TMP/cipher" && fail "the image holds the plaintext"

# a snapshot opens read-only and keeps the old data
rbdc snap create rbd/a@s1 >/dev/null
"$VDISK" info "$S,image=a,snapshot=s1" --json | grep -c '"read_only": true' >/dev/null ||
	fail "a snapshot did not open read-only"
"$VDISK" convert "$TMP/plain" "$S,image=a" >/dev/null
"$VDISK" compare "$TMP/src.raw" "$S,image=a,snapshot=s1" || fail "the snapshot changed"
expect_status 1 "$VDISK" convert "$TMP/plain" "$S,image=a,snapshot=s1"

# a namespace of the pool holds its own images
rbdc namespace create --pool rbd --namespace ns1
"$VDISK" create "$S,namespace=ns1,image=n" 8M || fail "vdisk create in a namespace"
[[ $(rbdc ls --pool rbd --namespace ns1) == n ]] || fail "the image is not in the namespace"
expect_status 1 "$VDISK" info "$S,image=n"
expect_stderr "the image does not exist"
"$VDISK" info "$S,namespace=ns1,image=n" --json | grep -c '"namespace": "ns1"' >/dev/null ||
	fail "inspect does not show the namespace"

# bad input: each message names cluster, pool and image and what failed
expect_status 1 "$VDISK" info "$S,image=nosuch"
expect_stderr "cluster 'ceph'"
expect_stderr "pool 'rbd', image 'nosuch': the image does not exist"
expect_status 1 "$VDISK" info "rbd:conf=$CEPH_CONF,pool=nopool,image=a"
expect_stderr "pool 'nopool', image 'a': the pool does not exist"
expect_status 1 "$VDISK" info "$S,image=a,snapshot=nosnap"
expect_stderr "snapshot 'nosnap': the image or snapshot does not exist"
expect_status 1 "$VDISK" info "$S"
expect_stderr "image: missing"
expect_status 1 "$VDISK" info "$S,image=x/y"
expect_stderr "image: 'x/y' contains '/'"
expect_status 1 "$VDISK" info "rbd:conf=$TMP/none.conf,pool=rbd,image=a"
expect_stderr "cannot read the configuration file '$TMP/none.conf'"

# a cluster that is down: a clear error within the timeout, not a hang
port=$(_ceph_free_port)
sed "s/^mon host = .*/mon host = v1:127.0.0.1:$port/" "$CEPH_CONF" >"$TMP/down.conf"
start=$(date +%s)
expect_status 1 timeout 60 "$VDISK" compare "rbd:conf=$TMP/down.conf,pool=rbd,image=a,timeout=2s" "$TMP/plain"
expect_stderr "cannot connect to the cluster (monitors 'v1:127.0.0.1:$port'"
expect_stderr "no monitor answered within the timeout"
(($(date +%s) - start < 30)) || fail "a down cluster took $(($(date +%s) - start)) s to fail with timeout=2s"
