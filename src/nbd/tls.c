/* TLS with OpenSSL: X.509 (certificate + key) or pre-shared keys in the
 * "identity:hex-key" format of GnuTLS's psktool, which libnbd, nbdkit and
 * qemu-nbd read too.  TLS 1.2 is the minimum; renegotiation is off.
 *
 * The SSL object reads and writes one end of a BIO pair; conn.c never touches
 * SSL directly.  net_fill() moves ciphertext from the socket into the pair,
 * net_drain() from the pair to the socket. */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "nbd/server.h"
#include "nbd/tls.h"
#include "vdisk/backend.h"

#define STAGE_SIZE 16384 /* one TLS record of plaintext */
#define PSK_MAX 64

struct nbd_psk {
	char *identity;
	unsigned char key[PSK_MAX];
	unsigned len;
};

static const char *ssl_err(void)
{
	static __thread char buf[160];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	return buf;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

static int load_psk(struct nbd_server *s, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return vdisk_set_error_errno(errno, "tls-psk '%s': cannot open", path);
	char line[1024];
	unsigned lineno = 0;
	int rc = -1;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		char *colon = strchr(line, ':');
		if (!colon || colon == line) {
			vdisk_set_error("tls-psk '%s' line %u: expected identity:hex-key", path,
			                lineno);
			goto out;
		}
		*colon = '\0';
		const char *hex = colon + 1;
		size_t hl = strlen(hex);
		if (hl == 0 || hl % 2 || hl / 2 > PSK_MAX) {
			vdisk_set_error("tls-psk '%s' line %u: key must be 1..%d bytes of hex",
			                path, lineno, PSK_MAX);
			goto out;
		}
		struct nbd_psk *n = realloc(s->psks, (s->npsks + 1) * sizeof *n);
		if (!n) {
			vdisk_set_error_errno(ENOMEM, "tls-psk");
			goto out;
		}
		s->psks = n;
		struct nbd_psk *p = &s->psks[s->npsks];
		p->len = (unsigned)(hl / 2);
		for (size_t i = 0; i < p->len; i++) {
			int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
			if (hi < 0 || lo < 0) {
				vdisk_set_error("tls-psk '%s' line %u: key is not hex", path,
				                lineno);
				goto out;
			}
			p->key[i] = (unsigned char)(hi << 4 | lo);
		}
		p->identity = strdup(line);
		if (!p->identity) {
			vdisk_set_error_errno(ENOMEM, "tls-psk");
			goto out;
		}
		s->npsks++;
	}
	if (!s->npsks) {
		vdisk_set_error("tls-psk '%s': no keys", path);
		goto out;
	}
	rc = 0;
out:
	fclose(f);
	return rc;
}

static unsigned psk_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned max)
{
	struct nbd_server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	for (unsigned i = 0; i < s->npsks; i++) {
		if (strcmp(s->psks[i].identity, identity) == 0 && s->psks[i].len <= max) {
			/* SSL_get_psk_identity() knows nothing of it under TLS 1.3 */
			struct nbd_conn *c = SSL_get_app_data(ssl);
			c->psk_id = i + 1;
			memcpy(psk, s->psks[i].key, s->psks[i].len);
			return s->psks[i].len;
		}
	}
	nbd_log(s, VDISK_NBD_LOG_CLIENT, "TLS: unknown PSK identity '%.64s'", identity);
	return 0;
}

/* Client certificates: the CA list that signs them, sent to clients in the
 * CertificateRequest, and a handshake that fails without one. */
static int want_client_certs(SSL_CTX *ctx, const char *ca)
{
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return vdisk_set_error("tls-ca '%s': %s", ca, ssl_err());
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
	if (!names)
		return vdisk_set_error("tls-ca '%s': no CA certificate in it", ca);
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

int nbd_tls_init(struct nbd_server *s, const struct vdisk_nbd_config *cfg)
{
	if (cfg->tls == VDISK_NBD_TLS_OFF)
		return 0;
	const char *cert = cfg->tls_cert, *key = cfg->tls_key, *ca = cfg->tls_ca;
	char dcert[PATH_MAX], dkey[PATH_MAX], dca[PATH_MAX];
	if (cfg->tls_cert_dir) {
		if (cert || key)
			return vdisk_set_error("tls: give a certificate directory, or a "
			                       "certificate and key, not both");
		const char *d = cfg->tls_cert_dir;
		if (snprintf(dcert, sizeof dcert, "%s/server-cert.pem", d) >= (int)sizeof dcert ||
		    snprintf(dkey, sizeof dkey, "%s/server-key.pem", d) >= (int)sizeof dkey ||
		    snprintf(dca, sizeof dca, "%s/ca-cert.pem", d) >= (int)sizeof dca)
			return vdisk_set_error("tls-certificates '%s': path too long", d);
		cert = dcert;
		key = dkey;
		if (!ca && cfg->tls_verify_peer)
			ca = dca;
	}
	bool certs = cert || key;
	if (certs && cfg->tls_psk_file)
		return vdisk_set_error("tls: give a certificate and key, or a PSK file, not both");
	if (certs && (!cert || !key))
		return vdisk_set_error(
		    "tls: a certificate needs its key and the key its certificate");
	if (!certs && !cfg->tls_psk_file)
		return vdisk_set_error("tls: needs a certificate and key, or a PSK file");
	if (cfg->tls_verify_peer && !certs)
		return vdisk_set_error("tls-verify-peer: needs X.509 certificates, not PSK "
		                       "(a PSK identity is its own proof)");
	if (cfg->tls_verify_peer && !ca)
		return vdisk_set_error("tls-verify-peer: needs a CA (tls-ca, or ca-cert.pem in "
		                       "a certificate directory)");
	if (ca && !cfg->tls_verify_peer)
		return vdisk_set_error("tls-ca '%s': only used with tls-verify-peer", ca);
	if (cfg->tls_allow && certs && !cfg->tls_verify_peer)
		return vdisk_set_error("tls-allow '%s': with certificates it needs "
		                       "tls-verify-peer (clients show none otherwise)",
		                       cfg->tls_allow);
	if (cfg->tls_allow && !(s->tls_allow = strdup(cfg->tls_allow)))
		return vdisk_set_error_errno(ENOMEM, "tls-allow");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return vdisk_set_error("tls: %s", ssl_err());
	s->tls_ctx = ctx;
	SSL_CTX_set_app_data(ctx, s);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (certs) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
			return vdisk_set_error("tls-cert '%s': %s", cert, ssl_err());
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
			return vdisk_set_error("tls-key '%s': %s", key, ssl_err());
		if (SSL_CTX_check_private_key(ctx) != 1)
			return vdisk_set_error("tls-key '%s': does not match the certificate '%s'",
			                       key, cert);
		if (cfg->tls_verify_peer && want_client_certs(ctx, ca) < 0)
			return -1;
		return 0;
	}
	if (load_psk(s, cfg->tls_psk_file) < 0)
		return -1;
	SSL_CTX_set_psk_server_callback(ctx, psk_cb);
	SSL_CTX_set_dh_auto(ctx, 1);
	if (SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK:DHE-PSK:PSK:!eNULL:!RC4:!3DES:!MD5") != 1)
		return vdisk_set_error("tls: no PSK cipher: %s", ssl_err());
	return 0;
}

void nbd_tls_fini(struct nbd_server *s)
{
	SSL_CTX_free(s->tls_ctx);
	s->tls_ctx = NULL;
	free(s->tls_allow);
	s->tls_allow = NULL;
	for (unsigned i = 0; i < s->npsks; i++) {
		OPENSSL_cleanse(s->psks[i].key, sizeof s->psks[i].key);
		free(s->psks[i].identity);
	}
	free(s->psks);
	s->psks = NULL;
	s->npsks = 0;
}

/* ------------------------------------------------------------------------- */
/* The network side of the BIO pair                                            */
/* ------------------------------------------------------------------------- */

/* Socket -> pair.  Bytes moved, 0 at end of stream, -EAGAIN, or -errno. */
static ssize_t net_fill(struct nbd_conn *c)
{
	char *p;
	int room = BIO_nwrite0(c->net_bio, &p);
	if (room <= 0)
		return -EAGAIN; /* SSL has not consumed what it has */
	ssize_t n;
	do
		n = read(c->in_fd, p, (size_t)room);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if (n > 0)
		BIO_nwrite(c->net_bio, &p, (int)n);
	return n;
}

/* Pair -> socket, until the pair is empty (0), the socket is full (-EAGAIN),
 * or it failed (-errno).  A full socket sets want_out; every caller ends in
 * nbd_conn_update_poll(), which then waits for EPOLLOUT.  Marking the
 * connection dirty here instead would have the worker retry at once, for
 * ever, while the client does not read. */
static int net_drain(struct nbd_conn *c)
{
	for (;;) {
		char *p;
		int avail = BIO_nread0(c->net_bio, &p);
		if (avail <= 0)
			return 0;
		ssize_t n = c->is_socket
		                ? send(c->out_fd, p, (size_t)avail, MSG_NOSIGNAL | MSG_DONTWAIT)
		                : write(c->out_fd, p, (size_t)avail);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->want_out = true;
				return -EAGAIN;
			}
			return -errno;
		}
		BIO_nread(c->net_bio, &p, (int)n);
	}
}

int nbd_tls_start(struct nbd_conn *c)
{
	BIO *inner = NULL;
	c->starttls_pending = false;
	c->ssl = SSL_new(c->srv->tls_ctx);
	c->tls_stage = malloc(STAGE_SIZE);
	if (!c->ssl || !c->tls_stage ||
	    !BIO_new_bio_pair(&inner, NBD_TLS_BUF, &c->net_bio, NBD_TLS_BUF))
		return -1;
	SSL_set_bio(c->ssl, inner, inner);
	SSL_set_app_data(c->ssl, c);
	SSL_set_accept_state(c->ssl);
	size_t left = c->in_end - c->in_start;
	if (left > NBD_TLS_BUF)
		return -1;
	if (left && BIO_write(c->net_bio, c->in + c->in_start, (int)left) != (int)left)
		return -1;
	c->in_start = c->in_end = 0;
	c->tls_active = true;
	/* STARTTLS forgets everything negotiated before it */
	c->structured = false;
	c->meta_alloc = false;
	c->state = CS_TLS_HANDSHAKE;
	return 0;
}

/* Who the client is: its certificate's subject (RFC 2253) or its PSK
 * identity.  False if it has neither. */
static bool peer_name(struct nbd_conn *c, char *buf, size_t len)
{
	if (c->psk_id) {
		snprintf(buf, len, "%s", c->srv->psks[c->psk_id - 1].identity);
		return true;
	}
	X509 *peer = SSL_get1_peer_certificate(c->ssl);
	if (!peer)
		return false;
	BIO *b = BIO_new(BIO_s_mem());
	int n = -1;
	if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0)
		n = BIO_read(b, buf, (int)len - 1);
	BIO_free(b);
	X509_free(peer);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return true;
}

int nbd_tls_handshake(struct nbd_conn *c)
{
	for (int spins = 0; spins < 64; spins++) {
		ERR_clear_error();
		int r = SSL_do_handshake(c->ssl);
		int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
		int d = net_drain(c);
		if (d < 0 && d != -EAGAIN)
			return -1;
		if (r == 1) {
			char who[512];
			bool named = peer_name(c, who, sizeof who);
			nbd_log(c->srv, VDISK_NBD_LOG_DEBUG, "%s: TLS %s, %s%s%s", c->peer,
			        SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
			        named ? ", client " : "", named ? who : "");
			if (c->srv->tls_allow &&
			    (!named || fnmatch(c->srv->tls_allow, who, 0) != 0)) {
				nbd_log(c->srv, VDISK_NBD_LOG_CLIENT,
				        "%s: TLS client '%.200s' does not match tls-allow '%s'",
				        c->peer, named ? who : "", c->srv->tls_allow);
				return -1;
			}
			return 1;
		}
		if (e == SSL_ERROR_WANT_READ) {
			ssize_t n = net_fill(c);
			if (n == -EAGAIN)
				return 0;
			if (n <= 0)
				return -1;
			continue;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			if (d == -EAGAIN)
				return 0;
			continue;
		}
		nbd_log(c->srv, VDISK_NBD_LOG_CLIENT, "%s: TLS handshake: %s", c->peer, ssl_err());
		return -1;
	}
	return 0;
}

ssize_t nbd_tls_read(struct nbd_conn *c, void *buf, size_t len)
{
	if (len > INT_MAX)
		len = INT_MAX;
	for (int spins = 0; spins < 64; spins++) {
		ERR_clear_error();
		int r = SSL_read(c->ssl, buf, (int)len);
		if (r > 0)
			return r;
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		if (e == SSL_ERROR_WANT_READ) {
			if (BIO_ctrl_pending(c->net_bio))
				nbd_conn_mark_dirty(c); /* SSL has something to say (an alert) */
			ssize_t n = net_fill(c);
			if (n == 0)
				return 0;
			if (n < 0)
				return n;
			continue;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			int d = net_drain(c);
			if (d == -EAGAIN) {
				c->tls_read_blocked = true;
				return -EAGAIN;
			}
			if (d < 0)
				return d;
			continue;
		}
		nbd_log(c->srv, VDISK_NBD_LOG_CLIENT, "%s: TLS: %s", c->peer, ssl_err());
		return -EPROTO;
	}
	return -EAGAIN;
}

int nbd_tls_flush(struct nbd_conn *c)
{
	for (;;) {
		int d = net_drain(c);
		if (d < 0)
			return d;
		if (c->tls_read_blocked) {
			c->tls_read_blocked = false;
			c->resume_input = true;
		}
		if (!c->tls_stage_len) {
			c->tls_stage_len = nbd_conn_gather(c, c->tls_stage, STAGE_SIZE);
			if (!c->tls_stage_len)
				return 0;
		}
		ERR_clear_error();
		/* a retried SSL_write gets the same buffer and length, as OpenSSL asks */
		int r = SSL_write(c->ssl, c->tls_stage, (int)c->tls_stage_len);
		if (r > 0) {
			c->tls_stage_len = 0;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_WRITE) {
			if (!BIO_ctrl_pending(c->net_bio))
				return -EPROTO; /* the pair is empty and SSL still cannot write */
			continue;
		}
		nbd_log(c->srv, VDISK_NBD_LOG_CLIENT, "%s: TLS: %s", c->peer, ssl_err());
		return -EPROTO;
	}
}

bool nbd_tls_output_pending(const struct nbd_conn *c)
{
	return c->ssl && (c->tls_stage_len || BIO_ctrl_pending(c->net_bio));
}

void nbd_tls_shutdown(struct nbd_conn *c)
{
	if (!c->ssl || c->closed_fds)
		return;
	ERR_clear_error();
	SSL_shutdown(c->ssl);
	net_drain(c);
	ERR_clear_error();
}

void nbd_tls_free(struct nbd_conn *c)
{
	SSL_free(c->ssl); /* frees the inner BIO */
	BIO_free(c->net_bio);
	c->ssl = NULL;
	c->net_bio = NULL;
	free(c->tls_stage);
	c->tls_stage = NULL;
}
