/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_config.c: libFuzzer target for the configuration loader (relay/config*.c), with the
 * semantics of `exrelay -t`.
 *
 * The input is libconfig text, written to a memfd and loaded by config_load() through its
 * /proc/self/fd path, exactly as `exrelay -f FILE -t` does. Invariants (abort() on failure):
 * no sanitizer report and no leak on any path (LeakSanitizer runs at exit and, in libFuzzer,
 * after inputs that allocate more than they free); either a configuration comes back and the
 * error text is untouched, or NULL comes back with "FILE:LINE: message" or "FILE: message"
 * naming the file; a second load gives the same verdict and the same message; a loaded
 * configuration holds what DESIGN.md promises (a traffic listener, a route, every route's
 * backend among the backends, every backend with a server, positive timeouts and limits).
 *
 * Inputs that name other files are not loaded: @include, and paths under /dev, /proc and
 * /sys (a certificate read from /dev/zero would never end). Other paths fail to open or are
 * not certificates, which the loader must report like any error.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_config: check failed line %d: %s\n", __LINE__, #c); abort(); } } while (0)

static bool
has(const uint8_t *data, size_t size, const char *s)
{
	return memmem(data, size, s, strlen(s)) != NULL;
}

static void
check_loaded(const struct config *c)
{
	size_t traffic = 0;

	CHECK(c->nlisteners > 0 && c->nroutes > 0);
	for (size_t i = 0; i < c->nlisteners; i++) {
		CHECK(c->listeners[i].name != NULL && c->listeners[i].bind != NULL);
		traffic += c->listeners[i].role == ROLE_TRAFFIC;
	}
	CHECK(traffic > 0);
	for (size_t i = 0; i < c->nbackends; i++)
		CHECK(c->backends[i].nservers > 0 && c->backends[i].name != NULL);
	for (size_t i = 0; i < c->nroutes; i++)
		CHECK(c->routes[i].backend >= 0 && (size_t)c->routes[i].backend < c->nbackends);
	CHECK(c->timeouts.proxy_header > 0 && c->timeouts.tls_handshake > 0 &&
	    c->timeouts.request_head > 0 && c->timeouts.client_idle > 0 && c->timeouts.connect > 0);
	CHECK(c->limits.max_head_size > 0 && c->limits.max_headers > 0);
	CHECK(c->max_connections > 0);
}

/* Loads path; returns whether it loaded, with the error text in err. */
static bool
load(const char *path, char *err, size_t errlen)
{
	bool unusable = false;

	memset(err, 0x55, errlen);
	err[errlen - 1] = '\0';
	struct config *c = config_load(path, err, errlen, &unusable);
	if (c == NULL) {
		size_t pl = strlen(path);
		CHECK(strnlen(err, errlen) < errlen);
		/* "FILE:LINE: message" or "FILE: message"; FILE is the path (or an @include's) */
		CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':');
		CHECK(strlen(err) > pl + 2);
		return false;
	}
	CHECK(!unusable);
	check_loaded(c);
	CHECK(config_ref(c) == c);
	config_unref(c);
	config_unref(c);
	return true;
}

/*
 * Loads a small configuration once before the first input: the C library keeps what name
 * resolution loads on first use (NSS modules, /etc/hosts), which libFuzzer would otherwise
 * take for memory that each input leaves behind, and check for leaks after every input.
 */
static void
warm_up(void)
{
	static const char text[] = "listeners = ( { name = \"p\"; bind = \"localhost:1\"; } );\n"
	    "backends = ( { name = \"a\"; servers = [ \"localhost:2\" ]; } );\nroutes = ( { backend = \"a\"; } );\n";
	static bool done;
	char path[64], err[1024];

	if (done)
		return;
	done = true;
	int fd = memfd_create("fuzz_config.conf", MFD_CLOEXEC);
	CHECK(fd != -1 && write(fd, text, sizeof(text) - 1) == (ssize_t)sizeof(text) - 1);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	config_unref(config_load(path, err, sizeof(err), NULL));
	close(fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char err1[1024], err2[1024];
	char path[64];

	warm_up();
	if (size > 16384 || has(data, size, "@include") || has(data, size, "dev/") ||
	    has(data, size, "proc/") || has(data, size, "sys/"))
		return 0;
	int fd = memfd_create("fuzz_config.conf", MFD_CLOEXEC);
	CHECK(fd != -1);
	CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	bool ok1 = load(path, err1, sizeof(err1));
	bool ok2 = load(path, err2, sizeof(err2));
	CHECK(ok1 == ok2);
	if (!ok1)
		CHECK(strcmp(err1, err2) == 0);
	close(fd);
	return 0;
}
