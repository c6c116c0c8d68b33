/* Workload for the net family's DNS, capture and event tests. Built static; loopback only.
 *
 *   net_dns query IP TYPE:NAME...     one UDP DNS query per argument (TYPE = A, AAAA, MX, TXT…)
 *                                     to IP:53 (a 127/8 address), each from a new socket (new port),
 *                                     waiting up to 1 s for its answer. Prints "answered=N" and
 *                                     "rcode_<R>=N" lines. "tcp/TYPE:NAME" asks over TCP (one
 *                                     connection, length-prefixed message in one write).
 *   net_dns udpsend PORT N S GOFILE   wait until GOFILE exists, then send N datagrams of S bytes
 *                                     to 127.0.0.1:PORT from one socket, 2 ms apart.
 *   net_dns udpecho PORT              bind 0.0.0.0:PORT, print "ready", send every datagram back
 *                                     to its sender, forever (a container's PID 1).
 *   net_dns conns C N                 C TCP connections on loopback, client and server in this
 *                                     process tree: the client sends N bytes, the server reads
 *                                     them and sends N/2 back, both close. Prints "port=P" and
 *                                     "client_ports=p1,p2,…".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sock.h"

static int qtype_of(const char *t, int n)
{
	static const struct {
		const char *name;
		int v;
	} types[] = { { "A", 1 },   { "AAAA", 28 }, { "CNAME", 5 }, { "MX", 15 }, { "TXT", 16 },
		      { "PTR", 12 }, { "SRV", 33 }, { "NS", 2 },     { "SOA", 6 }, { "ANY", 255 } };

	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if ((int)strlen(types[i].name) == n && !strncmp(types[i].name, t, n))
			return types[i].v;
	return atoi(t);
}

static int query(const char *ip, const char *spec, unsigned short id, int *rcode)
{
	int tcp = !strncmp(spec, "tcp/", 4);

	if (tcp)
		spec += 4;
	const char *colon = strchr(spec, ':');
	unsigned char q[512], r[512];
	int n = 12;

	if (!colon)
		die("spec TYPE:NAME");
	memset(q, 0, sizeof(q));
	q[0] = id >> 8;
	q[1] = id & 0xff;
	q[2] = 0x01; /* RD */
	q[5] = 1;    /* one question */
	for (const char *p = colon + 1; *p;) {
		const char *dot = strchr(p, '.');
		int l = dot ? dot - p : (int)strlen(p);

		q[n++] = l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot ? 1 : 0);
	}
	q[n++] = 0;
	int t = qtype_of(spec, colon - spec);

	q[n++] = t >> 8;
	q[n++] = t & 0xff;
	q[n++] = 0;
	q[n++] = 1; /* IN */

	int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	struct sockaddr_in a = loop_addr(53);
	struct timeval tv = { .tv_sec = 1 };

	if (fd < 0)
		die("socket");
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die("address");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t got;

	if (tcp) {
		unsigned char m[514];

		m[0] = n >> 8;
		m[1] = n & 0xff;
		memcpy(m + 2, q, n);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) || write(fd, m, n + 2) != n + 2)
			die("dns over tcp");
		got = 0;
		while (got < 14) {
			ssize_t k = read(fd, r + got, sizeof(r) - got);

			if (k <= 0)
				break;
			got += k;
		}
		got -= 2;
		memmove(r, r + 2, got > 0 ? got : 0);
	} else {
		if (sendto(fd, q, n, 0, (struct sockaddr *)&a, sizeof(a)) != n)
			die("sendto");
		got = recv(fd, r, sizeof(r), 0);
	}
	close(fd);
	if (got < 12)
		return 0;
	*rcode = r[3] & 0xf;
	return 1;
}

static int cmd_query(const char *ip, int n, char **specs)
{
	int answered = 0, rcodes[16] = { 0 };

	for (int i = 0; i < n; i++) {
		int rc = 0;

		if (query(ip, specs[i], 0x1000 + i, &rc)) {
			answered++;
			rcodes[rc & 15]++;
		}
	}
	printf("answered=%d\n", answered);
	for (int i = 0; i < 16; i++)
		if (rcodes[i])
			printf("rcode_%d=%d\n", i, rcodes[i]);
	return 0;
}

static int cmd_udpsend(int port, int n, int size, const char *go)
{
	struct stat st;
	char buf[65536];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = loop_addr(port);

	if (fd < 0)
		die("socket");
	for (int i = 0; stat(go, &st) != 0; i++) {
		if (i > 3000)
			die("waiting for the go file");
		usleep(10000);
	}
	memset(buf, 'p', sizeof(buf));
	for (int i = 0; i < n; i++) {
		if (sendto(fd, buf, size, 0, (struct sockaddr *)&a, sizeof(a)) != size)
			die("sendto");
		usleep(2000);
	}
	printf("sent=%d\n", n);
	fflush(stdout);
	/* stay in the target while the capture ends */
	sleep(3);
	return 0;
}

static int cmd_conns(int c, long n)
{
	static char buf[65536];
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loop_addr(0);
	socklen_t al = sizeof(a);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 128))
		die("listen");
	getsockname(l, (struct sockaddr *)&a, &al);
	int port = ntohs(a.sin_port);

	printf("port=%d\nclient_ports=", port);
	fflush(stdout);
	pid_t srv = fork();

	if (srv == 0) {
		for (int i = 0; i < c; i++) {
			int s = accept(l, NULL, NULL);
			char e;

			if (s < 0)
				die("accept");
			read_exact(s, buf, n);
			write_all(s, buf, n / 2);
			/* wait for the client's close, so the client closes first */
			if (read(s, &e, 1) != 0)
				die("expected EOF");
			close(s);
		}
		_exit(0);
	}
	close(l);
	memset(buf, 'c', sizeof(buf));
	for (int i = 0; i < c; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in ca = loop_addr(port), me;
		socklen_t ml = sizeof(me);

		if (connect(s, (struct sockaddr *)&ca, sizeof(ca)))
			die("connect");
		getsockname(s, (struct sockaddr *)&me, &ml);
		printf("%s%d", i ? "," : "", ntohs(me.sin_port));
		write_all(s, buf, n);
		read_exact(s, buf, n / 2);
		close(s);
	}
	printf("\n");
	int status;

	waitpid(srv, &status, 0);
	/* let the sidecar's event reader publish the last closes before `run` ends */
	usleep(1500000);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int cmd_udpecho(int port)
{
	char buf[65536];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	printf("ready\n");
	fflush(stdout);
	for (int running = 1; running;) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);

		if (n >= 0)
			sendto(fd, buf, n, 0, (struct sockaddr *)&from, fl);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "udpecho"))
		return cmd_udpecho(atoi(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "query"))
		return cmd_query(argv[2], argc - 3, argv + 3);
	if (argc >= 6 && !strcmp(argv[1], "udpsend"))
		return cmd_udpsend(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argv[5]);
	if (argc >= 4 && !strcmp(argv[1], "conns"))
		return cmd_conns(atoi(argv[2]), atol(argv[3]));
	fprintf(stderr, "usage: see the comment at the top of net_dns.c\n");
	return 2;
}
