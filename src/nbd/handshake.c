/* The handshake: the fixed-newstyle greeting, the client's flags, and option
 * haggling.  An option is handled once it is wholly buffered; one too long to
 * buffer (NBD_MAX_OPTION) is skipped as it arrives and refused with
 * NBD_REP_ERR_TOO_BIG.  Every length inside an option is checked against the
 * option's own length before it is used.  Malformed options are answered with
 * NBD_REP_ERR_INVALID and haggling goes on; only what cannot be answered (bad
 * magic, unknown client flags, a refused NBD_OPT_EXPORT_NAME) disconnects.  A
 * client without NBD_FLAG_C_FIXED_NEWSTYLE speaks plain newstyle, which has
 * NBD_OPT_EXPORT_NAME alone: every other option is refused. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nbd/server.h"

#define META_ALLOC_NAME "base:allocation"

/* Room for n more bytes of output.  The caller marks the connection dirty,
 * except nbd_hs_start(), which runs before a worker owns the connection. */
static unsigned char *ctl_put(struct nbd_conn *c, size_t n)
{
	if (nbd_obuf_reserve(&c->ctl, n) < 0)
		return NULL;
	unsigned char *p = c->ctl.p + c->ctl.len;
	c->ctl.len += n;
	return p;
}

void nbd_hs_start(struct nbd_conn *c)
{
	unsigned char *p = ctl_put(c, 18);
	if (!p) {
		c->state = CS_CLOSING;
		return;
	}
	p = nbd_put64(p, NBD_MAGIC);
	p = nbd_put64(p, NBD_IHAVEOPT);
	nbd_put16(p, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	c->state = CS_CLIENT_FLAGS;
}

/* An option reply: header, then len bytes from each of two pieces. */
static bool reply2(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *a, size_t alen,
                   const void *b, size_t blen)
{
	unsigned char *p = ctl_put(c, NBD_REP_HEADER_SIZE + alen + blen);
	if (!p) {
		nbd_conn_fail(c, "out of memory for an option reply");
		return false;
	}
	p = nbd_put64(p, NBD_REP_MAGIC);
	p = nbd_put32(p, opt);
	p = nbd_put32(p, type);
	p = nbd_put32(p, (uint32_t)(alen + blen));
	p = nbd_putmem(p, a, alen);
	nbd_putmem(p, b, blen);
	nbd_conn_mark_dirty(c);
	return true;
}

static bool reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
	return reply2(c, opt, type, data, len, NULL, 0);
}

/* An error reply whose payload is a message for the user. */
__attribute__((format(printf, 4, 5))) static bool reply_err(struct nbd_conn *c, uint32_t opt,
                                                            uint32_t type, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof msg)
		n = sizeof msg - 1;
	nbd_log(c->srv, VDISK_NBD_LOG_DEBUG, "%s: option %" PRIu32 " refused: %s", c->peer, opt,
	        msg);
	return reply(c, opt, type, msg, (size_t)n);
}

static bool name_matches(const struct nbd_conn *c, const unsigned char *name, uint32_t len)
{
	const char *want = c->srv->export_name;
	return strlen(want) == len && memcmp(want, name, len) == 0;
}

static uint64_t export_size(const struct nbd_server *s)
{
	return vdisk_sector_count(s->disk) << s->shift;
}

static uint16_t export_flags(const struct nbd_conn *c)
{
	return (uint16_t)(c->srv->eflags | (c->structured ? NBD_FLAG_SEND_DF : 0));
}

static void enter_transmission(struct nbd_conn *c, uint64_t size, uint16_t eflags)
{
	c->state = CS_TRANSMISSION;
	c->export_size = size;
	c->eflags = eflags;
	c->deadline_ns = 0;
	nbd_log(c->srv, VDISK_NBD_LOG_DEBUG,
	        "%s: transmission: %" PRIu64 " bytes, flags 0x%x, structured replies %s, "
	        "base:allocation %s, TLS %s",
	        c->peer, size, eflags, c->structured ? "on" : "off", c->meta_alloc ? "on" : "off",
	        c->tls_active ? "on" : "off");
}

static bool opt_export_name(struct nbd_conn *c, const unsigned char *data, uint32_t len)
{
	if (len > NBD_MAX_STRING || !name_matches(c, data, len)) {
		/* this option has no error reply: the protocol says disconnect */
		nbd_conn_fail(c, "NBD_OPT_EXPORT_NAME for an unknown export (%" PRIu32 " bytes)",
		              len);
		return false;
	}
	uint64_t size = export_size(c->srv);
	uint16_t eflags = export_flags(c);
	size_t n = 10 + (c->no_zeroes ? 0 : 124);
	unsigned char *p = ctl_put(c, n);
	if (!p) {
		nbd_conn_fail(c, "out of memory");
		return false;
	}
	memset(p, 0, n);
	p = nbd_put64(p, size);
	nbd_put16(p, eflags);
	nbd_conn_mark_dirty(c);
	enter_transmission(c, size, eflags);
	return true;
}

static bool send_info(struct nbd_conn *c, uint32_t opt, uint16_t type, const void *data, size_t len)
{
	unsigned char t[2];
	nbd_put16(t, type);
	return reply2(c, opt, NBD_REP_INFO, t, 2, data, len);
}

static bool opt_info_go(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	struct nbd_server *s = c->srv;
	if (len < 6)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "option too short (%" PRIu32 " bytes)", len);
	uint32_t namelen = nbd_get32(data);
	if (namelen > len - 6)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "name length %" PRIu32 " runs past the option's %" PRIu32 " bytes",
		                 namelen, len);
	if (namelen > NBD_MAX_STRING)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "export name of %" PRIu32 " bytes is longer than %u", namelen,
		                 NBD_MAX_STRING);
	const unsigned char *name = data + 4;
	uint32_t nreq = nbd_get16(data + 4 + namelen);
	if ((uint64_t)4 + namelen + 2 + 2ull * nreq != len)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "%" PRIu32 " information requests do not fill the option", nreq);
	if (!name_matches(c, name, namelen))
		return reply_err(c, opt, NBD_REP_ERR_UNKNOWN, "no export named '%.*s'",
		                 (int)(namelen < 64 ? namelen : 64), (const char *)name);
	bool want_name = false, want_desc = false, want_block = false;
	for (uint32_t i = 0; i < nreq; i++) {
		uint16_t t = nbd_get16(data + 4 + namelen + 2 + 2 * i);
		if (t == NBD_INFO_NAME)
			want_name = true;
		else if (t == NBD_INFO_DESCRIPTION)
			want_desc = true;
		else if (t == NBD_INFO_BLOCK_SIZE)
			want_block = true;
	}

	uint64_t size = export_size(s);
	uint16_t eflags = export_flags(c);
	unsigned char b[12];
	nbd_put16(nbd_put64(b, size), eflags);
	if (!send_info(c, opt, NBD_INFO_EXPORT, b, 10))
		return false;
	if (want_name && !send_info(c, opt, NBD_INFO_NAME, s->export_name, strlen(s->export_name)))
		return false;
	if (want_desc && s->description &&
	    !send_info(c, opt, NBD_INFO_DESCRIPTION, s->description, strlen(s->description)))
		return false;
	/* A client that asks for the sizes gets the sector as the minimum and is
	 * held to it.  One that does not may send requests of any alignment
	 * (proto.md, "Block size constraints": a server SHOULD take a minimum of
	 * 1), and they are served by reading and writing whole sectors around
	 * them; it is told so, since a server may send the sizes unasked. */
	nbd_put32(nbd_put32(nbd_put32(b, want_block ? s->min_block : 1), s->pref_block),
	          s->max_payload);
	if (!send_info(c, opt, NBD_INFO_BLOCK_SIZE, b, 12))
		return false;
	if (!reply(c, opt, NBD_REP_ACK, NULL, 0))
		return false;
	if (opt == NBD_OPT_GO) {
		c->strict = want_block;
		enter_transmission(c, size, eflags);
	}
	return true;
}

static bool opt_meta(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	bool set = opt == NBD_OPT_SET_META_CONTEXT;
	if (set)
		c->meta_alloc = false; /* replaced, even by a failing request */
	if (!c->structured)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "negotiate structured replies first");
	if (len < 8)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "option too short (%" PRIu32 " bytes)", len);
	uint32_t namelen = nbd_get32(data);
	if (namelen > len - 8)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "name length %" PRIu32 " runs past the option's %" PRIu32 " bytes",
		                 namelen, len);
	if (namelen > NBD_MAX_STRING)
		return reply_err(c, opt, NBD_REP_ERR_INVALID, "export name longer than %u bytes",
		                 NBD_MAX_STRING);
	const unsigned char *name = data + 4;
	uint32_t pos = 4 + namelen;
	uint32_t nq = nbd_get32(data + pos);
	pos += 4;
	/* the whole option is checked before anything is answered */
	uint32_t qpos = pos;
	for (uint32_t i = 0; i < nq; i++) {
		if (len - qpos < 4)
			return reply_err(c, opt, NBD_REP_ERR_INVALID,
			                 "%" PRIu32 " queries run past the end of the option", nq);
		uint32_t ql = nbd_get32(data + qpos);
		qpos += 4;
		if (ql > len - qpos)
			return reply_err(c, opt, NBD_REP_ERR_INVALID,
			                 "query length %" PRIu32 " runs past the end of the option",
			                 ql);
		if (ql > NBD_MAX_STRING)
			return reply_err(c, opt, NBD_REP_ERR_INVALID, "query longer than %u bytes",
			                 NBD_MAX_STRING);
		qpos += ql;
	}
	if (qpos != len)
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "%" PRIu32 " bytes after the last query", len - qpos);
	if (!name_matches(c, name, namelen))
		return reply_err(c, opt, NBD_REP_ERR_UNKNOWN, "no export named '%.*s'",
		                 (int)(namelen < 64 ? namelen : 64), (const char *)name);

	bool match = nq == 0 && !set; /* listing with no query: every context */
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql = nbd_get32(data + pos);
		const char *q = (const char *)data + pos + 4;
		pos += 4 + ql;
		if (ql == strlen(META_ALLOC_NAME) && memcmp(q, META_ALLOC_NAME, ql) == 0)
			match = true;
		else if (!set && ql == 5 && memcmp(q, "base:", 5) == 0)
			match = true;
	}
	if (match) {
		unsigned char id[4];
		nbd_put32(id, set ? NBD_META_ALLOC_ID : 0);
		if (!reply2(c, opt, NBD_REP_META_CONTEXT, id, 4, META_ALLOC_NAME,
		            strlen(META_ALLOC_NAME)))
			return false;
	}
	if (set)
		c->meta_alloc = match;
	return reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static bool handle_option(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	struct nbd_server *s = c->srv;
	if (!c->fixed && opt != NBD_OPT_EXPORT_NAME) {
		/* plain newstyle has this one option; the reply is for a client
		 * that set the flag and forgot it (nbdkit answers the same) */
		return reply_err(c, opt, NBD_REP_ERR_INVALID,
		                 "only NBD_OPT_EXPORT_NAME without fixed newstyle");
	}
	if (s->tls == VDISK_NBD_TLS_REQUIRE && !c->tls_active && opt != NBD_OPT_STARTTLS &&
	    opt != NBD_OPT_ABORT) {
		if (opt == NBD_OPT_EXPORT_NAME) {
			nbd_conn_fail(c, "NBD_OPT_EXPORT_NAME without TLS, which is required");
			return false;
		}
		return reply_err(c, opt, NBD_REP_ERR_TLS_REQD, "this server requires TLS");
	}
	switch (opt) {
	case NBD_OPT_EXPORT_NAME: return opt_export_name(c, data, len);
	case NBD_OPT_ABORT: c->abort_after_flush = true; return reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST: {
		if (len)
			return reply_err(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
		/* the name's length, the name, then (the rest of the reply) the
		 * description, as qemu-nbd sends it and libnbd reads it */
		unsigned char n[4 + NBD_MAX_STRING];
		size_t nl = strlen(s->export_name);
		nbd_put32(n, (uint32_t)nl);
		memcpy(n + 4, s->export_name, nl);
		const char *d = s->description ? s->description : "";
		return reply2(c, opt, NBD_REP_SERVER, n, 4 + nl, d, strlen(d)) &&
		       reply(c, opt, NBD_REP_ACK, NULL, 0);
	}
	case NBD_OPT_STARTTLS:
		if (len)
			return reply_err(c, opt, NBD_REP_ERR_INVALID,
			                 "NBD_OPT_STARTTLS takes no data");
		if (c->tls_active)
			return reply_err(c, opt, NBD_REP_ERR_INVALID, "TLS is already on");
		if (!s->tls_ctx)
			return reply_err(c, opt, NBD_REP_ERR_POLICY,
			                 "TLS is not enabled on this server");
		c->starttls_pending = true;
		return reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_INFO:
	case NBD_OPT_GO: return opt_info_go(c, opt, data, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			return reply_err(c, opt, NBD_REP_ERR_INVALID,
			                 "NBD_OPT_STRUCTURED_REPLY takes no data");
		c->structured = true;
		return reply(c, opt, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT: return opt_meta(c, opt, data, len);
	default:
		return reply_err(c, opt, NBD_REP_ERR_UNSUP, "option %" PRIu32 " is not supported",
		                 opt);
	}
}

bool nbd_hs_parse(struct nbd_conn *c)
{
	for (;;) {
		size_t avail = c->in_end - c->in_start;
		unsigned char *p = c->in + c->in_start;
		switch (c->state) {
		case CS_CLIENT_FLAGS: {
			if (avail < 4)
				return true;
			uint32_t flags = nbd_get32(p);
			c->in_start += 4;
			if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
				nbd_conn_fail(c, "unknown client flags 0x%" PRIx32, flags);
				return false;
			}
			c->fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
			c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
			if (!c->fixed && c->srv->tls == VDISK_NBD_TLS_REQUIRE) {
				nbd_conn_fail(
				    c, "TLS is required, and the client cannot do fixed newstyle");
				return false;
			}
			c->state = CS_OPTIONS;
			break;
		}
		case CS_OPT_DISCARD: {
			size_t take = avail < c->discard ? avail : (size_t)c->discard;
			c->in_start += take;
			c->discard -= take;
			if (c->discard)
				return true;
			c->state = CS_OPTIONS;
			if (!reply_err(c, c->discard_opt, NBD_REP_ERR_TOO_BIG,
			               "option data longer than %u bytes", NBD_MAX_OPTION))
				return false;
			break;
		}
		case CS_OPTIONS: {
			if (avail < NBD_OPT_HEADER_SIZE)
				return true;
			if (nbd_get64(p) != NBD_IHAVEOPT) {
				nbd_conn_fail(c, "bad option magic");
				return false;
			}
			uint32_t opt = nbd_get32(p + 8), len = nbd_get32(p + 12);
			if (len > NBD_MAX_OPTION) {
				if (opt == NBD_OPT_EXPORT_NAME) {
					nbd_conn_fail(c, "NBD_OPT_EXPORT_NAME of %" PRIu32 " bytes",
					              len);
					return false;
				}
				c->in_start += NBD_OPT_HEADER_SIZE;
				c->discard = len;
				c->discard_opt = opt;
				c->state = CS_OPT_DISCARD;
				break;
			}
			if (avail < NBD_OPT_HEADER_SIZE + (size_t)len)
				return true;
			c->in_start += NBD_OPT_HEADER_SIZE + (size_t)len;
			if (!handle_option(c, opt, p + NBD_OPT_HEADER_SIZE, len))
				return false;
			if (c->state != CS_OPTIONS || c->starttls_pending || c->abort_after_flush)
				return true;
			if (!nbd_conn_wants_input(c))
				return true; /* the client is not reading our replies */
			break;
		}
		default: return true;
		}
	}
}
