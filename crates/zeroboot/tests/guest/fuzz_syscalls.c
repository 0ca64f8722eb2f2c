// Syscall fuzzer for zeroboot's kernel (issue 8): random system calls with
// random and boundary arguments and random guest pointers, issued from
// ring 3 of a sandbox, so every call goes through the real VM path.
//
//   zeroboot run --timeout T -- fuzz_syscalls SEED COUNT [PER_CHILD]
//
// The parent forks worker children one after another, each with its own
// seed (SEED * 1000003 + child index), until COUNT syscalls have been issued. A
// worker issues up to PER_CHILD (default 2000) random syscalls with raw
// `syscall` instructions (no libc, no errno, no TLS in the loop), and
// reports what it issued through a pipe every 32 calls (MAP_SHARED
// anonymous memory is not shared across fork in zeroboot: the start-up
// probe below says so). A worker may die from a signal (counted); one
// that blocks (a read on an empty pipe, a futex wait, an infinite poll) is
// ended by its own watchdog thread when its progress counter stalls.
//
// Neutered, because they would only stop the experiment: exit and
// exit_group (the loop keeps going), kill/tkill/tgkill aimed at the
// parent or at a process group, clone's CLONE_PARENT, and closing or
// replacing the report pipe. Children of fork/vfork/clone exit at once,
// from assembly that touches no stack.
//
// The program refuses to run outside zeroboot (uname release must contain
// "zeroboot"): random syscalls as root on a real kernel are destructive.
//
// `fuzz_syscalls sweep [PER_CHILD]` is the deterministic variant: every
// number 0..MAX_NR with SWEEP_PER_NR argument patterns built from boundary
// values (0, -1, 2^63-1, 2^31-1, -1 as a 32-bit int, 2^63, an unmapped
// and a kernel-half pointer, a valid pointer), each call reported before
// it is issued, so a call that kills its worker is not repeated.
//
// Last line of output:
//   fuzz: done seed=S syscalls=N ok=K children=C exited=E stuck=W
//         signaled=G abandoned=A secs=T rate=R/s
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define NOSP __attribute__((optimize("no-stack-protector")))

#define REPORT_FD 1000
#define REPORT_MAGIC 0x465a5a46u /* "FZZF" */
#define STUCK_MAGIC 0x4b435453u  /* "STCK": the worker's watchdog ended it */
#define MAX_NR 460
#define PAGE 4096ul
#define SCRATCH_PAGES 16
#define SCRATCH_LEN (SCRATCH_PAGES * PAGE)
#define STUCK_MS 30   /* a worker making no progress this long ends itself */
#define ABANDON_MS 10000

struct record {
    uint32_t magic;
    uint16_t issued;
    uint16_t ok;
};

// ---- raw syscalls ------------------------------------------------------

static inline __attribute__((always_inline)) long raw6(long n, long a, long b, long c, long d,
                                                       long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

// fork, vfork, clone, clone3: in the child (rax == 0) exit at once, without
// touching the stack (which may be shared with the parent or random).
static inline __attribute__((always_inline)) long raw_forkish(long n, long a, long b, long c,
                                                              long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "mov $60, %%eax\n\t"
                     "xor %%edi, %%edi\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

// ---- randomness --------------------------------------------------------

static uint64_t rng;

static inline uint64_t rnd(void) {
    // splitmix64
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

// ---- the worker's world -------------------------------------------------

static unsigned char *scratch;      // SCRATCH_LEN bytes, guard pages on both sides
static unsigned char *heap_buf;     // a malloc'd buffer (in brk memory)
static volatile uint64_t progress;  // syscalls issued (read by the watchdog)
static volatile uint64_t reported;  // of which reported to the parent
static volatile uint64_t ok_count, ok_reported;
static volatile uint64_t current_nr;  // the syscall being issued
static long my_pid, parent_pid;

static long fd_ring[16];    // fds that calls returned
static uint64_t ptr_ring[8];  // addresses mmap/mremap/brk returned

// Fixed items in the first scratch page (rewritten every 64 calls).
enum { N_STR = 20, N_TS = 6, N_IOV = 3 };
static uint64_t str_at[N_STR], ts_at[N_TS], iov_at[N_IOV], sigact_at, sigset_at, pollfd_at,
    epev_at, argv_at;

static const char *const paths[N_STR] = {
    "/tmp/fz0", "/tmp/fz1/x", "/dev/null", "/proc/self/maps", "/proc/self/status", "/",
    ".", "..", "/tmp", "/dev/zero", "/dev/urandom", "/proc/self/exe", "/proc/self/fd/0",
    "", "/tmp/../tmp/./fz2", "/proc/self/cwd", "/tmp/fz0/../fz3", "/etc", "/proc/self/fd",
    NULL /* a 300-character name */};

static const uint64_t boundaries[] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024,
    4095, 4096, 4097, 8192, 65535, 65536, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
    (uint64_t)-1, (uint64_t)-2, (uint64_t)-4095, (uint64_t)-4096, 0x7fffffffffffffffull,
    0x8000000000000000ull, (uint64_t)(int64_t)(int32_t)0x80000000, 1ull << 47, 1ull << 48,
    0x00007ffffffff000ull, 0x0000800000000000ull};
#define N_BOUND (sizeof boundaries / sizeof boundaries[0])

static NOINLINE NOSP void put_bytes(uint64_t at, const void *src, size_t n) {
    memcpy((void *)at, src, n);
}

// Rewrite the structured page: paths, timespecs, iovecs, a sigaction, a
// sigset, pollfds, an epoll_event and an argv.
static NOINLINE NOSP void fill_structured(void) {
    uint64_t at = (uint64_t)scratch;
    for (int i = 0; i < N_STR; i++) {
        str_at[i] = at;
        if (paths[i]) {
            size_t n = strlen(paths[i]) + 1;
            put_bytes(at, paths[i], n);
            at += n;
        } else {
            memset((void *)at, 'a', 300);
            ((char *)at)[300] = 0;
            at += 301;
        }
    }
    at = (at + 15) & ~15ul;
    static const struct timespec ts[N_TS] = {
        {0, 0}, {0, 1000}, {0, 999999999}, {-1, 0}, {0, 1000000000}, {0, 2000000}};
    for (int i = 0; i < N_TS; i++) {
        ts_at[i] = at;
        put_bytes(at, &ts[i], sizeof ts[i]);
        at += sizeof ts[i];
    }
    uint64_t data = (uint64_t)scratch + 2 * PAGE;
    struct iovec iov[4] = {{(void *)data, 16}, {(void *)(data + 100), 4096}, {NULL, 0},
                           {(void *)0xffff800000001000ull, 8}};
    iov_at[0] = at;
    put_bytes(at, iov, sizeof iov);
    at += sizeof iov;
    struct iovec iov2[2] = {{(void *)((uint64_t)scratch + SCRATCH_LEN - 8), 16},
                            {(void *)data, 1ul << 40}};
    iov_at[1] = at;
    put_bytes(at, iov2, sizeof iov2);
    at += sizeof iov2;
    struct iovec iov3[1] = {{(void *)data, 64}};
    iov_at[2] = at;
    put_bytes(at, iov3, sizeof iov3);
    at += sizeof iov3;
    // struct kernel_sigaction { handler, flags, restorer, mask }: SIG_IGN.
    uint64_t sa[4] = {1, 0x04000000 /* SA_RESTORER */, 0, 0};
    sigact_at = at;
    put_bytes(at, sa, sizeof sa);
    at += sizeof sa;
    uint64_t set = rnd();
    sigset_at = at;
    put_bytes(at, &set, 8);
    at += 8;
    struct pollfd pf[4] = {{0, POLLIN, 0}, {1, POLLOUT, 0}, {(int)fd_ring[0], POLLIN | POLLOUT, 0},
                           {-1, POLLIN, 0}};
    pollfd_at = at;
    put_bytes(at, pf, sizeof pf);
    at += sizeof pf;
    uint32_t ev[3] = {POLLIN | POLLOUT, 0, 0};
    epev_at = at;
    put_bytes(at, ev, sizeof ev);
    at += 16;
    uint64_t argv[3] = {str_at[11], str_at[0], 0};
    argv_at = at;
    put_bytes(at, argv, sizeof argv);
}

static NOINLINE NOSP void refresh_page(void) {
    // A random page of the scratch gets random bytes (or zeros).
    uint64_t *p = (uint64_t *)(scratch + PAGE * (1 + below(SCRATCH_PAGES - 1)));
    int zero = below(4) == 0;
    for (unsigned i = 0; i < PAGE / 8; i++) p[i] = zero ? 0 : rnd();
}

// ---- argument generators -------------------------------------------------

static uint64_t gen_int(void) {
    switch (below(6)) {
    case 0:
    case 1: return boundaries[below(N_BOUND)];
    case 2: return below(65);
    case 3: return (1ull << below(64)) | (below(2) ? 1ull << below(64) : 0);
    case 4: return below(2) ? PAGE * below(1 << 20) : PAGE * below(1 << 20) + 1 + below(PAGE - 1);
    default: return rnd();
    }
}

static uint64_t gen_ptr(void) {
    uint64_t s = (uint64_t)scratch, e = s + SCRATCH_LEN;
    switch (below(16)) {
    case 0: return 0;
    case 1: return 1 + below(PAGE);
    case 2:
    case 3: return s + below(SCRATCH_LEN);
    case 4: return s + PAGE * below(SCRATCH_PAGES) + 8 * below(PAGE / 8);
    case 5: return s + PAGE * below(SCRATCH_PAGES);
    case 6: return str_at[below(N_STR)];
    case 7: return e - below(65);
    case 8: return below(2) ? s - 1 - below(PAGE) : e + below(PAGE);
    case 9: { volatile uint64_t local = 0; return (uint64_t)&local + below(256) - 128; }
    case 10: return below(2) ? (uint64_t)&fill_structured : (uint64_t)paths[0];
    case 11: {
        static const uint64_t k[] = {0xffff800000000000ull, 0xffffffffffffffffull,
                                     0xfffffffffffff000ull, 0xffffffff80000000ull};
        return below(2) ? k[below(4)] : 0xffff800000000000ull + (rnd() & 0x7fffffffffffull);
    }
    case 12: {
        static const uint64_t k[] = {0x0000800000000000ull, 0x00007ffffffff000ull,
                                     0x00007fffffffffffull, 0x00007ffffffffff8ull,
                                     0x0000800000001000ull};
        return k[below(5)] + (below(2) ? 0 : below(64));
    }
    case 13: return rnd();
    case 14: return (uint64_t)heap_buf + below(4096);
    default: return ptr_ring[below(8)] + (below(2) ? 0 : PAGE * below(4));
    }
}

static uint64_t gen_fd(void) {
    switch (below(8)) {
    case 0: return below(4);
    case 1: return (uint64_t)-1;
    case 2: return below(64);
    case 3: return gen_int();
    default: return (uint64_t)fd_ring[below(16)];
    }
}

static uint64_t gen_len(void) {
    static const uint64_t l[] = {0, 1, 8, 16, 64, 100, 4095, 4096, 4097, 65536, SCRATCH_LEN,
                                 (uint64_t)-1, 0x7fffffff, 0x80000000, 1ull << 40};
    return below(3) ? l[below(sizeof l / sizeof l[0])] : below(2) ? below(512) : gen_int();
}

static uint64_t gen_addr(void) {
    switch (below(6)) {
    case 0:
    case 1: return (uint64_t)scratch + PAGE * below(SCRATCH_PAGES);
    case 2: return ptr_ring[below(8)] & ~(PAGE - 1);
    case 3: return 0;
    case 4: return PAGE * (16 + below(1ull << 35));
    default: return gen_ptr();
    }
}

static uint64_t gen_flags(void) {
    switch (below(4)) {
    case 0: return 0;
    case 1: return below(16);
    case 2: return rnd() & ((1ull << below(33)) - 1);
    default: return gen_int();
    }
}

// Argument shapes per syscall: f fd, d dirfd, p pointer, s path, a address,
// l length, i int, o flags, t timespec, v iovec, z short timeout, 8 the
// value 8 (sigset size), S sigaction, P pollfds, E epoll_event, A argv,
// '.' anything.
static const char *const shape[MAX_NR + 1] = {
    [0] = "fpl", [1] = "fpl", [2] = "soo", [3] = "f", [4] = "sp", [5] = "fp", [6] = "sp",
    [7] = "Plz", [8] = "fii", [9] = "alooff", [10] = "alo", [11] = "al", [12] = "a",
    [13] = "iSp8", [14] = "ip" "p8", [16] = "fip", [17] = "fpli", [18] = "fpli", [19] = "fvl",
    [20] = "fvl", [21] = "so", [22] = "p", [23] = "ipppt", [25] = "alloa", [26] = "alo",
    [27] = "alp", [28] = "ali", [32] = "f", [33] = "ff", [35] = "tp", [40] = "ffpl",
    [41] = "iii", [56] = "opppp", [59] = "sAA", [61] = "ipop", [62] = "ii", [63] = "p",
    [72] = "fii", [73] = "fi", [74] = "f", [75] = "f", [76] = "sl", [77] = "fl",
    [78] = "fpl", [79] = "pl", [80] = "s", [81] = "f", [82] = "ss", [83] = "so", [84] = "s",
    [85] = "so", [86] = "ss", [87] = "s", [88] = "ss", [89] = "spl", [90] = "so",
    [91] = "fo", [92] = "sii", [93] = "fii", [94] = "sii", [95] = "o", [96] = "pp",
    [97] = "ip", [98] = "ip", [99] = "p", [100] = "p", [127] = "p8", [130] = "p8",
    [131] = "pp", [137] = "sp", [138] = "fp", [157] = "iiiii", [158] = "ip", [160] = "ip",
    [200] = "ii", [201] = "p", [202] = "pii" "tpi", [203] = "ilp", [204] = "ilp",
    [213] = "i", [217] = "fpl", [218] = "p", [221] = "flli", [228] = "ip", [229] = "ip",
    [230] = "iotp", [232] = "fpiz", [233] = "fifE", [234] = "iii", [235] = "sp",
    [257] = "dsoo", [258] = "dso", [260] = "dsiio", [262] = "dspo", [263] = "dso",
    [264] = "dsds", [265] = "dsdso", [266] = "sds", [267] = "dspl", [268] = "dso",
    [269] = "dso", [270] = "ipppt" "p", [271] = "Pltp8", [273] = "pl", [274] = "ipp",
    [280] = "dspo", [281] = "fpizp8", [283] = "io", [284] = "i", [285] = "foll",
    [286] = "fopp", [287] = "fp", [290] = "io", [291] = "o", [292] = "ffo", [293] = "po",
    [295] = "fvli", [296] = "fvli", [302] = "iipp", [309] = "ppp", [316] = "dsdso",
    [318] = "plo", [319] = "so", [322] = "dsAAo", [326] = "fpfplo", [332] = "dsoop",
    [435] = "pl", [436] = "ffo", [439] = "dsoo", [441] = "fpitp8",
};

static uint64_t gen_arg(char c) {
    switch (c) {
    case 'f': return gen_fd();
    case 'd': return below(2) ? (uint64_t)(int64_t)AT_FDCWD : gen_fd();
    case 'p': return gen_ptr();
    case 's': return below(5) ? str_at[below(N_STR)] : gen_ptr();
    case 'a': return gen_addr();
    case 'l': return gen_len();
    case 'o': return gen_flags();
    case 't': return below(5) ? ts_at[below(N_TS)] : gen_ptr();
    case 'v': return below(5) ? iov_at[below(N_IOV)] : gen_ptr();
    case 'z': return below(4) ? below(3) : gen_int();
    case '8': return below(5) ? 8 : gen_int();
    case 'S': return below(3) ? sigact_at : below(2) ? sigset_at : gen_ptr();
    case 'P': return below(5) ? pollfd_at : gen_ptr();
    case 'E': return below(5) ? epev_at : gen_ptr();
    case 'A': return below(3) ? argv_at : below(2) ? 0 : gen_ptr();
    case 'i': return gen_int();
    default:
        switch (below(4)) {
        case 0: return gen_int();
        case 1: return gen_ptr();
        case 2: return gen_fd();
        default: return rnd();
        }
    }
}

static uint64_t gen_nr(void) {
    switch (below(64)) {
    case 0: {
        static const uint64_t odd[] = {461, 462, 500, 511, 512, 547, 548, 1000, 0x40000000,
                                       0x40000000 + 1, 0x40000000 + 59, (uint64_t)-1,
                                       0x7fffffff, 0x80000000, 0xffffffff, 1ull << 32};
        return below(2) ? odd[below(sizeof odd / sizeof odd[0])] : rnd();
    }
    default: return below(MAX_NR + 1);
    }
}

static void report(void) {
    uint64_t p = progress, o = ok_count;
    uint64_t d = p - reported, od = o - ok_reported;
    while (d) {
        uint64_t n = d > 0xffff ? 0xffff : d, on = od > n ? n : od;
        struct record r = {REPORT_MAGIC, (uint16_t)n, (uint16_t)on};
        if (raw6(SYS_write, REPORT_FD, (long)&r, sizeof r, 0, 0, 0) != sizeof r) break;
        d -= n;
        od -= on;
        reported += n;
        ok_reported += on;
    }
}

// Ends the worker when its main thread stops making progress (blocked in a
// syscall without timeout, or spinning after a random rt_sigreturn).
static NOSP void *watchdog(void *arg) {
    (void)arg;
    uint64_t last = progress;
    for (;;) {
        struct timespec ts = {0, STUCK_MS * 1000000l};
        raw6(SYS_nanosleep, (long)&ts, 0, 0, 0, 0, 0);
        uint64_t now = progress;
        if (now == last) {
            report();
            uint64_t nr = current_nr;
            struct record r = {STUCK_MAGIC, (uint16_t)(nr <= MAX_NR ? nr : 0xffff), 0};
            raw6(SYS_write, REPORT_FD, (long)&r, sizeof r, 0, 0, 0);
            raw6(SYS_exit_group, 99, 0, 0, 0, 0, 0);
        }
        last = now;
    }
    return NULL;
}

// Adjust a call that would end the experiment rather than test the VMM.
// Returns 0 to skip it.
static int neuter(uint64_t nr, uint64_t *a) {
    switch (nr) {
    case SYS_exit:
    case SYS_exit_group: return 0;
    case SYS_rt_sigreturn: return below(16) == 0;
    case SYS_kill:
        if ((int64_t)(int32_t)a[0] <= 0 || (int32_t)a[0] == parent_pid) a[0] = my_pid;
        return 1;
    case SYS_tkill:
        if ((int32_t)a[0] == parent_pid) a[0] = my_pid;
        return 1;
    case SYS_tgkill:
        if ((int32_t)a[0] == parent_pid || (int32_t)a[1] == parent_pid) a[0] = a[1] = my_pid;
        return 1;
    // A process's page-table frames stay allocated for the sandbox's life
    // (docs/fuzzing.md): fork less often, so that ten million calls fit
    // in one sandbox.
    case SYS_fork:
    case SYS_clone3: return below(4) == 0;
    case SYS_clone:
        a[0] &= ~(uint64_t)CLONE_PARENT;
        return below(4) == 0;
    case SYS_close: return (int32_t)a[0] != REPORT_FD;
    case SYS_dup2:
    case SYS_dup3: return (int32_t)a[1] != REPORT_FD;
    case SYS_close_range:
        if ((uint32_t)a[0] <= REPORT_FD && (uint32_t)a[1] >= REPORT_FD) a[1] = REPORT_FD - 1;
        return 1;
    default: return 1;
    }
}

static int changes_memory(uint64_t nr) {
    return nr == SYS_mmap || nr == SYS_munmap || nr == SYS_mprotect || nr == SYS_mremap ||
           nr == SYS_brk || nr == SYS_madvise || nr == SYS_pkey_mprotect || nr == SYS_shmat;
}

// A random mmap/munmap/mprotect/mremap may have hit the scratch area:
// make it writable again (re-mapping it if it is gone), so that refreshing
// it does not kill the worker.
static NOINLINE NOSP void keep_scratch(void) {
    if (raw6(SYS_mprotect, (long)scratch, SCRATCH_LEN, PROT_READ | PROT_WRITE, 0, 0, 0) != 0)
        raw6(SYS_mmap, (long)scratch, SCRATCH_LEN, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

// ---- the sweep ------------------------------------------------------------

#define SWEEP_VALS 9
#define SWEEP_PER_NR (SWEEP_VALS + 6 * (SWEEP_VALS - 1))
#define SWEEP_TOTAL ((uint64_t)(MAX_NR + 1) * SWEEP_PER_NR)

static int sweep_mode;
static uint64_t sweep_base; // the global index of this worker's first call

static uint64_t sweep_val(int v) {
    switch (v) {
    case 0: return 0;
    case 1: return (uint64_t)-1;
    case 2: return 0x7fffffffffffffffull;
    case 3: return 0x7fffffffull;
    case 4: return 0xffffffffull;
    case 5: return 1ull << 63;
    case 6: return 0x1000;                 // unmapped
    case 7: return 0xffff800000000000ull;  // the kernel half
    default: return (uint64_t)scratch;     // mapped and writable
    }
}

// Call `k` of the sweep: pattern p < SWEEP_VALS sets all six arguments to
// one value; the others put value 1..SWEEP_VALS-1 at one position and 0
// elsewhere.
static uint64_t sweep_call(uint64_t k, uint64_t *a) {
    uint64_t nr = k / SWEEP_PER_NR, p = k % SWEEP_PER_NR;
    if (p < SWEEP_VALS) {
        for (int j = 0; j < 6; j++) a[j] = sweep_val((int)p);
    } else {
        p -= SWEEP_VALS;
        for (int j = 0; j < 6; j++) a[j] = 0;
        a[p / (SWEEP_VALS - 1)] = sweep_val((int)(p % (SWEEP_VALS - 1)) + 1);
    }
    return nr;
}

static NOINLINE NOSP void worker(uint64_t seed, uint64_t budget) {
    rng = seed * 0x2545f4914f6cdd1dull + 1;
    my_pid = getpid();
    parent_pid = getppid();
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++) dup2(null, fd);
    if (null > 2) close(null);
    unsigned char *m = mmap(NULL, SCRATCH_LEN + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
    if (m == MAP_FAILED) _exit(98);
    scratch = m + PAGE;
    if (mprotect(scratch, SCRATCH_LEN, PROT_READ | PROT_WRITE)) _exit(98);
    heap_buf = malloc(8192);
    for (int i = 0; i < 16; i++) fd_ring[i] = i < 3 ? i : (long)below(8);
    for (int i = 0; i < 8; i++) ptr_ring[i] = (uint64_t)scratch;
    fill_structured();
    for (int i = 1; i < SCRATCH_PAGES; i++) refresh_page();
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog, NULL)) _exit(98);

    for (uint64_t i = 0; i < budget;) {
        uint64_t nr, a[6];
        if (sweep_mode) {
            if (sweep_base + i >= SWEEP_TOTAL) break;
            nr = sweep_call(sweep_base + i, a);
            // Counted before it is issued: a call that ends the worker is
            // not tried again by the next one.
            progress = progress + 1;
            report();
            if (!neuter(nr, a)) {
                i++;
                continue;
            }
        } else {
            nr = gen_nr();
            const char *sh = nr <= MAX_NR && below(4) ? shape[nr] : NULL;
            for (int j = 0; j < 6; j++)
                a[j] = sh && j < (int)strlen(sh) ? gen_arg(sh[j]) : gen_arg('.');
            if (!neuter(nr, a)) continue;
        }
        long r;
        current_nr = nr;
        if (nr == SYS_clone || nr == SYS_fork || nr == SYS_vfork || nr == SYS_clone3)
            r = raw_forkish((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        else
            r = raw6((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        i++;
        if (!sweep_mode) progress = progress + 1;
        if ((unsigned long)r < (unsigned long)-4095) {
            ok_count = ok_count + 1;
            if (changes_memory(nr)) keep_scratch();
            if (r >= 3 && r < 1024 && r != REPORT_FD) fd_ring[below(16)] = r;
            if ((nr == SYS_mmap || nr == SYS_mremap || nr == SYS_brk) && r > 0x10000)
                ptr_ring[below(8)] = (uint64_t)r;
        }
        if ((i & 31) == 0) report();
        if ((i & 63) == 0) fill_structured();
        if ((i & 255) == 0) refresh_page();
    }
    report();
    raw6(SYS_exit_group, 0, 0, 0, 0, 0, 0);
}

// ---- the parent ------------------------------------------------------------

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s) return 0;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 1;
}

static unsigned char rbuf[1 << 16];
static size_t rlen;
static uint64_t total, total_ok, stuck_on[MAX_NR + 2];

static void drain(int fd) {
    for (;;) {
        ssize_t n = read(fd, rbuf + rlen, sizeof rbuf - rlen);
        if (n <= 0) break;
        rlen += (size_t)n;
        size_t i = 0;
        // Records are 8 bytes; resynchronise on the magic if a worker's
        // random write put garbage into the pipe.
        while (rlen - i >= sizeof(struct record)) {
            struct record r;
            memcpy(&r, rbuf + i, sizeof r);
            if (r.magic == STUCK_MAGIC) {
                stuck_on[r.issued <= MAX_NR ? r.issued : MAX_NR + 1]++;
            } else if (r.magic == REPORT_MAGIC) {
                total += r.issued;
                total_ok += r.ok;
            } else {
                i++;
                continue;
            }
            i += sizeof r;
        }
        memmove(rbuf, rbuf + i, rlen - i);
        rlen -= i;
        if (rlen == sizeof rbuf) rlen = 0;
    }
}

int main(int argc, char **argv) {
    uint64_t seed, count, per_child = 2000;
    if (argc >= 2 && !strcmp(argv[1], "sweep")) {
        sweep_mode = 1;
        seed = 0;
        count = SWEEP_TOTAL;
        if (argc > 3 || (argc == 3 && (!parse_u64(argv[2], &per_child) || per_child == 0))) {
            fprintf(stderr, "usage: fuzz_syscalls sweep [PER_CHILD]\n");
            return 2;
        }
    } else if (argc < 3 || argc > 4 || !parse_u64(argv[1], &seed) ||
               !parse_u64(argv[2], &count) ||
               (argc == 4 && (!parse_u64(argv[3], &per_child) || per_child == 0))) {
        fprintf(stderr, "usage: fuzz_syscalls SEED COUNT [PER_CHILD] | sweep [PER_CHILD]\n");
        return 2;
    }
    struct utsname u;
    if (uname(&u) || !strstr(u.release, "zeroboot")) {
        fprintf(stderr, "fuzz_syscalls: refusing to run outside a zeroboot sandbox\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    // Is MAP_SHARED anonymous memory shared with a forked child?
    volatile int *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh != MAP_FAILED) {
        *sh = 0;
        pid_t p = fork();
        if (p == 0) {
            *sh = 42;
            _exit(0);
        }
        waitpid(p, NULL, 0);
        printf("fuzz: MAP_SHARED anonymous memory is %sshared across fork%s\n",
               *sh == 42 ? "" : "not ", *sh == 42 ? "" : " (counts come through a pipe)");
        munmap((void *)sh, PAGE);
    }

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) || dup3(pfd[1], REPORT_FD, O_CLOEXEC) != REPORT_FD) {
        perror("fuzz: pipe");
        return 1;
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);

    uint64_t children = 0, exited = 0, stuck = 0, signaled = 0, abandoned = 0, others = 0;
    uint64_t sigs[65] = {0}, codes[256] = {0}, fork_failures = 0;
    double t0 = now_s();
    while (total < count) {
        uint64_t budget = count - total < per_child ? count - total : per_child;
        pid_t pid = fork();
        if (pid < 0) {
            // Process slots held by abandoned workers: wait a little.
            if (++fork_failures > 500) {
                fprintf(stderr, "fuzz: fork keeps failing: %s\n", strerror(errno));
                break;
            }
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
            int st;
            while (waitpid(-1, &st, WNOHANG) > 0) others++;
            continue;
        }
        fork_failures = 0;
        if (pid == 0) {
            close(pfd[0]);
            sweep_base = total;
            worker(seed * 1000003 + children, budget);
            _exit(97);
        }
        children++;
        double deadline = now_s() + ABANDON_MS / 1000.0;
        int done = 0;
        while (!done) {
            struct pollfd pf = {pfd[0], POLLIN, 0};
            poll(&pf, 1, 20);
            drain(pfd[0]);
            int st;
            pid_t w;
            while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
                if (w != pid) {
                    others++;
                    continue;
                }
                done = 1;
                if (WIFSIGNALED(st)) {
                    signaled++;
                    sigs[WTERMSIG(st) & 63]++;
                } else {
                    int c = WEXITSTATUS(st);
                    codes[c]++;
                    if (c == 99) stuck++;
                    else exited++;
                }
            }
            if (!done && now_s() > deadline) {
                fprintf(stderr, "fuzz: worker %d (seed %llu) abandoned: no exit in %d ms\n",
                        pid, (unsigned long long)(seed * 1000003 + children - 1), ABANDON_MS);
                abandoned++;
                done = 1;
            }
        }
        drain(pfd[0]);
        if (abandoned > 16) {
            fprintf(stderr, "fuzz: too many abandoned workers\n");
            break;
        }
    }
    double secs = now_s() - t0;
    printf("fuzz: exit codes:");
    for (int c = 0; c < 256; c++)
        if (codes[c]) printf(" %d=%llu", c, (unsigned long long)codes[c]);
    printf("\nfuzz: signals:");
    for (int s = 1; s < 65; s++) {
        if (!sigs[s]) continue;
        if (sigabbrev_np(s)) printf(" %s=%llu", sigabbrev_np(s), (unsigned long long)sigs[s]);
        else printf(" %d=%llu", s, (unsigned long long)sigs[s]);
    }
    printf("\nfuzz: stuck in:");
    for (int n = 0; n <= MAX_NR + 1; n++)
        if (stuck_on[n]) printf(" %d=%llu", n <= MAX_NR ? n : -1, (unsigned long long)stuck_on[n]);
    printf("\nfuzz: done seed=%llu syscalls=%llu ok=%llu children=%llu exited=%llu stuck=%llu "
           "signaled=%llu abandoned=%llu orphans=%llu secs=%.1f rate=%.0f/s\n",
           (unsigned long long)seed, (unsigned long long)total, (unsigned long long)total_ok,
           (unsigned long long)children, (unsigned long long)exited, (unsigned long long)stuck,
           (unsigned long long)signaled, (unsigned long long)abandoned,
           (unsigned long long)others, secs, secs > 0 ? total / secs : 0.0);
    return abandoned > 16 ? 3 : 0;
}
