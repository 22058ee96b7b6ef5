"""Write VHDX images from the format's description, independently of the C
code, for tests: 512 or 4096-byte sectors, differencing images with a parent
locator, an image whose latest BAT update is only in its log (a dirty log),
and images broken in one field.  Judged alongside by qemu-img and libvhdi."""
import os
import struct
import uuid

MiB = 1 << 20

_CRC = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def guid(text):
    return uuid.UUID(text).bytes_le


BAT_GUID = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
META_GUID = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
DISK_SIZE = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SS = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SS = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOC = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
LOC_TYPE = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")

LOG_OFF, META_OFF, BAT_OFF = 1 * MiB, 2 * MiB, 3 * MiB


def _checksummed(buf, at=4):
    buf = bytearray(buf)
    buf[at:at + 4] = b"\0\0\0\0"
    buf[at:at + 4] = struct.pack("<I", crc32c(bytes(buf)))
    return bytes(buf)


def header(seq, data_write, log_guid=b"\0" * 16):
    h = bytearray(4096)
    h[0:4] = b"head"
    struct.pack_into("<Q", h, 8, seq)
    h[16:32] = os.urandom(16)
    h[32:48] = data_write
    h[48:64] = log_guid
    struct.pack_into("<HHIQ", h, 64, 0, 1, MiB, LOG_OFF)
    return _checksummed(h)


def region_table(bat_len, extra=()):
    rt = bytearray(64 * 1024)
    rt[0:4] = b"regi"
    entries = [(BAT_GUID, BAT_OFF, bat_len, 1), (META_GUID, META_OFF, MiB, 1)] + list(extra)
    struct.pack_into("<I", rt, 8, len(entries))
    for i, (g, off, ln, req) in enumerate(entries):
        rt[16 + 32 * i:32 + 32 * i] = g
        struct.pack_into("<QII", rt, 32 + 32 * i, off, ln, req)
    return _checksummed(rt)


def _utf16(s):
    return s.encode("utf-16-le")


def locator(pairs):
    kv = [(_utf16(k), _utf16(v)) for k, v in pairs]
    head = bytearray(20 + 12 * len(kv))
    head[0:16] = LOC_TYPE
    struct.pack_into("<HH", head, 16, 0, len(kv))
    blob = bytearray()
    for i, (k, v) in enumerate(kv):
        ko = len(head) + len(blob)
        blob += k
        vo = len(head) + len(blob)
        blob += v
        struct.pack_into("<IIHH", head, 20 + 12 * i, ko, vo, len(k), len(v))
    return bytes(head + blob)


def metadata(block_size, size, lss, pss, page83, parent_loc=None, fixed=False,
             block_size_override=None):
    md = bytearray(MiB)
    md[0:8] = b"metadata"
    flags = (1 if fixed else 0) | (2 if parent_loc is not None else 0)
    items = [
        (FILE_PARAMS, struct.pack("<II", block_size_override or block_size, flags), 4 | 0),
        (DISK_SIZE, struct.pack("<Q", size), 4 | 2),
        (PAGE83, page83, 4 | 2),
        (LOGICAL_SS, struct.pack("<I", lss), 4 | 2),
        (PHYSICAL_SS, struct.pack("<I", pss), 4 | 2),
    ]
    if parent_loc is not None:
        items.append((PARENT_LOC, parent_loc, 4))
    struct.pack_into("<H", md, 10, len(items))
    off = 64 * 1024
    for i, (g, data, fl) in enumerate(items):
        e = 32 + 32 * i
        md[e:e + 16] = g
        struct.pack_into("<III", md, e + 16, off, len(data), fl)
        md[off:off + len(data)] = data
        off += (len(data) + 4095) // 4096 * 4096
    return bytes(md)


def log_entry(seq, log_guid, writes, tail=0, file_size=0):
    """One log entry writing 4 KiB sectors: writes = [(offset, 4096 bytes)]."""
    ndesc = len(writes)
    dsecs = (64 + 32 * ndesc + 4095) // 4096
    e = bytearray(4096 * (dsecs + ndesc))
    e[0:4] = b"loge"
    struct.pack_into("<IIQII", e, 8, len(e), tail, seq, ndesc, 0)
    e[32:48] = log_guid
    struct.pack_into("<QQ", e, 48, file_size, file_size)
    for i, (off, data) in enumerate(writes):
        d = 64 + 32 * i
        e[d:d + 4] = b"desc"
        e[d + 4:d + 8] = data[4092:4096]
        e[d + 8:d + 16] = data[0:8]
        struct.pack_into("<QQ", e, d + 16, off, seq)
        s = 4096 * (dsecs + i)
        e[s:s + 4] = b"data"
        struct.pack_into("<I", e, s + 4, seq >> 32)
        e[s + 8:s + 4092] = data[8:4092]
        struct.pack_into("<I", e, s + 4092, seq & 0xFFFFFFFF)
    return _checksummed(e)


def make(path, size, writes=(), block_size=MiB, lss=512, pss=4096, parent=None,
         parent_name=None, fixed=False, dirty=False, linkage=None, break_field=None):
    """writes: [(byte offset, bytes)], sector-aligned.  parent: the parent
    image's path (a differencing image naming it by relative path)."""
    spb = block_size // lss
    chunk_ratio = (1 << 23) * lss // block_size
    nblocks = (size + block_size - 1) // block_size
    diff = parent is not None
    if diff:
        nchunks = (nblocks + chunk_ratio - 1) // chunk_ratio
        bat_entries = nchunks * (chunk_ratio + 1)
    else:
        bat_entries = nblocks + (nblocks - 1) // chunk_ratio
    bat_len = max(MiB, (bat_entries * 8 + MiB - 1) // MiB * MiB)
    data_write = os.urandom(16)
    bat = [0] * bat_entries
    blocks = {}  # block -> bytearray
    present = {}  # block -> set of sectors in block
    for off, data in writes:
        assert off % lss == 0 and len(data) % lss == 0
        for k in range(0, len(data), lss):
            b, inb = divmod((off + k) // lss, spb)
            blocks.setdefault(b, bytearray(block_size))
            blocks[b][inb * lss:(inb + 1) * lss] = data[k:k + lss]
            present.setdefault(b, set()).add(inb)
    if fixed:
        for b in range(nblocks):
            blocks.setdefault(b, bytearray(block_size))
    nxt = BAT_OFF + bat_len
    layout = {}
    for b in sorted(blocks):
        layout[b] = nxt
        nxt += block_size
        idx = b + b // chunk_ratio
        state = 6
        if diff and len(present.get(b, ())) != spb:
            state = 7
        bat[idx] = state | (layout[b] // MiB) << 20
    bitmaps = {}
    if diff:
        for b in blocks:
            c = b // chunk_ratio
            if c not in bitmaps:
                bitmaps[c] = (nxt, bytearray(MiB))
                bat[c * (chunk_ratio + 1) + chunk_ratio] = 6 | (nxt // MiB) << 20
                nxt += MiB
            base = (b - c * chunk_ratio) * spb
            for s in present.get(b, ()):
                bit = base + s
                bitmaps[c][1][bit // 8] |= 1 << (bit % 8)
    if break_field == "bat-past-end" and blocks:
        b = min(blocks)
        bat[b + b // chunk_ratio] = 6 | ((nxt + 64 * MiB) // MiB) << 20
    if break_field == "bat-state" and blocks:
        b = min(blocks)
        bat[b + b // chunk_ratio] = (bat[b + b // chunk_ratio] & ~7) | 4
    bat_bytes = bytearray(bat_len)
    for i, e in enumerate(bat):
        struct.pack_into("<Q", bat_bytes, 8 * i, e)

    loc = None
    if diff:
        with open(parent, "rb") as pf:
            pf.seek(64 * 1024)
            h1 = pf.read(4096)
            pf.seek(128 * 1024)
            h2 = pf.read(4096)
        ph = h1 if struct.unpack_from("<Q", h1, 8)[0] > struct.unpack_from("<Q", h2, 8)[0] else h2
        link = linkage or "{%s}" % uuid.UUID(bytes_le=ph[32:48])
        loc = locator([("parent_linkage", link),
                       ("relative_path", ".\\" + (parent_name or os.path.basename(parent)))])
    md = metadata(block_size, size, lss, pss, os.urandom(16), loc, fixed,
                  block_size_override=3 * MiB if break_field == "block-size" else None)

    log_guid = b"\0" * 16
    log = bytearray(MiB)
    if dirty:
        # the BAT's first page as it should be goes to the log; the file keeps
        # an empty one, so only a replay shows the data
        log_guid = os.urandom(16)
        entry = log_entry(7, log_guid, [(BAT_OFF, bytes(bat_bytes[0:4096]))], tail=0,
                          file_size=nxt)
        log[0:len(entry)] = entry
        bat_bytes[0:4096] = bytes(4096)

    with open(path, "wb") as f:
        f.truncate(nxt)
        f.seek(0)
        f.write(b"vhdxfile" + _utf16("vhdxgen"))
        hdr = header(10, data_write, log_guid)
        if break_field == "headers":
            hdr = hdr[:4] + b"\0\0\0\0" + hdr[8:]
        f.seek(64 * 1024)
        f.write(hdr)
        f.seek(128 * 1024)
        f.write(header(9, data_write, log_guid) if break_field != "headers" else hdr)
        extra = ()
        if break_field == "region-required":
            extra = [(os.urandom(16), 200 * MiB, MiB, 1)]
        rt = region_table(bat_len, extra)
        f.seek(192 * 1024)
        f.write(rt)
        f.seek(256 * 1024)
        f.write(rt)
        f.seek(LOG_OFF)
        f.write(log)
        f.seek(META_OFF)
        f.write(md)
        f.seek(BAT_OFF)
        f.write(bat_bytes)
        for b, off in layout.items():
            f.seek(off)
            f.write(blocks[b])
        for c, (off, bm) in bitmaps.items():
            f.seek(off)
            f.write(bm)
        if break_field == "truncated":
            f.truncate(BAT_OFF + 4096)
    return data_write
