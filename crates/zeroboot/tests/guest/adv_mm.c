// Adversarial memory-management probes (tests/adversarial.rs).
//
// `adv_mm probe` tries to reach the kernel half, the guest-physical
// structures and the page tables through every memory syscall, with
// addresses at and above the end of the user half, huge lengths and
// pointers the kernel must refuse. Each line is "name: result" where the
// result is an errno name, "ok", or "SEGV" (a fault caught by a handler).
// The same program run natively on Linux prints the same lines: the test
// compares the two.
//
// `adv_mm CASE` runs one case that ends the program (most with SIGSEGV, as
// on Linux); the test compares the exit status with a native run.
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/uio.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002

#define PG 4096UL
// The end of the user half (Linux's TASK_SIZE_MAX with 4-level paging).
#define USER_END 0x7ffffffff000UL
// Where zeroboot maps all guest-physical memory for ring 0, and the page
// of its root page table there.
#define PHYSMAP 0xffff888000000000UL
#define PHYS_PML4 (PHYSMAP + 0x1000)
// The legacy vsyscall page and a non-canonical address.
#define VSYSCALL 0xffffffffff600000UL
#define NONCANON 0x8000000000000000UL

static const char rodata[] = "read-only data";

static sigjmp_buf env;
static void on_fault(int sig) {
    siglongjmp(env, sig);
}

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

// A raw syscall's result: "ok" or the errno's name.
static const char *res(long r) {
    if (r == -1) return errname(errno);
    return "ok";
}

#define SAY(name, what) printf("%s: %s\n", name, what)

static void *mapat(unsigned long addr, unsigned long len, int prot, int flags) {
    return (void *)syscall(SYS_mmap, addr, len, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static const char *mapres(void *p) {
    return p == MAP_FAILED ? errname(errno) : "ok";
}

typedef int (*fn_t)(void);
static const unsigned char ret42[] = {0xb8, 42, 0, 0, 0, 0xc3}; // mov $42,%eax; ret

// "ok" if calling code at p returns 42, "SEGV" if it faults.
static const char *try_call(void *p) {
    int sig = sigsetjmp(env, 1);
    if (sig) return sig == SIGSEGV ? "SEGV" : "other signal";
    int r = ((fn_t)p)();
    return r == 42 ? "ok" : "wrong result";
}

static const char *try_write(volatile char *p) {
    int sig = sigsetjmp(env, 1);
    if (sig) return sig == SIGSEGV ? "SEGV" : "other signal";
    *p = *p;
    return "ok";
}

static const char *try_read(volatile char *p) {
    int sig = sigsetjmp(env, 1);
    if (sig) return sig == SIGSEGV ? "SEGV" : "other signal";
    (void)*p;
    return "ok";
}

static unsigned long find_map(const char *tag) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long start = 0, end;
    while (f && fgets(line, sizeof line, f)) {
        if (strstr(line, tag) && sscanf(line, "%lx-%lx", &start, &end) == 2) break;
        start = 0;
    }
    if (f) fclose(f);
    return start;
}

static volatile unsigned long iopl_seen;
static void on_usr1_iopl(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    // Ask for IOPL 3 (and NT, AC) on the way back: the kernel must strip IOPL.
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_EFL] |= 0x3000;
}

static int dummy_code(int x) {
    return x * 3 + 1;
}

static void probe(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    // mmap at and above the end of the user half, the guest's physmap,
    // the vsyscall page, and ranges that wrap.
    SAY("mmap fixed at USER_END", mapres(mapat(USER_END, PG, PROT_READ | PROT_WRITE, MAP_FIXED)));
    SAY("mmap fixed across USER_END", mapres(mapat(USER_END - PG, 2 * PG, PROT_READ | PROT_WRITE, MAP_FIXED)));
    SAY("mmap fixed at 1<<47", mapres(mapat(1UL << 47, PG, PROT_READ | PROT_WRITE, MAP_FIXED)));
    SAY("mmap fixed at the physmap", mapres(mapat(PHYS_PML4, PG, PROT_READ | PROT_WRITE, MAP_FIXED)));
    SAY("mmap fixed at the vsyscall page", mapres(mapat(VSYSCALL, PG, PROT_READ | PROT_EXEC, MAP_FIXED)));
    SAY("mmap fixed non-canonical", mapres(mapat(NONCANON, PG, PROT_READ, MAP_FIXED)));
    SAY("mmap fixed wrapping", mapres(mapat(USER_END - PG, -(8 * PG), PROT_READ, MAP_FIXED)));
    {
        void *p = mapat(PHYS_PML4, PG, PROT_READ | PROT_WRITE, 0);
        SAY("mmap with a kernel hint lands in the user half",
            p != MAP_FAILED && (unsigned long)p < USER_END ? "ok" : "no");
    }
    SAY("mmap 128 TiB", mapres(mapat(0, 1UL << 47, PROT_NONE, MAP_NORESERVE)));
    SAY("mmap -4096 bytes", mapres(mapat(0, -PG, PROT_NONE, MAP_NORESERVE)));
    SAY("mmap length 0", mapres(mapat(0, 0, PROT_READ, 0)));
    SAY("mmap unaligned fixed", mapres(mapat(0x10000001UL, PG, PROT_READ, MAP_FIXED)));
    {
        // A low address that names the guest's page tables if read as a
        // guest-physical address: a fresh mapping there is just zeros.
        char *p = mapat(0x10000, 16 * PG, PROT_READ | PROT_WRITE, MAP_FIXED_NOREPLACE);
        int zeros = p != MAP_FAILED;
        for (unsigned long i = 0; zeros && i < 16 * PG; i++) zeros = p[i] == 0;
        SAY("mmap at 0x10000 reads zeros", zeros ? "ok" : "no");
        if (p != MAP_FAILED) munmap(p, 16 * PG);
    }

    // munmap/mprotect/mremap/madvise of kernel and out-of-range addresses.
    SAY("munmap 1<<47", res(syscall(SYS_munmap, 1UL << 47, PG)));
    SAY("munmap the physmap", res(syscall(SYS_munmap, PHYS_PML4, PG)));
    SAY("munmap the vsyscall page", res(syscall(SYS_munmap, VSYSCALL, PG)));
    SAY("munmap -4096 bytes", res(syscall(SYS_munmap, 0x10000UL, -PG)));
    SAY("munmap unaligned", res(syscall(SYS_munmap, 0x10001UL, PG)));
    SAY("munmap length 0", res(syscall(SYS_munmap, 0x10000UL, 0)));
    SAY("mprotect the physmap rwx", res(syscall(SYS_mprotect, PHYS_PML4, PG, PROT_READ | PROT_WRITE | PROT_EXEC)));
    SAY("mprotect USER_END", res(syscall(SYS_mprotect, USER_END, PG, PROT_READ)));
    SAY("mprotect non-canonical", res(syscall(SYS_mprotect, NONCANON, PG, PROT_READ)));
    SAY("mprotect unaligned", res(syscall(SYS_mprotect, 0x10001UL, PG, PROT_READ)));
    SAY("mprotect wrapping", res(syscall(SYS_mprotect, 0x10000UL, -PG, PROT_READ)));
    char *a = mapat(0, 4 * PG, PROT_READ | PROT_WRITE, 0);
    SAY("mprotect with unknown bits", res(syscall(SYS_mprotect, a, PG, 0x80 | PROT_READ)));
    SAY("mremap into the physmap", mapres((void *)syscall(SYS_mremap, a, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, PHYS_PML4)));
    SAY("mremap to USER_END", mapres((void *)syscall(SYS_mremap, a, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, USER_END)));
    SAY("mremap onto itself", mapres((void *)syscall(SYS_mremap, a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + PG)));
    SAY("mremap to 128 TiB", mapres((void *)syscall(SYS_mremap, a, PG, 1UL << 47, MREMAP_MAYMOVE)));
    // Growing in place by a length that wraps the address space (found by
    // the syscall fuzzer: a VMM panic).
    SAY("mremap growing by a wrapping length",
        mapres((void *)syscall(SYS_mremap, a + 3 * PG, PG, PG - (unsigned long)(a + 3 * PG), 0)));
    SAY("mremap moving by a wrapping length",
        mapres((void *)syscall(SYS_mremap, a + 3 * PG, PG, PG - (unsigned long)(a + 3 * PG), MREMAP_MAYMOVE)));
    SAY("mremap of the physmap", mapres((void *)syscall(SYS_mremap, PHYS_PML4, PG, 2 * PG, MREMAP_MAYMOVE)));
    SAY("madvise the physmap", res(syscall(SYS_madvise, PHYS_PML4, PG, MADV_DONTNEED)));
    SAY("madvise USER_END", res(syscall(SYS_madvise, USER_END, PG, MADV_DONTNEED)));
    SAY("madvise wrapping", res(syscall(SYS_madvise, a, -PG, MADV_DONTNEED)));
    {
        // MADV_DONTNEED on our own code: the next call re-reads the file.
        unsigned long code = (unsigned long)dummy_code & ~(PG - 1);
        long r = syscall(SYS_madvise, code, PG, MADV_DONTNEED);
        int (*volatile f)(int) = dummy_code;
        SAY("madvise DONTNEED on code", res(r));
        SAY("the code still runs", f(4) == 13 ? "ok" : "no");
    }

    // brk to huge, kernel, negative and low values: refused (brk stays).
    {
        unsigned long b0 = syscall(SYS_brk, 0);
        SAY("brk 1<<47", syscall(SYS_brk, 1UL << 47) == (long)b0 ? "unchanged" : "moved");
        SAY("brk the physmap", syscall(SYS_brk, PHYS_PML4) == (long)b0 ? "unchanged" : "moved");
        SAY("brk -1", syscall(SYS_brk, -1L) == (long)b0 ? "unchanged" : "moved");
        SAY("brk below its start", syscall(SYS_brk, b0 - (1UL << 30)) == (long)b0 ? "unchanged" : "moved");
        long up = syscall(SYS_brk, b0 + 8 * PG);
        SAY("brk up 8 pages", up == (long)(b0 + 8 * PG) ? "ok" : "refused");
        SAY("brk memory is writable", try_write((char *)b0 + 7 * PG));
        SAY("brk back", syscall(SYS_brk, b0) == (long)b0 ? "ok" : "refused");
        SAY("the released brk page faults", try_read((char *)b0 + 7 * PG));
    }

    // System calls given kernel (physmap) pointers: EFAULT, never a read
    // or write of the guest's page tables.
    {
        int fd = open("/proc/self/maps", O_RDONLY);
        SAY("read into the physmap", res(syscall(SYS_read, fd, PHYS_PML4, 16)));
        close(fd);
        SAY("write from the physmap", res(syscall(SYS_write, 1, PHYS_PML4, 16)));
        SAY("write from a non-canonical address", res(syscall(SYS_write, 1, NONCANON, 16)));
        SAY("uname into the physmap", res(syscall(SYS_uname, PHYS_PML4)));
        SAY("clock_gettime into the physmap", res(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, PHYS_PML4)));
        SAY("getrandom into the physmap", res(syscall(SYS_getrandom, PHYS_PML4, 16, 0)));
        SAY("fstat into the physmap", res(syscall(SYS_fstat, 1, PHYS_PML4)));
        SAY("pipe into the physmap", res(syscall(SYS_pipe, PHYS_PML4)));
        SAY("open a physmap path", res(syscall(SYS_open, PHYS_PML4, O_RDONLY)));
        SAY("getcwd into the physmap", res(syscall(SYS_getcwd, PHYS_PML4, 64)));
        SAY("nanosleep from the physmap", res(syscall(SYS_nanosleep, PHYS_PML4, 0)));
        SAY("futex on the physmap", res(syscall(SYS_futex, PHYS_PML4, 0 /* FUTEX_WAIT */, 0, 0, 0, 0)));
        SAY("rt_sigaction into the physmap", res(syscall(SYS_rt_sigaction, SIGUSR2, 0, PHYS_PML4, 8)));
        SAY("arch_prctl SET_FS non-canonical", res(syscall(SYS_arch_prctl, ARCH_SET_FS, NONCANON)));
        SAY("arch_prctl SET_FS the physmap", res(syscall(SYS_arch_prctl, ARCH_SET_FS, PHYSMAP)));
        SAY("arch_prctl SET_GS the physmap", res(syscall(SYS_arch_prctl, ARCH_SET_GS, PHYSMAP)));
        SAY("arch_prctl GET_FS into the physmap", res(syscall(SYS_arch_prctl, 0x1003, PHYS_PML4)));
    }
    // Pointers to our own read-only and inaccessible memory.
    {
        int fd = open("/proc/self/maps", O_RDONLY);
        SAY("read into read-only data", res(syscall(SYS_read, fd, rodata, 4)));
        SAY("read into our code", res(syscall(SYS_read, fd, (void *)dummy_code, 4)));
        SAY("the code is intact", dummy_code(4) == 13 ? "ok" : "no");
        close(fd);
        char *none = mapat(0, PG, PROT_NONE, 0);
        SAY("write from a PROT_NONE page", res(syscall(SYS_write, 1, none, 16)));
        SAY("uname into read-only data", res(syscall(SYS_uname, rodata)));
        SAY("the read-only data is intact", strcmp(rodata, "read-only data") == 0 ? "ok" : "no");
    }
    // Huge lengths with a small valid buffer (the kernel must not trust
    // the length: at most what is mapped, or EFAULT).
    {
        char *buf = mapat(0, 2 * PG, PROT_READ | PROT_WRITE, 0);
        munmap(buf + PG, PG);
        memset(buf, 'z', PG);
        char big[64];
        snprintf(big, sizeof big, "/tmp/adv_mm_big.%d", (int)getpid());
        int fd = open(big, O_RDWR | O_CREAT | O_TRUNC, 0600);
        long w = syscall(SYS_write, fd, buf, 1UL << 46);
        SAY("write 64 TiB from one page", w == (long)PG || (w == -1 && errno == EFAULT) ? "page or EFAULT" : "other");
        lseek(fd, 0, SEEK_SET);
        if (w != (long)PG) write(fd, buf, PG);
        lseek(fd, 0, SEEK_SET);
        long r = syscall(SYS_read, fd, buf, 1UL << 46);
        SAY("read 64 TiB into one page", r == (long)PG || (r == -1 && errno == EFAULT) ? "page or EFAULT" : "other");
        close(fd);
        unlink(big);
        long g = syscall(SYS_getrandom, buf, 1UL << 40, 0);
        SAY("getrandom 1 TiB into one page", (g > 0 && g <= (long)PG) || (g == -1 && errno == EFAULT) ? "page or EFAULT" : "other");
        struct iovec iov[2] = {{buf, PG}, {buf, 1UL << 46}};
        fd = open(big, O_RDWR | O_CREAT | O_TRUNC, 0600);
        SAY("writev with 1M iovecs", res(syscall(SYS_writev, fd, iov, 1 << 20)));
        long v = syscall(SYS_writev, fd, iov + 1, 1);
        SAY("writev with a 64 TiB iovec", v == (long)PG || (v == -1 && errno == EFAULT) ? "page or EFAULT" : "other");
        close(fd);
        unlink(big);
    }

    // Executing memory mapped without PROT_EXEC, writing read-only memory.
    {
        char *rw = mapat(0, PG, PROT_READ | PROT_WRITE, 0);
        memcpy(rw, ret42, sizeof ret42);
        SAY("call into a read-write mapping", try_call(rw));
        unsigned char stack_code[16];
        memcpy(stack_code, ret42, sizeof ret42);
        SAY("call into the stack", try_call(stack_code));
        char *heap = malloc(64);
        memcpy(heap, ret42, sizeof ret42);
        SAY("call into the heap", try_call(heap));
        static unsigned char data_code[16];
        memcpy(data_code, ret42, sizeof ret42);
        SAY("call into .data", try_call(data_code));
        char *rwx = mapat(0, PG, PROT_READ | PROT_WRITE | PROT_EXEC, 0);
        memcpy(rwx, ret42, sizeof ret42);
        SAY("call into a rwx mapping", try_call(rwx));
        SAY("mprotect rw to rwx", res(syscall(SYS_mprotect, rw, PG, PROT_READ | PROT_WRITE | PROT_EXEC)));
        SAY("call after mprotect rwx", try_call(rw));
        SAY("mprotect back to rw", res(syscall(SYS_mprotect, rw, PG, PROT_READ | PROT_WRITE)));
        SAY("call after exec was taken away", try_call(rw));
        SAY("mprotect exec-only", res(syscall(SYS_mprotect, rwx, PG, PROT_EXEC)));
        SAY("write to an exec-only page", try_write(rwx));
        SAY("write to our code", try_write((char *)dummy_code));
        SAY("write to read-only data", try_write((char *)rodata));
        SAY("mprotect read-only", res(syscall(SYS_mprotect, rw, PG, PROT_READ)));
        SAY("write to a read-only mapping", try_write(rw));
        SAY("read the physmap", try_read((char *)PHYS_PML4));
        SAY("write the physmap", try_write((char *)PHYS_PML4));
        SAY("read a non-canonical address", try_read((char *)NONCANON));
        SAY("call the physmap", try_call((void *)PHYSMAP));
        unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
        SAY("write to the vDSO", vdso ? try_write((char *)vdso) : "no vdso");
        unsigned long vvar = find_map("[vvar]");
        SAY("write to [vvar]", vvar ? try_write((char *)vvar) : "no vvar");
        SAY("call [vvar]", vvar ? try_call((void *)vvar) : "no vvar");
    }

    // rt_sigreturn must not hand ring 3 I/O privilege (IOPL).
    {
        struct sigaction su;
        memset(&su, 0, sizeof su);
        su.sa_sigaction = on_usr1_iopl;
        su.sa_flags = SA_SIGINFO;
        sigaction(SIGUSR1, &su, NULL);
        raise(SIGUSR1);
        unsigned long fl;
        __asm__ volatile("pushfq; pop %0" : "=r"(fl));
        SAY("IOPL after a forged sigreturn", (fl >> 12) & 3 ? "IOPL 3" : "IOPL 0");
    }
    fflush(stdout);
}

// ---- cases that end the program ----

static void on_usr1_rip(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP] = (greg_t)NONCANON;
}

static void on_usr1_rip_kernel(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP] = (greg_t)(PHYSMAP + 0x16200);
}

static void on_usr1_fpstate(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    ((ucontext_t *)uc)->uc_mcontext.fpregs = (void *)PHYS_PML4;
}

static void on_usr1_rsp(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP] = (greg_t)NONCANON;
}

static void handle_usr1(void (*h)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
}

static int run_case(const char *w) {
    if (!strcmp(w, "exec-stack")) {
        unsigned char code[16];
        memcpy(code, ret42, sizeof ret42);
        return ((fn_t)(void *)code)();
    }
    if (!strcmp(w, "exec-rw")) {
        char *rw = mapat(0, PG, PROT_READ | PROT_WRITE, 0);
        memcpy(rw, ret42, sizeof ret42);
        return ((fn_t)(void *)rw)();
    }
    if (!strcmp(w, "exec-after-noexec")) {
        // Run it once (so the translation is cached), then take exec away.
        char *p = mapat(0, PG, PROT_READ | PROT_WRITE | PROT_EXEC, 0);
        memcpy(p, ret42, sizeof ret42);
        if (((fn_t)(void *)p)() != 42) return 1;
        mprotect(p, PG, PROT_READ | PROT_WRITE);
        return ((fn_t)(void *)p)();
    }
    if (!strcmp(w, "write-rodata")) {
        *(volatile char *)rodata = 'X';
        return 0;
    }
    if (!strcmp(w, "write-code")) {
        *(volatile char *)dummy_code = 0xcc;
        return 0;
    }
    if (!strcmp(w, "write-vvar")) {
        unsigned long vvar = find_map("[vvar]");
        if (!vvar) return 2;
        *(volatile char *)vvar = 1;
        return 0;
    }
    if (!strcmp(w, "munmap-all")) {
        // Linux allows this; the program has no code left to return to.
        syscall(SYS_munmap, 0x10000UL, USER_END - 0x10000UL);
        return 0;
    }
    if (!strcmp(w, "fixed-over-stack")) {
        // Replace the pages under our own stack pointer with zeros.
        unsigned long sp = (unsigned long)__builtin_frame_address(0) & ~(PG - 1);
        long r = syscall(SYS_mmap, sp - 4 * PG, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        return r == (long)(sp - 4 * PG) ? 0 : 2;
    }
    if (!strcmp(w, "fixed-over-vdso")) {
        // A read-write page where the vDSO's code was: the next clock call
        // executes non-executable memory.
        unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
        if (!vdso) return 2;
        if (mapat(vdso, PG, PROT_READ | PROT_WRITE, MAP_FIXED) == MAP_FAILED) return 3;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return 0;
    }
    if (!strcmp(w, "unmap-vdso")) {
        unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
        if (!vdso) return 2;
        munmap((void *)vdso, PG);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return 0;
    }
    if (!strcmp(w, "sigreturn-noncanonical-rip")) {
        handle_usr1(on_usr1_rip);
        raise(SIGUSR1);
        return 0;
    }
    if (!strcmp(w, "sigreturn-kernel-rip")) {
        handle_usr1(on_usr1_rip_kernel);
        raise(SIGUSR1);
        return 0;
    }
    if (!strcmp(w, "sigreturn-kernel-fpstate")) {
        handle_usr1(on_usr1_fpstate);
        raise(SIGUSR1);
        return 0;
    }
    if (!strcmp(w, "sigreturn-noncanonical-rsp")) {
        handle_usr1(on_usr1_rsp);
        raise(SIGUSR1);
        return 0;
    }
    if (!strcmp(w, "sigreturn-no-frame")) {
        // rt_sigreturn with the stack pointer in the kernel half.
        __asm__ volatile("mov %0, %%rsp; mov $15, %%eax; syscall" ::"r"(PHYS_PML4 + 8) : "rax", "memory");
        return 0;
    }
    if (!strcmp(w, "syscall-at-the-top")) {
        // `syscall` as the last instruction below USER_END: the return
        // address is USER_END itself, which nothing can map.
        unsigned long top = USER_END - PG;
        char *p = mapat(top, PG, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_FIXED_NOREPLACE);
        if (p == MAP_FAILED) {
            // The stack is there (zeroboot puts it at the top): make its top page executable.
            if (mprotect((void *)top, PG, PROT_READ | PROT_WRITE | PROT_EXEC)) return 2;
            p = (char *)top;
        }
        p[PG - 2] = 0x0f;
        p[PG - 1] = 0x05;
        __asm__ volatile("mov $39, %%eax; jmp *%0" ::"r"(p + PG - 2) : "rax", "rcx", "r11", "memory");
        return 0;
    }
    if (!strcmp(w, "jump-to-syscall-entry")) {
        // zeroboot's `syscall` entry (MSR_LSTAR) is a supervisor-only page
        // in the physmap; on PVM hosts a real `syscall` faults there, so a
        // ring-3 jump there looks like one. Ask for IOPL 3 in R11 (the
        // RFLAGS `sysret` restores) and see what we get back.
        unsigned long rax = 39, fl;
        __asm__ volatile(
            "lea 1f(%%rip), %%rcx\n"
            "mov $0x3202, %%r11\n"
            "jmp *%2\n"
            "1:\n"
            "pushfq\n"
            "pop %1\n"
            : "+a"(rax), "=r"(fl)
            : "r"(PHYSMAP + 0x16200)
            : "rcx", "r11", "memory");
        printf("returned %ld with IOPL %lu\n", (long)rax, (fl >> 12) & 3);
        fflush(stdout);
        return (fl >> 12) & 3 ? 1 : 0;
    }
    if (!strcmp(w, "jump-to-syscall-entry-noncanonical")) {
        // The same with a non-canonical return address in RCX.
        __asm__ volatile(
            "mov %0, %%rcx\n"
            "mov $0x202, %%r11\n"
            "mov $39, %%eax\n"
            "jmp *%1\n" ::"r"(NONCANON),
            "r"(PHYSMAP + 0x16200)
            : "rax", "rcx", "r11", "memory");
        return 0;
    }
    if (!strcmp(w, "privileged")) {
        // I/O ports (the VMM's event ports among them): #GP.
        __asm__ volatile("mov $0, %%al; outb %%al, $0xa1" ::: "al");
        return 0;
    }
    if (!strcmp(w, "cli")) {
        __asm__ volatile("cli");
        return 0;
    }
    if (!strcmp(w, "hlt")) {
        __asm__ volatile("hlt");
        return 0;
    }
    if (!strcmp(w, "int14")) {
        // A software interrupt through the page-fault gate (DPL 0): must
        // not be taken for a page fault (it pushes no error code).
        __asm__ volatile("int $14");
        return 0;
    }
    fprintf(stderr, "unknown case %s\n", w);
    return 3;
}

int main(int argc, char **argv) {
    const char *w = argc > 1 ? argv[1] : "probe";
    if (!strcmp(w, "probe")) {
        probe();
        return 0;
    }
    return run_case(w);
}
