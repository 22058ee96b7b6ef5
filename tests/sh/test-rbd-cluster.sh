#!/bin/bash
# The private cluster of ceph-functions.sh starts, stores an image and stops.
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
ceph_start
rbdc create --size 8M rbd/smoke
head -c 1M /dev/urandom >"$TMP/in"
rbdc import --no-progress "$TMP/in" rbd/copy
rbdc export --no-progress rbd/copy "$TMP/out" >/dev/null
cmp "$TMP/in" "$TMP/out" || fail "an image read back differs from what was imported"
[[ $(rbdc ls rbd | sort | tr '\n' ' ') == "copy smoke " ]] || fail "rbd ls: $(rbdc ls rbd)"
