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

/* A socket holds nothing back: what send reported written is the kernel's. */
static bool
sock_held(struct half *h)
{
	(void)h;
	return false;
}

static int
sock_flush(struct half *h)
{
	(void)h;
	return 1;
}

const struct transport_ops sock_ops = {
	"tcp", sock_recv, sock_send, sock_shutdown_wr, sock_pending, sock_release, sock_sendv,
	sock_held, sock_flush,
};

bool
sock_local_error(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EADDRNOTAVAIL ||
	    err == EAGAIN;
}

int
sock_set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
