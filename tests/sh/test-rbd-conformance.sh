#!/bin/bash
# The conformance suite over an RBD image, with 512- and 4096-byte sectors, and
# over a layered RAM diff on top of one (each on a fresh image).
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
CONF=$BUILD_DIR/tests/vdisk-conformance
[[ -x $CONF ]] || fail "missing $CONF"
ceph_start
rbdspec() { echo "{\"type\":\"rbd\",\"conf\":\"$CEPH_CONF\",\"pool\":\"rbd\",\"image\":\"$1\"${2:-}}"; }

"$CONF" "$(rbdspec c512 ',"create":"16M"')" || fail "conformance over rbd (512-byte sectors)"
"$CONF" "$(rbdspec c4k ',"create":"16M","sector-size":4096')" ||
	fail "conformance over rbd (4096-byte sectors)"
# lower layers open read-only: the base image is made beforehand, with data
head -c 4M /dev/urandom >"$TMP/data"
rbdc import --no-progress "$TMP/data" rbd/base
rbdc resize --no-progress --size 16M rbd/base
"$CONF" "{\"type\":\"layered\",\"layers\":[{\"type\":\"ram\"},{\"type\":\"disk\",\"disk\":$(rbdspec base)}]}" ||
	fail "conformance over a RAM layer on rbd"
