/* The floor of the first-read cycle of a stored block whose CRC nobody has checked yet
 * (docs/performance.md, "Random reads"), measured alone in C: a file mapped PROT_NONE,
 * 10,000 random 4 KiB reads (as W3 makes them), each read's first touch of its 16 KiB
 * window trapped by SIGSEGV and the window shown read-only by the handler. Medians and
 * p99 of the whole read, per step added, beside the same reads of a plain read-only
 * mapping of the same file.
 *
 *   cc -O2 -o /tmp/windowfloor tools/windowfloor.c -lz && /tmp/windowfloor FILE
 *
 * FILE: any file of at least 2 MiB, in the page cache (`cat FILE >/dev/null` first),
 * e.g. the log of a database that `wdbtool bench --phase ingest` wrote.
 *
 * Steps, each one including those before it:
 *   plain   a read-only shared mapping, no trap (the memmap2 baseline's cycle)
 *   trap    SIGSEGV, mprotect(PROT_READ) of the window, the kernel's own fault
 *   pread   + pread of the window into a buffer (what the check reads)
 *   crc     + zlib's CRC-32 of that buffer (crc32fast, which wdb uses, is faster)
 *
 * The handler does only system calls and the CRC: no allocation, no lock. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define WIN 16384UL
#define N 10000

enum { PLAIN, TRAP, PREAD, CRC };
static const char *names[] = {"plain", "trap", "pread", "crc"};

static char *view;
static int fd, step;
static unsigned char buf[WIN];
static volatile unsigned long sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    char *w = (char *)((uintptr_t)si->si_addr & ~(WIN - 1));
    if (step >= PREAD && pread(fd, buf, WIN, w - view) != (ssize_t)WIN)
        _exit(3);
    if (step >= CRC)
        sink += crc32(0, buf, WIN);
    if (mprotect(w, WIN, PROT_READ) != 0)
        _exit(4);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run(size_t len) {
    view = mmap(0, len, step == PLAIN ? PROT_READ : PROT_NONE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    static double t[N];
    unsigned long s = 0;
    srand(42);
    for (int i = 0; i < N; i++) {
        size_t p = ((size_t)rand() * 4096) % len;
        double t0 = now();
        for (size_t j = 0; j < 4096; j += 64)
            s += (unsigned char)view[p + j];
        t[i] = now() - t0;
    }
    sink += s;
    qsort(t, N, sizeof t[0], cmp);
    printf("%-6s median %6.2f us   p99 %7.2f us\n", names[step], t[N / 2], t[N * 99 / 100]);
    munmap(view, len);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    size_t len = (size_t)lseek(fd, 0, SEEK_END) & ~((2UL << 20) - 1);
    if (len == 0) {
        fprintf(stderr, "%s: shorter than 2 MiB\n", argv[1]);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    for (int round = 0; round < 2; round++)
        for (step = PLAIN; step <= CRC; step++)
            run(len);
    return 0;
}
