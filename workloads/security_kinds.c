/* Triggers each security event kind a known number of times (see tests/security.rs):
 *   security_kinds once        exec+shell (sh -c true), setuid, ptrace, unshare, finit_module,
 *                              bpf, open /etc/passwd for write, 2 connects to one new peer,
 *                              2 listens on one new port; prints "done".
 *   security_kinds flood N     N ptrace calls as fast as possible (ring buffer overload).
 * Attempts that fail (EPERM, EBADF) still count: the event is the attempt. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void connect_once(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	connect(s, (struct sockaddr *)&a, sizeof(a));
	close(s);
}

static void listen_once(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(s, (struct sockaddr *)&a, sizeof(a));
	listen(s, 1);
	close(s);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "flood")) {
		long n = atol(argv[2]);
		for (long i = 0; i < n; i++)
			syscall(SYS_ptrace, -1L, 0, 0, 0);
		printf("done\n");
		return 0;
	}
	pid_t p = fork();
	if (p == 0) {
		char *envp[] = { NULL };
		execle("/bin/sh", "sh", "-c", "true", (char *)0, envp);
		_exit(127);
	}
	waitpid(p, NULL, 0);
	syscall(SYS_setuid, getuid());
	syscall(SYS_ptrace, -1L, 0, 0, 0);
	syscall(SYS_unshare, CLONE_NEWUTS);
	syscall(SYS_finit_module, -1, "", 0);
	syscall(SYS_bpf, 0xffff, NULL, 0);
	int fd = open("/etc/passwd", O_WRONLY | O_APPEND);
	if (fd >= 0)
		close(fd);
	connect_once(1);
	connect_once(1);
	listen_once(48123);
	listen_once(48123);
	printf("done\n");
	return 0;
}
