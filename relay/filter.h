/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * filter.h: request filters against known Exchange exploit chains, and the administrator's
 * own rules (filter.c). Pure.
 */
#ifndef EXRELAY_FILTER_H
#define EXRELAY_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "http1.h"

/* One extra rule: every part that is set must match (methods empty: any method). */
struct filter_rule {
	const char *name;		/* for the log ("rule1", or the configured name) */
	bool name_owned;		/* name was allocated for the rule (the configuration frees it) */
	const char *const *methods;	/* exact method tokens (case-insensitive) */
	size_t nmethods;
	const char *path;		/* path prefix at a segment boundary, or NULL */
	const char *query;		/* substring of the query, or NULL */
};

struct filter_config {
	bool exchange;			/* the built-in ProxyShell/ProxyNotShell/ProxyLogon rules */
	const struct filter_rule *rules;
	size_t nrules;
};

/*
 * Checks a parsed request against the filters. The target is percent-decoded until stable
 * and lower-cased first (a target still changing after 4 rounds, or over 64 KiB, is refused
 * as "undecodable-target"). Returns NULL when the request passes, else the name of the rule
 * that refuses it (a static string or the rule's name).
 */
const char *filter_request(const struct http1_request *req, const struct filter_config *f);

#endif
