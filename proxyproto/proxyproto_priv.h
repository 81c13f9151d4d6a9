/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxyproto_priv.h: what proxyproto.c (v1, the common entry points) and
 * proxyproto_v2.c (the v2 binary header) share inside libproxyproto; not part of
 * its interface, which is proxyproto.h.
 */
#ifndef EXRELAY_PROXYPROTO_PRIV_H
#define EXRELAY_PROXYPROTO_PRIV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include "proxyproto.h"

#define PP_V2_SIG_LEN 12

/* proxyproto.c */
ssize_t pp_fail(const char **why, const char *msg);
int pp_reject(const char **why, const char *msg);
ssize_t pp_need_more(const char **why);
const void *pp_inet_parts(const struct sockaddr *a, size_t *len, const void **port);

/* proxyproto_v2.c */
extern const uint8_t pp_v2_sig[PP_V2_SIG_LEN];
/* Parses a v2 header at b[0..len); same returns and contract as pp_parse_ex, h filled on success. */
ssize_t pp_v2_parse(const uint8_t *b, size_t len, struct pp_header *h, const char **why);

#endif
