/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics_server.c: the /metrics families of each backend server, read from servers.c's
 * run-time state when /metrics is read (its counters are atomics there; nothing is counted
 * here). One pass over the servers per family, so that each family's samples stay together.
 */
#include "autoconf.h"

#include <string.h>

#include "metrics.h"
#include "servers.h"

/* What one pass writes: a family, into o. */
struct pass {
	struct metrics_out *o;
	int family;
};

enum { F_UP, F_STATE, F_WEIGHT, F_ACTIVE, F_TOTAL, F_ERRORS, F_CHECKS, F_CHECK_DURATION, F_COUNT };

static const struct {
	const char *name, *type, *help;
} families[F_COUNT] = {
	{ "exrelay_server_up", "gauge", "1 when the server's health for the protocol is up (checks, passive failures; "
	    "always 1 unchecked), else 0. protocol \"all\": one health for every protocol." },
	{ "exrelay_server_state", "gauge", "1 for the server's administrative state (ready, drain, maint), 0 for the others." },
	{ "exrelay_server_weight", "gauge", "The server's weight in rendezvous hashing (0..256)." },
	{ "exrelay_server_connections_active", "gauge", "Backend connections open to the server." },
	{ "exrelay_server_connections_total", "counter", "Backend connections opened to the server." },
	{ "exrelay_server_errors_total", "counter", "Failures of the server, per kind: connect, tls, 5xx (502-504 answers)." },
	{ "exrelay_server_checks_total", "counter", "Active health checks of the server, per result." },
	{ "exrelay_server_check_duration_seconds", "gauge", "How long the server's last health check of the "
	    "protocol took (checked servers only)." },
};

static int64_t
load(const int64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

/* The protocol label of health p ("*", one health for all, reads "all"). */
static const char *
proto_label(const struct srv *s, int p)
{
	return strcmp(s->protos[p], "*") == 0 ? "all" : s->protos[p];
}

/* Writes the samples of one family for server s. */
static void
server_samples(struct srv *s, void *arg)
{
	static const char *const states[] = { "ready", "drain", "maint" };
	static const char *const kinds[] = { "connect", "tls", "5xx" };
	const struct pass *ps = arg;
	struct metrics_out *o = ps->o;
	const char *name = families[ps->family].name;
	char eb[160], es[160], lb[400];

	/* The labels every family starts with: backend and server. */
	snprintf(lb, sizeof(lb), "backend=\"%s\",server=\"%s\"", metrics_label(eb, sizeof(eb), s->backend),
	    metrics_label(es, sizeof(es), s->name));
	switch (ps->family) {
	case F_UP:
		for (int p = 0; p < s->nprotos; p++)
			metrics_printf(o, "%s{%s,protocol=\"%s\"} %d\n", name, lb, proto_label(s, p), servers_up(s, p) ? 1 : 0);
		break;
	case F_STATE:
		for (enum srv_admin a = SRV_READY; a <= SRV_MAINT; a++)
			metrics_printf(o, "%s{%s,state=\"%s\"} %d\n", name, lb, states[a], servers_admin(s) == a);
		break;
	case F_WEIGHT:
		metrics_printf(o, "%s{%s} %d\n", name, lb, servers_weight(s));
		break;
	case F_ACTIVE:
		metrics_printf(o, "%s{%s} %lld\n", name, lb, (long long)load(&s->conns_active));
		break;
	case F_TOTAL:
		metrics_printf(o, "%s{%s} %lld\n", name, lb, (long long)load(&s->conns_total));
		break;
	case F_ERRORS: {
		const int64_t v[3] = { load(&s->connect_errors), load(&s->tls_errors), load(&s->resp_5xx) };
		for (int k = 0; k < 3; k++)
			metrics_printf(o, "%s{%s,kind=\"%s\"} %lld\n", name, lb, kinds[k], (long long)v[k]);
		break;
	}
	case F_CHECKS:
		metrics_printf(o, "%s{%s,result=\"ok\"} %lld\n%s{%s,result=\"failed\"} %lld\n"
		    "%s{%s,result=\"skipped\"} %lld\n", name, lb, (long long)load(&s->checks_ok), name, lb,
		    (long long)load(&s->checks_failed), name, lb, (long long)load(&s->checks_skipped));
		break;
	case F_CHECK_DURATION:
		for (int p = 0; s->checked && p < s->nprotos; p++)
			metrics_printf(o, "%s{%s,protocol=\"%s\"} %.6f\n", name, lb, proto_label(s, p),
			    s->health[p].last_duration);
		break;
	default:
		break;
	}
}

/* Appends every per-server family, servers in configuration order. */
void
metrics_server_write(struct metrics_out *o)
{
	_Static_assert(SRV_READY == 0 && SRV_DRAIN == 1 && SRV_MAINT == 2, "states[] follows enum srv_admin");
	for (int f = 0; f < F_COUNT && !o->cut; f++) {
		struct pass ps = { o, f };
		metrics_printf(o, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
		    families[f].name, families[f].type);
		servers_foreach(server_samples, &ps);
	}
}
