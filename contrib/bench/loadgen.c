/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * loadgen: the C ends of contrib/bench/compare.py, so that the load side is not the ceiling:
 * a plaintext HTTP/1.1 backend and the clients (plaintext or TLS, GnuTLS). Not part of the
 * build: compare.py compiles it with
 *     cc -O2 -pthread loadgen.c $(pkg-config --cflags --libs gnutls)
 * Everything talks to 127.0.0.1; every socket read and write has a timeout (IO_TIMEOUT; an hour
 * for the backend's reads, so that the proxies' idle backend connections stay).
 *
 * loadgen backend PORT
 *     Listens on 127.0.0.1:PORT, one thread per connection, keep-alive; prints "ready".
 *     GET (any target)                  200 with a 100-byte body
 *     RPC_IN_DATA  ...?sink[&verify]    reads the Content-Length body, then 200 with the body
 *                                       "bytes=N sha256=HEX" (HEX: "-" without verify)
 *     RPC_OUT_DATA ...?source=N[&verify] reads its body, then 200 with Content-Length N and N
 *                                       bytes (the pattern below with verify, else filler)
 *     RPC_OUT_DATA ...?echo=ID          200 with Content-Length 2^40, then whatever arrives on
 *                                       the RPC_IN_DATA channel with the same ID
 *     RPC_IN_DATA  ...?echo=ID          its body goes onto the OUT channel of ID
 * loadgen up|down [-t] [-v] PORT BYTES
 *     One RPC_IN_DATA upload (sink) or RPC_OUT_DATA download (source) of BYTES body bytes;
 *     -t over TLS, -v with the pattern and SHA-256. Prints one JSON line.
 * loadgen hs [-r] PORT SECONDS THREADS
 *     TLS handshakes (connect, handshake, close_notify, wait for the close) in THREADS threads
 *     for SECONDS; -r resumes the session of one first connection (TLS 1.3 ticket). JSON line.
 * loadgen idle PORT N
 *     Opens N TLS connections (handshake done), prints "ready N", holds them until stdin ends.
 * loadgen get PORT CONNECTIONS REQUESTS [ROUND_US]
 *     CONNECTIONS keep-alive TLS connections, one GET each, "ready N"; after a line on stdin,
 *     REQUESTS more GETs in rounds (one on each connection, then the answers), a JSON line;
 *     the connections stay open until stdin ends (counting system calls per request). With
 *     ROUND_US, a round starts every ROUND_US microseconds (a fixed offered rate of
 *     CONNECTIONS / ROUND_US, the same for every proxy); a round that starts late counts in
 *     "late" (the load side, not the proxy, set the pace then).
 * loadgen echo [-t] PORT COUNT INTERVAL_US
 *     One echo pair (OUT, then IN); COUNT round trips of 100 bytes written on IN and read back
 *     on OUT, INTERVAL_US apart, after 20 not counted. JSON line with the percentiles in us.
 * loadgen digest BYTES
 *     SHA-256 (hex) of the first BYTES bytes of the pattern.
 *
 * The pattern: 64-bit little-endian words, word k = splitmix64(k); never periodic, so a lost,
 * repeated or reordered piece changes the digest. Exit status 0, or 1 with a message on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT 20		/* seconds a blocking read or write may wait */
#define CHUNK (256 * 1024)	/* bytes per write of a body; a multiple of 8 */
#define HEAD_MAX 16384
#define SMALL_BODY 100
#define ECHO_MSG 100
#define ECHO_WARMUP 20
#define SNI "mail.example.com"
/* The client's TLS: 1.3, AES-256-GCM, X25519, as wrk's OpenSSL picks by default. */
#define CLIENT_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM:-GROUP-ALL:+GROUP-X25519"

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static gnutls_certificate_credentials_t xcred;
static gnutls_priority_t prio;

static _Noreturn void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
splitmix64(uint64_t k)
{
	uint64_t z = k * 0x9e3779b97f4a7c15ULL + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The pattern's bytes [off, off + len) into p; off and len multiples of 8. */
static void
pattern(unsigned char *p, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = splitmix64((off + i) / 8);
		for (int b = 0; b < 8; b++)
			p[i + (size_t)b] = (unsigned char)(w >> (8 * b));
	}
}

static void
hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void
sock_opts(int fd)
{
	int one = 1;
	struct timeval tv = { IO_TIMEOUT, 0 };

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

/* ---------------------------------------------------------------------------------------- */
/* A connection: a socket, with a TLS session or without, and bytes read past a head.        */

struct conn {
	int fd;
	gnutls_session_t s;	/* NULL: plaintext */
	unsigned char *in;	/* HEAD_MAX bytes: a head and what came after it */
	size_t inlen, inoff;
};

/* Reads up to n bytes (first any left over from a head): > 0, 0 at the end, -1 on error. */
static ssize_t
conn_read(struct conn *c, void *p, size_t n)
{
	if (c->inoff < c->inlen) {
		size_t k = c->inlen - c->inoff < n ? c->inlen - c->inoff : n;
		memcpy(p, c->in + c->inoff, k);
		c->inoff += k;
		return (ssize_t)k;
	}
	double t0 = now();

	for (;;) {
		ssize_t r;
		if (c->s) {
			/*
			 * GNUTLS_E_AGAIN: SO_RCVTIMEO expired, or a TLS 1.3 post-handshake message
			 * (a session ticket) was read and no data yet: go on until IO_TIMEOUT.
			 */
			r = gnutls_record_recv(c->s, p, n);
			if (r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && now() - t0 < IO_TIMEOUT))
				continue;
			if (r == GNUTLS_E_PREMATURE_TERMINATION)
				return 0;
			if (r < 0) {
				errno = EIO;
				return -1;
			}
		} else {
			r = recv(c->fd, p, n, 0);
			if (r < 0 && errno == EINTR)
				continue;
		}
		return r;
	}
}

static int
conn_write(struct conn *c, const void *p, size_t n)
{
	const unsigned char *b = p;
	double t0 = now();

	while (n > 0) {
		ssize_t r;
		if (c->s) {
			r = gnutls_record_send(c->s, b, n);
			if (r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && now() - t0 < IO_TIMEOUT))
				continue;
			if (r < 0)
				return -1;
		} else {
			r = send(c->fd, b, n, MSG_NOSIGNAL);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads exactly n bytes; -1 on error or an early end. */
static int
conn_read_full(struct conn *c, void *p, size_t n)
{
	unsigned char *b = p;

	while (n > 0) {
		ssize_t r = conn_read(c, b, n);
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * Reads a head (up to CRLF CRLF) into c->in; *headlen is its length, the bytes after it stay
 * for conn_read. 1 with a head, 0 at a clean end before any byte, -1 on error.
 */
static int
conn_read_head(struct conn *c, size_t *headlen)
{
	/* keep what followed the previous head */
	if (c->inoff > 0) {
		memmove(c->in, c->in + c->inoff, c->inlen - c->inoff);
		c->inlen -= c->inoff;
		c->inoff = 0;
	}
	for (;;) {
		if (c->inlen >= 4) {
			unsigned char *e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
			if (e) {
				*headlen = (size_t)(e - c->in) + 4;
				c->inoff = *headlen;
				return 1;
			}
		}
		if (c->inlen == HEAD_MAX)
			return -1;
		ssize_t r;
		size_t keep = c->inlen;
		c->inoff = c->inlen = 0;	/* conn_read must not serve the buffer to itself */
		r = conn_read(c, c->in + keep, HEAD_MAX - keep);
		c->inlen = keep;
		if (r <= 0)
			return r == 0 && keep == 0 ? 0 : -1;
		c->inlen += (size_t)r;
	}
}

/* The value of header `name` in head h (NUL-terminated copy into v), or NULL. */
static const char *
header(const char *h, const char *name, char *v, size_t vlen)
{
	size_t nl = strlen(name);

	for (const char *l = strstr(h, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
		const char *f = l + 2;
		if (strncasecmp(f, name, nl) == 0 && f[nl] == ':') {
			f += nl + 1;
			while (*f == ' ' || *f == '\t')
				f++;
			size_t n = strcspn(f, "\r");
			if (n >= vlen)
				n = vlen - 1;
			memcpy(v, f, n);
			v[n] = '\0';
			return v;
		}
	}
	return NULL;
}

static uint64_t
content_length(const char *h)
{
	char v[32];

	return header(h, "Content-Length", v, sizeof v) ? strtoull(v, NULL, 10) : 0;
}

static void
conn_init(struct conn *c, int fd)
{
	c->fd = fd;
	c->s = NULL;
	c->in = malloc(HEAD_MAX + 1);
	if (!c->in)
		die("out of memory");
	c->inlen = c->inoff = 0;
}

static void
conn_free(struct conn *c)
{
	if (c->s)
		gnutls_deinit(c->s);
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	c->in = NULL;
	c->s = NULL;
	c->fd = -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Client side                                                                               */

static void
tls_client_init(void)
{
	const char *err;

	if (gnutls_certificate_allocate_credentials(&xcred) < 0)
		die("gnutls credentials");
	if (gnutls_priority_init(&prio, CLIENT_PRIORITY, &err) < 0)
		die("priority string at %s", err);
}

static int
tcp_connect(int port)
{
	struct sockaddr_in a = loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	sock_opts(fd);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Connects c to 127.0.0.1:port, with a TLS handshake when tls (resuming `sess` when given).
 * 0, or -1 with a reason in *why.
 */
static int
client_open(struct conn *c, int port, bool tls, const gnutls_datum_t *sess, const char **why)
{
	int fd = tcp_connect(port);

	conn_init(c, fd);
	if (fd < 0) {
		*why = strerror(errno);
		return -1;
	}
	if (!tls)
		return 0;
	if (gnutls_init(&c->s, GNUTLS_CLIENT) < 0) {
		*why = "gnutls_init";
		return -1;
	}
	gnutls_priority_set(c->s, prio);
	gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, xcred);
	gnutls_server_name_set(c->s, GNUTLS_NAME_DNS, SNI, strlen(SNI));
	if (sess)
		gnutls_session_set_data(c->s, sess->data, sess->size);
	gnutls_transport_set_int(c->s, fd);
	int r;
	double t0 = now();
	do
		r = gnutls_handshake(c->s);
	while (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_WARNING_ALERT_RECEIVED ||
	    (r == GNUTLS_E_AGAIN && now() - t0 < IO_TIMEOUT));
	if (r < 0) {
		*why = gnutls_strerror(r);
		return -1;
	}
	return 0;
}

static void
client_open_or_die(struct conn *c, int port, bool tls)
{
	const char *why = "";

	if (client_open(c, port, tls, NULL, &why) < 0)
		die("connect/handshake to port %d: %s", port, why);
}

/* Reads a response head on c; dies unless it is a 200. Returns its Content-Length. */
static uint64_t
read_200(struct conn *c, const char *what)
{
	size_t hl;

	if (conn_read_head(c, &hl) != 1)
		die("%s: no response head", what);
	c->in[hl - 1] = '\0';
	if (strncmp((char *)c->in, "HTTP/1.1 200", 12) != 0) {
		char *e = strchr((char *)c->in, '\r');
		if (e)
			*e = '\0';
		die("%s: answer \"%s\"", what, (char *)c->in);
	}
	uint64_t cl = content_length((char *)c->in);
	c->in[hl - 1] = '\n';
	return cl;
}

static const char *
cipher_desc(struct conn *c, char *buf, size_t n)
{
	if (!c->s) {
		snprintf(buf, n, "plaintext");
		return buf;
	}
	char *d = gnutls_session_get_desc(c->s);
	snprintf(buf, n, "%s", d ? d : "?");
	gnutls_free(d);
	return buf;
}

static int
cmd_up(bool tls, bool verify, int port, uint64_t bytes)
{
	struct conn c;
	char head[512], desc[128];
	unsigned char *buf = malloc(CHUNK);

	if (!buf)
		die("out of memory");
	memset(buf, 'x', CHUNK);
	client_open_or_die(&c, port, tls);
	int hl = snprintf(head, sizeof head, "RPC_IN_DATA /rpc/rpcproxy.dll?sink%s HTTP/1.1\r\n"
	    "Host: " SNI "\r\nUser-Agent: MSRPC\r\nContent-Type: application/rpc\r\n"
	    "Content-Length: %" PRIu64 "\r\n\r\n", verify ? "&verify" : "", bytes);
	double t0 = now();
	if (conn_write(&c, head, (size_t)hl) < 0)
		die("upload: write of the head failed");
	for (uint64_t off = 0; off < bytes; off += CHUNK) {
		size_t n = bytes - off < CHUNK ? (size_t)(bytes - off) : CHUNK;
		if (verify)
			pattern(buf, off, CHUNK);
		if (conn_write(&c, buf, n) < 0)
			die("upload: write failed after %" PRIu64 " bytes", off);
	}
	double t1 = now();
	uint64_t cl = read_200(&c, "upload");
	char body[256];
	if (cl >= sizeof body || conn_read_full(&c, body, (size_t)cl) < 0)
		die("upload: bad response body");
	double t2 = now();
	body[cl] = '\0';
	body[strcspn(body, "\r\n")] = '\0';
	printf("{\"bytes\": %" PRIu64 ", \"seconds\": %.6f, \"sent_seconds\": %.6f, \"backend\": \"%s\", "
	    "\"tls\": \"%s\"}\n", bytes, t2 - t0, t1 - t0, body, cipher_desc(&c, desc, sizeof desc));
	conn_free(&c);
	free(buf);
	return 0;
}

static int
cmd_down(bool tls, bool verify, int port, uint64_t bytes)
{
	struct conn c;
	char head[512], desc[128], digest[65] = "-";
	unsigned char rpc[76];
	size_t bufsize = tls ? 16384 : CHUNK;
	unsigned char *buf = malloc(bufsize);
	gnutls_hash_hd_t h = NULL;

	if (!buf)
		die("out of memory");
	memset(rpc, 0, sizeof rpc);
	client_open_or_die(&c, port, tls);
	int hl = snprintf(head, sizeof head, "RPC_OUT_DATA /rpc/rpcproxy.dll?source=%" PRIu64 "%s HTTP/1.1\r\n"
	    "Host: " SNI "\r\nUser-Agent: MSRPC\r\nContent-Length: 76\r\n\r\n", bytes, verify ? "&verify" : "");
	if (verify && gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0)
		die("gnutls_hash_init");
	double t0 = now();
	if (conn_write(&c, head, (size_t)hl) < 0 || conn_write(&c, rpc, sizeof rpc) < 0)
		die("download: write of the request failed");
	uint64_t cl = read_200(&c, "download");
	if (cl != bytes)
		die("download: Content-Length %" PRIu64 ", asked for %" PRIu64, cl, bytes);
	uint64_t got = 0;
	while (got < bytes) {
		size_t want = bytes - got < bufsize ? (size_t)(bytes - got) : bufsize;
		ssize_t r = conn_read(&c, buf, want);
		if (r <= 0)
			die("download: %s after %" PRIu64 " of %" PRIu64 " bytes", r == 0 ? "end" : "error",
			    got, bytes);
		if (h)
			gnutls_hash(h, buf, (size_t)r);
		got += (uint64_t)r;
	}
	double t1 = now();
	if (h) {
		unsigned char d[32];
		gnutls_hash_deinit(h, d);
		hex(d, sizeof d, digest);
	}
	printf("{\"bytes\": %" PRIu64 ", \"seconds\": %.6f, \"sha256\": \"%s\", \"tls\": \"%s\"}\n",
	    got, t1 - t0, digest, cipher_desc(&c, desc, sizeof desc));
	conn_free(&c);
	free(buf);
	return 0;
}

/* Handshakes --------------------------------------------------------------------------------- */

struct hs_arg {
	int port;
	double deadline;
	const gnutls_datum_t *sess;
	uint64_t count, resumed, failed;
	char why[128];
	char desc[128];		/* the first session's parameters */
};

static void *
hs_thread(void *p)
{
	struct hs_arg *a = p;
	unsigned char sink[4096];

	while (now() < a->deadline) {
		struct conn c;
		const char *why = "";
		if (client_open(&c, a->port, true, a->sess, &why) < 0) {
			a->failed++;
			snprintf(a->why, sizeof a->why, "%s", why);
			conn_free(&c);
			continue;
		}
		a->count++;
		if (a->desc[0] == '\0')
			cipher_desc(&c, a->desc, sizeof a->desc);
		if (gnutls_session_is_resumed(c.s))
			a->resumed++;
		/* close_notify and our FIN, then wait for the proxy to close: a clean end each time */
		(void)gnutls_bye(c.s, GNUTLS_SHUT_WR);
		(void)shutdown(c.fd, SHUT_WR);
		while (recv(c.fd, sink, sizeof sink, 0) > 0)
			;
		conn_free(&c);
	}
	return NULL;
}

static int
cmd_hs(bool resume, int port, double seconds, int threads)
{
	gnutls_datum_t sess = { NULL, 0 };
	char desc[128] = "";

	if (threads < 1 || threads > 64)
		die("threads: 1..64");
	if (resume) {
		/* one full handshake and a request, so that the TLS 1.3 ticket has arrived */
		struct conn c;
		const char *req = "GET /100b.txt HTTP/1.1\r\nHost: " SNI "\r\n\r\n";
		char body[SMALL_BODY];
		client_open_or_die(&c, port, true);
		if (conn_write(&c, req, strlen(req)) < 0)
			die("hs: request failed");
		uint64_t cl = read_200(&c, "hs");
		if (cl != SMALL_BODY || conn_read_full(&c, body, SMALL_BODY) < 0)
			die("hs: bad response body");
		if (gnutls_session_get_data2(c.s, &sess) < 0)
			die("hs: no session data");
		cipher_desc(&c, desc, sizeof desc);
		conn_free(&c);
	}
	struct hs_arg a[64];
	pthread_t t[64];
	double t0 = now();
	for (int i = 0; i < threads; i++) {
		memset(&a[i], 0, sizeof a[i]);
		a[i].port = port;
		a[i].deadline = t0 + seconds;
		a[i].sess = resume ? &sess : NULL;
		if (pthread_create(&t[i], NULL, hs_thread, &a[i]) != 0)
			die("pthread_create");
	}
	uint64_t count = 0, resumed = 0, failed = 0;
	const char *why = "";
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		count += a[i].count;
		resumed += a[i].resumed;
		failed += a[i].failed;
		if (a[i].failed)
			why = a[i].why;
		if (desc[0] == '\0')
			snprintf(desc, sizeof desc, "%s", a[i].desc);
	}
	double t1 = now();
	printf("{\"handshakes\": %" PRIu64 ", \"resumed\": %" PRIu64 ", \"failed\": %" PRIu64 ", "
	    "\"seconds\": %.6f, \"last_error\": \"%s\", \"tls\": \"%s\"}\n", count, resumed, failed, t1 - t0,
	    why, desc);
	if (sess.data)
		gnutls_free(sess.data);
	return 0;
}

/* Idle connections ----------------------------------------------------------------------------- */

static int
cmd_idle(int port, int n)
{
	struct conn *c = calloc((size_t)n, sizeof *c);
	char line[64];

	if (!c)
		die("out of memory");
	for (int i = 0; i < n; i++) {
		const char *why = "";
		if (client_open(&c[i], port, true, NULL, &why) < 0)
			die("idle: connection %d: %s", i, why);
		free(c[i].in);	/* 16 KiB each, not needed here */
		c[i].in = NULL;
	}
	printf("ready %d\n", n);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	for (int i = 0; i < n; i++)
		conn_free(&c[i]);
	free(c);
	return 0;
}

/* Counted GETs --------------------------------------------------------------------------------- */

/* One GET of the 100-byte file on each of n connections, then every answer. 0 or -1. */
static int
get_round(struct conn *c, int n)
{
	static const char req[] = "GET /100b.txt HTTP/1.1\r\nHost: " SNI "\r\n\r\n";
	char body[SMALL_BODY];

	for (int i = 0; i < n; i++)
		if (conn_write(&c[i], req, sizeof req - 1) < 0)
			return -1;
	for (int i = 0; i < n; i++)
		if (read_200(&c[i], "get") != SMALL_BODY || conn_read_full(&c[i], body, SMALL_BODY) < 0)
			return -1;
	return 0;
}

/*
 * n keep-alive TLS connections, one GET each (so that the proxy has its backend connections),
 * "ready"; after a line on stdin, requests GETs in rounds of one per connection; a JSON line;
 * the connections stay open until stdin ends. For counting a proxy's system calls per request
 * without the connections' set-up.
 */
static int
cmd_get(int port, int n, int requests, long round_us)
{
	struct conn *c = calloc((size_t)n, sizeof *c);
	char line[64];
	int done = 0, rounds = 0, late = 0;

	if (!c || n < 1)
		die("get: bad connection count");
	for (int i = 0; i < n; i++)
		client_open_or_die(&c[i], port, true);
	if (get_round(c, n) < 0)
		die("get: the first round failed");
	printf("ready %d\n", n);
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;
	double t0 = now();
	for (; done < requests; done += n, rounds++) {
		if (round_us > 0) {
			double at = t0 + (double)rounds * (double)round_us / 1e6, wait = at - now();
			if (wait > 0) {
				struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
				while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
					;
			} else if (rounds > 0 && wait < -(double)round_us / 1e6) {
				late++;	/* a whole round behind: the load side could not keep the pace */
			}
		}
		if (get_round(c, n) < 0)
			die("get: a round failed after %d requests", done);
	}
	printf("{\"requests\": %d, \"seconds\": %.6f, \"rounds\": %d, \"late\": %d}\n", done, now() - t0,
	    rounds, late);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	for (int i = 0; i < n; i++)
		conn_free(&c[i]);
	free(c);
	return 0;
}

/* Echo latency --------------------------------------------------------------------------------- */

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
cmd_echo(bool tls, int port, int count, long interval_us)
{
	struct conn out, in;
	char head[512], desc[128];
	unsigned char rpc[76], msg[ECHO_MSG], back[ECHO_MSG];
	unsigned id = (unsigned)getpid() ^ (unsigned)time(NULL);
	double *rtt = calloc((size_t)count, sizeof *rtt);

	if (!rtt || count < 1)
		die("echo: bad count");
	memset(rpc, 0, sizeof rpc);
	client_open_or_die(&out, port, tls);
	int hl = snprintf(head, sizeof head, "RPC_OUT_DATA /rpc/rpcproxy.dll?echo=%u HTTP/1.1\r\n"
	    "Host: " SNI "\r\nUser-Agent: MSRPC\r\nContent-Length: 76\r\n\r\n", id);
	if (conn_write(&out, head, (size_t)hl) < 0 || conn_write(&out, rpc, sizeof rpc) < 0)
		die("echo: OUT request failed");
	(void)read_200(&out, "echo OUT");
	client_open_or_die(&in, port, tls);
	hl = snprintf(head, sizeof head, "RPC_IN_DATA /rpc/rpcproxy.dll?echo=%u HTTP/1.1\r\n"
	    "Host: " SNI "\r\nUser-Agent: MSRPC\r\nContent-Length: 1073741824\r\n\r\n", id);
	if (conn_write(&in, head, (size_t)hl) < 0)
		die("echo: IN request failed");
	struct timespec gap = { interval_us / 1000000, (interval_us % 1000000) * 1000 };
	for (int i = -ECHO_WARMUP; i < count; i++) {
		memset(msg, 'a' + (i & 15), sizeof msg);
		double t0 = now();
		if (conn_write(&in, msg, sizeof msg) < 0)
			die("echo: write failed");
		if (conn_read_full(&out, back, sizeof back) < 0)
			die("echo: read failed after %d round trips", i + ECHO_WARMUP);
		double t1 = now();
		if (memcmp(msg, back, sizeof msg) != 0)
			die("echo: the bytes that came back differ");
		if (i >= 0)
			rtt[i] = (t1 - t0) * 1e6;
		if (interval_us > 0)
			nanosleep(&gap, NULL);
	}
	qsort(rtt, (size_t)count, sizeof *rtt, cmp_double);
	int p99 = (count * 99 + 99) / 100 - 1;	/* nearest rank */
	printf("{\"count\": %d, \"min_us\": %.1f, \"median_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
	    "\"tls\": \"%s\"}\n", count, rtt[0], rtt[count / 2], rtt[p99], rtt[count - 1],
	    cipher_desc(&in, desc, sizeof desc));
	conn_free(&in);
	conn_free(&out);
	free(rtt);
	return 0;
}

static int
cmd_digest(uint64_t bytes)
{
	gnutls_hash_hd_t h = NULL;
	unsigned char *buf = malloc(CHUNK), d[32];
	char out[65];

	if (!buf || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0)
		die("digest: set-up failed");
	for (uint64_t off = 0; off < bytes; off += CHUNK) {
		pattern(buf, off, CHUNK);
		gnutls_hash(h, buf, bytes - off < CHUNK ? (size_t)(bytes - off) : CHUNK);
	}
	gnutls_hash_deinit(h, d);
	hex(d, sizeof d, out);
	printf("%s\n", out);
	free(buf);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Backend                                                                                   */

#define ECHO_SLOTS 64
static struct { unsigned id; int fd; } echo_out[ECHO_SLOTS];
static pthread_mutex_t echo_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char filler[CHUNK];
static char small[256];		/* the answer to a GET: a head and a 100-byte body */
static size_t small_len;

static bool
query_has(const char *target, const char *key, char *val, size_t vlen)
{
	const char *q = strchr(target, '?');
	size_t kl = strlen(key);

	for (const char *p = q; p; p = strchr(p + 1, '&')) {
		p++;
		if (strncmp(p, key, kl) == 0 && (p[kl] == '=' || p[kl] == '&' || p[kl] == '\0' || p[kl] == ' ')) {
			if (val) {
				size_t n = p[kl] == '=' ? strcspn(p + kl + 1, "& ") : 0;
				if (n >= vlen)
					n = vlen - 1;
				memcpy(val, p + kl + 1, n);
				val[n] = '\0';
			}
			return true;
		}
	}
	return false;
}

/* Reads and drops (or hashes) n body bytes. 0, or -1 when the connection ended early. */
static int
drain_body(struct conn *c, uint64_t n, gnutls_hash_hd_t h, unsigned char *buf)
{
	while (n > 0) {
		ssize_t r = conn_read(c, buf, n < CHUNK ? (size_t)n : CHUNK);
		if (r <= 0)
			return -1;
		if (h)
			gnutls_hash(h, buf, (size_t)r);
		n -= (uint64_t)r;
	}
	return 0;
}

static int
send_source(struct conn *c, uint64_t n, bool verify, unsigned char *buf)
{
	char head[256];
	int hl = snprintf(head, sizeof head, "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
	    "Content-Length: %" PRIu64 "\r\n\r\n", n);

	if (conn_write(c, head, (size_t)hl) < 0)
		return -1;
	for (uint64_t off = 0; off < n; off += CHUNK) {
		size_t k = n - off < CHUNK ? (size_t)(n - off) : CHUNK;
		if (verify)
			pattern(buf, off, CHUNK);
		if (conn_write(c, verify ? buf : filler, k) < 0)
			return -1;
	}
	return 0;
}

/* The OUT side of an echo pair: registered, answered, then held until the proxy closes it. */
static void
echo_out_channel(struct conn *c, unsigned id, unsigned char *buf)
{
	static const char head[] = "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
	    "Content-Length: 1099511627776\r\n\r\n";
	int slot = -1;

	pthread_mutex_lock(&echo_lock);
	for (int i = 0; i < ECHO_SLOTS && slot < 0; i++)
		if (echo_out[i].fd == 0) {
			echo_out[i].id = id;
			echo_out[i].fd = c->fd;
			slot = i;
		}
	pthread_mutex_unlock(&echo_lock);
	if (slot < 0 || conn_write(c, head, sizeof head - 1) < 0)
		goto out;
	while (conn_read(c, buf, CHUNK) > 0)
		;
out:
	if (slot >= 0) {
		pthread_mutex_lock(&echo_lock);
		echo_out[slot].fd = 0;
		pthread_mutex_unlock(&echo_lock);
	}
}

/* The IN side: every read of its body is written onto the OUT channel of the same id. */
static void
echo_in_channel(struct conn *c, unsigned id, unsigned char *buf)
{
	for (;;) {
		ssize_t r = conn_read(c, buf, CHUNK);
		if (r <= 0)
			return;
		pthread_mutex_lock(&echo_lock);
		int fd = -1;
		for (int i = 0; i < ECHO_SLOTS; i++)
			if (echo_out[i].fd != 0 && echo_out[i].id == id)
				fd = echo_out[i].fd;
		bool ok = fd >= 0 && send(fd, buf, (size_t)r, MSG_NOSIGNAL) == r;
		pthread_mutex_unlock(&echo_lock);
		if (!ok)
			return;
	}
}

static void *
backend_conn(void *p)
{
	struct conn c;
	unsigned char *buf = malloc(CHUNK);

	conn_init(&c, (int)(intptr_t)p);
	sock_opts(c.fd);
	/* the proxies keep idle backend connections for their next requests: never cut them */
	struct timeval tv = { 3600, 0 };
	(void)setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	while (buf) {
		size_t hl;
		char method[32], target[512], val[64];
		if (conn_read_head(&c, &hl) != 1)
			break;
		c.in[hl - 1] = '\0';
		const char *h = (const char *)c.in;
		if (sscanf(h, "%31s %511s", method, target) != 2)
			break;
		uint64_t cl = content_length(h);
		c.in[hl - 1] = '\n';
		if (strcmp(method, "RPC_OUT_DATA") == 0 && query_has(target, "echo", val, sizeof val)) {
			if (drain_body(&c, cl, NULL, buf) == 0)
				echo_out_channel(&c, (unsigned)strtoul(val, NULL, 10), buf);
			break;
		}
		if (strcmp(method, "RPC_IN_DATA") == 0 && query_has(target, "echo", val, sizeof val)) {
			echo_in_channel(&c, (unsigned)strtoul(val, NULL, 10), buf);
			break;
		}
		bool verify = query_has(target, "verify", NULL, 0);
		gnutls_hash_hd_t hh = NULL;
		if (verify && strcmp(method, "RPC_IN_DATA") == 0 && gnutls_hash_init(&hh, GNUTLS_DIG_SHA256) < 0)
			break;
		if (drain_body(&c, cl, hh, buf) < 0) {
			if (hh)
				gnutls_hash_deinit(hh, NULL);
			break;
		}
		int r;
		if (strcmp(method, "RPC_OUT_DATA") == 0 && query_has(target, "source", val, sizeof val)) {
			r = send_source(&c, strtoull(val, NULL, 10), verify, buf);
		} else if (strcmp(method, "RPC_IN_DATA") == 0) {
			char body[128], head[128], digest[65] = "-";
			if (hh) {
				unsigned char d[32];
				gnutls_hash_deinit(hh, d);
				hex(d, sizeof d, digest);
			}
			int bl = snprintf(body, sizeof body, "bytes=%" PRIu64 " sha256=%s\n", cl, digest);
			int hl2 = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", bl);
			r = conn_write(&c, head, (size_t)hl2) < 0 ? -1 : conn_write(&c, body, (size_t)bl);
		} else {
			r = conn_write(&c, small, small_len);
		}
		if (r < 0)
			break;
	}
	conn_free(&c);
	free(buf);
	return NULL;
}

static _Noreturn void
cmd_backend(int port)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pthread_attr_t attr;

	memset(filler, 'x', sizeof filler);
	small_len = (size_t)snprintf(small, sizeof small, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	    "Content-Length: %d\r\n\r\n", SMALL_BODY);
	memset(small + small_len, 'b', SMALL_BODY - 1);
	small[small_len + SMALL_BODY - 1] = '\n';
	small_len += SMALL_BODY;
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0)
		die("backend: cannot listen on port %d: %s", port, strerror(errno));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
				continue;
			die("backend: accept: %s", strerror(errno));
		}
		pthread_t t;
		if (pthread_create(&t, &attr, backend_conn, (void *)(intptr_t)fd) != 0)
			close(fd);
	}
}

/* ---------------------------------------------------------------------------------------- */

static _Noreturn void
usage(void)
{
	fputs("usage: loadgen backend PORT\n"
	    "       loadgen up|down [-t] [-v] PORT BYTES\n"
	    "       loadgen hs [-r] PORT SECONDS THREADS\n"
	    "       loadgen idle PORT N\n"
	    "       loadgen get PORT CONNECTIONS REQUESTS [ROUND_US]\n"
	    "       loadgen echo [-t] PORT COUNT INTERVAL_US\n"
	    "       loadgen digest BYTES\n", stderr);
	exit(2);
}

int
main(int argc, char **argv)
{
	bool tls = false, verify = false, resume = false;
	int i = 2;

	if (argc < 2)
		usage();
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-t") == 0)
			tls = true;
		else if (strcmp(argv[i], "-v") == 0)
			verify = true;
		else if (strcmp(argv[i], "-r") == 0)
			resume = true;
		else
			usage();
	}
	int n = argc - i;
	char **a = argv + i;
	const char *cmd = argv[1];
	if (gnutls_global_init() < 0)
		die("gnutls_global_init");
	tls_client_init();
	if (strcmp(cmd, "backend") == 0 && n == 1)
		cmd_backend(atoi(a[0]));
	if (strcmp(cmd, "up") == 0 && n == 2)
		return cmd_up(tls, verify, atoi(a[0]), strtoull(a[1], NULL, 10));
	if (strcmp(cmd, "down") == 0 && n == 2)
		return cmd_down(tls, verify, atoi(a[0]), strtoull(a[1], NULL, 10));
	if (strcmp(cmd, "hs") == 0 && n == 3)
		return cmd_hs(resume, atoi(a[0]), atof(a[1]), atoi(a[2]));
	if (strcmp(cmd, "idle") == 0 && n == 2)
		return cmd_idle(atoi(a[0]), atoi(a[1]));
	if (strcmp(cmd, "get") == 0 && (n == 3 || n == 4))
		return cmd_get(atoi(a[0]), atoi(a[1]), atoi(a[2]), n == 4 ? atol(a[3]) : 0);
	if (strcmp(cmd, "echo") == 0 && n == 3)
		return cmd_echo(tls, atoi(a[0]), atoi(a[1]), atol(a[2]));
	if (strcmp(cmd, "digest") == 0 && n == 1)
		return cmd_digest(strtoull(a[0], NULL, 10));
	usage();
}
