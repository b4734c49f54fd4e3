/* The floor of wdb's read-fault cycle on anonymous huge-page slots (docs/performance.md,
 * "Page faults on RAM pages"), measured alone: the same system calls wdb makes per
 * cycle, each timed separately (medians of 3000 cycles), beside a 2 MiB memcpy and a
 * 2 MiB fill, and the round trip of one SIGSEGV whose handler makes one protection
 * change.
 *
 *   cc -O2 -o /tmp/faultfloor tools/faultfloor.c && /tmp/faultfloor
 *
 * Cycle (what `first_read_filled` in benches/virtmem.rs does per iteration, minus the
 * fill): the view faults; the handler write-protects the loaded slot at home and moves
 * it into the view (mremap, one huge-page entry); 512 pages are touched; then the
 * eviction makes the view block PROT_NONE, moves the slot home and makes it writable. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define BS (2UL << 20)
#define N 3000
#define MV (MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static char *reserve(size_t len) {
    char *p = mmap(0, len + BS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return (char *)(((uintptr_t)p + BS - 1) & ~(BS - 1));
}
static char *view, *home, *page4k;
static volatile int which;
static void handler(int s, siginfo_t *i, void *c) {
    (void)s, (void)i, (void)c;
    if (which == 0) {
        mprotect(home, BS, PROT_READ);
        mremap(home, BS, BS, MV, view);
    } else {
        mprotect(page4k, 4096, PROT_READ | PROT_WRITE);
    }
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double t[10][N];

int main(void) {
    home = mmap(reserve(64 * BS), 64 * BS, PROT_READ | PROT_WRITE,
                MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    madvise(home, 64 * BS, MADV_HUGEPAGE);
    madvise(home, 64 * BS, MADV_DONTFORK);
    madvise(home, BS, MADV_POPULATE_WRITE);
    char *vr = reserve(16 * BS);
    madvise(vr, 16 * BS, MADV_DONTFORK);
    view = vr + 4 * BS;
    page4k = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page4k[0] = 1;
    /* memcpy buffers as the Rust bench's likely are: huge pages. */
    char *src = mmap(reserve(2 * BS), 2 * BS, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(src, 2 * BS, MADV_HUGEPAGE);
    char *dst = src + BS;
    memset(src, 3, BS), memset(dst, 1, BS);
    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536};
    sigaltstack(&ss, 0);
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, 0);
    volatile char x = 0;
    for (int i = 0; i < N; i++) {
        double a = now();
        memcpy(dst, src, BS);
        double b = now();
        memset(home, i | 1, BS);
        double c = now();
        which = 0;
        for (size_t o = 0; o < BS; o += 4096) x ^= ((volatile char *)view)[o];
        double d = now();
        mprotect(view, BS, PROT_NONE);
        double e = now();
        mremap(view, BS, BS, MV, home);
        double f = now();
        mprotect(home, BS, PROT_READ | PROT_WRITE);
        double g = now();
        for (size_t o = 0; o < BS; o += 4096) x ^= ((volatile char *)home)[o];
        double h = now();
        mprotect(home, BS, PROT_READ);
        double k = now();
        mremap(home, BS, BS, MV, view);
        double l = now();
        mprotect(view, BS, PROT_NONE);
        mremap(view, BS, BS, MV, home);
        mprotect(home, BS, PROT_READ | PROT_WRITE);
        mprotect(page4k, 4096, PROT_NONE);
        which = 1;
        double m = now();
        ((volatile char *)page4k)[0]++;
        double n = now();
        double row[10] = {b - a, c - b, d - c, e - d, f - e, g - f, h - g, k - h, l - k, n - m};
        for (int j = 0; j < 10; j++) t[j][i] = row[j];
    }
    const char *name[10] = {
        "memcpy 2 MiB", "fill 2 MiB (the load's own work)",
        "read fault: signal, mprotect RO, mremap, touch 512 pages",
        "evict: mprotect view PROT_NONE", "evict: mremap view -> home",
        "evict: mprotect home RW", "touch 512 pages, resident",
        "mprotect home RO (no signal)", "mremap home -> view (no signal)",
        "SIGSEGV round trip + mprotect of a 4 KiB page"};
    double md[10];
    for (int j = 0; j < 10; j++) {
        qsort(t[j], N, sizeof(double), cmp);
        md[j] = t[j][N / 2];
        printf("%-58s %7.2f us\n", name[j], md[j]);
    }
    double cycle = md[2] + md[3] + md[4] + md[5];
    printf("cycle overhead %.2f us = %.3fx memcpy; without 'mprotect home RW' %.2f us = %.3fx\n",
           cycle, cycle / md[0], cycle - md[5], (cycle - md[5]) / md[0]);
    return x == 42;
}
