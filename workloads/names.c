/* Processes with names that could be mistaken for the sidecar's own label values, for the label
 * tests. Built static.
 *
 *   names DIR   for each name below, a symlink DIR/<name> to this binary, exec'd in a child
 *               (the exec names the process after the link); then a child that renames itself
 *               to the empty name and exits. Prints "ok".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *names[] = { "other", "unknown", "\xff\xfe", "\xff\xfd", "back\\slash" };

static void reap(pid_t p)
{
	int st;

	if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "child failed\n");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "child"))
		return 0;
	if (argc != 2)
		return 2;
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return 1;
	self[n] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char link[4200];

		snprintf(link, sizeof(link), "%s/%s", argv[1], names[i]);
		unlink(link);
		if (symlink(self, link))
			return 1;
		pid_t p = fork();
		if (p == 0) {
			char *cargv[] = { (char *)names[i], "child", NULL };
			char *envp[] = { NULL };
			execve(link, cargv, envp);
			_exit(127);
		}
		reap(p);
	}
	pid_t p = fork();
	if (p == 0) {
		prctl(PR_SET_NAME, "", 0, 0, 0);
		_exit(0);
	}
	reap(p);
	printf("ok\n");
	return 0;
}
