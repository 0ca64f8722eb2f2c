// Misbehaviours selected by argv[1]: null, spin, alloc, enosys, divzero, ud,
// abort, segv-handler.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile int zero = 0;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    printf("handler: signal %d at %p\n", sig, si->si_addr);
    fflush(stdout);
    _exit(42);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "null")) {
        volatile int *p = NULL;
        return *p;
    }
    if (!strcmp(what, "spin")) {
        for (;;) { }
    }
    if (!strcmp(what, "alloc")) {
        size_t total = 0;
        for (;;) {
            void *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                printf("mmap failed after %zu MiB: %s\n", total >> 20, strerror(errno));
                return errno == ENOMEM ? 0 : 1;
            }
            memset(p, 1, 1 << 20);
            total += 1 << 20;
        }
    }
    if (!strcmp(what, "enosys")) {
        long r = syscall(SYS_io_uring_setup, 8, NULL);
        printf("io_uring_setup: %ld %s\n", r, strerror(errno));
        return errno == ENOSYS ? 0 : 1;
    }
    if (!strcmp(what, "divzero")) {
        int d = zero, q;
        __asm__ volatile("cltd; idivl %2" : "=a"(q) : "a"(100), "r"(d) : "edx");
        return q;
    }
    if (!strcmp(what, "ud")) __builtin_trap();
    if (!strcmp(what, "abort")) abort();
    if (!strcmp(what, "segv-handler")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        volatile int *p = (int *)0x1234;
        return *p;
    }
    if (!strcmp(what, "raise")) {
        signal(SIGUSR1, SIG_IGN);
        raise(SIGUSR1);
        puts("ignored SIGUSR1");
        return 0;
    }
    fprintf(stderr, "unknown case %s\n", what);
    return 3;
}
