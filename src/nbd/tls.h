/* TLS for the NBD server (OpenSSL): the server's context, and per connection an
 * SSL object working on a memory BIO pair, so that ciphertext the client sent
 * right behind NBD_OPT_STARTTLS (already in our input buffer) is not lost, and
 * the socket stays non-blocking and in the worker's epoll loop. */
#ifndef VDISK_NBD_TLS_H
#define VDISK_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct nbd_server;
struct nbd_conn;
struct vdisk_nbd_config;

/* The server's SSL_CTX from cfg (certificate + key, or a PSK file); nothing
 * when TLS is off.  Returns 0 or -1 with vdisk_errmsg() set. */
int nbd_tls_init(struct nbd_server *s, const struct vdisk_nbd_config *cfg);
void nbd_tls_fini(struct nbd_server *s);

/* After the STARTTLS ACK is sent: everything from now on is TLS.  Unparsed
 * input is handed to SSL.  Forgets the negotiation so far.  0 or -1. */
int nbd_tls_start(struct nbd_conn *c);
/* Drive the TLS handshake: 1 done, 0 waiting for the socket, -1 failed. */
int nbd_tls_handshake(struct nbd_conn *c);
/* Plaintext into buf: bytes, 0 at the end of the stream, -EAGAIN, or -errno. */
ssize_t nbd_tls_read(struct nbd_conn *c, void *buf, size_t len);
/* Encrypt and send the queued output: 0 all sent, -EAGAIN, or -errno. */
int nbd_tls_flush(struct nbd_conn *c);
bool nbd_tls_output_pending(const struct nbd_conn *c);
/* Send close_notify, as far as the socket takes it. */
void nbd_tls_shutdown(struct nbd_conn *c);
void nbd_tls_free(struct nbd_conn *c);

#endif
