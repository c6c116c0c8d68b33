/* Every way a process or thread is made, a known number of times, for the syscall family's
 * exact counts of clone, clone3, fork and vfork. Built static; it never execs, so every task is
 * named "forks".
 *
 *   forks F V S T N   F fork() (glibc: clone), V vfork(), S raw fork(2), T pthreads (glibc:
 *                     clone3); every child and thread makes N getppid calls, children end with
 *                     _exit (exit_group), threads return (exit). Prints "ok".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long n;

static void calls(void)
{
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
}

static void *thread(void *arg)
{
	(void)arg;
	calls();
	return NULL;
}

static void reap(pid_t p)
{
	int st;

	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "child failed\n");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: forks F V S T N\n");
		return 2;
	}
	long f = atol(argv[1]), v = atol(argv[2]), s = atol(argv[3]), t = atol(argv[4]);
	n = atol(argv[5]);

	for (long i = 0; i < f; i++) {
		pid_t p = fork();
		if (p == 0) {
			calls();
			_exit(0);
		}
		reap(p);
	}
	for (long i = 0; i < v; i++) {
		pid_t p = vfork();
		if (p == 0) {
			calls();
			_exit(0);
		}
		reap(p);
	}
	for (long i = 0; i < s; i++) {
		pid_t p = syscall(SYS_fork);
		if (p == 0) {
			calls();
			_exit(0);
		}
		reap(p);
	}
	pthread_t th[64];
	if (t > 64)
		t = 64;
	for (long i = 0; i < t; i++)
		if (pthread_create(&th[i], NULL, thread, NULL))
			return 1;
	for (long i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	printf("ok\n");
	return 0;
}
