/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics_proc.c: exrelay_build_info and the standard process_* families of the Prometheus
 * client libraries (CPU, memory, descriptors, start time), read from /proc/self when /metrics
 * is read. Where /proc cannot be read, those families are left out.
 */
#include "autoconf.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics.h"

/* What /proc/self/stat and /proc/stat tell (seconds, bytes). */
struct proc_stat {
	double cpu, start;
	unsigned long long vsize, rss;
};

/* Reads the first line (up to cap - 1 bytes) of path into buf; 0 or -1. */
static int
read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n > 0 ? 0 : -1;
}

/* The boot time in seconds since the epoch (/proc/stat's btime), or -1. */
static long long
boot_time(void)
{
	static char buf[8192];	/* /proc/stat of a large machine is longer: btime comes after the CPUs */
	FILE *f = fopen("/proc/stat", "re");
	long long bt = -1;

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "btime %lld", &bt) == 1)
			break;
	fclose(f);
	return bt;
}

/* Fills st from /proc/self/stat (fields 14, 15, 22, 23, 24 of proc(5)); 0 or -1. */
static int
proc_stat_read(struct proc_stat *st)
{
	char buf[1024];
	unsigned long long utime, stime, start;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	long long bt = boot_time();

	if (read_file("/proc/self/stat", buf, sizeof(buf)) == -1 || tck <= 0 || page <= 0 || bt < 0)
		return -1;
	const char *p = strrchr(buf, ')');	/* the command name may hold spaces and ')' */
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
	    "%llu %llu %llu", &utime, &stime, &start, &st->vsize, &st->rss) != 5)
		return -1;
	st->cpu = (double)(utime + stime) / (double)tck;
	st->start = (double)bt + (double)start / (double)tck;
	st->rss *= (unsigned long long)page;
	return 0;
}

/* Open descriptors: the entries of /proc/self/fd, less the one listing it; or -1. */
static long
open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
			n++;
	closedir(d);
	return n;
}

void
metrics_proc_build_info(struct metrics_out *o, const char *version, const char *gnutls,
    const char *libev, const char *libconfig)
{
	char e1[64], e2[64], e3[64], e4[64];

	metrics_printf(o, "# HELP exrelay_build_info exrelay's version and the libraries it runs with (as -V).\n"
	    "# TYPE exrelay_build_info gauge\n"
	    "exrelay_build_info{version=\"%s\",gnutls=\"%s\",libev=\"%s\",libconfig=\"%s\"} 1\n",
	    metrics_label(e1, sizeof(e1), version), metrics_label(e2, sizeof(e2), gnutls),
	    metrics_label(e3, sizeof(e3), libev), metrics_label(e4, sizeof(e4), libconfig));
}

void
metrics_proc_write(struct metrics_out *o)
{
	struct proc_stat st;
	struct rlimit rl;
	long fds = open_fds();

	if (proc_stat_read(&st) == 0)
		metrics_printf(o, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
		    "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
		    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
		    "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n"
		    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
		    "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
		    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
		    "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
		    st.cpu, st.rss, st.vsize, st.start);
	if (fds >= 0)
		metrics_printf(o, "# HELP process_open_fds Number of open file descriptors.\n"
		    "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", fds);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		metrics_printf(o, "# HELP process_max_fds Maximum number of open file descriptors.\n"
		    "# TYPE process_max_fds gauge\nprocess_max_fds %.0f\n",
		    rl.rlim_cur == RLIM_INFINITY ? 1e18 : (double)rl.rlim_cur);
}
