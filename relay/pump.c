/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * pump.c: moves bytes between a connection's two halves: reading into a half's bounded buffer,
 * writing what is cleared for the other half (exrelay's own bytes first), giving drained
 * buffers back, and setting the watchers from the state: a full buffer stops its reader, a
 * drained one restarts it, a blocked write waits for writability (DESIGN.md, "pump.c").
 */
#include "autoconf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "relay.h"
#include "splice.h"

/* The other half of h's connection. */
struct half *
pump_peer(struct half *h)
{
	return h == &h->c->client ? &h->c->backend : &h->c->client;
}

/* Gives a half its socket: the plain transport, and the watchers (set up by conn.c) on fd. */
void
pump_half_open(struct half *h, int fd)
{
	ASSERT(h->fd < 0 && !ev_is_active(&h->rio) && !ev_is_active(&h->wio));
	h->fd = fd;
	h->ops = &sock_ops;
	ev_io_set(&h->rio, fd, EV_READ);
	ev_io_set(&h->wio, fd, EV_WRITE);
}

/* --- watchers --------------------------------------------------------------------------- */

/* Starts or stops a watcher. */
void
pump_io_set(struct conn *c, ev_io *w, bool on)
{
	if (on && !ev_is_active(w))
		ev_io_start(c->loop, w);
	else if (!on && ev_is_active(w))
		ev_io_stop(c->loop, w);
}

/* True when there are bytes waiting to be written to h. */
bool
pump_has_output(struct half *h)
{
	return buf_len(h->out) > 0 || (h->fwd > 0 && buf_len(pump_peer(h)->in) > 0) || splice_pending(h) ||
	    (h->fd >= 0 && h->ops->held(h));
}

/* Sets a handshaking half's watchers from the direction the transport waits for. */
static void
arm_handshake(struct conn *c, struct half *h)
{
	pump_io_set(c, &h->rio, h->want == EV_READ);
	pump_io_set(c, &h->wio, h->want == EV_WRITE);
}

/*
 * A transport holds bytes the socket will not signal (TLS: decrypted bytes, the read-ahead):
 * h is read again at once the first time in a turn of the event loop; otherwise after the
 * next poll (c->refeed: an idle watcher of the highest priority, which also keeps that poll
 * from blocking), in turn with the connections it found ready. So a fast connection reads at
 * most two buffers per turn: a feed never chains into a loop that starves the others.
 */
static void
arm_pending(struct conn *c, struct half *h)
{
	unsigned it = ev_iteration(c->loop);

	if (h->fed_iter != it) {
		h->fed_iter = it;
		ev_feed_event(c->loop, &h->rio, EV_READ);
		return;
	}
	if (!ev_is_active(&c->refeed))
		ev_idle_start(c->loop, &c->refeed);
}

/*
 * Sets the read watchers from the state: read while there is room (and, for the client, unless
 * hold_client: a last answer is still leaving). A TLS session may hold bytes the socket will
 * never signal: read it again then (arm_pending).
 */
void
pump_arm(struct conn *c, bool hold_client)
{
	struct half *cl = &c->client, *be = &c->backend;

	ASSERT(cl->fwd <= buf_len(be->in) && be->fwd <= buf_len(cl->in));
	if (cl->handshaking) {
		arm_handshake(c, cl);
	} else if (cl->fd >= 0) {
		bool rc = !cl->eof && !hold_client && (!cl->in || buf_room(cl->in) > 0) && !splice_pending(be);
		pump_io_set(c, &cl->rio, rc);
		if (rc && cl->read_wants_write)
			pump_io_set(c, &cl->wio, true);
		if (rc && cl->ops->pending(cl))
			arm_pending(c, cl);
	}
	if (be->fd < 0)
		return;
	if (be->handshaking) {
		arm_handshake(c, be);
	} else if (!be->connecting) {
		bool rb = !be->eof && (!be->in || buf_room(be->in) > 0) && !splice_pending(cl);
		pump_io_set(c, &be->rio, rb);
		if (rb && be->read_wants_write)
			pump_io_set(c, &be->wio, true);
		if (rb && be->ops->pending(be))
			arm_pending(c, be);
	}
}

/* --- writing ---------------------------------------------------------------------------- */

/*
 * Writes what is waiting for dst; 0 when done or blocked (write watcher armed), -1 on error.
 * exrelay's own bytes (dst->out) and the cleared bytes of the peer's input behind them leave
 * together: one system call and, over TLS, one record (a response head and the start of its
 * body, a request head and its body, answers that are ready together).
 */
int
pump_flush(struct conn *c, struct half *dst)
{
	struct half *src = pump_peer(dst);

	if (dst->fd < 0 || dst->connecting)
		return 0;
	ASSERT(dst->fwd <= buf_len(src->in));
	if (dst->pipe) {
		int r = splice_flush(c, dst);	/* spliced bytes: older than any buffered (splice.c) */
		if (r != 1)
			return r;
	}
	if (dst->ops->held(dst)) {
		int r = dst->ops->flush(dst);	/* records a TLS batch made: older than any buffered */
		if (r == 0)
			pump_io_set(c, &dst->wio, true);
		if (r != 1)
			return r;
	}
	for (;;) {
		struct iovec iov[2];
		int k = 0;
		size_t nout = buf_len(dst->out), nin = 0;

		if (nout > 0) {
			iov[k].iov_base = dst->out->data + dst->out->r;
			iov[k++].iov_len = nout;
		}
		if (dst->fwd > 0 && buf_len(src->in) > 0) {
			nin = buf_len(src->in) < dst->fwd ? buf_len(src->in) : (size_t)dst->fwd;
			iov[k].iov_base = src->in->data + src->in->r;
			iov[k++].iov_len = nin;
		}
		if (k == 0)
			break;
		ssize_t w = dst->ops->sendv(dst, iov, k);
		ASSERT(w <= (ssize_t)(nout + nin));	/* never more than was buffered and cleared */
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				pump_io_set(c, &dst->wio, true);
				return 0;
			}
			return -1;
		}
		size_t wo = (size_t)w < nout ? (size_t)w : nout;
		dst->nwritten += (uint64_t)w;
		c->last_activity = ev_now(c->loop);
		if (wo > 0)
			dst->out->r += wo;
		if ((size_t)w > wo) {
			src->in->r += (size_t)w - wo;
			dst->fwd -= (uint64_t)w - wo;
		}
	}
	pump_io_set(c, &dst->wio, false);
	return 0;
}

/* Gives drained buffers back to the pool, so idle connections hold none. */
void
pump_trim(struct conn *c)
{
	struct half *hs[2] = { &c->client, &c->backend };

	for (int i = 0; i < 2; i++) {
		if (hs[i]->in && buf_len(hs[i]->in) == 0) {
			buf_put(hs[i]->in);
			hs[i]->in = NULL;
		}
		if (hs[i]->out && buf_len(hs[i]->out) == 0) {
			buf_put(hs[i]->out);
			hs[i]->out = NULL;
		}
	}
}

/* Makes sure h->out exists; false when out of memory. */
bool
pump_out(struct half *h)
{
	if (!h->out)
		h->out = buf_get();
	return h->out != NULL;
}

/*
 * Appends what fn writes (a head exrelay builds) to h's output: fn gets the free space and
 * returns the length it wrote, or -1 when that does not fit. Returns the length, or -1 with
 * errno ENOMEM (no buffer) or ENOSPC (it does not fit).
 */
int
pump_put(struct half *h, pump_writer fn, const void *arg)
{
	if (!pump_out(h)) {
		errno = ENOMEM;
		return -1;
	}
	size_t room = buf_room(h->out);
	ssize_t n = fn(h->out->data + h->out->w, room, arg);
	if (n < 0) {
		errno = ENOSPC;
		return -1;
	}
	ASSERT((size_t)n <= room);
	h->out->w += (size_t)n;
	return (int)n;
}

/*
 * Feeds the bytes of src->in not yet cleared for dst to the body framing state b: those it
 * accepts are cleared to go to dst. Returns how many, or -1 when the framing is broken.
 */
ssize_t
pump_feed(struct http1_body *b, struct half *src, struct half *dst)
{
	if (b->done || buf_len(src->in) <= dst->fwd)
		return 0;
	ssize_t k = http1_body_feed(b, buf_head(src->in) + dst->fwd, buf_len(src->in) - (size_t)dst->fwd);
	if (k > 0)
		dst->fwd += (uint64_t)k;
	return k;
}

/* --- closing a half --------------------------------------------------------------------- */

/* Closes one half: watchers, transport, socket, buffers. */
void
pump_close_half(struct conn *c, struct half *h)
{
	if (h->fd >= 0) {
		ev_io_stop(c->loop, &h->rio);
		ev_io_stop(c->loop, &h->wio);
		h->ops->release(h);
		close(h->fd);
		h->fd = -1;
	}
	splice_release(h);
	buf_put(h->in);
	buf_put(h->out);
	h->in = h->out = NULL;
	h->fwd = 0;
	h->eof = h->shut = h->connecting = h->handshaking = h->read_wants_write = h->cut = h->nosplice = false;
}

/*
 * Reads from h into its buffer until the buffer is full, the socket or TLS session has nothing
 * more, or the side ends; the caller then writes once. The per-wakeup budget is the buffer's
 * free room (at most BUF_CAP, 64 KiB): a fast channel takes one buffer per turn of the event
 * loop and then waits behind the other connections (a larger budget would need the buffer to
 * drain in between, i.e. writes inside the read, and one more buffer's latency for the others).
 * A short read means the socket was emptied: no second call only to hear EAGAIN, so a wakeup
 * costs at most one EAGAIN. Returns 1 when bytes arrived or the side ended (h->eof, h->cut),
 * 0 when nothing came, -1 with errno ENOMEM when no buffer could be had.
 */
int
pump_read(struct conn *c, struct half *h)
{
	int got = 0;

	ASSERT(!h->eof);	/* a half is never read after its end */
	if (!h->in && !(h->in = buf_get())) {
		errno = ENOMEM;
		return -1;
	}
	for (;;) {
		size_t room = buf_room(h->in);
		if (room == 0) {
			if (!got)
				pump_io_set(c, &h->rio, false);
			return got;
		}
		ssize_t n = h->ops->recv(h, h->in->data + h->in->w, room);
		h->read_wants_write = n < 0 && errno == EAGAIN && h->want == EV_WRITE;
		if (n > 0) {
			h->in->w += (size_t)n;
			h->nread += (uint64_t)n;
			c->last_activity = ev_now(c->loop);
			got = 1;
			if ((size_t)n < room && !h->ops->pending(h))
				return 1;	/* the socket (and the session) had no more */
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			if (n < 0 && h == &c->backend)
				log_info("client=%s backend read error: %s", c->client_ip, strerror(errno));
			h->eof = true;
			h->cut = n < 0;
			pump_io_set(c, &h->rio, false);
			return 1;
		}
		return got;
	}
}
