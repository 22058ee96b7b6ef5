# Helpers for the VHD tests (source after functions.sh).

# libvhdi_equal IMAGE RAW [PARENT]: libvhdi (python3-libvhdi) reads IMAGE, with
# PARENT set as its parent if given, and finds exactly the bytes of RAW.
libvhdi_equal() {
	"$PYTHON" - "$@" <<'PY' || fail "libvhdi reads $1 unlike $2"
import sys, pyvhdi
img, raw = sys.argv[1], sys.argv[2]
f = pyvhdi.file()
f.open(img)
if len(sys.argv) > 3:
    p = pyvhdi.file()
    p.open(sys.argv[3])
    f.set_parent(p)
size = f.get_media_size()
with open(raw, "rb") as r:
    r.seek(0, 2)
    if r.tell() != size:
        sys.exit(f"libvhdi: media size {size}, raw file {r.tell()}")
    r.seek(0)
    off = 0
    while off < size:
        n = min(4 << 20, size - off)
        a = f.read_buffer_at_offset(n, off)
        b = r.read(n)
        if a != b:
            sys.exit(f"libvhdi: differs in the 4 MiB at {off}")
        off += n
PY
}

# qemu_size IMAGE: the virtual size qemu-img gives a VHD
qemu_size() { qemu-img info -f vpc --output=json "$1" | jq '."virtual-size"'; }
# our_size SPEC
our_size() { "$VDISK" info --json --read-only "$1" | jq '.sector_count * .sector_size'; }

# serve_vhd SPEC: serve SPEC on $TMP/nbd.sock in the background (SERVE_PID)
serve_vhd() {
	rm -f "$TMP/nbd.sock"
	"$VDISK" serve "$1" --unix "$TMP/nbd.sock" >"$TMP/serve.out" 2>"$TMP/serve.err" &
	SERVE_PID=$!
	cleanup_fn "kill $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null"
	for _ in $(seq 200); do
		[[ -S $TMP/nbd.sock ]] && grep -q nbd "$TMP/serve.out" && return 0
		kill -0 $SERVE_PID 2>/dev/null || fail "serve: $(cat "$TMP/serve.err")"
		sleep 0.05
	done
	fail "serve did not start"
}
# stop_serve: SIGTERM, which flushes; it must exit 0
stop_serve() {
	kill -TERM $SERVE_PID
	wait $SERVE_PID || fail "serve exited $?: $(cat "$TMP/serve.err")"
}
nbd_uri() { echo "nbd+unix:///?socket=$TMP/nbd.sock"; }
