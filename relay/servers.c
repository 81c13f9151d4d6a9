/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * servers.c: the run-time state of backend servers, and rendezvous hashing over them
 * (servers.h has the contracts). State changes are logged, one line each:
 *   server exchange/ex1 protocol rpc is DOWN (L7STS 503, 3 failed checks)
 *   server exchange/ex1 state drain (runtime API)
 */
#include "autoconf.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "hrw.h"
#include "log.h"
#include "servers.h"

#define COOKIES_MIN 64	/* first size of a server's table of open RPC channel cookies */

struct cookie_slot { uint64_t key; int count; };
/* The cookies of the RPC channels open on one server; grows (doubling) as channels open. */
struct cookie_table { struct cookie_slot *slot; size_t cap; };

static struct srv table[SRV_MAX];
static struct cookie_table cookies[SRV_MAX];
static int nsrv;
static struct srv *order[SRV_MAX];	/* the live entries, in configuration order */
static int norder;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;	/* the cb_* certificates */

static int
get(const int *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static void
put(int *v, int x)
{
	__atomic_store_n(v, x, __ATOMIC_RELAXED);
}

/* The entry for backend/name, made when new (lock held); NULL when the table is full. */
static struct srv *
entry(const char *backend, const char *name)
{
	for (int i = 0; i < nsrv; i++)
		if (strcmp(table[i].backend, backend) == 0 && strcmp(table[i].name, name) == 0)
			return &table[i];
	if (nsrv == SRV_MAX)
		return NULL;
	struct srv *s = &table[nsrv++];
	snprintf(s->backend, sizeof(s->backend), "%s", backend);
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->admin_rt = s->weight_rt = -1;
	s->cb_match = s->cb_logged = -1;
	s->admin_change = clock_wall();
	return s;
}

/* Sets the protocols of s from its backend, keeping the health of those it had (lock held). */
static void
bind_protos(struct srv *s, const struct cfg_backend *b)
{
	struct srv_health old[CFG_MAX_PROTOS];
	char names[CFG_MAX_PROTOS][32];
	int n = s->nprotos, per = b->check.enabled && strcmp(b->check.path, "auto") == 0 && b->nprotos > 0;
	int m = per ? (int)b->nprotos : 1;

	memcpy(old, s->health, sizeof(old));
	memcpy(names, s->protos, sizeof(names));
	for (int p = 0; p < m; p++) {
		struct srv_health h = { .up = 1, .last_change = clock_wall() };
		snprintf(h.last_status, sizeof(h.last_status), "INI");
		snprintf(s->protos[p], sizeof(s->protos[p]), "%s", per ? b->protos[p] : "*");
		for (int q = 0; q < n; q++)
			if (strcmp(names[q], s->protos[p]) == 0)
				h = old[q];
		/* Field by field: the workers read up (an atomic) without the lock. */
		put(&s->health[p].up, h.up);
		s->health[p].streak = h.streak;
		s->health[p].last_change = h.last_change;
		s->health[p].last_duration = h.last_duration;
		memcpy(s->health[p].last_status, h.last_status, sizeof(h.last_status));
	}
	put(&s->per_proto, per);
	put(&s->nprotos, m);
}

int
servers_bind(struct config *cfg)
{
	int rc = 0;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < nsrv; i++)
		put(&table[i].live, 0);
	norder = 0;
	for (size_t b = 0; b < cfg->nbackends; b++) {
		struct cfg_backend *be = &cfg->backends[b];
		for (size_t k = 0; k < be->nservers; k++) {
			struct cfg_server *cs = &be->servers[k];
			struct srv *s = entry(be->name, cs->name);
			if (!(cs->rt = s)) {
				rc = -1;
				continue;
			}
			snprintf(s->addr, sizeof(s->addr), "%s", cs->text);
			/*
			 * A state or weight set at run time survives a reload, like HAProxy's
			 * server-state-file, unless the file now says something new for it: then
			 * the administrator's edit wins.
			 */
			if (s->admin_cfg != (int)cs->state && s->bound)
				put(&s->admin_rt, -1);
			if (s->weight_cfg != cs->weight && s->bound)
				put(&s->weight_rt, -1);
			s->bound = 1;
			s->admin_cfg = (int)cs->state;
			s->weight_cfg = cs->weight;
			s->checked = be->check.enabled;
			s->fall = be->check.fall;
			bind_protos(s, be);
			put(&s->live, 1);
			order[norder++] = s;
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

struct srv *
servers_find(const char *backend, const char *server)
{
	struct srv *found = NULL;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < norder && !found; i++)
		if (strcmp(order[i]->backend, backend) == 0 && strcmp(order[i]->name, server) == 0)
			found = order[i];
	pthread_mutex_unlock(&lock);
	return found;
}

void
servers_foreach(void (*fn)(struct srv *s, void *arg), void *arg)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < norder; i++)
		fn(order[i], arg);
	pthread_mutex_unlock(&lock);
}

enum srv_admin
servers_admin(const struct srv *s)
{
	int rt = get(&s->admin_rt);

	return (enum srv_admin)(rt >= 0 ? rt : get(&s->admin_cfg));
}

int
servers_weight(const struct srv *s)
{
	int rt = get(&s->weight_rt);

	return rt >= 0 ? rt : get(&s->weight_cfg);
}

void
servers_set_admin(struct srv *s, enum srv_admin a)
{
	put(&s->admin_rt, (int)a);
	s->admin_change = clock_wall();
	log_warn("server %s/%s state %s (runtime API)", s->backend, s->name, config_srv_admin_str(a));
}

void
servers_keep_down(struct srv *s, const char *proto)
{
	for (int p = 0; p < s->nprotos; p++)
		if (strcmp(s->protos[p], proto) == 0 && get(&s->health[p].up)) {
			put(&s->health[p].up, 0);
			s->health[p].streak = 0;
			snprintf(s->health[p].last_status, sizeof(s->health[p].last_status), "INI DOWN");
		}
}

void
servers_set_weight(struct srv *s, int w)
{
	put(&s->weight_rt, w < 0 ? 0 : w > 256 ? 256 : w);
	log_info("server %s/%s weight %d (runtime API)", s->backend, s->name, servers_weight(s));
}

bool
servers_up(const struct srv *s, int proto)
{
	if (get(&s->cb_mode) == CB_REQUIRE && get(&s->cb_match) == 0)
		return false;	/* a login through it could never succeed */
	if (!get(&s->checked))
		return true;
	int n = get(&s->nprotos);
	if (get(&s->per_proto) && proto >= 0 && proto < n)
		return get(&s->health[proto].up) != 0;
	for (int p = 0; p < n; p++)
		if (get(&s->health[p].up))
			return true;
	return false;
}

void
servers_status(const struct srv *s, char *out, size_t cap)
{
	enum srv_admin a = servers_admin(s);
	int up = 0, n = get(&s->nprotos);

	if (a == SRV_MAINT) {
		snprintf(out, cap, "MAINT");
		return;
	}
	if (get(&s->cb_mode) == CB_REQUIRE && get(&s->cb_match) == 0) {
		snprintf(out, cap, "DOWN");
		return;
	}
	if (!get(&s->checked)) {
		snprintf(out, cap, a == SRV_DRAIN ? "DRAIN" : "no check");
		return;
	}
	for (int p = 0; p < n; p++)
		up += get(&s->health[p].up) != 0;
	if (up == 0)
		snprintf(out, cap, "DOWN");
	else if (a == SRV_DRAIN || servers_weight(s) == 0)
		snprintf(out, cap, a == SRV_DRAIN ? "DRAIN" : "NOLB");
	else if (up < n)
		snprintf(out, cap, "UP %d/%d", up, n);
	else
		snprintf(out, cap, "UP");
}

int
servers_proto(const struct cfg_backend *b, const char *path, size_t len)
{
	size_t i = len > 0 && path[0] == '/' ? 1 : 0, n = 0;

	while (i + n < len && path[i + n] != '/')
		n++;
	for (size_t p = 0; p < b->nprotos; p++)
		if (strlen(b->protos[p]) == n && strncasecmp(b->protos[p], path + i, n) == 0)
			return (int)p;
	return -1;
}

/* --- rendezvous hashing ----------------------------------------------------------------- */

static uint64_t
cookie_key(const uint8_t *cookie)
{
	uint64_t k = hrw_hash(cookie, 16);

	return k ? k : 1;
}

static bool
has_cookie(const struct srv *s, uint64_t k)
{
	const struct cookie_table *t = &cookies[s - table];

	for (size_t i = 0; i < t->cap; i++)
		if (t->slot[i].key == k && t->slot[i].count > 0)
			return true;
	return false;
}

size_t
servers_rank(const struct cfg_backend *b, int proto, const char *key, size_t keylen,
    const uint8_t *cookie, size_t *out)
{
	double score[SRV_PER_BACKEND];
	size_t n = 0;
	uint64_t ck = cookie ? cookie_key(cookie) : 0;

	if (cookie)
		pthread_mutex_lock(&lock);
	for (size_t i = 0; i < b->nservers && i < SRV_PER_BACKEND; i++) {
		const struct srv *s = b->servers[i].rt;
		enum srv_admin a = s ? servers_admin(s) : SRV_READY;
		bool pinned = cookie && s && a != SRV_MAINT && has_cookie(s, ck);
		if (s && !pinned && (a != SRV_READY || servers_weight(s) == 0 || !servers_up(s, proto)))
			continue;
		double sc = hrw_score(b->servers[i].name, s ? servers_weight(s) : b->servers[i].weight, key, keylen);
		if (pinned)
			sc = HUGE_VAL;
		size_t j = n++;
		for (; j > 0 && score[j - 1] < sc; j--) {
			score[j] = score[j - 1];
			out[j] = out[j - 1];
		}
		score[j] = sc;
		out[j] = i;
	}
	if (cookie)
		pthread_mutex_unlock(&lock);
	return n;
}

/* --- counting --------------------------------------------------------------------------- */

void
servers_conn(struct srv *s, int delta)
{
	__atomic_add_fetch(&s->conns_active, delta, __ATOMIC_RELAXED);
	if (delta > 0)
		__atomic_add_fetch(&s->conns_total, delta, __ATOMIC_RELAXED);
}

void
servers_failure(struct srv *s, const char *kind)
{
	int64_t *c = strcmp(kind, "tls") == 0 ? &s->tls_errors : strcmp(kind, "5xx") == 0 ? &s->resp_5xx :
	    &s->connect_errors;	/* "connect", "connect_timeout" */

	__atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
	/*
	 * Between active checks, passive failures count toward fall: fall in a row take it down. A
	 * connect that timed out takes it down at once (a black hole: each new request would wait
	 * the whole connect timeout); the checks bring it back after rise good answers.
	 */
	int n = __atomic_add_fetch(&s->passive, 1, __ATOMIC_RELAXED);
	if (!get(&s->checked) || (n != get(&s->fall) && strcmp(kind, "connect_timeout") != 0))
		return;
	pthread_mutex_lock(&lock);
	for (int p = 0; p < s->nprotos; p++)
		if (get(&s->health[p].up)) {
			put(&s->health[p].up, 0);
			s->health[p].last_change = clock_wall();
			snprintf(s->health[p].last_status, sizeof(s->health[p].last_status), "passive %s", kind);
		}
	pthread_mutex_unlock(&lock);
	log_warn("server %s/%s is DOWN (%d %s failure%s in a row)", s->backend, s->name, n, kind, n == 1 ? "" : "s");
}

void
servers_success(struct srv *s)
{
	if (get(&s->passive))
		put(&s->passive, 0);
}

void
servers_rpc_open(struct srv *s, const uint8_t *cookie)
{
	uint64_t k = cookie_key(cookie);
	struct cookie_table *t = &cookies[s - table];
	size_t free_slot = SIZE_MAX;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slot[i].key == k && t->slot[i].count > 0) {
			t->slot[i].count++;
			pthread_mutex_unlock(&lock);
			return;
		}
		if (t->slot[i].count == 0 && free_slot == SIZE_MAX)
			free_slot = i;
	}
	if (free_slot == SIZE_MAX) {
		/* Every slot holds an open channel: grow, or a partner channel would lose its server. */
		size_t cap = t->cap ? 2 * t->cap : COOKIES_MIN;
		struct cookie_slot *n = cap <= SIZE_MAX / sizeof(*n) ? realloc(t->slot, cap * sizeof(*n)) : NULL;
		if (n) {
			memset(n + t->cap, 0, (cap - t->cap) * sizeof(*n));
			free_slot = t->cap;
			t->slot = n;
			t->cap = cap;
		} else {
			log_error("server %s/%s: out of memory for RPC channel cookies", s->backend, s->name);
		}
	}
	if (free_slot != SIZE_MAX)
		t->slot[free_slot] = (struct cookie_slot){ k, 1 };
	pthread_mutex_unlock(&lock);
}

void
servers_rpc_close(struct srv *s, const uint8_t *cookie)
{
	uint64_t k = cookie_key(cookie);
	struct cookie_table *t = &cookies[s - table];

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < t->cap; i++)
		if (t->slot[i].key == k && t->slot[i].count > 0) {
			t->slot[i].count--;
			break;
		}
	pthread_mutex_unlock(&lock);
}

/*
 * Under the lock: a reload (servers_bind) may rename or renumber the protocols meanwhile, and
 * the runtime API and /metrics read the health records under it too.
 */
void
servers_check_result(struct srv *s, const char *proto, bool ok, double duration,
    const char *status, int rise, int fall)
{
	__atomic_add_fetch(ok ? &s->checks_ok : &s->checks_failed, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < s->nprotos && i < CFG_MAX_PROTOS; i++) {
		if (strcmp(s->protos[i], proto) != 0)
			continue;
		struct srv_health *h = &s->health[i];
		h->last_duration = duration;
		snprintf(h->last_status, sizeof(h->last_status), "%s", status);
		if (ok == (get(&h->up) != 0)) {
			h->streak = 0;
		} else if (++h->streak >= (ok ? rise : fall)) {
			h->streak = 0;
			put(&h->up, ok);
			h->last_change = clock_wall();
			log_warn("server %s/%s protocol %s is %s (%s)", s->backend, s->name, proto,
			    ok ? "UP" : "DOWN", status);
		}
		break;
	}
	pthread_mutex_unlock(&lock);
}

void
servers_check_skipped(struct srv *s, const char *proto, const char *status)
{
	__atomic_add_fetch(&s->checks_skipped, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < s->nprotos && i < CFG_MAX_PROTOS; i++)
		if (strcmp(s->protos[i], proto) == 0) {
			snprintf(s->health[i].last_status, sizeof(s->health[i].last_status), "%s", status);
			break;
		}
	pthread_mutex_unlock(&lock);
}

bool
servers_all_down(const struct config *cfg)
{
	bool any = false;

	for (size_t b = 0; b < cfg->nbackends; b++) {
		const struct cfg_backend *be = &cfg->backends[b];
		if (!be->check.enabled)
			continue;
		for (size_t k = 0; k < be->nservers; k++) {
			const struct srv *s = be->servers[k].rt;
			if (s && servers_admin(s) == SRV_READY && servers_up(s, -1))
				return false;
			any = true;
		}
	}
	return any;
}

/* --- Extended Protection: the two certificates ------------------------------------------ */

/* Logs the verdict of s when it or its certificates changed since the last line (cb_lock held). */
static void
cb_log(struct srv *s, int match)
{
	char ffp[96], pfp[96];

	if (match < 0 || (match == s->cb_logged && memcmp(s->cb_logged_fp[0], s->cb_front.sha256, 32) == 0 &&
	    memcmp(s->cb_logged_fp[1], s->cb_peer.sha256, 32) == 0))
		return;
	cbind_fingerprint(&s->cb_front, ffp, sizeof(ffp));
	cbind_fingerprint(&s->cb_peer, pfp, sizeof(pfp));
	if (match)
		log_info("server %s/%s: certificates match: exrelay and the server present \"%s\" (SHA-256 %s)%s",
		    s->backend, s->name, s->cb_peer.subject, pfp, s->cb_logged == 0 ? ", again" : "");
	else
		log_warn("server %s/%s: certificate mismatch, Extended Protection logins to %s will fail: "
		    "exrelay presents \"%s\" (SHA-256 %s) for %s, the server presents \"%s\" (SHA-256 %s)%s",
		    s->backend, s->name, s->cb_vdirs, s->cb_front.subject, ffp, s->cb_host[0] ? s->cb_host : "any name",
		    s->cb_peer.subject, pfp, get(&s->cb_mode) == CB_REQUIRE ?
		    "; channel_binding = \"require\": the server takes no new requests" : "");
	s->cb_logged = match;
	memcpy(s->cb_logged_fp[0], s->cb_front.sha256, 32);
	memcpy(s->cb_logged_fp[1], s->cb_peer.sha256, 32);
}

/* Compares the two certificates of s and logs a change (cb_lock held). */
static void
cb_compare(struct srv *s)
{
	int match = -1;

	if (get(&s->cb_mode) != CB_OFF && s->cb_front.known && s->cb_peer.known)
		match = cbind_same(&s->cb_front, &s->cb_peer) ? 1 : 0;
	put(&s->cb_match, match);
	cb_log(s, match);
}

void
servers_cb_front(struct srv *s, enum cb_mode mode, const struct cbind_cert *front, const char *host,
    const char *vdirs)
{
	pthread_mutex_lock(&cb_lock);
	put(&s->cb_mode, (int)mode);
	if (front)
		s->cb_front = *front;
	else
		s->cb_front.known = false;
	snprintf(s->cb_host, sizeof(s->cb_host), "%s", host ? host : "");
	snprintf(s->cb_vdirs, sizeof(s->cb_vdirs), "%s", vdirs);
	cb_compare(s);
	pthread_mutex_unlock(&cb_lock);
}

void
servers_cb_peer(struct srv *s, const struct cbind_cert *peer)
{
	pthread_mutex_lock(&cb_lock);
	s->cb_peer = *peer;
	cb_compare(s);
	pthread_mutex_unlock(&cb_lock);
}

int
servers_cb_match(const struct srv *s)
{
	return get(&s->cb_match);
}

void
servers_cb_get(struct srv *s, struct cbind_cert *front, struct cbind_cert *peer, char *host, size_t cap)
{
	pthread_mutex_lock(&cb_lock);
	*front = s->cb_front;
	*peer = s->cb_peer;
	snprintf(host, cap, "%s", s->cb_host);
	pthread_mutex_unlock(&cb_lock);
}
