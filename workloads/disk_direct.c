/* Disk ground truth: write exactly W bytes to PATH with O_DIRECT in CHUNK-sized writes, fsync,
 * then read exactly R bytes back with O_DIRECT; LOOPS times. Sizes must be multiples of 4096.
 *
 *   disk_direct PATH W R CHUNK [LOOPS [keep]]
 *
 * With `keep`, PATH is overwritten in place instead of truncated: when it already holds W bytes,
 * no block is allocated or freed, so the filesystem reads no allocation bitmaps and discards
 * nothing on the caller's behalf, and the only reads are the workload's.
 *
 * O_DIRECT bypasses the page cache, so every byte is one block request submitted by this
 * process (no writeback worker in between), which is what the test needs to attribute exactly. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s PATH W R CHUNK [LOOPS]\n", argv[0]);
		return 2;
	}
	const char *path = argv[1];
	long w = atol(argv[2]), r = atol(argv[3]), chunk = atol(argv[4]);
	long loops = argc > 5 ? atol(argv[5]) : 1;
	int trunc = !(argc > 6 && !strcmp(argv[6], "keep")) ? O_TRUNC : 0;
	void *buf;

	if (chunk <= 0 || chunk % 4096 || w % chunk || r % chunk || r > w)
		die("sizes");
	if (posix_memalign(&buf, 4096, chunk))
		die("posix_memalign");
	memset(buf, 0x5a, chunk);
	for (long l = 0; l < loops; l++) {
		int fd = open(path, O_CREAT | trunc | O_WRONLY | O_DIRECT, 0644);

		if (fd < 0)
			die("open for writing");
		for (long done = 0; done < w; done += chunk)
			if (write(fd, buf, chunk) != chunk)
				die("write");
		if (fsync(fd))
			die("fsync");
		close(fd);
		fd = open(path, O_RDONLY | O_DIRECT);
		if (fd < 0)
			die("open for reading");
		for (long done = 0; done < r; done += chunk)
			if (read(fd, buf, chunk) != chunk)
				die("read");
		close(fd);
	}
	printf("done\n");
	return 0;
}
