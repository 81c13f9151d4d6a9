/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cred.h: who a request logs in as (cred.c): Basic's user, NTLM's domain and user (bare or in
 * Negotiate). Never the password. Pure.
 */
#ifndef EXRELAY_CRED_H
#define EXRELAY_CRED_H

#include <stdbool.h>
#include <sys/types.h>

#include "http1.h"

/* The largest decoded Authorization token read (Negotiate tokens reach 48 KiB in base64). */
#define CRED_TOKEN_MAX (64 * 1024)

#define CRED_KINDS(X) \
	X(CRED_NONE)		/* no Authorization field */ \
	X(CRED_BASIC)		/* Basic: user read */ \
	X(CRED_NTLM)		/* NTLM AUTHENTICATE (type 3), bare or in Negotiate: user read */ \
	X(CRED_HANDSHAKE)	/* an NTLM leg that carries no user (NEGOTIATE, type 1) */ \
	X(CRED_ANONYMOUS)	/* NTLM AUTHENTICATE with an empty user */ \
	X(CRED_OTHER)		/* another scheme, or Negotiate carrying Kerberos: no user in the clear */ \
	X(CRED_UNREADABLE)	/* malformed: bad base64, truncated or inconsistent NTLM, no ':' in Basic */

enum cred_kind {
#define X(n) n,
	CRED_KINDS(X)
#undef X
};

struct cred {
	enum cred_kind kind;
	char scheme[16];	/* "Basic", "NTLM", "Negotiate" as sent ("" if longer) */
	char domain[128];	/* NTLM's domain, UTF-8 */
	char user[256];		/* as sent, UTF-8: "alice", "EXAMPLE\\alice", "alice@example.com" */
	char key[128];		/* the account's short name, ASCII lower-cased: "alice" */
};

/*
 * Reads the Authorization field of req into c (always filled: kind, and for CRED_BASIC and
 * CRED_NTLM a non-empty user and key). Returns c->kind.
 */
enum cred_kind cred_read(const struct http1_request *req, struct cred *c);
const char *cred_kind_str(enum cred_kind k);

#endif
