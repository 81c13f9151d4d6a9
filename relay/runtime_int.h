/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime_int.h: private to runtime.c and runtime_cmd.c: a client of the admin socket (owned
 * by runtime.c: its socket, input line, output and timer) and the command line that
 * runtime_cmd.c runs for it.
 */
#ifndef EXRELAY_RUNTIME_INT_H
#define EXRELAY_RUNTIME_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "relay.h"
#include "runtime.h"

#define RT_MAGIC 0x72746d63U		/* "rtmc" */
#define RT_LINE_MAX 4096		/* one command line; a longer one drops the client */

struct rt_client {
	unsigned magic;
	int fd;
	ev_io rio, wio;
	ev_timer timer;
	char in[RT_LINE_MAX];
	size_t inlen;
	struct rt_out out;
	size_t sent;			/* bytes of out already written */
	bool prompt;			/* interactive mode */
	bool closing;			/* close once out is sent */
	struct rt_client *prev, *next;
};

/* What running a command asks of the client's connection: go on, or close once answered. */
enum rt_result { RT_DONE, RT_QUIT };

/*
 * Runs the commands of one line (without its "\n"), separated by ';' that '\' does not escape,
 * appending their answers to cl->out; `prompt` toggles cl->prompt. RT_QUIT after `quit`.
 */
enum rt_result runtime_cmd_line(struct rt_client *cl, char *line);

#endif
