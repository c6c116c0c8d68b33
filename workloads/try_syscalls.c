/* Make the syscalls named by number on the command line, each with all six arguments 0, and
 * print one line per call: "<nr> <errno>" (0 when it succeeded). For checking what a seccomp
 * profile refuses: pick calls that are harmless with null arguments (sysinfo, uname, times…).
 *
 *   try_syscalls NR...   exit 0 after the calls.
 *
 * Built static so no loader adds calls. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		long nr = atol(argv[i]);
		errno = 0;
		long r = syscall(nr, 0L, 0L, 0L, 0L, 0L, 0L);
		printf("%ld %d\n", nr, r == -1 ? errno : 0);
	}
	return 0;
}
