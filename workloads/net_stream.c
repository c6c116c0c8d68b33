/* Loopback TCP load for the net family's benchmark. Built static.
 *
 *   net_stream stream MB     one connection, the parent sends MB MiB to a child that reads it
 *                            all; prints MiB/s.
 *   net_stream conns N       N short connections, one after another: connect, send 64 bytes,
 *                            read the 64-byte reply, close (an HTTP/1.0-style request);
 *                            prints connections/s.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int listener(struct sockaddr_in *a)
{
	socklen_t l = sizeof(*a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(*a)) || listen(fd, 512) ||
	    getsockname(fd, (struct sockaddr *)a, &l)) {
		perror("listen");
		exit(1);
	}
	return fd;
}

static int dial(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)a, sizeof(*a))) {
		perror("connect");
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a;

	if (argc < 3)
		return 2;
	long n = atol(argv[2]);
	int l = listener(&a);
	pid_t child = fork();

	if (child == 0) {
		if (!strcmp(argv[1], "stream")) {
			int s = accept(l, NULL, NULL);
			while (read(s, buf, sizeof(buf)) > 0)
				;
			_exit(0);
		}
		for (long i = 0; i < n; i++) {
			int s = accept(l, NULL, NULL);
			if (read(s, buf, 64) != 64 || write(s, buf, 64) != 64)
				_exit(1);
			close(s);
		}
		_exit(0);
	}
	close(l);
	double t0 = now();
	if (!strcmp(argv[1], "stream")) {
		int s = dial(&a);
		long total = n << 20;
		while (total > 0) {
			ssize_t w = write(s, buf, total > (long)sizeof(buf) ? (long)sizeof(buf) : total);
			if (w <= 0)
				return 1;
			total -= w;
		}
		close(s);
		waitpid(child, NULL, 0);
		printf("%.1f\n", n / (now() - t0));
	} else {
		for (long i = 0; i < n; i++) {
			int s = dial(&a);
			if (write(s, buf, 64) != 64 || read(s, buf, 64) != 64)
				return 1;
			close(s);
		}
		waitpid(child, NULL, 0);
		printf("%.0f\n", n / (now() - t0));
	}
	return 0;
}
