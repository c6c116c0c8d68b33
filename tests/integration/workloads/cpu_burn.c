/* CPU ground truth for tests/cpu.rs:
 *   cpu_burn burn S        spin until this process used S seconds of CPU; print its own
 *                          utime+stime (getrusage) in nanoseconds.
 *   cpu_burn sleep N       N sleeps of 10 ms.
 *   cpu_burn pinned K S    K children pinned to CPU 0, each spinning S seconds of wall time. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(clockid_t c)
{
	struct timespec t;

	clock_gettime(c, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "burn")) {
		double s = atof(argv[2]);
		volatile unsigned long x = 0;

		while (now(CLOCK_PROCESS_CPUTIME_ID) < s)
			for (int i = 0; i < 100000; i++)
				x += i;
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		printf("%lld\n", (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
				       (long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "sleep")) {
		struct timespec ten = { 0, 10 * 1000 * 1000 };

		for (int i = 0; i < atoi(argv[2]); i++)
			nanosleep(&ten, NULL);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "pinned")) {
		int k = atoi(argv[2]);
		double s = atof(argv[3]);

		for (int i = 0; i < k; i++) {
			if (fork() == 0) {
				cpu_set_t set;
				volatile unsigned long x = 0;

				CPU_ZERO(&set);
				CPU_SET(0, &set);
				sched_setaffinity(0, sizeof(set), &set);
				double end = now(CLOCK_MONOTONIC) + s;
				while (now(CLOCK_MONOTONIC) < end)
					for (int j = 0; j < 100000; j++)
						x += j;
				_exit(0);
			}
		}
		while (wait(NULL) > 0)
			;
		return 0;
	}
	fprintf(stderr, "usage: cpu_burn burn S | sleep N | pinned K S\n");
	return 2;
}
