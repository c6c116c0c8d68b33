/* The user program of the ucalls example: calls work(kind, cost) N times, kind = i % 3,
 * cost = 1000 * (i % 5 + 1) ns (only a number passed along: nothing sleeps). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int work(int kind, long cost_ns)
{
	__asm__ volatile("" ::: "memory");
	return kind + (int)(cost_ns & 1);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000, acc = 0;

	for (long i = 0; i < n; i++)
		acc += work((int)(i % 3), 1000 * (i % 5 + 1));
	printf("%ld\n", acc);
	return 0;
}
