/* Ground truth for tests/budget.rs: a syscall-heavy load with CPU work between the calls, then
 * an idle pause.
 *   budget_load SPIN_US SECONDS ERR_EVERY PAUSE_S OUT
 * For SECONDS: spin SPIN_US microseconds (vDSO clock, no syscall), then one getppid, or every
 * ERR_EVERY-th time a close(-1) that fails with EBADF. Then writes "getppid=G close=C" to OUT
 * (its own syscalls come after the count) and sleeps PAUSE_S seconds (one nanosleep). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: budget_load SPIN_US SECONDS ERR_EVERY PAUSE_S OUT\n");
		return 2;
	}
	double spin = atof(argv[1]) / 1e6, secs = atof(argv[2]);
	long every = atol(argv[3]), getppids = 0, closes = 0;
	struct timespec pause = { atol(argv[4]), 0 };
	double end = now() + secs;

	for (long i = 1;; i++) {
		double t = now(), until = t + spin;

		if (t >= end)
			break;
		while (now() < until)
			;
		if (every > 0 && i % every == 0) {
			syscall(SYS_close, -1);
			closes++;
		} else {
			syscall(SYS_getppid);
			getppids++;
		}
	}
	FILE *out = fopen(argv[5], "w");

	if (!out)
		return 1;
	fprintf(out, "getppid=%ld close=%ld\n", getppids, closes);
	fclose(out);
	nanosleep(&pause, NULL);
	return 0;
}
