/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tls.c: the GnuTLS transport. Non-blocking throughout: GNUTLS_E_AGAIN is answered by waiting
 * in the direction gnutls_record_get_direction() names; a send that returned AGAIN is retried
 * with (NULL, 0) as GnuTLS requires; results are classified by GnuTLS's return code, never by
 * errno; the reader never asks for zero bytes. Listeners send ALPN http/1.1 and session
 * tickets under one process-wide key; client-initiated renegotiation is refused. Backends are
 * verified (chain and name) unless verify = false, and their sessions resumed.
 */
#include "autoconf.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef HAVE_GNUTLS_TRANSPORT_IS_KTLS_ENABLED
#include <gnutls/socket.h>
#endif
#include <gnutls/x509.h>

#include "cbind.h"
#include "relay.h"
#include "tls.h"

/*
 * The read-ahead: GnuTLS pulls a record in two small reads (its 5-byte header, then the rest);
 * tls_pull instead receives what the socket has, up to TLS_READAHEAD bytes (two full records),
 * into a pool buffer held only while bytes wait in it, and serves GnuTLS's reads from there.
 */
#define TLS_READAHEAD 32768
#define TLS_RECORD_MAX 16384		/* plaintext bytes in one record */

/*
 * A batch (tls_send_batch) makes up to four full records (64 KiB of plaintext, a pump buffer)
 * and sends them at once; TLS_BATCH has room for their headers, tags and padding.
 */
#define TLS_BATCH (4 * (TLS_RECORD_MAX + 256))

/* Records made and not yet taken by the socket. */
struct wq {
	size_t r, w;
	char data[];
};

/* What only a backend (client) session needs. */
struct tls_names {
	char cache_key[160];		/* backend session cache key */
	char host[256];			/* name verified (GnuTLS keeps the pointer for the session) */
};

struct tls_conn {
	gnutls_session_t s;
	struct buf *ra;			/* read-ahead (also the bytes read before TLS started), or NULL */
	size_t pending_send;		/* length of a send that returned AGAIN (retried with NULL, 0) */
	struct wq *wq;			/* records of a batch the socket did not take (tls_send_batch), or NULL */
	bool client, done;
	bool ra_more;			/* the last socket read filled the read-ahead: more may wait */
	bool ktls_wanted;		/* tls.ktls: GnuTLS has the socket itself, so it may hand records to the kernel */
	bool ktls;			/* the kernel encrypts and decrypts both ways (splice.c may splice) */
	bool ktls_tx, ktls_rx;		/* GnuTLS hands that direction's records to the kernel itself */
	struct tls_names *names;	/* client sessions only */
};

/* The last handshake failure, for the caller to log at once (per thread). */
static __thread char tls_why[256];
/* A head and the body bytes behind it, gathered into one record (per thread). */
static __thread char tls_stage[TLS_RECORD_MAX];
/*
 * The records of one batch (tls_send_batch): tls_push gathers them here while tls_batch is
 * the session sending, and the batch leaves in one system call (per thread).
 */
static __thread char tls_wstage[TLS_BATCH];
static __thread size_t tls_wlen;
static __thread const struct tls_conn *tls_batch;

static gnutls_datum_t ticket_key;

/* Backend session cache: the last session data per backend server, for resumption. */
#define CACHE_SLOTS 64
static struct {
	pthread_mutex_t lock;
	struct { char key[160]; gnutls_datum_t data; } slot[CACHE_SLOTS];
} cache = { .lock = PTHREAD_MUTEX_INITIALIZER };

int
tls_global_init(void)
{
	if (ticket_key.data)
		return 0;
	return gnutls_session_ticket_key_generate(&ticket_key) < 0 ? -1 : 0;
}

void
tls_global_free(void)
{
	if (ticket_key.data) {
		gnutls_memset(ticket_key.data, 0, ticket_key.size);
		gnutls_free(ticket_key.data);
		ticket_key.data = NULL;
	}
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache.slot[i].data.data) {
			gnutls_free(cache.slot[i].data.data);
			cache.slot[i].data.data = NULL;
		}
}

int
tls_server_add_cert(struct tls_server *t, const char *cert, const char *key, char *err, size_t errlen)
{
	int r;

	if (!t->cred && (r = gnutls_certificate_allocate_credentials(&t->cred)) < 0) {
		snprintf(err, errlen, "%s", gnutls_strerror(r));
		return -1;
	}
	r = gnutls_certificate_set_x509_key_file2(t->cred, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "cannot use certificate \"%s\" with key \"%s\": %s", cert, key, gnutls_strerror(r));
		return -1;
	}
	t->ncerts++;
	return 0;
}

/* Parses a priority string; an error names the position GnuTLS stopped at. */
static int
set_priority(gnutls_priority_t *p, const char *prio, char *err, size_t errlen)
{
	const char *pos = NULL;
	int r = gnutls_priority_init(p, prio, &pos);

	if (r < 0) {
		snprintf(err, errlen, "invalid priority string at \"%.40s\" (offset %ld): %s", pos ? pos : "",
		    pos ? (long)(pos - prio) : -1L, gnutls_strerror(r));
		*p = NULL;
		return -1;
	}
	return 0;
}

int
tls_server_set_priority(struct tls_server *t, const char *prio, char *err, size_t errlen)
{
	return set_priority(&t->prio, prio ? prio : TLS_DEFAULT_PRIORITY, err, errlen);
}

/* Frees credentials and a priority cache (either may be unset). */
static void
free_cred_prio(gnutls_certificate_credentials_t *cred, gnutls_priority_t *prio)
{
	if (*cred)
		gnutls_certificate_free_credentials(*cred);
	if (*prio)
		gnutls_priority_deinit(*prio);
	*cred = NULL;
	*prio = NULL;
}

void
tls_server_free(struct tls_server *t)
{
	free_cred_prio(&t->cred, &t->prio);
}

int
tls_client_setup(struct tls_client *t, bool verify, const char *ca_file, const char *cert,
    const char *key, const char *sni, char *err, size_t errlen)
{
	static unsigned long long generations;
	int r;

	t->verify = verify;
	t->sni = sni && *sni ? sni : NULL;
	/* Set up by the main thread only (start and reload); a reload never reuses a number. */
	t->generation = ++generations;
	if ((r = gnutls_certificate_allocate_credentials(&t->cred)) < 0) {
		snprintf(err, errlen, "%s", gnutls_strerror(r));
		return -1;
	}
	if (verify) {
		r = ca_file && *ca_file ? gnutls_certificate_set_x509_trust_file(t->cred, ca_file, GNUTLS_X509_FMT_PEM)
		    : gnutls_certificate_set_x509_system_trust(t->cred);
		if (r <= 0) {
			snprintf(err, errlen, "no CA certificate loaded from \"%s\"%s%s", ca_file && *ca_file ? ca_file :
			    "the system store", r < 0 ? ": " : "", r < 0 ? gnutls_strerror(r) : "");
			return -1;
		}
	}
	if ((cert && *cert) || (key && *key)) {
		if (!cert || !*cert || !key || !*key) {
			snprintf(err, errlen, "a client certificate needs both 'cert' and 'key'");
			return -1;
		}
		r = gnutls_certificate_set_x509_key_file2(t->cred, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
		if (r < 0) {
			snprintf(err, errlen, "cannot use client certificate \"%s\" with key \"%s\": %s", cert, key,
			    gnutls_strerror(r));
			return -1;
		}
	}
	return set_priority(&t->prio, "NORMAL:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1", err, errlen);
}

void
tls_client_free(struct tls_client *t)
{
	free_cred_prio(&t->cred, &t->prio);
}

/*
 * GnuTLS pull: served from the read-ahead (first the bytes read before TLS started), which is
 * refilled by one recv of what the socket has when it is empty; an empty read-ahead goes back
 * to the pool, so an idle session holds none. Without a buffer, reads straight into GnuTLS's.
 */
static ssize_t
tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct half *h = p;
	struct tls_conn *t = h->tls;
	ssize_t n;

	if (buf_len(t->ra) == 0) {
		void *to = buf;
		size_t cap = len;
		if (len < TLS_READAHEAD && (t->ra || (t->ra = buf_get()))) {
			t->ra->r = t->ra->w = 0;
			to = t->ra->data;
			cap = TLS_READAHEAD;
		}
		do
			n = recv(h->fd, to, cap, 0);
		while (n == -1 && errno == EINTR);
		t->ra_more = n == (ssize_t)cap;
		if (n <= 0 || to == buf) {
			if (n == -1)
				gnutls_transport_set_errno(t->s, errno);
			buf_put(t->ra);
			t->ra = NULL;
			return n;
		}
		t->ra->w = (size_t)n;
	}
	n = (ssize_t)(buf_len(t->ra) < len ? buf_len(t->ra) : len);
	memcpy(buf, buf_head(t->ra), (size_t)n);
	t->ra->r += (size_t)n;
	if (buf_len(t->ra) == 0) {
		buf_put(t->ra);
		t->ra = NULL;
	}
	return n;
}

/*
 * Sends the records a batch left behind (t->wq): 1 when none are left (t->wq is freed), 0
 * when the socket takes no more (errno EAGAIN), -1 with errno on an error.
 */
static int
wq_flush(struct half *h, struct tls_conn *t)
{
	while (t->wq->r < t->wq->w) {
		ssize_t n;
		do
			n = send(h->fd, t->wq->data + t->wq->r, t->wq->w - t->wq->r, MSG_NOSIGNAL);
		while (n == -1 && errno == EINTR);
		if (n == -1)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		t->wq->r += (size_t)n;
	}
	free(t->wq);
	t->wq = NULL;
	return 1;
}

/*
 * GnuTLS's writes: during a batch, gathered in tls_wstage (a record that does not fit waits in
 * GnuTLS, as after EAGAIN); otherwise sent, after what an earlier batch left, so that records
 * leave in the order they were made.
 */
static ssize_t
tls_push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
	struct half *h = p;
	struct tls_conn *t = h->tls;
	ssize_t n;

	if (tls_batch == t) {
		if (len > sizeof(tls_wstage) - tls_wlen) {
			gnutls_transport_set_errno(t->s, EAGAIN);
			return -1;
		}
		memcpy(tls_wstage + tls_wlen, buf, len);
		tls_wlen += len;
		return (ssize_t)len;
	}
	if (t->wq && wq_flush(h, t) != 1) {
		gnutls_transport_set_errno(t->s, errno);
		return -1;
	}
	do
		n = send(h->fd, buf, len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		gnutls_transport_set_errno(t->s, errno);
	return n;
}

/* --- kTLS (tls.ktls) ----------------------------------------------------------------------- */

static pthread_once_t ktls_once = PTHREAD_ONCE_INIT;
static bool ktls_kernel;		/* the kernel takes the tls ULP */
static char ktls_why[160];
static int ktls_logged;			/* atomic: "not available" logged */

/* Probes once whether the kernel attaches the tls ULP to a TCP socket (a loopback pair). */
static void
ktls_probe(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, a = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l == -1 || bind(l, (struct sockaddr *)&sin, len) == -1 || listen(l, 1) == -1 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) == -1 ||
	    (c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(c, (struct sockaddr *)&sin, len) == -1 || (a = accept(l, NULL, NULL)) == -1)
		snprintf(ktls_why, sizeof(ktls_why), "no loopback connection to probe with: %s", strerror(errno));
	else if (setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == -1)
		snprintf(ktls_why, sizeof(ktls_why), "the kernel refused the tls ULP: %s", strerror(errno));
	else
		ktls_kernel = true;
	if (a >= 0)
		close(a);
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
}

/*
 * Whether a session that asks for kTLS may have it: the kernel must take the tls ULP (else
 * logged once, and the session runs in user space exactly as without the switch) and GnuTLS
 * must own the socket, which it cannot while bytes read before TLS (after a PROXY header)
 * wait for it.
 */
static bool
ktls_try(bool wanted, size_t preread)
{
	if (!wanted)
		return false;
	pthread_once(&ktls_once, ktls_probe);
	if (!ktls_kernel) {
		if (!__atomic_exchange_n(&ktls_logged, 1, __ATOMIC_RELAXED))
			log_warn("kTLS not available (%s): TLS records stay in user space", ktls_why);
		return false;
	}
	return preread == 0;
}

/* After the handshake: did GnuTLS hand both directions to the kernel? Logs once when it did not. */
static void
ktls_check(struct tls_conn *t)
{
	static int logged;

	if (!t->ktls_wanted)
		return;
#ifdef HAVE_GNUTLS_TRANSPORT_IS_KTLS_ENABLED
	gnutls_transport_ktls_enable_flags_t f = gnutls_transport_is_ktls_enabled(t->s);
	t->ktls_tx = f == GNUTLS_KTLS_SEND || f == GNUTLS_KTLS_DUPLEX;
	t->ktls_rx = f == GNUTLS_KTLS_RECV || f == GNUTLS_KTLS_DUPLEX;
	t->ktls = t->ktls_tx && t->ktls_rx;
#endif
	if (!t->ktls && !__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
		log_warn("kTLS not enabled by GnuTLS (its system configuration needs ktls = true): "
		    "TLS records stay in user space");
}

bool
tls_ktls(const struct half *h)
{
	const struct tls_conn *t = h->tls;

	return t && t->ktls;
}

/* --- sessions ---------------------------------------------------------------------------- */

/* A new session on h; with fd_transport GnuTLS reads and writes h's socket itself (kTLS). */
static struct tls_conn *
tls_new(struct half *h, unsigned flags, bool fd_transport)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	if (!t || gnutls_init(&t->s, flags | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) < 0) {
		free(t);
		return NULL;
	}
	h->tls = t;
	h->ops = &tls_ops;
	t->ktls_wanted = fd_transport;
	if (fd_transport) {
		gnutls_transport_set_int(t->s, h->fd);
	} else {
		gnutls_transport_set_ptr(t->s, h);
		gnutls_transport_set_pull_function(t->s, tls_pull);
		gnutls_transport_set_push_function(t->s, tls_push);
	}
	gnutls_handshake_set_timeout(t->s, 0);	/* timeouts.tls_handshake / connect bound it */
	return t;
}

int
tls_start_server(struct half *h, const struct tls_server *ts, const char *preread, size_t n)
{
	static const gnutls_datum_t alpn = { (unsigned char *)"http/1.1", 8 };
	struct tls_conn *t = tls_new(h, GNUTLS_SERVER, ktls_try(ts->ktls, n));

	if (!t)
		return -1;
	if (n > 0) {
		ASSERT(n <= BUF_CAP);
		if (!(t->ra = buf_get()))
			return -1;
		memcpy(t->ra->data, preread, n);
		t->ra->w = n;
	}
	if (gnutls_priority_set(t->s, ts->prio) < 0 ||
	    gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, ts->cred) < 0 ||
	    gnutls_session_ticket_enable_server(t->s, &ticket_key) < 0)
		return -1;
	gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_IGNORE);
	gnutls_alpn_set_protocols(t->s, &alpn, 1, GNUTLS_ALPN_SERVER_PRECEDENCE);
	return 0;
}

static bool
is_ip_literal(const char *s)
{
	return strspn(s, "0123456789.") == strlen(s) || strchr(s, ':') != NULL;
}

int
tls_start_client(struct half *h, const struct tls_client *tc, const char *host, const char *cache_key)
{
	struct tls_conn *t = tls_new(h, GNUTLS_CLIENT, ktls_try(tc->ktls, 0));
	const char *name;

	if (!t || !(t->names = calloc(1, sizeof(*t->names))))
		return -1;
	snprintf(t->names->host, sizeof(t->names->host), "%s", tc->sni ? tc->sni : host);
	name = t->names->host;
	t->client = true;
	snprintf(t->names->cache_key, sizeof(t->names->cache_key), "%s", cache_key);
	if (gnutls_priority_set(t->s, tc->prio) < 0 ||
	    gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, tc->cred) < 0)
		return -1;
	if (!is_ip_literal(name))
		gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, name, strlen(name));
	if (tc->verify)
		gnutls_session_set_verify_cert(t->s, name, 0);
	if (!*cache_key)
		return 0;	/* a full handshake: the server presents its certificate now */
	pthread_mutex_lock(&cache.lock);
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache.slot[i].data.data && strcmp(cache.slot[i].key, cache_key) == 0) {
			gnutls_session_set_data(t->s, cache.slot[i].data.data, cache.slot[i].data.size);
			break;
		}
	pthread_mutex_unlock(&cache.lock);
	return 0;
}

/* The half h's TLS session now lives at h (its struct was moved): its I/O goes through h. */
void
tls_rebind(struct half *h)
{
	struct tls_conn *t = h->tls;

	if (t && !t->ktls_wanted)
		gnutls_transport_set_ptr(t->s, h);
}

/* Keeps a backend's session data for the next connection to the same server. */
static void
cache_store(struct tls_conn *t)
{
	gnutls_datum_t d;
	int free_slot = -1, i;

	if (!t->client || !t->done || !t->names->cache_key[0] || gnutls_session_get_data2(t->s, &d) < 0)
		return;
	pthread_mutex_lock(&cache.lock);
	for (i = 0; i < CACHE_SLOTS; i++) {
		if (cache.slot[i].data.data && strcmp(cache.slot[i].key, t->names->cache_key) == 0)
			break;
		if (!cache.slot[i].data.data && free_slot < 0)
			free_slot = i;
	}
	if (i == CACHE_SLOTS)
		i = free_slot >= 0 ? free_slot : 0;
	gnutls_free(cache.slot[i].data.data);
	snprintf(cache.slot[i].key, sizeof(cache.slot[i].key), "%s", t->names->cache_key);
	cache.slot[i].data = d;
	pthread_mutex_unlock(&cache.lock);
}

static int
direction(struct tls_conn *t)
{
	return gnutls_record_get_direction(t->s) ? EV_WRITE : EV_READ;
}

int
tls_handshake(struct half *h, const char **why)
{
	struct tls_conn *t = h->tls;
	int r, tries = 0;

	/* Steps again on what is neither done, nor "wait for the socket", nor fatal (16 tries). */
	do {
		r = gnutls_handshake(t->s);
	} while (r != 0 && r != GNUTLS_E_AGAIN &&
	    (r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r)) && ++tries < 16);
	if (r == 0) {
		t->done = true;
		ktls_check(t);
		return 1;
	}
	if (r == GNUTLS_E_AGAIN) {
		h->want = direction(t);
		return 0;
	}
	if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t out;
		unsigned status = gnutls_session_get_verify_cert_status(t->s);
		if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(t->s), &out, 0) == 0) {
			snprintf(tls_why, sizeof(tls_why), "certificate verification failed: %s", out.data);
			gnutls_free(out.data);
		} else {
			snprintf(tls_why, sizeof(tls_why), "certificate verification failed");
		}
	} else {
		snprintf(tls_why, sizeof(tls_why), "TLS handshake failed: %s", gnutls_strerror(r));
	}
	*why = tls_why;
	return -1;
}

static ssize_t
tls_recv(struct half *h, void *buf, size_t len)
{
	struct tls_conn *t = h->tls;

	for (;;) {
		ssize_t n = gnutls_record_recv(t->s, buf, len);
		if (n >= 0)
			return n;
		switch (n) {
		case GNUTLS_E_INTERRUPTED:
		case GNUTLS_E_WARNING_ALERT_RECEIVED:
			continue;
		case GNUTLS_E_AGAIN:
			h->want = t->ktls_rx ? EV_READ : direction(t);	/* kTLS: the socket's own read */
			errno = EAGAIN;
			return -1;
		case GNUTLS_E_REHANDSHAKE:
			/*
			 * Client-initiated renegotiation is refused with a no_renegotiation alert; the
			 * client then usually ends the session (GnuTLS reports its next record as
			 * unexpected, and the connection is closed): never a second handshake.
			 */
			log_info("TLS peer asked to renegotiate: refused");
			gnutls_alert_send(t->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
			continue;
		case GNUTLS_E_PREMATURE_TERMINATION:
			errno = ECONNRESET;	/* closed without close_notify: a cut, not an end */
			return -1;
		default:
			log_debug("TLS receive: %s", gnutls_strerror((int)n));
			errno = EPROTO;
			return -1;
		}
	}
}

/*
 * More than a record to send: up to four records are made into tls_wstage and leave in one
 * send (a download moves 64 KiB per system call, not 16). What the socket does not take
 * waits in t->wq, allocated only until it is sent (at most TLS_BATCH); the bytes count as
 * written (GnuTLS has encrypted them), and pump.c does not end, half-close or reuse the
 * connection while tls_held. Returns the bytes made into records, or -1 with errno.
 */
static ssize_t
tls_send_batch(struct half *h, const char *buf, size_t len)
{
	struct tls_conn *t = h->tls;
	size_t done = 0, room = TLS_RECORD_MAX + gnutls_record_overhead_size(t->s);
	ssize_t n = 0, w = 0;

	tls_batch = t;
	tls_wlen = 0;
	while (done < len && sizeof(tls_wstage) - tls_wlen >= room) {
		size_t k = len - done < TLS_RECORD_MAX ? len - done : TLS_RECORD_MAX;
		n = gnutls_record_send(t->s, buf + done, k);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			t->pending_send = k;	/* GnuTLS keeps the record; sent after tls_wstage */
			break;
		}
		if (n < 0)
			break;
		done += (size_t)n;
	}
	tls_batch = NULL;
	if (n < 0 && !t->pending_send) {
		log_debug("TLS send: %s", gnutls_strerror((int)n));
		errno = EPIPE;
		return -1;
	}
	if (tls_wlen > 0) {
		do
			w = send(h->fd, tls_wstage, tls_wlen, MSG_NOSIGNAL);
		while (w == -1 && errno == EINTR);
		if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (w < 0)
			w = 0;
		if ((size_t)w < tls_wlen) {
			size_t rest = tls_wlen - (size_t)w;
			if (!(t->wq = malloc(sizeof(*t->wq) + rest))) {
				errno = ENOMEM;	/* records lost: the connection must end as cut */
				return -1;
			}
			t->wq->r = 0;
			t->wq->w = rest;
			memcpy(t->wq->data, tls_wstage + w, rest);
		}
	}
	if (done == 0) {
		h->want = EV_WRITE;
		errno = EAGAIN;
		return -1;
	}
	return (ssize_t)done;
}

static ssize_t
tls_send(struct half *h, const void *buf, size_t len)
{
	struct tls_conn *t = h->tls;
	ssize_t n;

	if (t->wq) {
		int r = wq_flush(h, t);
		if (r <= 0) {
			if (r == 0)
				h->want = EV_WRITE;
			return -1;
		}
	}
	if (t->pending_send)
		n = gnutls_record_send(t->s, NULL, 0);
	else if (len > TLS_RECORD_MAX && !t->ktls_tx)
		return tls_send_batch(h, buf, len);
	else
		n = gnutls_record_send(t->s, buf, len > TLS_RECORD_MAX ? TLS_RECORD_MAX : len);
	if (n >= 0) {
		if (t->pending_send && n == 0)
			n = (ssize_t)t->pending_send;
		t->pending_send = 0;
		return n;
	}
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
		/*
		 * kTLS sends straight to the socket and keeps nothing when it would block: the same
		 * bytes are offered again (no NULL, 0 retry), and it waits for writability.
		 */
		if (t->ktls_tx) {
			h->want = EV_WRITE;
			errno = EAGAIN;
			return -1;
		}
		if (!t->pending_send)
			t->pending_send = len > TLS_RECORD_MAX ? TLS_RECORD_MAX : len;
		h->want = direction(t);
		errno = EAGAIN;
		return -1;
	}
	log_debug("TLS send: %s", gnutls_strerror((int)n));
	errno = EPIPE;
	return -1;
}

/*
 * Gathers the pieces into one record (up to 16 KiB, copied into a per-thread staging area)
 * when the first is shorter than a record; after AGAIN, GnuTLS flushes the record it already
 * made (tls_send's retry), so the staging area need not outlive the call.
 */
static ssize_t
tls_sendv(struct half *h, struct iovec *iov, int n)
{
	struct tls_conn *t = h->tls;
	size_t len = 0;

	if (n == 1 || t->pending_send || iov[0].iov_len >= TLS_RECORD_MAX)
		return tls_send(h, iov[0].iov_base, iov[0].iov_len);
	for (int i = 0; i < n && len < TLS_RECORD_MAX; i++) {
		size_t k = iov[i].iov_len < TLS_RECORD_MAX - len ? iov[i].iov_len : TLS_RECORD_MAX - len;
		memcpy(tls_stage + len, iov[i].iov_base, k);
		len += k;
	}
	return tls_send(h, tls_stage, len);
}

/*
 * close_notify, then FIN. A socket that takes nothing now (a slow reader's full buffer) makes
 * it wait for writability and come back (GnuTLS keeps the alert): a FIN without close_notify
 * would tell the reader its stream was cut. Other errors: FIN alone (the peer is gone anyway).
 */
static int
tls_shutdown_wr(struct half *h)
{
	struct tls_conn *t = h->tls;

	if (t->done && !t->ktls_tx) {
		int r = gnutls_bye(t->s, GNUTLS_SHUT_WR);
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			h->want = EV_WRITE;
			errno = EAGAIN;
			return -1;
		}
	} else if (t->done) {
		gnutls_bye(t->s, GNUTLS_SHUT_WR);	/* kTLS: the kernel sends it or fails */
	}
	return shutdown(h->fd, SHUT_WR);
}

static bool
tls_pending(struct half *h)
{
	struct tls_conn *t = h->tls;

	return t && (gnutls_record_check_pending(t->s) > 0 || buf_len(t->ra) > 0 || t->ra_more);
}

static void
tls_release(struct half *h)
{
	struct tls_conn *t = h->tls;

	if (!t)
		return;
	cache_store(t);
	gnutls_deinit(t->s);
	buf_put(t->ra);
	free(t->wq);
	free(t->names);
	free(t);
	h->tls = NULL;
	h->ops = &sock_ops;
}

const char *
tls_version_name(const struct half *h)
{
	const struct tls_conn *t = h->tls;
	const char *v = t && t->done ? gnutls_protocol_get_name(gnutls_protocol_get_version(t->s)) : NULL;

	return v ? v : "-";
}

const char *
tls_cipher_name(const struct half *h)
{
	const struct tls_conn *t = h->tls;
	const char *v = t && t->done ? gnutls_cipher_get_name(gnutls_cipher_get(t->s)) : NULL;

	return v ? v : "-";
}

bool
tls_resumed(const struct half *h)
{
	const struct tls_conn *t = h->tls;

	return t && t->done && gnutls_session_is_resumed(t->s);
}

/* True when the DER certificate der names host (its subject alternative names, else its CN). */
static bool
cert_names(const gnutls_datum_t *der, const char *host)
{
	gnutls_x509_crt_t crt;
	bool match = false;

	if (gnutls_x509_crt_init(&crt) < 0)
		return false;
	if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0)
		match = gnutls_x509_crt_check_hostname2(crt, host, 0) != 0;
	gnutls_x509_crt_deinit(crt);
	return match;
}

int
tls_server_cert_for(const struct tls_server *t, const char *host, struct cbind_cert *out)
{
	gnutls_datum_t der, first = { NULL, 0 };

	for (unsigned i = 0; t->cred && gnutls_certificate_get_crt_raw(t->cred, i, 0, &der) == 0; i++) {
		if (i == 0)
			first = der;
		if (host && *host && cert_names(&der, host))
			return cbind_cert_from_der(out, der.data, der.size);
	}
	if (!first.data) {
		out->known = false;
		return -1;
	}
	return cbind_cert_from_der(out, first.data, first.size);
}

int
tls_peer_cert(const struct half *h, struct cbind_cert *out)
{
	const struct tls_conn *t = h->tls;
	const gnutls_datum_t *chain;
	unsigned n = 0;

	out->known = false;
	if (!t || !t->done || !(chain = gnutls_certificate_get_peers(t->s, &n)) || n == 0)
		return -1;
	return cbind_cert_from_der(out, chain[0].data, chain[0].size);
}

static bool
tls_held(struct half *h)
{
	const struct tls_conn *t = h->tls;

	return t && t->wq;
}

static int
tls_flush(struct half *h)
{
	struct tls_conn *t = h->tls;
	int r = t && t->wq ? wq_flush(h, t) : 1;

	if (r == 0)
		h->want = EV_WRITE;
	return r;
}

const struct transport_ops tls_ops = {
	"tls", tls_recv, tls_send, tls_shutdown_wr, tls_pending, tls_release, tls_sendv,
	tls_held, tls_flush,
};
