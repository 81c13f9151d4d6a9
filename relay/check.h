/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * check.h: always-on invariant checks, in the manner of Varnish (AN, AZ, CHECK_OBJ) and hitch.
 * They stay on in release builds (they do not depend on NDEBUG). They are for programmer
 * errors only, never for input from the network or a file: a failed check means exrelay's
 * own state is wrong, so it says where and aborts rather than relay bytes from bad state.
 */
#ifndef EXRELAY_CHECK_H
#define EXRELAY_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static inline _Noreturn void
check_fail(const char *file, int line, const char *func, const char *expr)
{
	fprintf(stderr, "exrelay: assertion failed: %s:%d: %s(): %s\n", file, line, func, expr);
	abort();
}

/* The condition holds. */
#define ASSERT(e) do { if (!(e)) check_fail(__FILE__, __LINE__, __func__, #e); } while (0)
/* Assert Nonzero / Assert Zero. */
#define AN(x) ASSERT((x) != 0)
#define AZ(x) ASSERT((x) == 0)
/* A place the code must never reach. */
#define WRONG(why) check_fail(__FILE__, __LINE__, __func__, why)
/* p is a live object of the kind its magic number names. */
#define CHECK_OBJ(p, m) ASSERT((p) != NULL && (p)->magic == (m))

/*
 * Defines `const char *fn(type v)`, the name of each value of an enum made from an X-macro
 * list (LIST(X) expands X(NAME) per value, in order), so that logs say `phase=PH_HEAD`.
 */
#define ENUM_STR_NAME_(n) #n,
#define ENUM_STR(fn, type, LIST) \
	const char *fn(type v) \
	{ \
		static const char *const names_[] = { LIST(ENUM_STR_NAME_) }; \
		ASSERT((size_t)v < sizeof(names_) / sizeof(names_[0])); \
		return names_[v]; \
	}

#endif
