/* One security event (a failing ptrace call) every 1/RATE s for SECONDS s, paced on the clock;
 * with RATE 0, SECONDS is a number of calls made back to back. Prints the number of calls. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long rate = argc > 1 ? atol(argv[1]) : 5000, secs = argc > 2 ? atol(argv[2]) : 2;
	long n = rate ? rate * secs : secs;
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		long due = rate ? i * 1000000000L / rate : 0;

		while (rate) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			long el = (now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec);
			if (el >= due)
				break;
			if (due - el > 200000) {
				struct timespec d = { 0, due - el - 100000 };
				nanosleep(&d, NULL);
			}
		}
		syscall(SYS_ptrace, -1L, 0, 0, 0);
	}
	printf("%ld\n", n);
	return 0;
}
