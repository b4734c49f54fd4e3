/* What a 2 MiB page-cache folio costs to build on this machine and what it saves a
 * reader (docs/object-storage.md, "Faults"): the floor of a warm scan over cache
 * files, measured alone in C.
 *
 *   cc -O2 -o /tmp/foliofloor tools/foliofloor.c && /tmp/foliofloor DIR [SETTLE_S]
 *
 * Three measurements, each after SETTLE_S seconds (default 10) in which this process
 * frees nothing and touches nothing, so that memory freed before is as long-free as a
 * cold scan's memory after the page cache was dropped:
 *  1. first touch of 256 MiB of anonymous memory, in 2 MiB huge pages and in 4 KiB
 *     pages (the cost of new memory, whatever holds it);
 *  2. 128 files of one 2 MiB-aligned 2 MiB payload each, written as the object cache
 *     writes them (new file, `pwrite`s, `fdatasync`), once as one 2 MiB `pwrite` (a
 *     2 MiB folio) and once in 1 MiB pieces (1 MiB folios): time per file;
 *  3. right after each set is written, a reader's cost: map each file at a 2 MiB-
 *     aligned address (MADV_HUGEPAGE, as wdb maps cache files), touch its 512 pages
 *     (per-file median), then sum all the mappings (GB/s).
 * DIR gets two subdirectories, removed at the end. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BS (2UL << 20)
#define FILES 128

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return v[n / 2];
}
static char *reserve(size_t len) {
    char *p = mmap(0, len + BS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return (char *)(((uintptr_t)p + BS - 1) & ~(BS - 1));
}

static void first_touch(int huge, unsigned settle) {
    size_t len = 128 * BS;
    char *m = reserve(len);
    if (mprotect(m, len, PROT_READ | PROT_WRITE) || madvise(m, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
        perror("mprotect/madvise");
        exit(1);
    }
    sleep(settle);
    double t = now();
    memset(m, 1, len);
    printf("first touch, anonymous, %s pages: %.2f ms per 2 MiB\n", huge ? "2 MiB" : "4 KiB",
           (now() - t) / 1e3 / 128);
    munmap(m, len);
}

static void files(const char *dir, size_t piece, unsigned settle, char *src) {
    char sub[4096], p[4200];
    snprintf(sub, sizeof sub, "%s/foliofloor-%zu", dir, piece);
    mkdir(sub, 0755);
    double w[FILES], touch[FILES];
    sleep(settle);
    for (int i = 0; i < FILES; i++) {
        snprintf(p, sizeof p, "%s/f%d", sub, i);
        double t = now();
        int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
        for (size_t o = 0; o < BS; o += piece)
            if (pwrite(fd, src + o, piece, o) != (ssize_t)piece) {
                perror("pwrite");
                exit(1);
            }
        if (fd < 0 || fdatasync(fd)) {
            perror(p);
            exit(1);
        }
        close(fd);
        w[i] = now() - t;
    }
    char *area = reserve(FILES * BS);
    volatile char sink = 0;
    for (int i = 0; i < FILES; i++) {
        snprintf(p, sizeof p, "%s/f%d", sub, i);
        int fd = open(p, O_RDONLY);
        double t = now();
        char *m = mmap(area + i * BS, BS, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
        if (m == MAP_FAILED) {
            perror("mmap file");
            exit(1);
        }
        madvise(m, BS, MADV_HUGEPAGE);
        for (size_t o = 0; o < BS; o += 4096)
            sink += m[o];
        touch[i] = now() - t;
        close(fd);
    }
    double t = now();
    const uint64_t *q = (const uint64_t *)area;
    uint64_t s[4] = {0};
    for (size_t k = 0; k < FILES * BS / 8; k += 4)
        for (int j = 0; j < 4; j++)
            s[j] += q[k + j];
    double sum_us = now() - t;
    printf("files written in %zu KiB pwrites: write + fdatasync %.2f ms per file (median); "
           "map + touch %.1f us per file; sum %.1f GB/s (%llu)\n",
           piece >> 10, median(w, FILES) / 1e3, median(touch, FILES),
           FILES * BS / sum_us / 1e3, (unsigned long long)(s[0] + s[1] + s[2] + s[3] + sink));
    munmap(area, FILES * BS);
    for (int i = 0; i < FILES; i++) {
        snprintf(p, sizeof p, "%s/f%d", sub, i);
        unlink(p);
    }
    rmdir(sub);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [SETTLE_S]\n", argv[0]);
        return 2;
    }
    unsigned settle = argc > 2 ? (unsigned)atoi(argv[2]) : 10;
    char *src = mmap(0, BS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < BS; i++)
        src[i] = (char)(i * 7);
    first_touch(1, settle);
    first_touch(0, settle);
    files(argv[1], BS, settle, src);
    files(argv[1], BS / 2, settle, src);
    return 0;
}
