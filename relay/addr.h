/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * addr.h: socket-address helpers (addr.c): parsing, formatting, prefix matching. Pure: no
 * event loop, no configuration structures.
 */
#ifndef EXRELAY_ADDR_H
#define EXRELAY_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap);
void addr_unmap(struct sockaddr_storage *ss);

#endif
