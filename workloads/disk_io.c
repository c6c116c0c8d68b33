/* Disk/files benchmark workloads; each prints its own timing (no start-up included).
 *   disk_io seq PATH MIB     O_DIRECT sequential write of MIB MiB (1 MiB writes) + fsync, then
 *                            O_DIRECT read of it; prints "write_MiBps read_MiBps"
 *   disk_io small PATH N     N buffered 512-byte preads cycling over a 1 MiB cached file;
 *                            prints ns per read */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1L << 20)

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s seq PATH MIB | small PATH N\n", argv[0]);
		return 2;
	}
	const char *path = argv[2];
	long n = atol(argv[3]);
	void *buf;

	if (posix_memalign(&buf, 4096, MIB))
		die("posix_memalign");
	memset(buf, 0x5a, MIB);
	if (!strcmp(argv[1], "seq")) {
		int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644);

		if (fd < 0)
			die("open");
		double t0 = now();

		for (long i = 0; i < n; i++)
			if (write(fd, buf, MIB) != MIB)
				die("write");
		if (fsync(fd))
			die("fsync");
		double t1 = now();

		close(fd);
		fd = open(path, O_RDONLY | O_DIRECT);
		if (fd < 0)
			die("open");
		double t2 = now();

		for (long i = 0; i < n; i++)
			if (read(fd, buf, MIB) != MIB)
				die("read");
		double t3 = now();

		close(fd);
		printf("%.1f %.1f\n", n / (t1 - t0), n / (t3 - t2));
		return 0;
	}
	int fd = open(path, O_CREAT | O_RDWR, 0644);

	if (fd < 0)
		die("open");
	if (pwrite(fd, buf, MIB, 0) != MIB)
		die("pwrite");
	for (long i = 0; i < 2048; i++) /* warm */
		if (pread(fd, buf, 512, (i * 512) % MIB) != 512)
			die("pread");
	double t0 = now();

	for (long i = 0; i < n; i++)
		if (pread(fd, buf, 512, (i * 512) % MIB) != 512)
			die("pread");
	printf("%.1f\n", (now() - t0) * 1e9 / n);
	close(fd);
	return 0;
}
