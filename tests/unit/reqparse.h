/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * reqparse.h: for unit tests, a request head parsed from text into static storage (one
 * request at a time), so that a test can build the http1_request a module reads.
 */
#ifndef EXRELAY_TEST_REQPARSE_H
#define EXRELAY_TEST_REQPARSE_H

#include <string.h>

#include "http1.h"

/* Parses head (a whole request head, CRLF line ends) into *req; NULL when it does not parse. */
static inline const struct http1_request *
parse_req(const char *head)
{
	static struct http1_header hdrs[100];
	static struct http1_request req;
	static char buf[70000];
	struct http1_limits lim = { sizeof(buf), 100 };
	size_t n = strlen(head);

	if (n >= sizeof(buf))
		return NULL;
	memcpy(buf, head, n);
	memset(&req, 0, sizeof(req));
	req.headers = hdrs;
	return http1_parse_request(buf, n, &lim, &req) > 0 ? &req : NULL;
}

#endif
