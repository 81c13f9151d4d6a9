/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * splice.c: zero-copy relaying. When both halves of a body or tunnel are plain sockets (TLS
 * ended before exrelay, a plaintext backend) or kTLS sessions, bytes move socket -> pipe ->
 * socket with splice(2) and never enter user space. Only bytes the framing calls opaque are
 * spliced (Content-Length bodies, chunk data, close-delimited bodies, tunnels; never more
 * than the body has left, so the next pipelined request still reaches the parser), and only
 * while no byte of that direction waits in a buffer, so order is kept; the bytes in a pipe
 * count as output waiting for its half (pump_has_output), and its reader stops until they
 * are written (backpressure). Pipes come from a bounded per-worker pool and are held only
 * while bytes are inside: an idle channel holds none. Any refusal (pool empty, no memory,
 * EINVAL) falls back to the buffer path of pump.c. Counting (nread, nwritten, the request's
 * bytes, last_activity) and the end of a side (eof, cut on an error) are those of pump.c.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay.h"
#include "splice.h"
#include "tls.h"

/*
 * Sizes. A pipe of 1 MiB (fs.pipe-max-size's default, 256 pages) moves a loopback stream with
 * about half the CPU of the default 64 KiB one (fewer calls and wake-ups per byte). The kernel
 * counts a pipe's capacity against its user (fs.pipe-user-pages-soft, 16384 pages = 64 pipes of
 * 1 MiB by default): global.splice_pipes (default 16 per worker) and the small cache keep
 * exrelay under it on machines of up to 4 workers; beyond it the kernel refuses the larger size
 * and a pipe keeps the size it got (still correct, slower). One read event moves at most two
 * pipes' worth (2 MiB, a few milliseconds) before other connections get their turn.
 */
#define SPLICE_PIPE_SIZE (1024 * 1024)	/* F_SETPIPE_SZ asked for each pipe */
#define SPLICE_CACHE 4			/* empty pipes a worker keeps open for the next transfer */
#define SPLICE_BUDGET (2 * 1024 * 1024)	/* bytes one read event moves at most (fairness) */

struct spipe {
	int fd[2];			/* read end, write end */
	size_t len;			/* bytes inside */
	size_t cap;			/* the pipe's capacity */
	struct spipe *next;		/* pool link */
};

static __thread struct spipe *cache;	/* empty pipes, ready */
static __thread int ncache;
static __thread int nopen;		/* pipes of this worker: held and cached */

/* A pipe from the pool, or a new one while fewer than max are open; NULL otherwise. */
static struct spipe *
spipe_get(int max)
{
	struct spipe *p = cache;
	int sz;

	if (p) {
		cache = p->next;
		ncache--;
		p->next = NULL;
		return p;
	}
	if (nopen >= max || !(p = calloc(1, sizeof(*p))))
		return NULL;
	if (pipe2(p->fd, O_NONBLOCK | O_CLOEXEC) == -1) {
		free(p);
		return NULL;
	}
	/* A larger pipe moves more per call; refused (pipe-user-pages limits): the default 64 KiB. */
	if ((sz = fcntl(p->fd[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE)) == -1)
		sz = fcntl(p->fd[1], F_GETPIPE_SZ);
	p->cap = sz > 0 ? (size_t)sz : 65536;
	nopen++;
	metrics_splice_pipes(1);
	return p;
}

/* Gives a pipe back: an empty one is kept for reuse (up to SPLICE_CACHE), others closed. */
static void
spipe_put(struct spipe *p)
{
	if (p->len == 0 && ncache < SPLICE_CACHE) {
		p->next = cache;
		cache = p;
		ncache++;
		return;
	}
	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
	nopen--;
	metrics_splice_pipes(-1);
}

void
splice_pool_drain(void)
{
	while (cache) {
		struct spipe *p = cache;
		cache = p->next;
		ncache--;
		p->len = SIZE_MAX;	/* closed, not kept */
		spipe_put(p);
	}
}

bool
splice_pending(const struct half *dst)
{
	return dst->pipe && dst->pipe->len > 0;
}

void
splice_release(struct half *dst)
{
	if (dst->pipe)
		spipe_put(dst->pipe);
	dst->pipe = NULL;
}

/* True when h may take part in a splice: an open plain socket, or a kTLS session holding nothing. */
static bool
spliceable(struct half *h)
{
	if (h->fd < 0 || h->nosplice || h->connecting || h->handshaking)
		return false;
	return h->ops == &sock_ops || (tls_ktls(h) && !h->ops->pending(h));
}

/*
 * How many of the bytes waiting on src may be spliced: the opaque bytes its body framing
 * has left (*bp: that framing state), everything in a tunnel, 0 elsewhere (heads, chunk
 * size lines and trailers are parsed from the buffer).
 */
static uint64_t
splice_limit(struct conn *c, struct half *src, struct http1_body **bp)
{
	*bp = NULL;
	if (c->phase == PH_TUNNEL)
		return UINT64_MAX;
	if (c->phase != PH_ACTIVE)
		return 0;
	if (src == &c->client) {
		if (c->await_cookie)
			return 0;	/* the channel's cookie is read from the buffer */
		*bp = &c->reqb;
	} else {
		if (c->rs != RS_BODY)
			return 0;
		*bp = &c->respb;
	}
	return http1_body_opaque(*bp);
}

/* Starts or stops a watcher (as pump_io_set). */
static void
io_set(struct conn *c, ev_io *w, bool on)
{
	if (on && !ev_is_active(w))
		ev_io_start(c->loop, w);
	else if (!on && ev_is_active(w))
		ev_io_stop(c->loop, w);
}

/* Writes what dst's pipe holds: 1 when it is empty, 0 when dst blocks, -1 on an error. */
static int
splice_out(struct conn *c, struct half *dst)
{
	struct spipe *p = dst->pipe;

	while (p->len > 0) {
		ssize_t n = splice(p->fd[0], NULL, dst->fd, NULL, p->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			ASSERT((size_t)n <= p->len);
			p->len -= (size_t)n;
			dst->nwritten += (uint64_t)n;
			c->last_activity = ev_now(c->loop);
			metrics_splice_bytes((uint64_t)n);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			io_set(c, &dst->wio, true);
			return 0;
		}
		if (n == 0)
			errno = EPIPE;
		return -1;
	}
	return 1;
}

int
splice_flush(struct conn *c, struct half *dst)
{
	if (!dst->pipe)
		return 1;
	int r = splice_out(c, dst);
	if (r == 1)
		splice_release(dst);
	return r;
}

/* The bytes n just spliced from src: counted as pump_read counts, and fed to the framing. */
static void
splice_count(struct conn *c, struct half *src, struct http1_body *b, size_t n)
{
	src->nread += (uint64_t)n;
	c->last_activity = ev_now(c->loop);
	if (b) {
		http1_body_skip(b, (uint64_t)n);
		if (b == &c->reqb)
			c->req_bytes += (uint64_t)n;
	}
}

/* src ended: orderly (n == 0) or with an error (a cut), as pump_read records it. */
static void
splice_src_end(struct conn *c, struct half *src, bool error)
{
	if (error && src == &c->backend)
		log_info("client=%s backend read error: %s", c->client_ip, strerror(errno));
	src->eof = true;
	src->cut = error;
	io_set(c, &src->rio, false);
}

/* True when a splice error means "not here": the buffer path takes over. */
static bool
splice_refused(int err)
{
	return err == EINVAL || err == ENOSYS || err == EOPNOTSUPP || err == ENOMEM || err == ENOBUFS;
}

/* Splices from src into dst's pipe and on to dst, within limit and the budget; see splice.h. */
static int
splice_move(struct conn *c, struct half *src, struct half *dst, struct http1_body *b, uint64_t limit)
{
	size_t moved = 0;

	while (moved < SPLICE_BUDGET && limit > 0) {
		struct spipe *p = dst->pipe;
		size_t want = p->cap - p->len;
		if (want > limit)
			want = (size_t)limit;
		ssize_t n = splice(src->fd, NULL, p->fd[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			ASSERT((size_t)n <= want);
			p->len += (size_t)n;
			moved += (size_t)n;
			limit -= (uint64_t)n;
			splice_count(c, src, b, (size_t)n);
			if (splice_out(c, dst) != 1)
				break;	/* dst blocks (or failed: its next flush reports it) */
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == 0)
			splice_src_end(c, src, false);
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		else if (splice_refused(errno) && moved == 0)
			return SPLICE_NO;
		else if (!splice_refused(errno))
			splice_src_end(c, src, true);
		break;
	}
	return moved > 0 || src->eof;
}

int
splice_read(struct conn *c, struct half *src)
{
	struct half *dst = src == &c->client ? &c->backend : &c->client;
	struct http1_body *b;

	if (src != &c->client && src != &c->backend)
		return SPLICE_NO;	/* a parked backend connection is never read here */
	uint64_t limit = splice_limit(c, src, &b);
	if (limit == 0 || src->eof || dst->shut || c->cfg->splice_pipes == 0 ||
	    buf_len(src->in) > 0 || buf_len(dst->out) > 0 || !spliceable(src) || !spliceable(dst))
		return SPLICE_NO;
	if (splice_pending(dst)) {
		io_set(c, &src->rio, false);	/* the pipe's bytes go first; pump_arm waits for them */
		return 0;
	}
	if (!dst->pipe && !(dst->pipe = spipe_get(c->cfg->splice_pipes))) {
		metrics_splice_fallback();
		return SPLICE_NO;
	}
	int r = splice_move(c, src, dst, b, limit);
	if (r == SPLICE_NO && src->ops == &sock_ops && errno == EINVAL)
		src->nosplice = true;	/* this socket never splices (kTLS: a control record; retried) */
	if (r == SPLICE_NO)
		metrics_splice_fallback();
	if (!splice_pending(dst))
		splice_release(dst);
	return r;
}
