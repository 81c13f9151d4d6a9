/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_conn.c: libFuzzer target for a whole connection: conn.c, txn.c, txn_resp.c, pump.c,
 * upstream.c, edge.c, access.c and admin.c, driven by a fuzzed script of client and backend
 * events, so that the phase machine is fuzzed and not only the parsers.
 *
 * Fake transport: the client is one end of a socketpair handed to conn_accept() as if a
 * listener had accepted it; the backend's socket() and connect() are replaced (the link
 * wraps them, -Wl,--wrap=socket,--wrap=connect) by a socketpair whose other end the harness
 * holds, so no byte goes to a network. Both pairs have small buffers, so backpressure is
 * reached with short inputs. One worker loop is run with EVRUN_NOWAIT until nothing moves
 * after each event; timers never fire by themselves (the configured timeouts are long): an
 * event ages the connection and fires its timer, so a run is deterministic.
 *
 * Input: byte 0 picks the configuration (PROXY protocol off/required/optional, send_proxy,
 * the listener: traffic or admin) and whether the peer is a trusted proxy; then events, each
 * an op byte (low 3 bits: the op; high 5 bits: a length's high part) and, for data, a length
 * byte and the bytes:
 *   0 client sends   1 backend sends (on the backend connection in use, else the newest)
 *   2 client ends its sending (shutdown)   3 backend ends its sending
 *   4 client closes   5 backend closes   6 the connection's timer expires
 *   7 the next backend connect is refused (high bit 0) / the client stops or resumes reading
 * (at most MAXOPS events; the rest of the input is ignored). At the end every connection is
 * closed (a worker's stop). Invariants (abort() on failure):
 * no sanitizer report, every connection counted and freed (relay.nconns, the worker's list),
 * every socket exrelay opened is closed, every server's active count back to 0, every buffer
 * given back (buf_outstanding after draining the pool).
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "relay.h"
#include "servers.h"
#include "splice.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The daemon's process state (main.c, which is not linked here). */
struct relay_state relay;

/* The wrapped socket calls (-Wl,--wrap): these names are what the linker binds. */
int fake_socket(int domain, int type, int protocol) __asm__("__wrap_socket");
int real_socket(int domain, int type, int protocol) __asm__("__real_socket");
int fake_connect(int fd, const struct sockaddr *sa, socklen_t len) __asm__("__wrap_connect");
int real_connect(int fd, const struct sockaddr *sa, socklen_t len) __asm__("__real_connect");

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_conn: check failed line %d: %s\n", __LINE__, #c); abort(); } } while (0)
#define MAXBE 16
#define MAXOPS 128			/* events per input: the rest is ignored (keeps runs short) */
#define NCONF 4

/* The backend connections exrelay opened during one run. */
static struct {
	int relay_fd[MAXBE];		/* exrelay's end (checked closed at the end) */
	int fd[MAXBE];			/* the harness's end, -1 once closed */
	bool eof[MAXBE];		/* exrelay ended its sending on it: nothing more to read */
	int n;
	bool active;			/* a run is in progress: socket() makes pairs */
	bool refuse_next;
} be;

static struct config *confs[NCONF];
static struct worker worker;
static uint64_t moved;			/* bytes the harness read, for the progress test */
static bool client_eof;			/* exrelay ended its sending to the client */

static void
small_buffers(int fd)
{
	int sz = 4096;

	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

int
fake_socket(int domain, int type, int protocol)
{
	int sv[2];

	if (!be.active || (domain != AF_INET && domain != AF_INET6) || be.n >= MAXBE)
		return real_socket(domain, type, protocol);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	small_buffers(sv[0]);
	small_buffers(sv[1]);
	be.relay_fd[be.n] = sv[0];
	be.fd[be.n] = sv[1];
	be.n++;
	return sv[0];
}

int
fake_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	for (int i = 0; be.active && i < be.n; i++)
		if (be.relay_fd[i] == fd) {
			if (be.refuse_next) {
				be.refuse_next = false;
				errno = ECONNREFUSED;
				return -1;
			}
			errno = EINPROGRESS;
			return -1;
		}
	return real_connect(fd, sa, len);
}

/* The configuration variants: listener PROXY mode, backend PROXY headers, health_path. */
static const char conf_fmt[] =
    "global = { max_connections = 100; log_level = \"debug\"; };\n"
    "timeouts = { proxy_header = 100; tls_handshake = 100; request_head = 100; client_idle = 100;"
    " connect = 100; };\n"
    "limits = { max_head_size = 8192; max_headers = 40; };\n"
    "listeners = (\n"
    " { name = \"public\"; bind = \"127.0.0.1:0\"; proxy_protocol = \"%s\";"
    " trusted_proxies = [ \"127.0.0.1/32\" ]; %s },\n"
    " { name = \"admin\"; bind = \"127.0.0.1:0\"; role = \"admin\"; }\n"
    ");\n"
    "backends = (\n"
    " { name = \"exchange\"; servers = [ \"127.0.0.1:1\", \"127.0.0.1:2\" ]; send_proxy = \"%s\";"
    " idle_timeout = 100; add_headers = [ \"Front-End-Https: On\" ]; },\n"
    " { name = \"apache\"; servers = [ \"127.0.0.1:3\" ]; send_proxy = \"%s\"; idle_timeout = 100; }\n"
    ");\n"
    "routes = (\n"
    " { backend = \"exchange\"; paths = [ \"/rpc\", \"/owa\", \"/ecp\", \"/mapi\", \"/ews\","
    " \"/autodiscover\", \"/Microsoft-Server-ActiveSync\" ]; },\n"
    " { backend = \"apache\"; hosts = [ \"h\" ]; methods = [ \"GET\", \"POST\", \"HEAD\" ]; },\n"
    " { backend = \"apache\"; paths = [ \"/\" ]; allow_from = [ \"127.0.0.0/8\", \"::1/128\" ]; }\n"
    ");\n"
    "security = { rules = ( { path = \"/autodiscover\"; query_contains = \"powershell\"; } ); };\n"
    "auth_guard = { max_failures = 2; max_failures_per_client = 4; max_entries = 1000; };\n";

static struct config *
load_conf(int k)
{
	static const char *const pp[NCONF] = { "off", "required", "optional", "off" };
	static const char *const sp1[NCONF] = { "off", "v2", "off", "v1" };
	static const char *const sp2[NCONF] = { "v1", "off", "v2", "off" };
	char text[4096], path[64], err[1024];
	int n = snprintf(text, sizeof(text), conf_fmt, pp[k], k == 3 ? "health_path = \"/hc\";" : "",
	    sp1[k], sp2[k]);
	int fd = memfd_create("fuzz_conn.conf", MFD_CLOEXEC);

	CHECK(n > 0 && (size_t)n < sizeof(text) && fd != -1);
	CHECK(write(fd, text, (size_t)n) == n);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct config *c = config_load(path, err, sizeof(err), NULL);
	if (c == NULL)
		fprintf(stderr, "fuzz_conn: %s\n", err);
	CHECK(c != NULL);
	close(fd);
	CHECK(servers_bind(c) == 0);
	return c;
}

static void
init_once(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	signal(SIGPIPE, SIG_IGN);
	/* FUZZ_CONN_LOG=stderr shows what a run did (the logs go nowhere otherwise). */
	const char *log = getenv("FUZZ_CONN_LOG");
	CHECK(log_open(log ? log : "/dev/null", LVL_DEBUG) == 0);
	CHECK(log_access_open(log && strcmp(log, "stderr") != 0 ? log : "/dev/null", ACCESS_JSON) == 0);
	CHECK(metrics_init(1) == 0);
	metrics_attach(0);
	for (int k = 0; k < NCONF; k++)
		confs[k] = load_conf(k);
	relay.cfg = confs[0];
	relay.max_conns = 100;
	worker.magic = WORKER_MAGIC;
	worker.id = 0;
	worker.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	CHECK(worker.loop != NULL);
	pthread_mutex_init(&worker.lock, NULL);
	relay.workers = &worker;
	relay.nworkers = 1;
}

/* Reads and drops whatever is waiting on a harness end; *eof once exrelay ended its side. */
static void
drain_fd(int fd, bool *eof)
{
	char tmp[16384];
	ssize_t n;

	if (fd < 0 || *eof)
		return;
	while ((n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT)) > 0)
		moved += (uint64_t)n;
	if (n == 0 || (n == -1 && errno != EAGAIN))
		*eof = true;
}

/* A fingerprint of the state: changes while anything moves. */
static uint64_t
state(void)
{
	uint64_t s = moved * 31 + (uint64_t)worker.nconns;

	for (struct conn *c = worker.conns; c; c = c->next)
		s = s * 131 + c->client.nread + c->client.nwritten * 3 + c->backend.nread * 5 +
		    c->backend.nwritten * 7 + (uint64_t)c->phase * 11 + (uint64_t)c->rs * 13 +
		    buf_len(c->client.in) + buf_len(c->backend.in) + (uint64_t)c->handled;
	return s + (uint64_t)be.n;
}

/* Runs the loop until nothing moves (bounded). */
static void
settle(int client_fd, bool client_reads)
{
	uint64_t last = state() + 1;

	for (int round = 0, still = 0; round < 256 && still < 2; round++) {
		ev_run(worker.loop, EVRUN_NOWAIT);
		if (client_reads)
			drain_fd(client_fd, &client_eof);
		for (int i = 0; i < be.n; i++)
			drain_fd(be.fd[i], &be.eof[i]);
		uint64_t now = state();
		still = now == last ? still + 1 : 0;
		last = now;
	}
}

/*
 * The backend connection the harness speaks on: the one the connection uses now (not one it
 * parked), else the newest the harness still holds; -1 when none.
 */
static int
current_backend(void)
{
	const struct conn *c = worker.conns;

	for (int i = be.n - 1; c && c->backend.fd >= 0 && i >= 0; i--)
		if (be.relay_fd[i] == c->backend.fd && be.fd[i] >= 0)
			return i;
	for (int i = be.n - 1; i >= 0; i--)
		if (be.fd[i] >= 0)
			return i;
	return -1;
}

/* Writes as much of p[0..n) as the socket takes now (the rest is dropped: a full pipe). */
static void
send_some(int fd, const uint8_t *p, size_t n)
{
	if (fd >= 0 && n > 0)
		(void)send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Ages every connection past its deadline and fires its timer. */
static void
expire(void)
{
	for (struct conn *c = worker.conns; c; c = c->next) {
		c->phase_start -= 1e6;
		c->last_activity -= 1e6;
		ev_feed_event(worker.loop, &c->timer, EV_TIMER);
	}
}

/* True when exrelay's end fd is closed (or its number now belongs to an end the harness holds). */
static bool
closed_by_relay(int fd, int client)
{
	if (fd == client)
		return true;
	for (int k = 0; k < be.n; k++)
		if (be.fd[k] == fd)
			return true;
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

static void
check_servers(const struct config *cfg)
{
	for (size_t b = 0; b < cfg->nbackends; b++)
		for (size_t k = 0; k < cfg->backends[b].nservers; k++)
			CHECK(__atomic_load_n(&cfg->backends[b].servers[k].rt->conns_active, __ATOMIC_RELAXED) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t guard_seed[16];
	struct sockaddr_storage peer;
	struct sockaddr_in *sin = (struct sockaddr_in *)&peer;
	struct listener l;
	int sv[2];

	if (size < 1 || size > 65536)
		return 0;
	init_once();
	uint8_t ctl = data[0];
	struct config *cfg = confs[ctl & 3];
	guard_free();
	CHECK(guard_init(cfg->guard.max_entries, guard_seed) == 0);

	memset(&l, 0, sizeof(l));
	l.magic = LISTENER_MAGIC;
	l.w = &worker;
	l.cfg = cfg;
	l.lcfg = &cfg->listeners[(ctl & 4) ? 1 : 0];
	l.fd = -1;
	memset(&peer, 0, sizeof(peer));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	sin->sin_addr.s_addr = htonl((ctl & 8) ? 0xc6336409u : 0x7f000001u);	/* 198.51.100.9 or 127.0.0.1 */

	memset(&be, 0, sizeof(be));
	client_eof = false;
	be.active = true;
	int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
	CHECK(rc == 0);
	small_buffers(sv[0]);
	small_buffers(sv[1]);
	int client = sv[1];
	bool client_reads = true;
	__atomic_add_fetch(&relay.nconns, 1, __ATOMIC_RELAXED);	/* the listener's reservation */
	conn_accept(&l, sv[0], &peer);
	settle(client, client_reads);

	size_t i = 1;
	for (int ops = 0; i < size && ops < MAXOPS; ops++) {
		uint8_t op = data[i++];
		size_t len = 0;
		if ((op & 7) <= 1 && i < size) {
			len = (size_t)(op >> 3) << 8 | data[i++];
			if (len > size - i)
				len = size - i;
		}
		int b = current_backend();
		switch (op & 7) {
		case 0: send_some(client, data + i, len); break;
		case 1: send_some(b >= 0 ? be.fd[b] : -1, data + i, len); break;
		case 2: if (client >= 0) shutdown(client, SHUT_WR); break;
		case 3: if (b >= 0) shutdown(be.fd[b], SHUT_WR); break;
		case 4:
			if (client >= 0)
				close(client);
			client = -1;
			break;
		case 5:
			if (b >= 0) {
				close(be.fd[b]);
				be.fd[b] = -1;
			}
			break;
		case 6: expire(); break;
		default:
			if (op & 0x80)
				client_reads = !client_reads;
			else
				be.refuse_next = true;
			break;
		}
		i += len;
		settle(client, client_reads);
	}

	/* The end: a worker's stop closes whatever is left. */
	conn_close_all(&worker, "fuzz end");
	CHECK(worker.conns == NULL && worker.nconns == 0);
	CHECK(__atomic_load_n(&relay.nconns, __ATOMIC_RELAXED) == 0);
	/*
	 * The splice pool keeps empty pipes for reuse (a worker closes them when it stops): closed
	 * first, so that a pipe that took a closed socket's number is not seen as that socket.
	 */
	splice_pool_drain();
	CHECK(closed_by_relay(sv[0], client));
	for (int k = 0; k < be.n; k++)
		CHECK(closed_by_relay(be.relay_fd[k], client));
	check_servers(cfg);
	for (int k = 0; k < be.n; k++)
		if (be.fd[k] >= 0)
			close(be.fd[k]);
	if (client >= 0)
		close(client);
	be.active = false;
	buf_pool_drain();
	CHECK(buf_outstanding() == 0);
	CHECK(ev_pending_count(worker.loop) == 0);
	return 0;
}
