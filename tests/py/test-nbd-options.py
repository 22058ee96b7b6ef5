#!/usr/bin/python3
# Option haggling, by libnbd's option mode and by hand: LIST, INFO, GO, ABORT,
# EXPORT_NAME, STRUCTURED_REPLY, LIST/SET_META_CONTEXT, STARTTLS without TLS,
# unknown options (answered NBD_REP_ERR_UNSUP, haggling goes on), clients
# that are not fixed-newstyle, names, descriptions and block sizes (GO
# without a block-size request refused where the minimum is above 512).
import struct
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from nbdtest import *  # noqa: E402,F403

try:
    import nbd
except ImportError:
    skip("needs python3-libnbd")


def libnbd_opt_mode(srv):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_full_info(True)
    h.connect_unix(srv.sock)
    names = []
    h.opt_list(lambda name, desc: names.append((name, desc)))
    assert names == [("disk0", "a test disk")], names  # LIST sends the description
    # INFO on the wrong name fails and leaves the connection usable
    h.set_export_name("nope")
    try:
        h.opt_info()
        raise AssertionError("INFO of an unknown export succeeded")
    except nbd.Error:
        pass
    h.set_export_name("disk0")
    h.opt_info()
    assert h.get_size() == 8 << 20
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
    assert h.get_block_size(nbd.SIZE_MAXIMUM) == 64 << 20
    assert h.get_canonical_export_name() == "disk0"
    assert h.get_export_description() == "a test disk"
    ctx = []
    n = h.opt_list_meta_context(lambda name: ctx.append(name))
    assert ctx == ["base:allocation"] and n == 1, ctx
    h.add_meta_context("base:allocation")
    h.opt_go()
    assert h.can_meta_context("base:allocation")
    assert h.get_structured_replies_negotiated()
    h.pwrite(b"x" * 512, 0)
    assert h.pread(512, 0) == b"x" * 512
    h.shutdown()

    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_unix(srv.sock)
    h.opt_abort()
    assert h.aio_is_closed() or h.aio_is_dead()


def raw_haggling(srv):
    r = Raw(srv.sock)
    r.greeting()
    # unknown option: refused, and the next option still works
    r.opt(0x1234, b"junk")
    assert r.reply()[1] == REP_ERR_UNSUP
    r.opt(OPT_LIST, b"extra")
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_LIST)
    rep = r.replies()
    assert rep[0][0] == REP_SERVER and rep[0][1] == b"\0\0\0\5disk0a test disk", rep
    assert rep[-1][0] == REP_ACK
    # STARTTLS when TLS is off
    r.opt(OPT_STARTTLS)
    assert r.reply()[1] == REP_ERR_POLICY
    r.opt(OPT_STARTTLS, b"x")
    assert r.reply()[1] == REP_ERR_INVALID
    # meta contexts need structured replies first
    r.opt(OPT_SET_META_CONTEXT, meta_data(b"disk0"))
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_STRUCTURED_REPLY, b"x")
    assert r.reply()[1] == REP_ERR_INVALID
    r.opt(OPT_STRUCTURED_REPLY)
    assert r.reply()[1] == REP_ACK
    # listing: with no query, with the namespace wildcard, with unknown ones
    for queries, want in (((), 1), ((b"base:",), 1), ((b"x-foo:bar",), 0),
                          ((b"base:nothing",), 0), ((b"base:allocation",) * 3, 1)):
        r.opt(OPT_LIST_META_CONTEXT, meta_data(b"disk0", queries))
        rep = r.replies()
        assert rep[-1][0] == REP_ACK and len(rep) == want + 1, (queries, rep)
        if want:
            assert rep[0][0] == REP_META_CONTEXT and rep[0][1][4:] == b"base:allocation"
    # selecting: unknown export, wildcard (selects nothing), the real one
    r.opt(OPT_SET_META_CONTEXT, meta_data(b"other"))
    assert r.reply()[1] == REP_ERR_UNKNOWN
    r.opt(OPT_SET_META_CONTEXT, meta_data(b"disk0", (b"base:",)))
    assert [x[0] for x in r.replies()] == [REP_ACK]
    r.opt(OPT_SET_META_CONTEXT, meta_data(b"disk0"))
    rep = r.replies()
    assert [x[0] for x in rep] == [REP_META_CONTEXT, REP_ACK]
    ctx_id = struct.unpack(">I", rep[0][1][:4])[0]
    assert ctx_id != 0
    # INFO with every info type, then GO
    r.opt(OPT_INFO, go_data(b"disk0", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 77)))
    infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in r.replies() if t == REP_INFO}
    assert infos[INFO_NAME] == b"disk0"
    assert infos[INFO_DESCRIPTION] == b"a test disk"
    assert struct.unpack(">III", infos[INFO_BLOCK_SIZE]) == (512, 512, 64 << 20)
    size, flags = struct.unpack(">QH", infos[INFO_EXPORT])
    assert size == 8 << 20
    assert flags & 1 and not flags & 2, hex(flags)          # HAS_FLAGS, writable
    assert flags & (1 << 7), "DF not offered with structured replies"
    r.go(b"disk0", structured=False)
    # block status with the context negotiated above
    r.request(CMD_BLOCK_STATUS, 0, 1 << 20, cookie=5)
    cookie, err, data = r.read_reply()
    assert cookie == 5 and err == 0 and struct.unpack(">I", data[:4])[0] == ctx_id
    r.request(CMD_DISC)
    assert r.closed_by_server()


def export_name_paths(srv):
    # NBD_OPT_EXPORT_NAME: right name enters transmission (with the 124 zero
    # bytes unless NO_ZEROES), a wrong one is a disconnect
    for flags, pad in ((1, 124), (3, 0)):
        r = Raw(srv.sock)
        r.greeting(flags)
        r.opt(OPT_EXPORT_NAME, b"disk0")
        size, eflags = struct.unpack(">QH", r.recv_exact(10))
        assert size == 8 << 20 and eflags & 1
        if pad:
            assert r.recv_exact(pad) == bytes(pad)
        r.request(CMD_READ, 0, 512, cookie=9)
        assert r.read_reply(512)[:2] == (9, 0)
        r.close()
    r = Raw(srv.sock)
    r.greeting()
    r.opt(OPT_EXPORT_NAME, b"wrong")
    assert r.closed_by_server()
    # a client that is not fixed-newstyle still gets served; it has only
    # NBD_OPT_EXPORT_NAME, so anything else is refused and changes nothing
    r = Raw(srv.sock)
    r.greeting(0)
    for opt, data in ((OPT_STRUCTURED_REPLY, b""), (OPT_GO, go_data(b"disk0")),
                      (OPT_LIST, b"")):
        r.opt(opt, data)
        assert r.reply()[1] == REP_ERR_INVALID, opt
    r.opt(OPT_EXPORT_NAME, b"disk0")
    size, eflags = struct.unpack(">QH", r.recv_exact(10))
    assert size == 8 << 20 and not eflags & (1 << 7), "structured replies were negotiated"
    r.recv_exact(124)
    r.request(CMD_READ, 0, 512, cookie=4)
    assert r.read_reply(512)[:2] == (4, 0)
    r.close()
    # GO without a block-size request, and a second GO after a failed one
    r = Raw(srv.sock)
    r.greeting()
    r.opt(OPT_GO, go_data(b"bad"))
    assert r.reply()[1] == REP_ERR_UNKNOWN
    r.go(b"disk0", infos=())
    r.close()


def default_name():
    with Server("ram:size=1M") as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.go(b"")
        r.close()
        h = connect(srv)
        assert h.get_size() == 1 << 20
        h.shutdown()


def large_sectors():
    # 4 KiB sectors.  A client that asks for NBD_INFO_BLOCK_SIZE is told a
    # minimum of 4096 and held to it; one that does not is told 1 and may send
    # requests of any alignment, served through the covering sectors
    with Server("ram:size=1M,sector-size=4096") as srv:
        r = Raw(srv.sock)
        r.greeting()
        r.opt(OPT_INFO, go_data(b"", ()))
        rep = r.replies()
        assert rep[-1][0] == REP_ACK, rep
        infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in rep if t == REP_INFO}
        assert struct.unpack(">III", infos[INFO_BLOCK_SIZE]) == (1, 4096, 64 << 20), infos
        r.go(b"", infos=(INFO_NAME, INFO_BLOCK_SIZE))
        r.request(CMD_READ, 0, 4096, cookie=1)
        assert r.read_reply(4096)[:2] == (1, 0)
        r.request(CMD_READ, 512, 512, cookie=2)
        assert r.read_reply(512)[:2] == (2, EINVAL)
        r.close()
        r = Raw(srv.sock)
        r.greeting()
        rep = r.go(b"", infos=())
        infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in rep if t == REP_INFO}
        assert struct.unpack(">III", infos[INFO_BLOCK_SIZE])[0] == 1, infos
        r.request(CMD_WRITE, 4095, 3, cookie=3, data=b"xyz")
        assert r.read_reply()[:2] == (3, 0)
        r.request(CMD_READ, 4094, 5, cookie=4)
        assert r.read_reply(5) == (4, 0, b"\0xyz\0")
        r.close()
        # libnbd asks for the sizes
        h = connect(srv)
        assert h.get_block_size(nbd.SIZE_MINIMUM) == 4096
        h.shutdown()


def main():
    with Server("ram:size=8M", "--export-name", "disk0", "--description", "a test disk") as srv:
        libnbd_opt_mode(srv)
        raw_haggling(srv)
        export_name_paths(srv)
        assert srv.alive()
    default_name()
    large_sectors()
    print("ok")


main()
