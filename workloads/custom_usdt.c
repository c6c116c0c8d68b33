/* A program with one USDT probe behind a semaphore: myapp:job(kind, cost) fired N times with
 * kind = i % 4 and cost = 10 * i, only while a tracer holds the semaphore (as real programs
 * guard expensive probe arguments). Usage: custom_usdt N */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>

__extension__ unsigned short myapp_job_semaphore __attribute__((unused))
	__attribute__((section(".probes")));

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100, fired = 0;

	for (long i = 0; i < n; i++) {
		if (myapp_job_semaphore) {
			DTRACE_PROBE2(myapp, job, (int)(i % 4), 10 * i);
			fired++;
		}
	}
	printf("fired %ld\n", fired);
	return 0;
}
