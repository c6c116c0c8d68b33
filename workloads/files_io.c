/* Files ground truth, all in DIR (which must exist):
 *   - NFILES files f00..f(NFILES-1); file i gets size(i) = (NFILES - i) * 1000 + i bytes in
 *     buffered writes of at most 1000 bytes, then is read back whole in 4096-byte reads;
 *   - K opens of DIR/missing (ENOENT);
 *   - N fsyncs of f00 (needs NFILES > 0 when N > 0);
 *   - a file "pc" of PAGES pages is written, fsynced, dropped from the page cache
 *     (POSIX_FADV_DONTNEED) and read back: PAGES page cache misses from the read.
 *
 *   files_io DIR NFILES K N PAGES */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[1 << 16];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void path_of(char *out, size_t n, const char *dir, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

static void read_all(int fd)
{
	ssize_t got;

	while ((got = read(fd, buf, 4096)) > 0)
		;
	if (got < 0)
		die("read");
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s DIR NFILES K N PAGES\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	int nfiles = atoi(argv[2]), k = atoi(argv[3]), n = atoi(argv[4]), pages = atoi(argv[5]);
	char p[4096], name[32];

	memset(buf, 'x', sizeof(buf));
	for (int i = 0; i < nfiles; i++) {
		long size = (long)(nfiles - i) * 1000 + i;

		snprintf(name, sizeof(name), "f%02d", i);
		path_of(p, sizeof(p), dir, name);
		int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);

		if (fd < 0)
			die("open for writing");
		for (long done = 0; done < size;) {
			long c = size - done < 1000 ? size - done : 1000;

			if (write(fd, buf, c) != c)
				die("write");
			done += c;
		}
		close(fd);
		fd = open(p, O_RDONLY);
		if (fd < 0)
			die("open for reading");
		read_all(fd);
		close(fd);
	}

	path_of(p, sizeof(p), dir, "missing");
	for (int i = 0; i < k; i++)
		if (open(p, O_RDONLY) >= 0)
			die("the missing file exists");

	int fd;

	if (n > 0) {
		path_of(p, sizeof(p), dir, "f00");
		fd = open(p, O_WRONLY);
		if (fd < 0)
			die("open f00");
		for (int i = 0; i < n; i++)
			if (fsync(fd))
				die("fsync");
		close(fd);
	}
	if (pages <= 0)
		goto out;

	path_of(p, sizeof(p), dir, "pc");
	fd = open(p, O_CREAT | O_TRUNC | O_RDWR, 0644);
	if (fd < 0)
		die("open pc");
	for (int i = 0; i < pages; i++)
		if (write(fd, buf, 4096) != 4096)
			die("write pc");
	if (fsync(fd) || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
		die("drop pc");
	if (lseek(fd, 0, SEEK_SET) != 0)
		die("lseek");
	read_all(fd);
	close(fd);
out:
	printf("done\n");
	return 0;
}
