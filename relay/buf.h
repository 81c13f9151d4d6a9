/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * buf.h: fixed-capacity byte buffers and a per-thread pool, so that an idle connection
 * holds no buffer: take one when bytes arrive, give it back when it is drained.
 */
#ifndef EXRELAY_BUF_H
#define EXRELAY_BUF_H

#include <stddef.h>

#define BUF_CAP 65536

struct buf {
	size_t r, w;			/* readable bytes are data[r..w) */
	struct buf *next;		/* pool link */
	char data[BUF_CAP];
};

/* Takes an empty buffer from the pool (or malloc); NULL when out of memory. */
struct buf *buf_get(void);
/* Gives a buffer back to the pool (which keeps a bounded number, frees the rest). */
void buf_put(struct buf *b);
/* Frees this thread's pool. */
void buf_pool_drain(void);
/* Buffers allocated and not yet freed, over all threads (for tests and metrics). */
long buf_outstanding(void);

static inline size_t buf_len(const struct buf *b) { return b ? b->w - b->r : 0; }
static inline const char *buf_head(const struct buf *b) { return b->data + b->r; }

/* Room to append after compacting: moves unread bytes to the front when the tail is full. */
static inline size_t
buf_room(struct buf *b)
{
	if (b->r == b->w)
		b->r = b->w = 0;
	if (b->w == BUF_CAP && b->r > 0) {
		__builtin_memmove(b->data, b->data + b->r, b->w - b->r);
		b->w -= b->r;
		b->r = 0;
	}
	return BUF_CAP - b->w;
}

#endif
