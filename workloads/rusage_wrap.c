/* rusage_wrap CMD ARGS...: waits for one byte on stdin, runs CMD as its child, waits for it, prints
 * the children's rusage (RUSAGE_CHILDREN: every descendant reaped by its parent, so stress-ng's
 * workers and their children too) as key=value lines, then holds until stdin is closed, so the
 * test can read this process's own switch counts in /proc while it still exists. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char c;
    if (argc < 2 || read(0, &c, 1) != 1)
        return 2;
    pid_t p = fork();
    if (p < 0)
        return 2;
    if (p == 0) {
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int st;
    if (waitpid(p, &st, 0) != p)
        return 2;
    struct rusage ch;
    getrusage(RUSAGE_CHILDREN, &ch);
    printf("nvcsw=%ld\nnivcsw=%ld\nutime_us=%ld\nstime_us=%ld\nstatus=%d\n", ch.ru_nvcsw,
           ch.ru_nivcsw, ch.ru_utime.tv_sec * 1000000L + ch.ru_utime.tv_usec,
           ch.ru_stime.tv_sec * 1000000L + ch.ru_stime.tv_usec,
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
