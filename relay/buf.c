/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * buf.c: the buffer pool. Each event-loop thread keeps its own free list, bounded so that
 * memory taken during a burst goes back to the allocator afterwards.
 */
#include "autoconf.h"

#include <stdlib.h>

#include "buf.h"

#define POOL_MAX 32

static __thread struct buf *pool;
static __thread int npool;
static long outstanding;

struct buf *
buf_get(void)
{
	struct buf *b = pool;

	if (b) {
		pool = b->next;
		npool--;
	} else {
		if (!(b = malloc(sizeof(*b))))
			return NULL;
		__atomic_add_fetch(&outstanding, 1, __ATOMIC_RELAXED);
	}
	b->r = b->w = 0;
	b->next = NULL;
	return b;
}

void
buf_put(struct buf *b)
{
	if (!b)
		return;
	if (npool < POOL_MAX) {
		b->next = pool;
		pool = b;
		npool++;
		return;
	}
	free(b);
	__atomic_sub_fetch(&outstanding, 1, __ATOMIC_RELAXED);
}

void
buf_pool_drain(void)
{
	while (pool) {
		struct buf *b = pool;
		pool = b->next;
		free(b);
		__atomic_sub_fetch(&outstanding, 1, __ATOMIC_RELAXED);
	}
	npool = 0;
}

long
buf_outstanding(void)
{
	return __atomic_load_n(&outstanding, __ATOMIC_RELAXED);
}
