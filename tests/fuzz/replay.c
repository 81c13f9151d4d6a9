/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * replay.c: runs a libFuzzer target (LLVMFuzzerTestOneInput) without libFuzzer,
 * over every file of the seed corpus $srcdir/fuzz/corpus/REPLAY_CORPUS, or over
 * the files and directories given as arguments. Prints TAP: "ok N - file" per
 * file, then the plan. A crash or abort in the target fails the test.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef REPLAY_CORPUS
#define REPLAY_CORPUS "proxyproto"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_n, replay_failed;

/* Reads a whole file into a fresh buffer; returns NULL on error. */
static uint8_t *
replay_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL, *nb;
	size_t cap = 0, n = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	if (ferror(f)) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = n;
	return buf;
}

/* Runs the target on one file and prints its TAP line. */
static void
replay_file(const char *path)
{
	size_t len = 0;
	uint8_t *buf = replay_read(path, &len);

	replay_n++;
	if (buf == NULL) {
		replay_failed++;
		printf("not ok %d - %s (%s)\n", replay_n, path, strerror(errno));
		return;
	}
	/* The target gets an exact-size heap copy, so ASan sees any over-read. */
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	printf("ok %d - %s\n", replay_n, path);
	fflush(stdout);
}

static int
replay_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays a file, or every regular file of a directory in name order. */
static void
replay_path(const char *path)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	char **names = NULL, **nn, full[4096];
	size_t i, n = 0;

	if (stat(path, &st) == -1 || !S_ISDIR(st.st_mode)) {
		replay_file(path);
		return;
	}
	if ((d = opendir(path)) == NULL) {
		replay_file(path);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		nn = realloc(names, (n + 1) * sizeof(*names));
		if (nn == NULL || (nn[n] = strdup(de->d_name)) == NULL) {
			fprintf(stderr, "replay: out of memory\n");
			exit(1);
		}
		names = nn;
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), replay_cmp);
	for (i = 0; i < n; i++) {
		snprintf(full, sizeof(full), "%s/%s", path, names[i]);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode))
			replay_file(full);
		free(names[i]);
	}
	free(names);
}

int
main(int argc, char **argv)
{
	const char *srcdir = getenv("srcdir");
	char dir[4096];
	int i;

	if (argc > 1) {
		for (i = 1; i < argc; i++)
			replay_path(argv[i]);
	} else {
		snprintf(dir, sizeof(dir), "%s/fuzz/corpus/%s", srcdir && *srcdir ? srcdir : ".",
		    REPLAY_CORPUS);
		replay_path(dir);
	}
	if (replay_n == 0) {
		printf("not ok 1 - no corpus files found\n");
		replay_n = replay_failed = 1;
	}
	printf("1..%d\n", replay_n);
	return replay_failed ? 1 : 0;
}
