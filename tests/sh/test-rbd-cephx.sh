#!/bin/bash
# A cluster with cephx: the right keyring opens the image, a wrong key or a
# missing keyring gives a clear error naming the cluster, pool and image.
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
CEPH_AUTH=cephx ceph_start
rbdc create --size 8M rbd/x
# the client conf names no keyring: the spec gives it
grep -v '^keyring' "$CEPH_CONF" >"$TMP/client.conf"
S="rbd:conf=$TMP/client.conf,pool=rbd,image=x,timeout=5s"
"$VDISK" info "$S,keyring=$CEPH_KEYRING" >/dev/null || fail "the right keyring did not open the image"

ceph-authtool --create-keyring "$TMP/wrong.keyring" --gen-key -n client.admin >/dev/null
expect_status 1 "$VDISK" info "$S,keyring=$TMP/wrong.keyring"
expect_stderr "cluster 'ceph'"
expect_stderr "pool 'rbd', image 'x': cannot connect to the cluster"
expect_stderr "as client.admin"
expect_status 1 "$VDISK" info "$S,keyring=$TMP/none.keyring"
expect_stderr "image 'x': cannot connect to the cluster"
