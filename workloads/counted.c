/* A workload that does a known number of things, for exact-count tests. Built static so that no
 * dynamic loader adds syscalls of its own.
 *
 *   counted run N M K CODE   N getppid, M openat of a missing path (ENOENT), K fork+exec of
 *                            /bin/true, then exit with CODE.
 *   counted serve N M K CODE stay up (as a container's PID 1); on each SIGUSR1 fork a child that
 *                            does `run N M K CODE`, reap it and print "done <status>".
 *   counted hog              allocate and touch memory until killed (OOM tests).
 *   counted signals S        raise SIGUSR1 S times with a handler (S tgkill, S rt_sigreturn),
 *                            then exit_group(0).
 *   counted sysinfo N        call sysinfo N times, then exit 0 (a call a Docker profile can
 *                            refuse or kill on: runc itself calls getppid after installing the
 *                            container's filter, so a profile refusing getppid stops runc).
 *   counted novel            call two syscalls the other modes never make: sysinfo (allowed by
 *                            Docker's default profile) and unshare(CLONE_NEWUTS); exit status
 *                            10 if sysinfo failed with EPERM + 20 if unshare did.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

static int work(long n, long m, long k, int code)
{
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	for (long i = 0; i < m; i++)
		syscall(SYS_openat, AT_FDCWD, "/nonexistent/ebpf-sidecar-test", O_RDONLY);
	for (long i = 0; i < k; i++) {
		pid_t p = fork();
		if (p == 0) {
			/* Empty environment: LD_LIBRARY_PATH & co. would add the loader's own failed
			 * openat calls to the ground truth. */
			char *envp[] = { NULL };
			execle("/bin/true", "true", (char *)0, envp);
			_exit(127);
		}
		int st;
		waitpid(p, &st, 0);
	}
	return code;
}

static volatile sig_atomic_t triggered;
static void on_usr1(int sig) { (void)sig; triggered = 1; }
static void on_term(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "hog")) {
		for (;;) {
			char *p = malloc(1 << 20);
			if (p)
				memset(p, 1, 1 << 20);
		}
	}
	if (argc == 3 && !strcmp(argv[1], "sysinfo")) {
		struct sysinfo si;

		for (long i = atol(argv[2]); i > 0; i--)
			syscall(SYS_sysinfo, &si);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[1], "novel")) {
		struct sysinfo si;
		int st = 0;

		if (syscall(SYS_sysinfo, &si) != 0 && errno == EPERM)
			st += 10;
		if (syscall(SYS_unshare, CLONE_NEWUTS) != 0 && errno == EPERM)
			st += 20;
		return st;
	}
	if (argc == 3 && !strcmp(argv[1], "signals")) {
		signal(SIGUSR1, on_usr1);
		for (long i = atol(argv[2]); i > 0; i--)
			raise(SIGUSR1);
		return 0;
	}
	if (argc != 6) {
		fprintf(stderr, "usage: counted run|serve N M K CODE | counted hog\n");
		return 2;
	}
	long n = atol(argv[2]), m = atol(argv[3]), k = atol(argv[4]);
	int code = atoi(argv[5]);
	if (!strcmp(argv[1], "run"))
		return work(n, m, k, code);

	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		while (!triggered)
			sigsuspend(&old);
		triggered = 0;
		pid_t p = fork();
		if (p == 0)
			_exit(work(n, m, k, code));
		int st;
		waitpid(p, &st, 0);
		printf("done %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		fflush(stdout);
	}
}
