/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * worker.c: the event-loop threads. Each worker runs its own libev loop with its own
 * listening sockets and connections; nothing of a connection is ever touched by another
 * thread. The main thread handles signals and talks to the workers through an ev_async:
 * a new listener set (reload), drain, stop.
 */
#include "autoconf.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"
#include "splice.h"

/* Applies what the main thread asked for (in the worker's thread). */
static void
worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;
	struct listener *set;
	(void)revents;

	CHECK_OBJ(w, WORKER_MAGIC);

	pthread_mutex_lock(&w->lock);
	set = w->pending;
	w->pending = NULL;
	pthread_mutex_unlock(&w->lock);
	if (set) {
		struct listener *old = w->listeners;
		w->listeners = set;
		listener_set_free(old);
		listener_set_start(set);
		if (w->id == 0)
			listener_report(set);
	}
	if (relay_draining() && !w->draining) {
		w->draining = true;
		listener_close_traffic(w);
		conn_drain_idle(w);
	}
	if (__atomic_load_n(&relay.stopping, __ATOMIC_ACQUIRE) && !w->stopping) {
		w->stopping = true;
		conn_close_all(w, "stop");
		listener_set_free(w->listeners);
		w->listeners = NULL;
		ev_break(loop, EVBREAK_ALL);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	CHECK_OBJ(w, WORKER_MAGIC);
	metrics_attach(w->id);
	ev_run(w->loop, 0);
	conn_close_all(w, "stop");
	listener_set_free(w->listeners);
	w->listeners = NULL;
	buf_pool_drain();
	splice_pool_drain();
	return NULL;
}

/* Starts n workers, each with its listener set (sets[k]); -1 with err when a thread fails. */
int
worker_start_all(int n, struct listener **sets, char *err, size_t errlen)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);	/* signals go to the main thread only */
	for (int k = 0; k < n; k++) {
		struct worker *w = &relay.workers[k];
		w->listeners = sets[k];
		listener_set_start(sets[k]);
		int e = pthread_create(&w->thread, NULL, worker_main, w);
		if (e) {
			snprintf(err, errlen, "cannot start worker thread: %s", strerror(e));
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			return -1;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return 0;
}

/* Creates the workers' loops (before listener_build, which needs relay.workers). */
int
worker_init_all(int n)
{
	relay.nworkers = n;
	if (!(relay.workers = calloc((size_t)n, sizeof(*relay.workers))) || metrics_init(n) == -1)
		return -1;
	for (int k = 0; k < n; k++) {
		struct worker *w = &relay.workers[k];
		w->magic = WORKER_MAGIC;
		w->id = k;
		if (!(w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK)))
			return -1;
		pthread_mutex_init(&w->lock, NULL);
		ev_async_init(&w->wake, worker_wake_cb);
		w->wake.data = w;
		ev_async_start(w->loop, &w->wake);
	}
	return 0;
}

/*
 * Hands each worker its new listener set and wakes it. A worker that has not yet taken a
 * previous set is waited for (briefly), so sets never pile up.
 */
void
worker_hand_over(struct listener **sets)
{
	for (int k = 0; k < relay.nworkers; k++) {
		struct worker *w = &relay.workers[k];
		pthread_mutex_lock(&w->lock);
		w->pending = sets[k];
		pthread_mutex_unlock(&w->lock);
		ev_async_send(w->loop, &w->wake);
	}
	/* Wait until every worker took its set: the next reload builds on them. */
	for (int tries = 0; tries < 2000; tries++) {
		bool all = true;
		for (int k = 0; k < relay.nworkers; k++) {
			pthread_mutex_lock(&relay.workers[k].lock);
			all &= relay.workers[k].pending == NULL;
			pthread_mutex_unlock(&relay.workers[k].lock);
		}
		if (all)
			return;
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
	log_warn("a worker is slow to take its new listeners");
}

void
worker_wake_all(void)
{
	for (int k = 0; k < relay.nworkers; k++)
		ev_async_send(relay.workers[k].loop, &relay.workers[k].wake);
}

void
worker_join_all(void)
{
	for (int k = 0; k < relay.nworkers; k++) {
		struct worker *w = &relay.workers[k];
		if (w->thread)
			pthread_join(w->thread, NULL);
		if (w->loop)
			ev_loop_destroy(w->loop);
		pthread_mutex_destroy(&w->lock);
	}
	free(relay.workers);
	relay.workers = NULL;
	metrics_free();
}
