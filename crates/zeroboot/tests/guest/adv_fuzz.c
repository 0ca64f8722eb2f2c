// Every system call number (and some that do not exist) with every
// argument set to a hostile value: a kernel-half (physmap) pointer, -1, a
// non-canonical address, an address just below the end of the user half.
// Each call must return (an errno, or success) without harming the
// program; the few calls that end, block or replace the process are
// skipped. Prints the number of calls made and "survived".
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int skipped(long nr) {
    switch (nr) {
    case SYS_rt_sigreturn:
    case SYS_pause:
    case SYS_fork:
    case SYS_vfork:
    case SYS_clone:
    case SYS_clone3:
    case SYS_execve:
    case SYS_execveat:
    case SYS_exit:
    case SYS_exit_group:
    case SYS_kill:
    case SYS_tkill:
    case SYS_tgkill:
    case SYS_rt_sigqueueinfo:
    case SYS_rt_tgsigqueueinfo:
    case SYS_pidfd_send_signal:
    case SYS_rt_sigsuspend:
    // Natively these would drop root or stop the machine; they do not
    // block or kill in the sandbox, but keep the native run harmless too.
    case SYS_setuid:
    case SYS_setgid:
    case SYS_setreuid:
    case SYS_setregid:
    case SYS_setresuid:
    case SYS_setresgid:
    case SYS_setfsuid:
    case SYS_setfsgid:
    case SYS_setgroups:
    case SYS_reboot:
    case SYS_alarm:
    case SYS_setitimer:
    case SYS_timer_create:
        return 1;
    }
    return 0;
}

int main(void) {
    const unsigned long patterns[] = {
        0xffff888000001000UL, // the guest's root page table in the physmap
        ~0UL,
        0x8000000000000000UL, // non-canonical
        0x7ffffffff000UL - 8, // the last bytes below USER_END
    };
    long calls = 0;
    for (unsigned p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        unsigned long x = patterns[p];
        for (long nr = 0; nr < 470; nr++) {
            if (skipped(nr)) continue;
            syscall(nr, x, x, x, x, x, x);
            calls++;
        }
        // Numbers that name no system call: x32 numbers, huge, negative.
        const long bogus[] = {512, 547, 0x40000000L | 39, 1L << 40, -1L, -4096L};
        for (unsigned i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
            long r = syscall(bogus[i], x, x, x, x, x, x);
            if (r != -1 || errno != ENOSYS) {
                printf("syscall %ld returned %ld errno %d, not ENOSYS\n", bogus[i], r, errno);
            }
            calls++;
        }
    }
    // Still alive, and the basics still work.
    char *m = malloc(1 << 20);
    memset(m, 1, 1 << 20);
    printf("%ld calls, survived\n", calls);
    return 0;
}
