# A private single-node Ceph cluster for tests: source after functions.sh and
# call ceph_start.  One monitor and one OSD (memstore, pool size 1), bound to
# 127.0.0.1 on a port chosen free at run time, no authentication unless
# CEPH_AUTH=cephx (then a generated keyring), in $TMP/ceph; stopped by the
# test's exit trap.  Sets CEPH_CONF (the client configuration), CEPH_KEYRING
# (cephx only) and CEPH_POOL (an initialised pool named rbd).
#
# The monitor's address (and so its port) is written into its map at creation,
# so two clusters cannot share a port; tests that start one also take the CTest
# resource lock "ceph" (ctest-resource-lock: ceph).

ceph_requires() {
	for c in ceph-mon ceph-osd ceph rbd monmaptool ceph-authtool; do
		command -v "$c" >/dev/null 2>&1 ||
			skip "needs $c (Debian packages ceph-mon, ceph-osd, ceph-common: scripts/deps.sh)"
	done
}

_ceph_free_port() {
	"$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# ceph CMD...: the ceph/rbd tools against the private cluster
cephc() { ceph --conf "$CEPH_CONF" --connect-timeout 20 "$@"; }
rbdc() { rbd --conf "$CEPH_CONF" "$@"; }

_ceph_stop() {
	local pidf pid
	for pidf in "$CEPH_DIR"/run/osd.*.pid "$CEPH_DIR"/run/mon.*.pid; do
		[[ -f $pidf ]] || continue
		pid=$(cat "$pidf")
		kill "$pid" 2>/dev/null || true
	done
	for pidf in "$CEPH_DIR"/run/osd.*.pid "$CEPH_DIR"/run/mon.*.pid; do
		[[ -f $pidf ]] || continue
		pid=$(cat "$pidf")
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
}

# ceph_osd_stop / ceph_osd_start: take the OSD down and bring it back (memstore
# keeps its data only while the process lives, so "down" here is SIGSTOP)
ceph_osd_stop() { kill -STOP "$(cat "$CEPH_DIR/run/osd.0.pid")"; }
ceph_osd_cont() { kill -CONT "$(cat "$CEPH_DIR/run/osd.0.pid")"; }

# A monitor sometimes refuses its new OSD for good ("wrong fsid" at every
# start, seen under load); a cluster made afresh (new directory, fsid and port)
# then comes up.  Three clusters at most.
ceph_start() {
	ceph_requires
	local attempt
	for attempt in 1 2 3; do
		CEPH_DIR=$TMP/ceph$attempt
		_ceph_start_once && return 0
		_ceph_stop
	done
	fail "ceph-osd: three fresh clusters refused their OSD: $(cat "$CEPH_DIR/log/osd.out")"
}

_ceph_start_once() {
	mkdir -p "$CEPH_DIR"/{run,log,mon,osd}
	local port fsid osd_uuid auth=none
	port=$(_ceph_free_port)
	CEPH_PORT=$port
	fsid=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
	osd_uuid=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
	[[ ${CEPH_AUTH:-none} == cephx ]] && auth=cephx
	CEPH_CONF=$CEPH_DIR/ceph.conf
	cat >"$CEPH_CONF" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
keyring = $CEPH_DIR/keyring
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
pid file = $CEPH_DIR/run/\$name.pid
log file = $CEPH_DIR/log/\$name.log
mon data = $CEPH_DIR/mon/\$name
osd data = $CEPH_DIR/osd/\$name
osd objectstore = memstore
memstore page set = true
memstore page size = 4096
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd class update on start = false
osd op num shards = 1
osd op num threads per shard = 2
mon osd min down reporters = 1
osd heartbeat grace = 5
client mount timeout = 20
rados mon op timeout = 30
CONF
	cleanup_fn _ceph_stop
	if [[ $auth == cephx ]]; then
		ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. \
			--cap mon 'allow *' >/dev/null
		ceph-authtool "$CEPH_DIR/keyring" --gen-key -n client.admin \
			--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
		CEPH_KEYRING=$CEPH_DIR/keyring
	else
		: >"$CEPH_DIR/keyring"
	fi
	monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$port]" \
		"$CEPH_DIR/monmap" >/dev/null
	ceph-mon --conf "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
		--keyring "$CEPH_DIR/keyring" >"$CEPH_DIR/log/mkfs-mon.out" 2>&1 ||
		fail "ceph-mon --mkfs: $(cat "$CEPH_DIR/log/mkfs-mon.out")"
	ceph-mon --conf "$CEPH_CONF" -i a >"$CEPH_DIR/log/mon.out" 2>&1 ||
		fail "ceph-mon: $(cat "$CEPH_DIR/log/mon.out")"
	local id
	if [[ $auth == cephx ]]; then
		ceph-authtool "$CEPH_DIR/keyring" --gen-key -n osd.0 \
			--cap mon 'allow profile osd' --cap osd 'allow *' >/dev/null
		local osdkey
		osdkey=$(ceph-authtool -p -n osd.0 "$CEPH_DIR/keyring")
		printf '{"cephx_secret": "%s"}\n' "$osdkey" >"$CEPH_DIR/osd-secret.json"
		id=$(cephc osd new "$osd_uuid" -i "$CEPH_DIR/osd-secret.json")
	else
		id=$(cephc osd new "$osd_uuid")
	fi
	[[ $id == 0 ]] || fail "ceph osd new gave id '$id'"
	mkdir -p "$CEPH_DIR/osd/osd.0"
	ceph-osd --conf "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
		>"$CEPH_DIR/log/mkfs-osd.out" 2>&1 ||
		fail "ceph-osd --mkfs: $(cat "$CEPH_DIR/log/mkfs-osd.out")"
	# the monitor sometimes answers the new OSD's first registration with an
	# error (seen as "wrong fsid"); the OSD then exits and a second start works
	local try ok=0
	for try in 1 2 3; do
		if ceph-osd --conf "$CEPH_CONF" -i 0 >"$CEPH_DIR/log/osd.out" 2>&1; then
			ok=1
			break
		fi
		sleep 1
	done
	((ok)) || return 1
	cephc osd pool create rbd 8 >/dev/null 2>&1 || fail "ceph osd pool create rbd failed"
	cephc osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
	timeout 60 rbd --conf "$CEPH_CONF" pool init rbd || fail "rbd pool init rbd failed (log in $CEPH_DIR/log)"
	CEPH_POOL=rbd
	export CEPH_CONF CEPH_KEYRING CEPH_POOL CEPH_DIR
}
