/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * transport.h: how a connection half moves bytes: plain sockets (sock.c) or, later, GnuTLS
 * sessions (tls.c) behind one ops table, so the HTTP code never knows which it talks to.
 */
#ifndef EXRELAY_TRANSPORT_H
#define EXRELAY_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct half;

struct transport_ops {
	const char *name;
	/* > 0 bytes read; 0 orderly end; -1 with errno (EAGAIN: wait for h->want). Never len 0. */
	ssize_t (*recv)(struct half *h, void *buf, size_t len);
	/* > 0 bytes written; -1 with errno (EAGAIN: wait for h->want; retry with the same bytes). */
	ssize_t (*send)(struct half *h, const void *buf, size_t len);
	/*
	 * Ends our sending direction (FIN, or close_notify then FIN). 0 or -1 with errno (EAGAIN:
	 * close_notify waits for h->want; call again).
	 */
	int (*shutdown_wr)(struct half *h);
	/*
	 * True when recv may return bytes the socket will not signal: TLS holds decrypted bytes or
	 * read-ahead not yet returned by recv (or its last socket read was full: more may wait).
	 */
	bool (*pending)(struct half *h);
	/* Releases transport state (not the fd). */
	void (*release)(struct half *h);
	/*
	 * Writes iov[0..n) as one stream in one system call (TLS: one record of at most 16 KiB):
	 * > 0 bytes written from the front; -1 with errno as send (EAGAIN: retry with the same
	 * bytes in front, more may follow them).
	 */
	ssize_t (*sendv)(struct half *h, struct iovec *iov, int n);
	/*
	 * True when the transport holds bytes it reported written but has not yet given to the
	 * socket (TLS: records made in one batch that the socket did not take at once).
	 */
	bool (*held)(struct half *h);
	/* Writes those bytes: 1 none left, 0 blocked (EAGAIN: wait for h->want), -1 with errno. */
	int (*flush)(struct half *h);
};

extern const struct transport_ops sock_ops;

#endif
