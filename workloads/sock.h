/* Socket helpers shared by the network test workloads (header-only: each workload is built from
 * its one .c file). */
#ifndef WORKLOAD_SOCK_H
#define WORKLOAD_SOCK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void die(const char *what)
{
	perror(what);
	exit(100);
}

static inline struct sockaddr_in loop_addr(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static inline int bound_port(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l))
		die("getsockname");
	return ntohs(a.sin_port);
}

/* In 64 KiB pieces; any short read or write that moves nothing ends the workload. */
static inline void write_all(int fd, const char *buf, long n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n > 65536 ? 65536 : n);

		if (w <= 0)
			die("write");
		n -= w;
	}
}

static inline void read_exact(int fd, char *buf, long n)
{
	while (n > 0) {
		ssize_t r = read(fd, buf, n > 65536 ? 65536 : n);

		if (r <= 0)
			die("read");
		n -= r;
	}
}

#endif
