#!/bin/bash
# Resizes by another client reach vdisk_wait_resize (tests/unit/test-rbd-watch.c
# against a private cluster).
# ctest-labels: ceph slow
# ctest-resource-lock: ceph
# ctest-timeout: 900
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/ceph-functions.sh"
T=$BUILD_DIR/tests/test-rbd-watch
[[ -x $T ]] || fail "missing $T"
ceph_start
VDISK_RBD_CONF=$CEPH_CONF "$T" || fail "test-rbd-watch failed"
