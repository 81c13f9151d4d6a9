/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * sock.c: the plain-socket transport, and socket helpers (non-blocking, TCP_NODELAY).
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "transport.h"

static ssize_t
sock_recv(struct half *h, void *buf, size_t len)
{
	ssize_t n;

	do
		n = recv(h->fd, buf, len, 0);
	while (n == -1 && errno == EINTR);
	return n;
}

static ssize_t
sock_send(struct half *h, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(h->fd, buf, len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n;
}

/* One sendmsg for all pieces (a head and the body bytes behind it leave together). */
static ssize_t
sock_sendv(struct half *h, struct iovec *iov, int n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	ssize_t w;

	do
		w = sendmsg(h->fd, &m, MSG_NOSIGNAL);
	while (w == -1 && errno == EINTR);
	return w;
}

static int
sock_shutdown_wr(struct half *h)
{
	return shutdown(h->fd, SHUT_WR);
}

static bool
sock_pending(struct half *h)
{
	(void)h;
	return false;
}

static void
sock_release(struct half *h)
{
	(void)h;
}

const struct transport_ops sock_ops = {
	"tcp", sock_recv, sock_send, sock_shutdown_wr, sock_pending, sock_release, sock_sendv,
};

int
sock_set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
