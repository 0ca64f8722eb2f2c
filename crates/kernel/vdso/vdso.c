/*
 * zeroboot's vDSO: the clock calls a program makes most often, answered in
 * ring 3 from the TSC and the clock data the VMM keeps in the [vvar] page
 * just below this image, so that they cost no exit. Anything else, or a VM
 * whose clock data is not valid, falls back to the real system call.
 *
 * Built freestanding (no libc); exported under LINUX_2.6 as Linux's vDSO,
 * which is where glibc looks for them.
 */

typedef unsigned long u64;
typedef long s64;
typedef unsigned int u32;

/* Must match crates/kernel/src/vdso.rs (VvarData). */
struct vvar {
	u32 enabled;
	u32 shift;
	u64 mult;
	u64 tsc_base;
	u64 mono_base_ns;
	u64 real_base_ns;
};

/* Defined by the linker script: the page before the image. */
extern const volatile struct vvar zb_vvar __attribute__((visibility("hidden")));

struct timespec {
	s64 tv_sec;
	s64 tv_nsec;
};

struct timeval {
	s64 tv_sec;
	s64 tv_usec;
};

struct timezone {
	int tz_minuteswest;
	int tz_dsttime;
};

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_MONOTONIC_RAW 4
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7

#define NR_gettimeofday 96
#define NR_time 201
#define NR_clock_gettime 228

static inline long sys2(long nr, long a, long b)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline u64 rdtsc_ordered(void)
{
	u32 lo, hi;
	/* lfence: the TSC is read after earlier loads, as Linux does. */
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return ((u64)hi << 32) | lo;
}

/* Nanoseconds since the base, or -1 when the clock data is not valid. */
static inline s64 since_base(void)
{
	if (!zb_vvar.enabled)
		return -1;
	u64 now = rdtsc_ordered();
	u64 base = zb_vvar.tsc_base;
	/* A TSC behind the base (it never should be): the base itself. */
	u64 delta = now > base ? now - base : 0;
	return (s64)(((unsigned __int128)delta * zb_vvar.mult) >> zb_vvar.shift);
}

/* The clock's value in ns, or -1 when the VMM must answer. */
static inline s64 clock_ns(int clock)
{
	s64 d;
	switch (clock) {
	case CLOCK_REALTIME:
	case CLOCK_REALTIME_COARSE:
		d = since_base();
		return d < 0 ? -1 : (s64)zb_vvar.real_base_ns + d;
	case CLOCK_MONOTONIC:
	case CLOCK_MONOTONIC_RAW:
	case CLOCK_MONOTONIC_COARSE:
	case CLOCK_BOOTTIME:
		d = since_base();
		return d < 0 ? -1 : (s64)zb_vvar.mono_base_ns + d;
	default:
		return -1;
	}
}

int __vdso_clock_gettime(int clock, struct timespec *ts)
{
	s64 ns = clock_ns(clock);
	if (ns < 0)
		return (int)sys2(NR_clock_gettime, clock, (long)ts);
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	return 0;
}

int __vdso_gettimeofday(struct timeval *tv, struct timezone *tz)
{
	s64 ns = clock_ns(CLOCK_REALTIME);
	if (ns < 0)
		return (int)sys2(NR_gettimeofday, (long)tv, (long)tz);
	if (tv) {
		tv->tv_sec = ns / 1000000000;
		tv->tv_usec = (ns % 1000000000) / 1000;
	}
	if (tz) {
		tz->tz_minuteswest = 0;
		tz->tz_dsttime = 0;
	}
	return 0;
}

s64 __vdso_time(s64 *t)
{
	s64 ns = clock_ns(CLOCK_REALTIME);
	if (ns < 0)
		return sys2(NR_time, (long)t, 0);
	s64 s = ns / 1000000000;
	if (t)
		*t = s;
	return s;
}

int clock_gettime(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval *, struct timezone *) __attribute__((weak, alias("__vdso_gettimeofday")));
s64 time(s64 *) __attribute__((weak, alias("__vdso_time")));
