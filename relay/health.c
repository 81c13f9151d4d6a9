/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * health.c: the active health checker. One thread with its own libev loop owns the schedule:
 * for every server of a backend with `check`, a round every check.interval (the first rounds
 * spread over the interval, each next one jittered by +-10%) checks each protocol in turn
 * (`GET /<proto>/healthcheck.htm` with path "auto", else `GET <path>`). A server has at most one
 * check in flight: its protocols are queued and start interval/n apart, each no earlier than
 * the end of the one before, so a slow server never gets a herd of parallel checks.
 *
 * health_probe.c runs each check and reports its result to servers.c.
 *
 * The main thread hands a new configuration over through an ev_async (health_reload); the
 * checker holds its own reference, and each check in flight holds one to the configuration it
 * started with, so a reload never pulls its backend, server or TLS settings away.
 */
#include "autoconf.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health.h"
#include "health_int.h"
#include "relay.h"

static struct {
	/* Shared with the main thread (under lock). */
	pthread_mutex_t lock;
	struct config *pending;		/* a configuration handed over, or NULL */
	bool stop;
	/* The main thread's. */
	bool running;
	pthread_t thread;
	/* The checker's. */
	struct ev_loop *loop;
	ev_async wake;
	struct config *cfg;		/* the configuration checked */
	struct hsrv *srvs;
	size_t nsrvs;
	uint64_t rng;
} H = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The checker's event loop. */
struct ev_loop *
health_loop(void)
{
	return H.loop;
}

/* The configuration checked (the checker's reference). */
struct config *
health_config(void)
{
	return H.cfg;
}

/* A number in [0, 1) (splitmix64): jitter only, nothing secret. */
static double
health_rand(void)
{
	uint64_t z = (H.rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (double)(z >> 11) / 9007199254740992.0;
}

/* True when some backend of cfg has checks. */
static bool
health_wanted(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].check.enabled)
			return true;
	return false;
}

/* True when b's checks are per protocol (path "auto" and routes that name protocols). */
bool
health_per_proto(const struct cfg_backend *b)
{
	return strcmp(b->check.path, "auto") == 0 && b->nprotos > 0;
}

/* --- the schedule -------------------------------------------------------------------------- */

/* Arms hs's timer after seconds (clamped at 0). */
static void
hsrv_arm(struct hsrv *hs, double after)
{
	ev_timer_stop(H.loop, &hs->timer);
	ev_timer_set(&hs->timer, after > 0 ? after : 0., 0.);
	ev_timer_start(H.loop, &hs->timer);
}

/*
 * Goes on with hs's round while nothing is in flight: starts the next protocol's check when
 * its time (round start + k * interval / n) has come, else arms the timer for it; after the
 * last one, arms the timer for the next round (an interval after this one began, +-10%).
 */
void
health_hsrv_run(struct hsrv *hs)
{
	double interval = hs->b->check.interval;

	CHECK_OBJ(hs, HSRV_MAGIC);
	while (!hs->p) {
		double now = ev_now(H.loop);
		if (hs->next >= hs->nprotos) {
			hsrv_arm(hs, hs->round_start + interval * (0.9 + 0.2 * health_rand()) - now);
			return;
		}
		double due = hs->round_start + interval * (double)hs->next / (double)hs->nprotos;
		if (due > now) {
			hsrv_arm(hs, due - now);
			return;
		}
		health_probe_start(hs, hs->next++);
	}
}

/* hs's timer: the next round begins, or the round's next check is due. */
static void
hsrv_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hsrv *hs = w->data;
	(void)revents;

	CHECK_OBJ(hs, HSRV_MAGIC);
	if (hs->next >= hs->nprotos) {
		hs->next = 0;
		hs->round_start = ev_now(loop);
	}
	health_hsrv_run(hs);
}

/* The entry of backend/server among the current entries, or NULL. */
static struct hsrv *
hsrv_find(const char *backend, const char *server)
{
	for (size_t i = 0; i < H.nsrvs; i++)
		if (strcmp(H.srvs[i].b->name, backend) == 0 && strcmp(H.srvs[i].cs->name, server) == 0)
			return &H.srvs[i];
	return NULL;
}

/*
 * Sets up hs, the entry of the k-th of n checked servers of b: a server checked before keeps
 * its schedule and its check in flight; a new one starts within one interval, in its k-th
 * share of it (jittered), so the servers of a backend do not align.
 */
static void
hsrv_init(struct hsrv *hs, const struct cfg_backend *b, const struct cfg_server *cs, size_t k, size_t n)
{
	struct hsrv *old = hsrv_find(b->name, cs->name);

	hs->magic = HSRV_MAGIC;
	hs->b = b;
	hs->cs = cs;
	hs->nprotos = health_per_proto(b) ? (int)b->nprotos : 1;
	hs->next = hs->nprotos;
	ev_init(&hs->timer, hsrv_timer_cb);
	hs->timer.data = hs;
	if (old && old->p) {
		/* The check in flight reports as it started; the round goes on if it is the same. */
		old->moved = true;
		hs->p = old->p;
		health_probe_move(hs->p, hs);
		old->p = NULL;
		hs->next = old->nprotos == hs->nprotos ? old->next : hs->nprotos;
		hs->round_start = old->round_start;
		return;
	}
	if (old && ev_is_active(&old->timer)) {
		double left = ev_timer_remaining(H.loop, &old->timer);
		old->moved = true;
		hs->next = old->nprotos == hs->nprotos ? old->next : hs->nprotos;
		hs->round_start = old->round_start;
		hsrv_arm(hs, left < b->check.interval ? left : b->check.interval);
		return;
	}
	hsrv_arm(hs, b->check.interval * ((double)k + health_rand()) / (double)n);
}

/* Stops an entry the new configuration no longer has (its check in flight is dropped). */
static void
hsrv_drop(struct hsrv *hs)
{
	ev_timer_stop(H.loop, &hs->timer);
	if (hs->p)
		health_probe_free(hs->p);	/* no result: the server is gone, or the checker stops */
	hs->magic = 0;
}

/* Checks the servers of cfg from now on (the checker's reference to cfg is taken over). */
static void
health_apply(struct config *cfg)
{
	struct hsrv *old = H.srvs, *srvs = NULL;
	size_t nold = H.nsrvs, n = 0, j = 0;

	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].check.enabled)
			n += cfg->backends[i].nservers;
	if (n && !(srvs = calloc(n, sizeof(*srvs)))) {
		log_error("health checks: out of memory, keeping the previous configuration's");
		config_unref(cfg);
		return;
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct cfg_backend *b = &cfg->backends[i];
		for (size_t k = 0; b->check.enabled && k < b->nservers; k++) {
			if (!b->servers[k].rt) {
				log_warn("health check %s/%s: no run-time entry, not checked", b->name, b->servers[k].name);
				continue;
			}
			hsrv_init(&srvs[j++], b, &b->servers[k], k, b->nservers);
		}
	}
	for (size_t i = 0; i < nold; i++)
		if (!old[i].moved)
			hsrv_drop(&old[i]);
		else
			ev_timer_stop(H.loop, &old[i].timer);
	free(old);
	H.srvs = srvs;
	H.nsrvs = j;
	if (H.cfg)
		config_unref(H.cfg);
	H.cfg = cfg;
	log_info("health checks: %zu server(s)", j);
}

/* Stops every check and frees the schedule (the checker is about to end). */
static void
health_clear(void)
{
	for (size_t i = 0; i < H.nsrvs; i++)
		hsrv_drop(&H.srvs[i]);
	free(H.srvs);
	H.srvs = NULL;
	H.nsrvs = 0;
	if (H.cfg)
		config_unref(H.cfg);
	H.cfg = NULL;
}

/* The main thread's word: a new configuration, or stop. */
static void
health_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct config *cfg;
	bool stop;
	(void)a; (void)revents;

	pthread_mutex_lock(&H.lock);
	cfg = H.pending;
	H.pending = NULL;
	stop = H.stop;
	pthread_mutex_unlock(&H.lock);
	if (stop) {
		if (cfg)
			config_unref(cfg);
		health_clear();
		ev_async_stop(loop, &H.wake);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (cfg)
		health_apply(cfg);
}

static void *
health_main(void *arg)
{
	(void)arg;
	ev_run(H.loop, 0);
	buf_pool_drain();	/* the TLS read-ahead's buffers (tls.c) */
	return NULL;
}

void
health_start(struct config *cfg)
{
	sigset_t all, old;
	int e;

	if (H.running || !health_wanted(cfg))
		return;
	if (!(H.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK))) {
		log_error("health checks: cannot create an event loop; servers are not checked");
		return;
	}
	double now = ev_time();
	H.rng = (uint64_t)now * 1000003u ^ (uint64_t)getpid() << 32;
	H.stop = false;
	H.pending = config_ref(cfg);
	ev_async_init(&H.wake, health_wake_cb);
	ev_async_start(H.loop, &H.wake);
	ev_async_send(H.loop, &H.wake);	/* applies cfg first thing */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);	/* signals go to the main thread only */
	e = pthread_create(&H.thread, NULL, health_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		log_error("health checks: cannot start a thread: %s; servers are not checked", strerror(e));
		config_unref(H.pending);
		H.pending = NULL;
		ev_loop_destroy(H.loop);
		H.loop = NULL;
		return;
	}
	H.running = true;
}

void
health_reload(struct config *cfg)
{
	if (!health_wanted(cfg)) {
		health_stop();
		return;
	}
	if (!H.running) {
		health_start(cfg);
		return;
	}
	pthread_mutex_lock(&H.lock);
	if (H.pending)
		config_unref(H.pending);
	H.pending = config_ref(cfg);
	pthread_mutex_unlock(&H.lock);
	ev_async_send(H.loop, &H.wake);
}

void
health_stop(void)
{
	if (!H.running)
		return;
	pthread_mutex_lock(&H.lock);
	H.stop = true;
	pthread_mutex_unlock(&H.lock);
	ev_async_send(H.loop, &H.wake);
	pthread_join(H.thread, NULL);
	ev_loop_destroy(H.loop);
	H.loop = NULL;
	H.running = false;
	log_info("health checks stopped");
}
