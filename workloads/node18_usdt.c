/* Stand-in for a Node.js <= 18 built with --with-dtrace: provider `node`, the probe names and
 * argument layouts of Node 18's src/node_dtrace.cc, with semaphores (`*_ENABLED()` guards).
 * Usage: node18_usdt GETS POSTS GCS [CLIENT_GETS] — fires http__server__request GETS times with
 * method "GET" (url /api/v1/items/<i>), POSTS times with "POST" (url /items), each answered by
 * http__server__response on its fd 2 ms later; CLIENT_GETS http__client__request GET
 * /upstream/<i>, each answered by http__client__response 1 ms later; and GCS gc__start/gc__done
 * pairs (type 2, mark-sweep-compact) 1 ms apart; then exits. Built with <sys/sdt.h> from
 * systemtap-sdt-dev. */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SEMA(name) \
	__extension__ unsigned short node_##name##_semaphore __attribute__((unused)) \
		__attribute__((section(".probes")))
SEMA(http__server__request);
SEMA(http__server__response);
SEMA(http__client__request);
SEMA(http__client__response);
SEMA(gc__start);
SEMA(gc__done);

typedef struct { const char *url; const char *method; } node_dtrace_http_server_request_t;
typedef struct { const char *url; const char *method; } node_dtrace_http_client_request_t;
typedef struct { int fd; const char *remote; int port; int buffered; } node_dtrace_connection_t;

static void sleep_ms(long ms)
{
	struct timespec t = { 0, ms * 1000000 };

	nanosleep(&t, NULL);
}

static void request(const char *method, const char *url)
{
	node_dtrace_http_server_request_t req = { url, method };
	node_dtrace_connection_t conn = { 7, "127.0.0.1", 40000, 0 };

	if (node_http__server__request_semaphore)
		STAP_PROBE7(node, http__server__request, &req, &conn, conn.remote, conn.port,
			    req.method, req.url, conn.fd);
	sleep_ms(2);
	if (node_http__server__response_semaphore)
		STAP_PROBE4(node, http__server__response, &conn, conn.remote, conn.port, conn.fd);
}

static void client_request(const char *method, const char *url)
{
	node_dtrace_http_client_request_t req = { url, method };
	node_dtrace_connection_t conn = { 9, "127.0.0.1", 8080, 0 };

	if (node_http__client__request_semaphore)
		STAP_PROBE7(node, http__client__request, &req, &conn, conn.remote, conn.port,
			    req.method, req.url, conn.fd);
	sleep_ms(1);
	if (node_http__client__response_semaphore)
		STAP_PROBE4(node, http__client__response, &conn, conn.remote, conn.port, conn.fd);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s GETS POSTS GCS [CLIENT_GETS]\n", argv[0]);
		return 2;
	}
	int gets = atoi(argv[1]), posts = atoi(argv[2]), gcs = atoi(argv[3]);
	int client_gets = argc > 4 ? atoi(argv[4]) : 0;
	char url[32];

	for (int i = 0; i < gets; i++) {
		snprintf(url, sizeof(url), "/api/v1/items/%d", i + 1);
		request("GET", url);
	}
	for (int i = 0; i < posts; i++)
		request("POST", "/items");
	for (int i = 0; i < client_gets; i++) {
		snprintf(url, sizeof(url), "/upstream/%d?x=1", i + 1);
		client_request("GET", url);
	}
	for (int i = 0; i < gcs; i++) {
		int type = 4, flags = 0; /* kGCTypeMarkSweepCompact */
		void *isolate = &type;

		if (node_gc__start_semaphore)
			STAP_PROBE3(node, gc__start, type, flags, isolate);
		sleep_ms(1);
		if (node_gc__done_semaphore)
			STAP_PROBE3(node, gc__done, type, flags, isolate);
	}
	return 0;
}
