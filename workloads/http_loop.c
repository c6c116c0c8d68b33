/* R HTTP/1.1 exchanges on loopback, each on its own TCP connection, with exact ground truth for
 * the kernel-side tests (one app's connections and requests among several). Built static.
 *
 *   http_loop R   listen on 127.0.0.1:<ephemeral>; R times: connect, send
 *                 "GET /item HTTP/1.1" (no body), the server answers 200 with a 2-byte body,
 *                 the client reads it and closes, the server reads EOF and closes.
 *                 Prints "port=P requests=R".
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/wait.h>

#include "sock.h"

static const char REQ[] = "GET /item HTTP/1.1\r\nHost: loop\r\n\r\n";
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

int main(int argc, char **argv)
{
	long r = argc > 1 ? atol(argv[1]) : 1;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loop_addr(0);
	char buf[256];

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 128))
		die("listen");
	int port = bound_port(l);

	a = loop_addr(port);
	for (long i = 0; i < r; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);

		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
			die("connect");
		int s = accept(l, NULL, NULL);

		if (s < 0)
			die("accept");
		write_all(c, REQ, sizeof(REQ) - 1);
		read_exact(s, buf, sizeof(REQ) - 1);
		write_all(s, RESP, sizeof(RESP) - 1);
		read_exact(c, buf, sizeof(RESP) - 1);
		close(c);
		if (read(s, buf, sizeof(buf)) != 0)
			die("eof");
		close(s);
	}
	close(l);
	printf("port=%d requests=%ld\n", port, r);
	return 0;
}
