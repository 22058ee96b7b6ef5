/* Login (RFC 7143 6, 11.12-11.13, 13) and text requests: key negotiation,
 * CHAP, discovery (SendTargets). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "iscsi/target.h"

/* A reply under construction: "key=value\0" pairs. */
struct kv_out {
	char buf[8192];
	size_t len;
	bool overflow;
};

static void kv_add(struct kv_out *o, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void kv_add(struct kv_out *o, const char *key, const char *fmt, ...)
{
	char val[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(val, sizeof val, fmt, ap);
	va_end(ap);
	int n = snprintf(o->buf + o->len, sizeof o->buf - o->len, "%s=%s", key, val);
	if (n < 0 || (size_t)n + 1 >= sizeof o->buf - o->len) {
		o->overflow = true;
		return;
	}
	o->len += (size_t)n + 1;
}

struct login_state {
	/* what this request said */
	const char *iname, *tname, *stype, *auth;
	const char *chap_a, *chap_n, *chap_r, *chap_i, *chap_c;
	bool bad;
	uint16_t status; /* class << 8 | detail, 0: success */
};

/* Pending operational values, applied when the login completes. */
struct login_pending {
	bool hdigest, ddigest, initial_r2t, immediate_data;
	uint32_t max_send_dsl, max_burst, first_burst, max_r2t;
	bool tpgt_sent, mrdsl_sent;
};

static bool parse_num(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 0);
	if (errno || end == v || *end || n > max || v[0] == '-')
		return false;
	*out = n;
	return true;
}

static bool list_has(const char *list, const char *item)
{
	size_t n = strlen(item);
	const char *p = list;
	while (p && *p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == n && strncmp(p, item, n) == 0)
			return true;
		p = comma ? comma + 1 : NULL;
	}
	return false;
}

/* The first of the initiator's list that we support (list order is its
 * preference). */
static const char *pick_digest(const char *list)
{
	const char *p = list;
	while (p && *p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 6 && strncmp(p, "CRC32C", 6) == 0)
			return "CRC32C";
		if (len == 4 && strncmp(p, "None", 4) == 0)
			return "None";
		p = comma ? comma + 1 : NULL;
	}
	return "Reject";
}

static bool is_yes(const char *v)
{
	return strcmp(v, "Yes") == 0;
}

/* Operational keys, shared by login and text.  Returns false if the key is
 * not one of them. */
static bool op_key(struct isc_conn *c, struct login_pending *p, const char *k, const char *v,
                   struct kv_out *o)
{
	uint64_t n;
	if (strcmp(k, "HeaderDigest") == 0 || strcmp(k, "DataDigest") == 0) {
		const char *d = pick_digest(v);
		if (k[0] == 'H')
			p->hdigest = strcmp(d, "CRC32C") == 0;
		else
			p->ddigest = strcmp(d, "CRC32C") == 0;
		kv_add(o, k, "%s", d);
	} else if (strcmp(k, "MaxRecvDataSegmentLength") == 0) {
		if (!parse_num(v, 0xffffff, &n) || n < 512) {
			kv_add(o, k, "Reject");
			return true;
		}
		p->max_send_dsl = (uint32_t)n;
		if (!p->mrdsl_sent) {
			kv_add(o, k, "%u", ISC_MAX_RECV_DSL);
			p->mrdsl_sent = true;
		}
	} else if (strcmp(k, "MaxBurstLength") == 0 || strcmp(k, "FirstBurstLength") == 0) {
		if (!parse_num(v, 0xffffff, &n) || n < 512) {
			kv_add(o, k, "Reject");
			return true;
		}
		if (k[0] == 'M') {
			p->max_burst = n < ISC_MAX_BURST ? (uint32_t)n : ISC_MAX_BURST;
			kv_add(o, k, "%" PRIu32, p->max_burst);
		} else {
			p->first_burst = n < ISC_FIRST_BURST ? (uint32_t)n : ISC_FIRST_BURST;
			kv_add(o, k, "%" PRIu32, p->first_burst);
		}
	} else if (strcmp(k, "MaxOutstandingR2T") == 0) {
		if (!parse_num(v, 65535, &n) || n < 1) {
			kv_add(o, k, "Reject");
			return true;
		}
		p->max_r2t = n < ISC_MAX_R2T ? (uint32_t)n : ISC_MAX_R2T;
		kv_add(o, k, "%" PRIu32, p->max_r2t);
	} else if (strcmp(k, "InitialR2T") == 0) {
		p->initial_r2t = is_yes(v); /* OR with our No */
		kv_add(o, k, "%s", p->initial_r2t ? "Yes" : "No");
	} else if (strcmp(k, "ImmediateData") == 0) {
		p->immediate_data = is_yes(v); /* AND with our Yes */
		kv_add(o, k, "%s", p->immediate_data ? "Yes" : "No");
	} else if (strcmp(k, "DataPDUInOrder") == 0 || strcmp(k, "DataSequenceInOrder") == 0) {
		kv_add(o, k, "Yes");
	} else if (strcmp(k, "MaxConnections") == 0) {
		kv_add(o, k, "1");
	} else if (strcmp(k, "ErrorRecoveryLevel") == 0) {
		kv_add(o, k, "0");
	} else if (strcmp(k, "DefaultTime2Wait") == 0) {
		kv_add(o, k, "%s", parse_num(v, 3600, &n) ? v : "2");
	} else if (strcmp(k, "DefaultTime2Retain") == 0) {
		kv_add(o, k, "0");
	} else if (strcmp(k, "IFMarker") == 0 || strcmp(k, "OFMarker") == 0) {
		kv_add(o, k, "No");
	} else if (strcmp(k, "IFMarkInt") == 0 || strcmp(k, "OFMarkInt") == 0) {
		kv_add(o, k, "Irrelevant");
	} else if (strcmp(k, "iSCSIProtocolLevel") == 0) {
		kv_add(o, k, "%s", parse_num(v, 31, &n) && n == 0 ? "0" : "1");
	} else if (strcmp(k, "TaskReporting") == 0) {
		kv_add(o, k, "RFC3720");
	} else {
		return false;
	}
	(void)c;
	return true;
}

static void apply_pending(struct isc_conn *c, const struct login_pending *p)
{
	c->hdigest = p->hdigest;
	c->ddigest = p->ddigest;
	c->initial_r2t = p->initial_r2t;
	c->immediate_data = p->immediate_data;
	c->max_send_dsl = p->max_send_dsl;
	c->max_burst = p->max_burst;
	c->first_burst = p->first_burst < p->max_burst ? p->first_burst : p->max_burst;
	c->max_r2t = p->max_r2t;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* "0x..." into bytes; returns the length or -1. */
static int parse_hex_bin(const char *v, uint8_t *out, size_t max)
{
	if (strncmp(v, "0x", 2) && strncmp(v, "0X", 2))
		return -1;
	v += 2;
	size_t len = strlen(v);
	if (len == 0 || len % 2 || len / 2 > max)
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(len / 2);
}

static bool chap_verify(struct isc_conn *c, const char *user, const char *resp)
{
	struct isc_target *t = c->t;
	uint8_t got[16];
	if (parse_hex_bin(resp, got, sizeof got) != 16)
		return false;
	for (unsigned i = 0; i < t->nchap; i++) {
		if (strcmp(t->chap[i].user, user))
			continue;
		uint8_t md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		if (!ctx)
			return false;
		bool ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) &&
		          EVP_DigestUpdate(ctx, &c->chap_id, 1) &&
		          EVP_DigestUpdate(ctx, t->chap[i].secret, t->chap[i].len) &&
		          EVP_DigestUpdate(ctx, c->chap_challenge, sizeof c->chap_challenge) &&
		          EVP_DigestFinal_ex(ctx, md, &mdlen);
		EVP_MD_CTX_free(ctx);
		if (!ok || mdlen != 16)
			return false;
		unsigned diff = 0;
		for (int j = 0; j < 16; j++)
			diff |= (unsigned)(md[j] ^ got[j]);
		return diff == 0;
	}
	return false;
}

static void login_reply(struct isc_conn *c, const uint8_t *req, uint8_t flags, uint16_t status,
                        const struct kv_out *o)
{
	uint8_t r[ISC_BHS] = {OP_LOGIN_RSP, flags, 0x00, 0x00};
	memcpy(r + 8, req + 8, 6); /* ISID */
	isc_put16(r + 14, c->tsih);
	memcpy(r + 16, req + 16, 4); /* ITT */
	isc_fill_sn(c, r, true);
	r[36] = (uint8_t)(status >> 8);
	r[37] = (uint8_t)status;
	isc_send_copy(c, r, o ? o->buf : NULL, o && !status ? (uint32_t)o->len : 0);
	if (status)
		c->closing = true;
}

static struct login_pending pending_of(struct isc_conn *c)
{
	static _Thread_local struct login_pending dummy;
	(void)dummy;
	struct login_pending p = {
	    .hdigest = false,
	    .ddigest = false,
	    .initial_r2t = true,
	    .immediate_data = true,
	    .max_send_dsl = 8192,
	    .max_burst = 262144,
	    .first_burst = 65536,
	    .max_r2t = 1,
	};
	(void)c;
	return p;
}

/* The pending values live in the connection's text accumulator area between
 * login PDUs; keep them in a static per-connection slot instead. */
struct login_slot {
	struct login_pending p;
	bool init;
};

static struct login_pending *slot(struct isc_conn *c)
{
	/* the pending values are kept in the task-free part of the connection:
	 * c->text_reply is unused during login, so it holds them */
	if (!c->text_reply) {
		c->text_reply = calloc(1, sizeof(struct login_pending));
		if (!c->text_reply)
			return NULL;
		*(struct login_pending *)(void *)c->text_reply = pending_of(c);
	}
	return (struct login_pending *)(void *)c->text_reply;
}

static bool start_session(struct isc_conn *c, struct login_state *ls, uint16_t req_tsih)
{
	struct isc_target *t = c->t;
	if (req_tsih) {
		ls->status = 0x020a; /* session does not exist: no multi-connection sessions */
		return false;
	}
	pthread_mutex_lock(&t->lock);
	if (!c->discovery) {
		struct isc_nexus *n = isc_nexus_get(t, c->iname, c->isid);
		if (!n) {
			pthread_mutex_unlock(&t->lock);
			ls->status = 0x0306; /* out of resources */
			return false;
		}
		if (n->conn && n->conn != c) {
			/* reinstatement: the old session of this nexus ends */
			struct isc_conn *old = n->conn;
			atomic_store(&old->kill, true);
			if (old->is_socket)
				shutdown(old->in_fd, SHUT_RDWR);
		}
		n->conn = c;
		c->nexus = n;
	}
	c->tsih = t->next_tsih++;
	if (!c->tsih)
		c->tsih = t->next_tsih++;
	pthread_mutex_unlock(&t->lock);
	c->seen_sectors = vdisk_sector_count(t->disk);
	return true;
}

void isc_login_pdu(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	struct isc_target *t = c->t;
	bool transit = bhs[1] & 0x80, cont = bhs[1] & 0x40;
	int csg = (bhs[1] >> 2) & 3, nsg = bhs[1] & 3;
	bool first = c->login_stage == 0 && !c->iname && !c->text_acc && c->stat_sn == 0 &&
	             c->exp_cmdsn == 0 && !c->text_len && c->tsih == 0 && !c->chap_sent &&
	             !c->authenticated && !c->discovery;
	struct login_pending *p = slot(c);
	if (!p) {
		c->fatal = true;
		return;
	}
	if (first || !c->cid) {
		memcpy(c->isid, bhs + 8, 6);
		c->cid = (uint16_t)(isc_get16(bhs + 20) | 0x8000); /* marks "seen" */
		c->exp_cmdsn = isc_get32(bhs + 24);
		c->stat_sn = isc_get32(bhs + 28);
		c->login_stage = csg;
	}
	if (bhs[3] > 0) {
		login_reply(c, bhs, 0, 0x0205, NULL); /* unsupported version */
		return;
	}
	if (csg == 2 || (transit && nsg == 2) || (transit && nsg <= csg) || csg != c->login_stage ||
	    (cont && transit)) {
		isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: login: bad stage CSG %d NSG %d (at %d)",
		        c->peer, csg, nsg, c->login_stage);
		login_reply(c, bhs, 0, 0x0200, NULL);
		return;
	}
	/* accumulate keys continued over several PDUs */
	if (c->text_len + dlen > ISC_MAX_TEXT) {
		login_reply(c, bhs, 0, 0x0200, NULL);
		return;
	}
	char *acc = realloc(c->text_acc, c->text_len + dlen + 1);
	if (!acc) {
		c->fatal = true;
		return;
	}
	c->text_acc = acc;
	memcpy(acc + c->text_len, data, dlen);
	c->text_len += dlen;
	acc[c->text_len] = '\0';
	if (cont) {
		uint8_t f = (uint8_t)(csg << 2 | nsg);
		login_reply(c, bhs, f, 0, &(struct kv_out){.len = 0});
		return;
	}

	struct login_state ls = {0};
	struct kv_out *o = calloc(1, sizeof *o);
	if (!o) {
		c->fatal = true;
		return;
	}
	/* keys: "k=v" separated by NULs */
	for (size_t pos = 0; pos < c->text_len;) {
		char *kv = acc + pos;
		size_t len = strnlen(kv, c->text_len - pos);
		pos += len + 1;
		if (!len)
			continue;
		char *eq = strchr(kv, '=');
		if (!eq) {
			ls.status = 0x0200;
			break;
		}
		*eq = '\0';
		const char *k = kv, *v = eq + 1;
		if (strcmp(k, "InitiatorName") == 0)
			ls.iname = v;
		else if (strcmp(k, "TargetName") == 0)
			ls.tname = v;
		else if (strcmp(k, "SessionType") == 0)
			ls.stype = v;
		else if (strcmp(k, "AuthMethod") == 0)
			ls.auth = v;
		else if (strcmp(k, "CHAP_A") == 0)
			ls.chap_a = v;
		else if (strcmp(k, "CHAP_N") == 0)
			ls.chap_n = v;
		else if (strcmp(k, "CHAP_R") == 0)
			ls.chap_r = v;
		else if (strcmp(k, "CHAP_I") == 0)
			ls.chap_i = v;
		else if (strcmp(k, "CHAP_C") == 0)
			ls.chap_c = v;
		else if (strcmp(k, "InitiatorAlias") == 0 || strcmp(k, "TargetAlias") == 0)
			;
		else if (!op_key(c, p, k, v, o))
			kv_add(o, k, "NotUnderstood");
	}
	if (ls.status)
		goto fail;
	if (ls.iname) {
		if (!*ls.iname || strlen(ls.iname) > 223) {
			ls.status = 0x0207;
			goto fail;
		}
		free(c->iname);
		c->iname = strdup(ls.iname);
	}
	if (ls.stype) {
		if (strcmp(ls.stype, "Discovery") == 0)
			c->discovery = true;
		else if (strcmp(ls.stype, "Normal") == 0)
			c->discovery = false;
		else {
			ls.status = 0x0207;
			goto fail;
		}
	}
	if (ls.tname && strcmp(ls.tname, t->name) != 0) {
		isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: login for target '%s': not here", c->peer,
		        ls.tname);
		ls.status = 0x0203;
		goto fail;
	}
	if (ls.tname || c->discovery)
		c->authenticated = c->authenticated; /* no-op: name checked */

	bool chap_required = t->nchap > 0;
	if (csg == 0) {
		if (ls.auth) {
			if (chap_required && list_has(ls.auth, "CHAP"))
				kv_add(o, "AuthMethod", "CHAP");
			else if (!chap_required && list_has(ls.auth, "None"))
				kv_add(o, "AuthMethod", "None");
			else {
				ls.status = 0x0201;
				goto fail;
			}
		}
		if (ls.chap_i || ls.chap_c) {
			/* mutual CHAP is not offered */
			ls.status = 0x0201;
			goto fail;
		}
		if (chap_required && ls.chap_a) {
			if (!list_has(ls.chap_a, "5")) {
				kv_add(o, "CHAP_A", "Reject");
				ls.status = 0x0201;
				goto fail;
			}
			if (RAND_bytes(c->chap_challenge, sizeof c->chap_challenge) != 1 ||
			    RAND_bytes(&c->chap_id, 1) != 1) {
				ls.status = 0x0300;
				goto fail;
			}
			char hex[2 * sizeof c->chap_challenge + 1];
			for (size_t i = 0; i < sizeof c->chap_challenge; i++)
				snprintf(hex + 2 * i, 3, "%02x", c->chap_challenge[i]);
			kv_add(o, "CHAP_A", "5");
			kv_add(o, "CHAP_I", "%u", c->chap_id);
			kv_add(o, "CHAP_C", "0x%s", hex);
			c->chap_sent = true;
		}
		if (chap_required && (ls.chap_n || ls.chap_r)) {
			if (!c->chap_sent || !ls.chap_n || !ls.chap_r ||
			    !chap_verify(c, ls.chap_n, ls.chap_r)) {
				isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: CHAP authentication failed",
				        c->peer);
				ls.status = 0x0201;
				goto fail;
			}
			c->authenticated = true;
		}
		if (!chap_required)
			c->authenticated = true;
	} else if (chap_required && !c->authenticated) {
		ls.status = 0x0201; /* the security stage was skipped */
		goto fail;
	} else {
		c->authenticated = true;
	}

	if (transit) {
		if (!c->authenticated) {
			if (!chap_required || !c->chap_sent) {
				/* stay in the security stage until CHAP is done */
				transit = false;
			} else {
				ls.status = 0x0201;
				goto fail;
			}
		}
	}
	if (transit && (!c->iname)) {
		ls.status = 0x0207;
		goto fail;
	}
	if (transit && !c->discovery && !ls.tname && c->login_stage == csg && csg == 0 &&
	    !c->text_acc) {
		ls.status = 0x0207;
		goto fail;
	}
	if (!c->discovery && !p->tpgt_sent) {
		kv_add(o, "TargetPortalGroupTag", "1");
		p->tpgt_sent = true;
	}
	if (transit && nsg == 3 && !p->mrdsl_sent) {
		kv_add(o, "MaxRecvDataSegmentLength", "%u", ISC_MAX_RECV_DSL);
		p->mrdsl_sent = true;
	}
	if (o->overflow) {
		ls.status = 0x0200;
		goto fail;
	}
	uint8_t flags = (uint8_t)(csg << 2);
	if (transit) {
		flags |= 0x80 | (uint8_t)nsg;
		if (nsg == 3 && !start_session(c, &ls, isc_get16(bhs + 14)))
			goto fail;
	}
	login_reply(c, bhs, flags, 0, o);
	free(o);
	c->text_len = 0;
	free(c->text_acc);
	c->text_acc = NULL;
	if (transit) {
		c->login_stage = nsg;
		if (nsg == 3) {
			apply_pending(c, p);
			free(c->text_reply);
			c->text_reply = NULL;
			c->phase = PH_FULL;
			isc_log(t, VDISK_ISCSI_LOG_DEBUG,
			        "%s: %s session of '%s' (TSIH %u): digests %s/%s, "
			        "MaxRecvDataSegmentLength %" PRIu32 ", MaxBurstLength %" PRIu32,
			        c->peer, c->discovery ? "discovery" : "normal", c->iname, c->tsih,
			        c->hdigest ? "CRC32C" : "None", c->ddigest ? "CRC32C" : "None",
			        c->max_send_dsl, c->max_burst);
		}
	}
	return;
fail:
	isc_log(t, VDISK_ISCSI_LOG_CLIENT, "%s: login refused (status 0x%04x)", c->peer, ls.status);
	free(o);
	login_reply(c, bhs, 0, ls.status ? ls.status : 0x0200, NULL);
}

/* "HOST:PORT" of the socket's local end, for TargetAddress. */
static void local_address(struct isc_conn *c, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char host[INET6_ADDRSTRLEN] = "127.0.0.1";
	unsigned port = 3260;
	if (c->is_socket && getsockname(c->in_fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host,
			          sizeof host);
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host,
			          sizeof host);
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			snprintf(out, len, "[%s]:%u", host, port);
			return;
		}
	}
	snprintf(out, len, "%s:%u", host, port);
}

void isc_text_pdu(struct isc_conn *c, const uint8_t *bhs, const uint8_t *data, uint32_t dlen)
{
	struct isc_target *t = c->t;
	bool cont = bhs[1] & 0x40;
	if (!(bhs[0] & 0x40))
		c->exp_cmdsn = isc_get32(bhs + 24) + 1;
	if (c->text_len + dlen > ISC_MAX_TEXT) {
		isc_send_reject_pub(c, bhs, 0x09);
		c->text_len = 0;
		return;
	}
	char *acc = realloc(c->text_acc, c->text_len + dlen + 1);
	if (!acc) {
		c->fatal = true;
		return;
	}
	c->text_acc = acc;
	memcpy(acc + c->text_len, data, dlen);
	c->text_len += dlen;
	acc[c->text_len] = '\0';
	uint8_t r[ISC_BHS] = {OP_TEXT_RSP, 0x80};
	memcpy(r + 8, bhs + 8, 8);
	memcpy(r + 16, bhs + 16, 4);
	memset(r + 20, 0xff, 4);
	if (cont) {
		/* more keys follow: ask for them */
		r[1] = 0;
		isc_put32(r + 20, c->next_ttt++);
		isc_fill_sn(c, r, true);
		isc_send_pdu(c, r, NULL, 0, NULL);
		return;
	}
	struct kv_out *o = calloc(1, sizeof *o);
	if (!o) {
		c->fatal = true;
		return;
	}
	struct login_pending p = {
	    .hdigest = c->hdigest,
	    .ddigest = c->ddigest,
	    .initial_r2t = c->initial_r2t,
	    .immediate_data = c->immediate_data,
	    .max_send_dsl = c->max_send_dsl,
	    .max_burst = c->max_burst,
	    .first_burst = c->first_burst,
	    .max_r2t = c->max_r2t,
	    .mrdsl_sent = true,
	};
	for (size_t pos = 0; pos < c->text_len;) {
		char *kv = acc + pos;
		size_t len = strnlen(kv, c->text_len - pos);
		pos += len + 1;
		if (!len)
			continue;
		char *eq = strchr(kv, '=');
		if (!eq)
			continue;
		*eq = '\0';
		const char *k = kv, *v = eq + 1;
		if (strcmp(k, "SendTargets") == 0) {
			if (strcmp(v, "All") == 0 || strcmp(v, t->name) == 0 ||
			    (*v == '\0' && !c->discovery)) {
				char addr[128];
				local_address(c, addr, sizeof addr);
				kv_add(o, "TargetName", "%s", t->name);
				kv_add(o, "TargetAddress", "%s,1", addr);
			}
		} else if (strcmp(k, "MaxRecvDataSegmentLength") == 0) {
			uint64_t n;
			if (parse_num(v, 0xffffff, &n) && n >= 512)
				c->max_send_dsl = (uint32_t)n;
		} else if (strcmp(k, "HeaderDigest") == 0 || strcmp(k, "DataDigest") == 0 ||
		           strcmp(k, "MaxBurstLength") == 0 || strcmp(k, "FirstBurstLength") == 0 ||
		           strcmp(k, "InitialR2T") == 0 || strcmp(k, "ImmediateData") == 0 ||
		           strcmp(k, "MaxConnections") == 0 ||
		           strcmp(k, "ErrorRecoveryLevel") == 0 ||
		           strcmp(k, "MaxOutstandingR2T") == 0) {
			/* leading-only keys may not be renegotiated */
			kv_add(o, k, "Reject");
		} else if (!op_key(c, &p, k, v, o)) {
			kv_add(o, k, "NotUnderstood");
		}
	}
	c->text_len = 0;
	uint32_t n = (uint32_t)o->len;
	if (n > c->max_send_dsl)
		n = 0; /* does not fit: answer nothing rather than half a key */
	isc_fill_sn(c, r, true);
	isc_send_copy(c, r, o->buf, n);
	free(o);
}
