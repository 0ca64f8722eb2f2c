// Adversarial process, signal and memory-limit cases (tests/adversarial.rs),
// selected by argv[1].
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PHYS_PML4 0xffff888000001000UL

static const char rodata[64] = "read-only data the kernel must not write";

static void sleep_forever(void) {
    for (;;) {
        struct timespec ts = {1000, 0};
        nanosleep(&ts, NULL);
    }
}

static void on_usr1_spin(int sig) {
    (void)sig;
    for (;;) { }
}

#pragma GCC diagnostic ignored "-Winfinite-recursion"
static volatile int rec_sink;
static int rec(int n) {
    volatile char pad[4096];
    pad[0] = (char)n;
    return rec(n + 1) + pad[0];
}

// A thread that points its clear_child_tid at `where` and exits: the
// kernel writes 0 there (and wakes a futex) when the thread ends, but only
// if the program could have written it itself.
static void *set_ctid_and_exit(void *where) {
    syscall(SYS_set_tid_address, where);
    return NULL;
}

static int ctid_case(void *where) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, set_ctid_and_exit, where)) return 2;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return 0;
}

int main(int argc, char **argv) {
    const char *w = argc > 1 ? argv[1] : "";
    if (!strcmp(w, "forkbomb")) {
        // Every process forks for ever; the first one to be refused
        // reports (the original exits, which ends the sandbox).
        pid_t first = getpid();
        int n = 0;
        for (;;) {
            pid_t p = fork();
            if (p < 0) {
                if (getpid() == first) {
                    printf("fork refused after %d: %s\n", n, strerror(errno));
                    return 0;
                }
                sleep_forever();
            }
            if (p > 0) n++;
        }
    }
    if (!strcmp(w, "fork-memory")) {
        // 48 MiB touched, then forks that each need a copy of it: the
        // copies count against the one limit.
        size_t len = 48 << 20;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        memset(p, 1, len);
        for (int n = 0; n < 20; n++) {
            pid_t c = fork();
            if (c < 0) {
                printf("fork refused after %d: %s\n", n, strerror(errno));
                return 0;
            }
            if (c == 0) sleep_forever();
        }
        puts("20 forks allowed");
        return 1;
    }
    if (!strcmp(w, "stack-oom")) {
        // Take all the memory the limit allows, then grow the stack.
        size_t total = 0;
        for (;;) {
            void *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) break;
            memset(p, 1, 1 << 20);
            total += 1 << 20;
        }
        printf("filled %zu MiB\n", total >> 20);
        fflush(stdout);
        rec_sink = rec(0);
        return 0;
    }
    if (!strcmp(w, "spin-signals-blocked")) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_BLOCK, &all, NULL);
        for (int s = 1; s < 32; s++) signal(s, SIG_IGN);
        for (;;) { }
    }
    if (!strcmp(w, "spin-in-handler")) {
        signal(SIGUSR1, on_usr1_spin);
        raise(SIGUSR1);
        return 0;
    }
    if (!strcmp(w, "ctid")) {
        // clear_child_tid at the guest's page tables (through the
        // physmap), at read-only data and at the vDSO's code: none may be
        // written.
        if (ctid_case((void *)PHYS_PML4)) return 2;
        if (ctid_case((void *)rodata)) return 2;
        unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
        if (vdso && ctid_case((void *)(vdso + 0x400))) return 2;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char *m = malloc(8 << 20);
        memset(m, 2, 8 << 20);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("rodata %s, clock %s, memory ok\n",
               strcmp(rodata, "read-only data the kernel must not write") ? "CHANGED" : "intact",
               t1.tv_sec >= t0.tv_sec ? "ok" : "BROKEN");
        return 0;
    }
    if (!strcmp(w, "noop")) return 0;
    if (!strcmp(w, "spawn-loop") && argc > 2) {
        // Processes that live and die in turn (fork and exit; fork, a
        // failing exec, then exec): what they held must come back, or a
        // long-lived sandbox runs out of memory.
        int n = atoi(argv[2]);
        char big[1 << 16];
        memset(big, 1, sizeof big);
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0) {
                printf("fork %d failed: %s\n", i, strerror(errno));
                return 1;
            }
            if (pid == 0) {
                big[i % sizeof big] = 2;
                if (i % 2) {
                    char *args[] = {argv[0], "noop", NULL};
                    execv("/no/such/program", args);
                    execv(argv[0], args);
                    _exit(3);
                }
                _exit(big[i % sizeof big] == 2 ? 0 : 4);
            }
            int st;
            if (waitpid(pid, &st, 0) != pid || st != 0) {
                printf("child %d: status %#x\n", i, st);
                return 1;
            }
        }
        printf("spawned %d\n", n);
        return 0;
    }
    if (!strcmp(w, "huge-timeout") && argc > 2) {
        // A wait on a pipe that never becomes ready, with a timeout whose
        // conversion to milliseconds overflows (1 << 62 s * 1000 wraps to
        // 0): it must wait, not return at once (found by cargo fuzz).
        int p[2];
        if (pipe(p)) return 2;
        const char *how = argv[2];
        long r = -1;
        if (!strcmp(how, "ppoll")) {
            struct pollfd f = {p[0], POLLIN, 0};
            struct timespec ts = {1L << 62, 0};
            r = syscall(SYS_ppoll, &f, 1, &ts, NULL, 8);
        } else if (!strcmp(how, "pselect6")) {
            fd_set s;
            FD_ZERO(&s);
            FD_SET(p[0], &s);
            struct timespec ts = {1L << 62, 0};
            r = syscall(SYS_pselect6, p[0] + 1, &s, NULL, NULL, &ts, NULL);
        } else if (!strcmp(how, "select")) {
            fd_set s;
            FD_ZERO(&s);
            FD_SET(p[0], &s);
            struct timeval tv = {1L << 62, 0};
            r = syscall(SYS_select, p[0] + 1, &s, NULL, NULL, &tv);
        } else if (!strcmp(how, "nanosleep")) {
            struct timespec ts = {0x7fffffffffffffffL, 999999999};
            r = syscall(SYS_nanosleep, &ts, NULL);
        }
        printf("%s returned %ld errno %d\n", how, r, errno);
        return 0;
    }
    fprintf(stderr, "unknown case %s\n", w);
    return 3;
}
