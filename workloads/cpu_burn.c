/* CPU ground truth for tests/cpu.rs:
 *   cpu_burn burn S        spin until this process used S seconds of CPU; print its own
 *                          utime+stime (getrusage) in nanoseconds.
 *   cpu_burn sleep N       N sleeps of 10 ms; prints "sure=S": how many took less than 16.7 ms
 *                          of wall time, so that their off-CPU interval (at least the 10 ms, at
 *                          most the call's wall time) is surely in the [8.4, 16.8) ms bucket.
 *   cpu_burn pinned K S    K children pinned to CPU 0, each spinning S seconds of wall time.
 *   cpu_burn switches K M  K children one after another, each sleeping M times 100 µs and
 *                          spinning a little; each is reaped only after its final switch (see
 *                          below). Prints the kernel's counts for the whole tree:
 *                          "voluntary=V involuntary=I" (getrusage self + children, less
 *                          what this process had at its start). */
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

/* A child's final context switch comes after its parent could reap it; rusage then misses it.
 * Wait for the zombie without reaping (WNOWAIT), give it 5 ms to leave the CPU, then reap. */
static void reap_after_final_switch(pid_t p)
{
	siginfo_t si;
	struct timespec pause = { 0, 5000000 };

	waitid(P_PID, p, &si, WEXITED | WNOWAIT);
	nanosleep(&pause, NULL);
	waitpid(p, NULL, 0);
}

static int switches(int k, int m)
{
	/* What this process did before it was ours to count: the switches before exec (the
	 * sidecar's spawn spins until it has moved us into the target). */
	struct rusage before;

	getrusage(RUSAGE_SELF, &before);
	for (int i = 0; i < k; i++) {
		pid_t p = fork();
		if (p == 0) {
			struct timespec t = { 0, 100000 };

			for (int j = 0; j < m; j++) {
				nanosleep(&t, NULL);
				for (volatile int x = 0; x < 100000; x++)
					;
			}
			_exit(0);
		}
		reap_after_final_switch(p);
	}
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	printf("voluntary=%ld involuntary=%ld\n", self.ru_nvcsw + kids.ru_nvcsw - before.ru_nvcsw,
	       self.ru_nivcsw + kids.ru_nivcsw - before.ru_nivcsw);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "switches"))
		return switches(atoi(argv[2]), atoi(argv[3]));
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
		int sure = 0;

		for (int i = 0; i < atoi(argv[2]); i++) {
			double t0 = now(CLOCK_MONOTONIC);

			nanosleep(&ten, NULL);
			sure += now(CLOCK_MONOTONIC) - t0 < 0.0167;
		}
		printf("sure=%d\n", sure);
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
