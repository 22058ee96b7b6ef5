/* A connection's transport and life: reading into the input buffer (straight
 * into a write's payload buffer where one is being received), gathering
 * replies into one sendmsg, epoll registration, closing.  TLS is delegated to
 * tls.c behind the same read / flush entry points. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd/server.h"
#include "nbd/tls.h"

#define CTL_BACKLOG_MAX (64u << 10) /* unsent negotiation replies before we stop reading */
#define READ_ROUNDS 16
#define SEND_IOV 256

static bool fd_is_socket(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

struct nbd_conn *nbd_conn_new(struct nbd_worker *w, int in_fd, int out_fd, const char *peer)
{
	struct nbd_server *s = w->srv;
	struct nbd_conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->in = malloc(NBD_IN_SIZE);
	if (!c->in) {
		free(c);
		return NULL;
	}
	c->w = w;
	c->srv = s;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	c->is_socket = fd_is_socket(out_fd);
	c->out_tail = &c->out_head;
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	if (s->handshake_timeout_ns >= 0)
		c->deadline_ns = nbd_now_ns() + (uint64_t)s->handshake_timeout_ns;
	nbd_hs_start(c);
	return c;
}

/* ------------------------------------------------------------------------- */
/* epoll                                                                       */
/* ------------------------------------------------------------------------- */

/* The out descriptor's registration carries the connection's address + 1, so
 * the worker can tell which of two descriptors is ready. */
static int set_mask(struct nbd_conn *c, int fd, void *tag, uint32_t *cur, uint32_t want)
{
	if (*cur == want)
		return 0;
	struct epoll_event ev = {.events = want, .data.ptr = tag};
	int op = want == 0 ? EPOLL_CTL_DEL : *cur == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(c->w->epfd, op, fd, &ev) < 0)
		return -errno;
	*cur = want;
	return 0;
}

void nbd_conn_attach(struct nbd_worker *w, struct nbd_conn *c)
{
	c->w = w;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	/* regular files, /dev/null: not pollable, always ready */
	c->in_poll = set_mask(c, c->in_fd, c, &c->in_mask, EPOLLIN) == 0;
	if (c->out_fd == c->in_fd) {
		c->out_poll = c->in_poll;
	} else {
		c->out_poll = set_mask(c, c->out_fd, (char *)c + 1, &c->out_mask, EPOLLOUT) == 0;
	}
	if (!c->in_poll)
		w->nalways++;
	nbd_conn_mark_dirty(c);
}

static bool output_pending(const struct nbd_conn *c)
{
	return c->ctl.len > c->ctl.off || c->out_head || nbd_tls_output_pending(c);
}

bool nbd_conn_wants_input(const struct nbd_conn *c)
{
	if (c->in_eof || c->abort_after_flush || c->starttls_pending || c->w->draining)
		return false;
	if (c->in_end - c->in_start >= NBD_IN_SIZE)
		return false;
	switch (c->state) {
	case CS_CLIENT_FLAGS:
	case CS_OPTIONS:
	case CS_OPT_DISCARD: return c->ctl.len - c->ctl.off < CTL_BACKLOG_MAX;
	case CS_TLS_HANDSHAKE: return true;
	case CS_TRANSMISSION: return nbd_tx_room(c);
	default: return false;
	}
}

void nbd_conn_update_poll(struct nbd_conn *c)
{
	if (c->closed_fds)
		return;
	bool in = c->in_poll && nbd_conn_wants_input(c);
	bool out = c->out_poll && c->want_out;
	if (c->out_fd == c->in_fd) {
		set_mask(c, c->in_fd, c, &c->in_mask, (in ? EPOLLIN : 0) | (out ? EPOLLOUT : 0));
	} else {
		if (c->in_poll)
			set_mask(c, c->in_fd, c, &c->in_mask, in ? EPOLLIN : 0);
		if (c->out_poll)
			set_mask(c, c->out_fd, (char *)c + 1, &c->out_mask, out ? EPOLLOUT : 0);
	}
}

void nbd_conn_mark_dirty(struct nbd_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
}

/* ------------------------------------------------------------------------- */
/* Closing                                                                     */
/* ------------------------------------------------------------------------- */

static void drop_rx(struct nbd_conn *c)
{
	if (c->rx) {
		struct nbd_req *r = c->rx;
		c->rx = NULL;
		nbd_req_free(c, r);
	}
}

static void close_fds(struct nbd_conn *c)
{
	if (c->closed_fds)
		return;
	c->want_out = false;
	if (c->in_mask)
		set_mask(c, c->in_fd, c, &c->in_mask, 0);
	if (c->out_mask)
		set_mask(c, c->out_fd, (char *)c + 1, &c->out_mask, 0);
	if (!c->in_poll)
		c->w->nalways--;
	c->closed_fds = true;
	if (c->w->exit_when_idle)
		return; /* serve_fds: the caller's descriptors */
	close(c->in_fd);
	if (c->out_fd != c->in_fd)
		close(c->out_fd);
}

/* No more input; queued replies still go out, in-flight requests finish. */
void nbd_conn_close(struct nbd_conn *c, const char *why)
{
	if (c->state == CS_CLOSING || c->state == CS_DEAD)
		return;
	if (why)
		nbd_log(c->srv, VDISK_NBD_LOG_DEBUG, "%s: %s", c->peer, why);
	c->state = CS_CLOSING;
	c->w->reap_pending = true;
	drop_rx(c);
	nbd_conn_mark_dirty(c);
}

/* A hard disconnect: the client broke the protocol or the transport failed.
 * Unsent output is dropped and the descriptors are closed at once; requests
 * already with the disk finish and are then freed. */
void nbd_conn_fail(struct nbd_conn *c, const char *fmt, ...)
{
	if (c->state == CS_DEAD)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	nbd_log(c->srv, VDISK_NBD_LOG_CLIENT, "%s: %s; disconnecting", c->peer, msg);
	c->state = CS_DEAD;
	c->w->reap_pending = true;
	drop_rx(c);
	while (c->out_head) {
		struct nbd_req *r = c->out_head;
		c->out_head = r->next;
		nbd_req_free(c, r);
	}
	c->out_tail = &c->out_head;
	c->out_off = 0;
	c->ctl.len = c->ctl.off = 0;
	close_fds(c);
	nbd_conn_mark_dirty(c);
}

/* Free c if nothing refers to it any more; true if it was freed. */
bool nbd_conn_reap(struct nbd_conn *c)
{
	struct nbd_worker *w = c->w;
	if (c->state == CS_CLOSING && c->deadline_ns && nbd_now_ns() >= c->deadline_ns)
		nbd_conn_fail(c, "client did not read its replies before shutdown");
	if (c->state == CS_CLOSING && !output_pending(c) && c->inflight == 0) {
		nbd_tls_shutdown(c);
		close_fds(c);
		c->state = CS_DEAD;
	}
	if (c->state != CS_DEAD || c->inflight || c->dirty)
		return false; /* the dirty list still points at it; flushing comes first */
	close_fds(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nbd_conn_free_reqs(c);
	nbd_tls_free(c);
	free(c->ctl.p);
	free(c->in);
	free(c);
	atomic_fetch_sub(&w->load, 1);
	struct nbd_server *s = w->srv;
	if (atomic_fetch_sub(&s->nconns, 1) == 1 && s->once) {
		nbd_log(s, VDISK_NBD_LOG_DEBUG, "the last client is gone: stopping (--once)");
		vdisk_nbd_server_stop((struct vdisk_nbd_server *)s);
	}
	return true;
}

void nbd_conn_begin_drain(struct nbd_conn *c)
{
	if (c->state == CS_CLOSING || c->state == CS_DEAD)
		return;
	/* TLS output (a close_notify, records already encrypted) may still wait
	 * for a client that does not read: the grace bounds that too, also when
	 * the handshake has no time limit */
	uint64_t deadline = nbd_now_ns() + NBD_SHUTDOWN_GRACE_NS;
	if (!c->deadline_ns || c->deadline_ns > deadline)
		c->deadline_ns = deadline;
	if (c->state != CS_TRANSMISSION) {
		nbd_log(c->srv, VDISK_NBD_LOG_DEBUG, "%s: closed: server shutting down", c->peer);
		c->state = CS_CLOSING;
		c->ctl.len = c->ctl.off = 0;
		nbd_conn_mark_dirty(c);
		return;
	}
	nbd_conn_close(c, "server shutting down");
}

/* ------------------------------------------------------------------------- */
/* Output                                                                      */
/* ------------------------------------------------------------------------- */

int nbd_obuf_reserve(struct nbd_obuf *b, size_t more)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + more)
		cap *= 2;
	unsigned char *p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static size_t req_reply_len(const struct nbd_req *r)
{
	size_t n = 0;
	for (int i = 0; i < r->iovcnt; i++)
		n += r->iov[i].iov_len;
	return n;
}

/* Account n bytes as sent: negotiation output first, then replies in order. */
static void consume_output(struct nbd_conn *c, size_t n)
{
	size_t take = c->ctl.len - c->ctl.off;
	if (take > n)
		take = n;
	c->ctl.off += take;
	n -= take;
	if (c->ctl.off == c->ctl.len) {
		c->ctl.off = c->ctl.len = 0;
		if (c->ctl.cap > CTL_BACKLOG_MAX) {
			free(c->ctl.p);
			c->ctl.p = NULL;
			c->ctl.cap = 0;
		}
	}
	while (n && c->out_head) {
		struct nbd_req *r = c->out_head;
		size_t left = req_reply_len(r) - c->out_off;
		if (n < left) {
			c->out_off += n;
			return;
		}
		n -= left;
		c->out_off = 0;
		c->out_head = r->next;
		if (!c->out_head)
			c->out_tail = &c->out_head;
		nbd_req_free(c, r);
	}
}

size_t nbd_conn_gather(struct nbd_conn *c, unsigned char *dst, size_t max)
{
	size_t got = 0;
	if (c->ctl.len > c->ctl.off) {
		size_t n = c->ctl.len - c->ctl.off;
		if (n > max)
			n = max;
		memcpy(dst, c->ctl.p + c->ctl.off, n);
		got = n;
	}
	size_t skip = c->out_off;
	for (struct nbd_req *r = c->out_head; r && got < max; r = r->next) {
		for (int i = 0; i < r->iovcnt && got < max; i++) {
			size_t len = r->iov[i].iov_len;
			if (skip >= len) {
				skip -= len;
				continue;
			}
			size_t n = len - skip;
			if (n > max - got)
				n = max - got;
			memcpy(dst + got, (unsigned char *)r->iov[i].iov_base + skip, n);
			got += n;
			skip = 0;
		}
	}
	consume_output(c, got);
	return got;
}

/* One sendmsg for everything queued (up to SEND_IOV pieces).  0: all sent;
 * -EAGAIN: the socket is full; other negative: the transport failed. */
static int plain_flush(struct nbd_conn *c)
{
	while (c->ctl.len > c->ctl.off || c->out_head) {
		struct iovec iov[SEND_IOV];
		int n = 0;
		size_t total = 0;
		if (c->ctl.len > c->ctl.off) {
			iov[n].iov_base = c->ctl.p + c->ctl.off;
			iov[n].iov_len = c->ctl.len - c->ctl.off;
			total += iov[n++].iov_len;
		}
		size_t skip = c->out_off;
		for (struct nbd_req *r = c->out_head; r && n + r->iovcnt <= SEND_IOV; r = r->next) {
			for (int i = 0; i < r->iovcnt; i++) {
				size_t len = r->iov[i].iov_len;
				if (skip >= len) {
					skip -= len;
					continue;
				}
				iov[n].iov_base = (unsigned char *)r->iov[i].iov_base + skip;
				iov[n].iov_len = len - skip;
				total += iov[n++].iov_len;
				skip = 0;
			}
		}
		ssize_t sent;
		if (c->is_socket) {
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
			sent = sendmsg(c->out_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} else {
			sent = writev(c->out_fd, iov, n);
		}
		if (sent < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		consume_output(c, (size_t)sent);
		if ((size_t)sent < total)
			return -EAGAIN; /* the socket took what it could; wait for EPOLLOUT */
	}
	return 0;
}

void nbd_conn_flush(struct nbd_conn *c)
{
	if (c->state == CS_DEAD || c->closed_fds)
		return;
	int rc = c->ssl ? nbd_tls_flush(c) : plain_flush(c);
	if (rc == -EAGAIN) {
		c->want_out = true;
	} else if (rc < 0) {
		nbd_conn_fail(c, "write: %s", strerror(-rc));
		return;
	} else {
		c->want_out = false;
		if (c->starttls_pending) {
			if (nbd_tls_start(c) < 0) {
				nbd_conn_fail(c, "cannot start TLS");
				return;
			}
			c->resume_input = true;
		}
		if (c->abort_after_flush) {
			nbd_conn_close(c, NULL);
			return;
		}
		if (c->stalled && c->state < CS_TRANSMISSION) {
			c->stalled = false;
			c->resume_input = true;
		}
	}
	nbd_conn_update_poll(c);
}

void nbd_conn_on_output(struct nbd_conn *c)
{
	nbd_conn_mark_dirty(c);
}

/* ------------------------------------------------------------------------- */
/* Input                                                                       */
/* ------------------------------------------------------------------------- */

/* Read what the socket has: into the payload of a write being received and
 * the input buffer after it, in one readv.  Sets *asked to the room offered. */
static ssize_t plain_read(struct nbd_conn *c, size_t *asked)
{
	struct iovec iov[2];
	int n = 0;
	if (c->rx) {
		/* the parser copied all it had into the payload: the buffer is empty */
		iov[n].iov_base = c->rx->payload + c->rx_have;
		iov[n++].iov_len = c->rx->len - c->rx_have;
	}
	iov[n].iov_base = c->in + c->in_end;
	iov[n++].iov_len = NBD_IN_SIZE - c->in_end;
	*asked = iov[0].iov_len + (n > 1 ? iov[1].iov_len : 0);
	ssize_t got;
	do
		got = n == 1 ? read(c->in_fd, iov[0].iov_base, iov[0].iov_len)
		             : readv(c->in_fd, iov, n);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	size_t left = (size_t)got;
	if (c->rx) {
		size_t take = c->rx->len - c->rx_have;
		if (take > left)
			take = left;
		c->rx_have += (uint32_t)take;
		left -= take;
	}
	c->in_end += left;
	return got;
}

static bool conn_parse(struct nbd_conn *c)
{
	for (;;) {
		enum conn_state before = c->state;
		switch (c->state) {
		case CS_CLIENT_FLAGS:
		case CS_OPTIONS:
		case CS_OPT_DISCARD:
			if (!nbd_hs_parse(c))
				return false;
			break;
		case CS_TRANSMISSION: return nbd_tx_parse(c);
		default: return true;
		}
		if (c->state == before || c->starttls_pending)
			return true;
	}
}

static void compact_input(struct nbd_conn *c)
{
	if (c->in_start == c->in_end) {
		c->in_start = c->in_end = 0;
	} else if (c->in_start) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
}

void nbd_conn_on_input(struct nbd_conn *c)
{
	if (!conn_parse(c))
		goto out;
	for (int round = 0; round < READ_ROUNDS; round++) {
		if (c->state == CS_TLS_HANDSHAKE) {
			int rc = nbd_tls_handshake(c);
			if (rc < 0) {
				nbd_conn_fail(c, "TLS handshake failed");
				goto out;
			}
			if (rc == 0)
				break;
			/* records that came with the handshake are inside SSL already */
			c->state = CS_OPTIONS;
			continue;
		}
		if (!nbd_conn_wants_input(c)) {
			if (c->state == CS_TRANSMISSION || c->state < CS_TLS_HANDSHAKE)
				c->stalled = !c->in_eof && !c->w->draining;
			break;
		}
		compact_input(c);
		size_t asked = 0;
		ssize_t n = c->ssl ? nbd_tls_read(c, c->in + c->in_end, NBD_IN_SIZE - c->in_end)
		                   : plain_read(c, &asked);
		if (n > 0 && c->ssl)
			c->in_end += (size_t)n; /* asked stays 0: SSL may hold more records */
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			nbd_conn_fail(c, "read: %s", strerror((int)-n));
			goto out;
		}
		if (n == 0) {
			c->in_eof = true;
			if (c->state < CS_TRANSMISSION)
				nbd_conn_close(c, "client disconnected during negotiation");
			else if (c->rx || c->in_end > c->in_start || c->discard)
				nbd_conn_close(c, "client disconnected in the middle of a request");
			else
				nbd_conn_close(c, "client disconnected");
			goto out;
		}
		if (!conn_parse(c))
			goto out;
		if ((size_t)n < asked)
			break; /* the socket is drained; epoll says when there is more */
		if (round == READ_ROUNDS - 1 && c->ssl) {
			/* records already inside SSL raise no epoll event: come back */
			c->resume_input = true;
			nbd_conn_mark_dirty(c);
		}
	}
out:
	nbd_conn_update_poll(c);
}
