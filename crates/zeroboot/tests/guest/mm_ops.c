// Exercises mappings the guest has already touched: every change must be
// visible at once (the VMM flushes stale shadow entries). Prints one line
// per check and exits 0 only if all pass.
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile int faults;

static void on_segv(int sig) {
    (void)sig;
    faults++;
    siglongjmp(env, 1);
}

// 1 if reading *p faults, 0 if not.
static int read_faults(volatile char *p) {
    if (sigsetjmp(env, 1)) return 1;
    (void)*p;
    return 0;
}

static int write_faults(volatile char *p) {
    if (sigsetjmp(env, 1)) return 1;
    *p = 1;
    return 0;
}

static int failures;
#define CHECK(c, what) do { int ok_ = (c); printf("%s %s\n", ok_ ? "ok" : "FAIL", what); if (!ok_) failures++; } while (0)

int main(void) {
    signal(SIGSEGV, on_segv);
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = 64 * pg;

    char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 0x5a, len);
    munmap(a + 8 * pg, 8 * pg);
    CHECK(read_faults(a + 8 * pg) && read_faults(a + 15 * pg), "munmap of touched pages faults");
    CHECK(!read_faults(a) && a[7 * pg] == 0x5a && a[16 * pg] == 0x5a, "neighbours of the hole keep their data");

    char *b = mmap(a + 8 * pg, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(b == a + 8 * pg && b[0] == 0 && b[8 * pg - 1] == 0, "a new mapping in the hole reads zeros");

    char *c = mmap(a, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(c == a && c[0] == 0 && c[3 * pg] == 0 && a[4 * pg] == 0x5a, "MAP_FIXED over touched pages replaces them");

    mprotect(a + 20 * pg, 4 * pg, PROT_READ);
    CHECK(write_faults(a + 20 * pg) && !read_faults(a + 21 * pg) && a[21 * pg] == 0x5a, "mprotect to read-only stops writes");
    mprotect(a + 20 * pg, 4 * pg, PROT_READ | PROT_WRITE);
    CHECK(!write_faults(a + 20 * pg), "mprotect back to read-write allows writes");
    mprotect(a + 24 * pg, 2 * pg, PROT_NONE);
    CHECK(read_faults(a + 24 * pg), "PROT_NONE stops reads");
    mprotect(a + 24 * pg, 2 * pg, PROT_READ);
    CHECK(a[24 * pg] == 0x5a, "PROT_NONE keeps the contents");

    for (size_t i = 0; i < 16; i++) a[(32 + i) * pg] = (char)i;
    char *m = mremap(a + 32 * pg, 16 * pg, 256 * pg, MREMAP_MAYMOVE);
    int same = 1;
    for (size_t i = 0; i < 16; i++) same &= m[i * pg] == (char)i;
    CHECK(m != MAP_FAILED && same && m[255 * pg] == 0, "mremap moves the data and grows with zeros");
    if (m != a + 32 * pg) CHECK(read_faults(a + 32 * pg), "the old range of a moved mapping faults");

    char *d = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(d, 7, 8 * pg);
    madvise(d, 8 * pg, MADV_DONTNEED);
    CHECK(d[0] == 0 && d[8 * pg - 1] == 0, "MADV_DONTNEED reads back zeros");
    char *e = mmap(NULL, 2048 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(e, 9, 2048 * pg);
    madvise(e, 2048 * pg, MADV_DONTNEED);
    CHECK(e[0] == 0 && e[1000 * pg] == 0 && e[2047 * pg] == 0, "MADV_DONTNEED of a large range reads back zeros");

    // A 256 MiB reservation populated on demand, then released.
    char *big = mmap(NULL, 256 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mprotect(big + (64 << 20), 4 << 20, PROT_READ | PROT_WRITE);
    big[(64 << 20) + 5] = 3;
    CHECK(big[(64 << 20) + 5] == 3 && read_faults(big), "a PROT_NONE reservation opened by mprotect");
    munmap(big, 256 << 20);
    CHECK(read_faults(big + (64 << 20)), "munmap of a reservation faults after");

    // realloc's pattern: grow in place, then shrink (one mapping to Linux).
    char *g = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(g + 4 * pg, 4 * pg);
    g[0] = 1;
    char *g2 = mremap(g, 4 * pg, 8 * pg, 0);
    g2[7 * pg] = 2;
    char *g3 = mremap(g, 8 * pg, 2 * pg, 0);
    CHECK(g2 == g && g3 == g && g[0] == 1, "mremap grows in place, then shrinks the grown mapping");
    munmap(g, 2 * pg);

    // A large malloc freed and made again at the same address, one page
    // touched each time: the page must be there every time.
    int again = 1;
    for (int i = 0; i < 40; i++) {
        char *r = mmap(NULL, (64 << 20) + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        r[0] = (char)i;
        again &= r != MAP_FAILED && r[0] == (char)i && r[pg] == 0;
        munmap(r, (64 << 20) + pg);
    }
    CHECK(again, "a mapping made again where one was unmapped is usable");

    // Whole tables' worth of touched entries changed at once (the VMM
    // drops the shadow of a whole table then, not entry by entry).
    size_t mb2 = 2 << 20;
    char *w = mmap(NULL, 4 * mb2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *t = (char *)(((unsigned long)w + mb2) & ~(mb2 - 1)); // 2 MiB aligned, inside w
    memset(w, 0x33, 4 * mb2);
    munmap(t, mb2);
    CHECK(read_faults(t) && read_faults(t + mb2 - pg), "munmap of a whole touched table faults");
    CHECK(t[-1] == 0x33 && t[mb2] == 0x33, "the tables around it keep their data");
    char *t2 = mmap(t, mb2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    int zeros = t2 == t;
    for (size_t i = 0; zeros && i < mb2; i += pg) zeros &= t[i] == 0;
    CHECK(zeros, "a new mapping over a whole unmapped table reads zeros");
    memset(t, 0x44, mb2);
    munmap(t + mb2, 400 * pg); // most of the next table
    CHECK(read_faults(t + mb2) && read_faults(t + mb2 + 399 * pg), "munmap of most of a table faults");
    CHECK(t[mb2 + 400 * pg] == 0x33 && t[mb2 + 511 * pg] == 0x33 && t[0] == 0x44, "the rest of that table keeps its data");
    mprotect(t, mb2, PROT_READ);
    CHECK(write_faults(t) && write_faults(t + mb2 - pg) && t[5 * pg] == 0x44, "mprotect of a whole touched table to read-only stops writes");
    mprotect(t, mb2, PROT_READ | PROT_WRITE);
    CHECK(!write_faults(t + 7 * pg) && t[7 * pg] == 1, "and back to read-write allows them");
    munmap(w, 4 * mb2);

    CHECK(faults > 0, "faults were delivered to the handler");
    return failures ? 1 : 0;
}
