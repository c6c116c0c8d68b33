/* Network workload with exact ground truth, for the net family's tests. Built static. All
 * traffic is on loopback. Prints one line of facts the test checks ("port=…").
 *
 *   net_traffic tcp C N      listen on 127.0.0.1:<ephemeral>; C times: connect, client sends
 *                            N bytes, server reads N and sends N back, client reads N, client
 *                            closes, server reads EOF and closes. Prints "port=P".
 *   net_traffic refused K P  K blocking connects to 127.0.0.1:P (nothing listens: ECONNREFUSED).
 *   net_traffic inuse M      bind a listener, then M more sockets bind the same port
 *                            (EADDRINUSE, no SO_REUSEADDR).
 *   net_traffic udp D S      D datagrams of S payload bytes from one UDP socket to another on
 *                            127.0.0.1, each read back before the next is sent.
 *   net_traffic udpdrop D S  SO_RCVBUF at its minimum, D datagrams of S bytes sent without
 *                            reading, then read what was queued. Prints "received=R".
 *   net_traffic serve ...    as a container's PID 1: on each SIGUSR1, run the args after
 *                            "serve" in a child and print "done <status>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sock.h"

static int tcp(long c, long n)
{
	static char buf[65536];
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loop_addr(0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 128))
		die("listen");
	int port = bound_port(l);
	a = loop_addr(port);
	memset(buf, 'x', sizeof(buf));
	printf("port=%d\n", port);
	fflush(stdout);
	for (long i = 0; i < c; i++) {
		int cl = socket(AF_INET, SOCK_STREAM, 0);
		if (cl < 0 || connect(cl, (struct sockaddr *)&a, sizeof(a)))
			die("connect");
		int sv = accept(l, NULL, NULL);
		if (sv < 0)
			die("accept");
		/* In chunks so that neither side's buffers have to hold all of N. */
		for (long done = 0; done < n;) {
			long k = n - done > 65536 ? 65536 : n - done;
			write_all(cl, buf, k);
			read_exact(sv, buf, k);
			write_all(sv, buf, k);
			read_exact(cl, buf, k);
			done += k;
		}
		close(cl);
		if (read(sv, buf, 1) != 0)
			die("expected EOF");
		close(sv);
	}
	close(l);
	return 0;
}

static int refused(long k, int port)
{
	struct sockaddr_in a = loop_addr(port);

	for (long i = 0; i < k; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno != ECONNREFUSED)
			die("connect should be refused");
		close(fd);
	}
	return 0;
}

static int inuse(long m)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loop_addr(0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
		die("listen");
	a = loop_addr(bound_port(l));
	for (long i = 0; i < m; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno != EADDRINUSE)
			die("bind should fail with EADDRINUSE");
		close(fd);
	}
	close(l);
	return 0;
}

static int udp(long d, long s, int drop)
{
	static char buf[65536];
	int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = loop_addr(0);

	if (s > (long)sizeof(buf))
		s = sizeof(buf);
	if (rx < 0 || tx < 0 || bind(rx, (struct sockaddr *)&a, sizeof(a)))
		die("udp socket");
	if (drop) {
		int small = 1; /* the kernel rounds up to its minimum */
		setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	a = loop_addr(bound_port(rx));
	long received = 0;
	for (long i = 0; i < d; i++) {
		if (sendto(tx, buf, s, 0, (struct sockaddr *)&a, sizeof(a)) != s)
			die("sendto");
		if (!drop) {
			if (recv(rx, buf, sizeof(buf), 0) != s)
				die("recv");
			received++;
		}
	}
	if (drop)
		while (recv(rx, buf, sizeof(buf), MSG_DONTWAIT) == s)
			received++;
	printf("received=%ld\n", received);
	close(rx);
	close(tx);
	return 0;
}

static int dispatch(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "tcp"))
		return tcp(atol(argv[2]), atol(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "refused"))
		return refused(atol(argv[2]), atoi(argv[3]));
	if (argc >= 3 && !strcmp(argv[1], "inuse"))
		return inuse(atol(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "udp"))
		return udp(atol(argv[2]), atol(argv[3]), 0);
	if (argc >= 4 && !strcmp(argv[1], "udpdrop"))
		return udp(atol(argv[2]), atol(argv[3]), 1);
	fprintf(stderr, "usage: see the comment at the top of net_traffic.c\n");
	return 2;
}

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "serve")) {
		signal(SIGUSR1, on_usr1);
		printf("ready\n");
		for (;;) {
			while (!go)
				pause();
			go = 0;
			pid_t p = fork();
			if (p == 0)
				exit(dispatch(argc - 1, argv + 1));
			int st;
			waitpid(p, &st, 0);
			printf("done %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		}
	}
	return dispatch(argc, argv);
}
