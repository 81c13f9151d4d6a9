/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * splice.h: the interface of splice.c: zero-copy relaying of body and tunnel bytes between
 * two plain sockets (or kTLS sessions) through a pipe, and the per-worker pipe pool.
 */
#ifndef EXRELAY_SPLICE_H
#define EXRELAY_SPLICE_H

#include <stdbool.h>

struct conn;
struct half;

#define SPLICE_NO (-2)		/* splice_read: not for splice now; read into the buffer (pump_read) */

/*
 * Reads from src straight into a pipe toward its peer and writes on from there, when the
 * bytes waiting on src are opaque body or tunnel data, both halves are spliceable and no byte
 * of this direction waits in a buffer. Returns 1 when bytes moved or src ended (src->eof,
 * src->cut), 0 when nothing came, or SPLICE_NO (nothing done: use pump_read).
 */
int splice_read(struct conn *c, struct half *src);
/* Writes the bytes in dst's pipe: 1 when none are left, 0 when dst blocks (its write watcher
 * is armed), -1 on a write error (errno). */
int splice_flush(struct conn *c, struct half *dst);
/* True when bytes spliced from dst's peer still wait in dst's pipe. */
bool splice_pending(const struct half *dst);
/* Gives dst's pipe back to the pool (a pipe still holding bytes is closed). */
void splice_release(struct half *dst);
/* Closes this thread's pooled pipes (a worker's end). */
void splice_pool_drain(void);

#endif
