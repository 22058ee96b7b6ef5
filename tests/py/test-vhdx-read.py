# Reading VHDX images: images qemu-img makes (block sizes 1M to 256M, fixed,
# block_state_zero=off) filled by qemu-io read equal to qemu-img convert;
# images written by tests/py/vhdxgen.py (4 KiB sectors, a differencing chain,
# a dirty log) read equal to what was written, as libvhdi and qemu-img read
# them; broken images and a writable open are refused with a message naming
# the field.
# ctest-timeout: 600
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import vhdxgen  # noqa: E402

VDISK = os.environ["VDISK"]
MiB = 1 << 20
failures = []


def need(cmd):
    if not shutil.which(cmd):
        print(f"skip: {cmd} is not installed", file=sys.stderr)
        sys.exit(77)


def run(*args, check=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def expect(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def spec(path, extra=""):
    return f"vhdx:path={path},read-only=on{extra}"


def vdisk_read_all(path, size, extra=""):
    out = path + ".vdisk.raw"
    if os.path.exists(out):
        os.unlink(out)
    run(VDISK, "convert", spec(path, extra), out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    assert len(data) == size, (len(data), size)
    return data


def qemu_images(tmp):
    patterns = [(0xAB, 0, MiB), (0x11, 5 * MiB, 4096), (0x22, 33 * MiB, 512),
                (0x33, 95 * MiB, MiB), (0x44, 50 * MiB + 512, 7 * 512)]
    cases = [("block_size=1M", 96), ("block_size=8M,block_state_zero=off", 96),
             ("block_size=32M,subformat=fixed", 96), ("block_size=256M", 600)]
    for opts, mib in cases:
        img = os.path.join(tmp, "q.vhdx")
        raw = os.path.join(tmp, "q.raw")
        for p in (img, raw):
            if os.path.exists(p):
                os.unlink(p)
        run("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, img, f"{mib}M")
        cmds = []
        for pat, off, ln in patterns:
            cmds += ["-c", f"write -P {pat} {off} {ln}"]
        run("qemu-io", "-f", "vhdx", *cmds, img)
        run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", img, raw)
        p = run(VDISK, "compare", spec(img), raw, check=False)
        expect(p.returncode == 0, f"qemu-made {opts}: vdisk reads what qemu-img converts")
        if opts == "block_size=1M":
            conformance(img, f"a qemu-made image ({opts})")
        m = run(VDISK, "map", spec(img)).stdout
        if "fixed" not in opts:
            expect("hole" in m, f"qemu-made {opts}: unwritten blocks map as holes")


def conformance(img, what, extra=""):
    binary = os.path.join(os.environ.get("BUILD_DIR", "build"), "tests", "vdisk-conformance")
    p = run(binary, spec(img, extra), check=False)
    expect(p.returncode == 0, f"conformance suite over {what}" +
           ("" if p.returncode == 0 else ": " + (p.stdout + p.stderr)[-3000:]))


def gen_images(tmp):
    rnd = random.Random(7)
    size = 64 * MiB
    # a base image with 4 KiB sectors, a block partly written, one written at the end
    base = os.path.join(tmp, "base.vhdx")
    w_base = [(0, rnd.randbytes(3 * MiB)), (40 * MiB + 8192, rnd.randbytes(8192)),
              (size - 4096, rnd.randbytes(4096))]
    vhdxgen.make(base, size, w_base, block_size=2 * MiB, lss=4096)
    expected = bytearray(size)
    for off, d in w_base:
        expected[off:off + len(d)] = d
    got = vdisk_read_all(base, size)
    expect(got == expected, "4 KiB-sector image: vdisk reads what was written")
    info = run(VDISK, "info", spec(base)).stdout
    expect("sector size:             4096" in info, "4 KiB-sector image: sector size 4096")
    raw = os.path.join(tmp, "base.raw")
    with open(raw, "wb") as f:
        f.write(expected)
    try:  # qemu does not read 4 KiB-sector VHDX: libvhdi judges the generator
        import pyvhdi
        f = pyvhdi.file()
        f.open(base)
        expect(f.bytes_per_sector == 4096 and bytes(f.read_buffer_at_offset(size, 0)) ==
               bytes(expected), "4 KiB-sector image: libvhdi reads the same")
    except ImportError:
        print("note: python3-libvhdi missing; the 4 KiB-sector judge is skipped")

    # a differencing child over a 512-byte base, sectors scattered in blocks
    pbase = os.path.join(tmp, "p.vhdx")
    w_p = [(0, rnd.randbytes(4 * MiB)), (20 * MiB, rnd.randbytes(MiB))]
    vhdxgen.make(pbase, size, w_p, block_size=MiB, lss=512)
    child = os.path.join(tmp, "c.vhdx")
    w_c = [(512, rnd.randbytes(512)), (3 * MiB + 4096, rnd.randbytes(8192)),
           (30 * MiB, rnd.randbytes(MiB)), (20 * MiB + 512 * 9, rnd.randbytes(512 * 3))]
    vhdxgen.make(child, size, w_c, block_size=MiB, lss=512, parent=pbase)
    exp = bytearray(size)
    for off, d in w_p + w_c:
        exp[off:off + len(d)] = d
    got = vdisk_read_all(child, size)
    expect(got == exp, "differencing child: its sectors, the rest from the parent by locator")
    got = vdisk_read_all(child, size, f",parent={pbase}")
    expect(got == exp, "differencing child: the same with an explicit parent")
    conformance(base, "a 4 KiB-sector image")
    conformance(child, "a differencing child")
    try:
        import pyvhdi
        c = pyvhdi.file()
        c.open(child)
        pf = pyvhdi.file()
        pf.open(pbase)
        c.set_parent(pf)
        lib = c.read_buffer_at_offset(size, 0)
        expect(bytes(lib) == bytes(exp), "differencing child: libvhdi reads the same")
    except ImportError:
        print("note: python3-libvhdi missing; the differencing judge is skipped")

    # the parent changed: its data-write GUID no longer matches the linkage
    stale = os.path.join(tmp, "stale.vhdx")
    vhdxgen.make(stale, size, w_c, block_size=MiB, parent=pbase,
                 linkage="{00000000-1111-2222-3333-444444444444}")
    p = run(VDISK, "info", spec(stale), check=False)
    expect(p.returncode == 1 and "parent_linkage" in p.stderr,
           f"a stale parent linkage is refused naming it ({p.stderr.strip()[:120]})")
    # a parent named outside the child's directory
    sub = os.path.join(tmp, "sub")
    os.mkdir(sub)
    esc = os.path.join(sub, "esc.vhdx")
    vhdxgen.make(esc, size, w_c, block_size=MiB, parent=pbase, parent_name="..\\p.vhdx")
    p = run(VDISK, "info", spec(esc), check=False)
    expect(p.returncode == 1 and "parent" in p.stderr,
           "a locator leaving the child's directory is refused")
    p = run(VDISK, "info", spec(esc, ",allow-parent-paths=on"), check=False)
    expect(p.returncode == 0, "... and followed with allow-parent-paths")

    # a dirty log: the file's BAT is empty, the log holds the real one
    dirty = os.path.join(tmp, "dirty.vhdx")
    w_d = [(0, rnd.randbytes(MiB)), (9 * MiB, rnd.randbytes(4096))]
    vhdxgen.make(dirty, size, w_d, block_size=MiB, dirty=True)
    exp = bytearray(size)
    for off, d in w_d:
        exp[off:off + len(d)] = d
    before = open(dirty, "rb").read()
    got = vdisk_read_all(dirty, size)
    expect(got == exp, "dirty log: replayed in memory, the data reads back")
    conformance(dirty, "an image with a dirty log")
    expect(open(dirty, "rb").read() == before, "dirty log: the file is not touched")
    js = run(VDISK, "info", "--json", spec(dirty)).stdout
    expect('"log_entries_replayed_in_memory": 1' in js, "dirty log: one entry replayed")
    fixed = os.path.join(tmp, "repaired.vhdx")
    shutil.copy(dirty, fixed)
    run("qemu-img", "check", "-q", "-r", "all", "-f", "vhdx", fixed, check=False)
    out = os.path.join(tmp, "repaired.raw")
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", fixed, out)
    expect(open(out, "rb").read() == bytes(exp),
           "dirty log: qemu-img check -r all repairs it to the content our replay gives")
    chk = run(VDISK, "check", spec(dirty), check=False)
    expect(chk.returncode == 1 and "log" in chk.stdout + chk.stderr,
           "vdisk check reports the log not yet replayed")


def bad_images(tmp):
    size = 16 * MiB
    w = [(0, b"\x5a" * MiB)]
    cases = [("truncated", "past the end"), ("headers", "headers"),
             ("region-required", "required but unknown"), ("block-size", "block size"),
             ("bat-state", None), ("bat-past-end", None)]
    for field, words in cases:
        img = os.path.join(tmp, f"bad-{field}.vhdx")
        vhdxgen.make(img, size, w, block_size=MiB, break_field=field)
        p = run(VDISK, "info", spec(img), check=False)
        if words:
            expect(p.returncode == 1 and words in p.stderr and "vhdx" in p.stderr,
                   f"broken {field}: refused at open ({p.stderr.strip()[:140]})")
            continue
        # a broken BAT entry is found by a read of that block and by check
        p = run(VDISK, "convert", spec(img), os.path.join(tmp, f"bad-{field}.raw"), check=False)
        expect(p.returncode == 1, f"broken {field}: a read of the block fails ({p.stderr.strip()[:140]})")
        c = run(VDISK, "check", spec(img), check=False)
        expect(c.returncode == 1 and "BAT entry" in c.stdout + c.stderr,
               f"broken {field}: vdisk check names the BAT entry")
    good = os.path.join(tmp, "good.vhdx")
    vhdxgen.make(good, size, w, block_size=MiB)
    q = run(VDISK, "bench", f"vhdx:path={good}", "--rw", "write", "--runtime", "0.1",
            check=False)
    expect(q.returncode != 0 and "read-only" in q.stderr,
           f"a writable open is refused with the reason ({q.stderr.strip()[:120]})")
    p = run(VDISK, "info", good, check=False)
    expect(p.returncode == 0 and "vhdx" in p.stdout, "a bare path with the identifier probes as vhdx")


def main():
    need("qemu-img")
    need("qemu-io")
    tmp = tempfile.mkdtemp(prefix="vdisk-vhdx-")
    try:
        qemu_images(tmp)
        gen_images(tmp)
        bad_images(tmp)
    finally:
        shutil.rmtree(tmp)
    print(f"{len(failures)} failed" if failures else "all passed")
    sys.exit(1 if failures else 0)


main()
