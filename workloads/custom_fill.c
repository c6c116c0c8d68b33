/* getpgid(1..N) once each (most fail with ESRCH: only the argument matters), then sleep S
 * seconds so the benchmark can scrape the N map entries. */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000, s = argc > 2 ? atol(argv[2]) : 60;

	for (long i = 1; i <= n; i++)
		syscall(SYS_getpgid, i);
	sleep(s);
	return 0;
}
