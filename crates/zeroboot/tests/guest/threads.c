// pthreads on the VMM's scheduler: mutexes, condition variables, joins,
// thread-local storage, timed waits, preemption of a spinning thread, and
// signals aimed at one thread. Prints one line per check.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long counter;
static int ready;
static __thread int tls_value;
static atomic_int spin_stop;
static atomic_int got_usr1;

static void *adder(void *arg) {
    long n = (long)arg;
    tls_value = (int)n;
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
        if (i % 1000 == 0) sched_yield();
    }
    return (void *)(long)(tls_value * 2);
}

static void *waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!ready) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return (void *)7;
}

static void *spinner(void *arg) {
    (void)arg;
    while (!atomic_load(&spin_stop)) { }
    return NULL;
}

static void on_usr1(int s) { (void)s; atomic_store(&got_usr1, (int)syscall(SYS_gettid)); }

static void *sleeper(void *arg) {
    (void)arg;
    struct timespec ts = {5, 0};
    int r = nanosleep(&ts, NULL);
    return (void *)(long)(r == -1 && errno == EINTR);
}

static int failures;
#define CHECK(c, what) do { int ok_ = (c); printf("%s %s\n", ok_ ? "ok" : "FAIL", what); if (!ok_) failures++; } while (0)

int main(void) {
    pthread_t t[8];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, adder, (void *)(i + 1));
    long sum = 0;
    for (int i = 0; i < 8; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
    CHECK(counter == 80000, "8 threads x 10000 locked increments");
    CHECK(sum == 72, "join returns each thread's TLS-derived value");

    pthread_t w;
    pthread_create(&w, NULL, waiter, NULL);
    usleep(20000);
    pthread_mutex_lock(&mu);
    ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    void *wr;
    pthread_join(w, &wr);
    CHECK((long)wr == 7, "condition variable wakes a waiter");

    pthread_mutex_lock(&mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 30 * 1000 * 1000;
    if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    int r = pthread_cond_timedwait(&cv, &mu, &dl);
    pthread_mutex_unlock(&mu);
    CHECK(r == ETIMEDOUT, "timed wait times out");

    pthread_t s;
    pthread_create(&s, NULL, spinner, NULL);
    usleep(30000);  // the spinner never yields: it must be preempted
    atomic_store(&spin_stop, 1);
    pthread_join(s, NULL);
    CHECK(1, "a spinning thread is preempted");

    signal(SIGUSR1, on_usr1);
    pthread_t sl;
    pthread_create(&sl, NULL, sleeper, NULL);
    usleep(20000);
    pthread_kill(sl, SIGUSR1);
    void *interrupted;
    pthread_join(sl, &interrupted);
    CHECK(atomic_load(&got_usr1) != 0 && atomic_load(&got_usr1) != (int)syscall(SYS_gettid),
          "pthread_kill runs the handler on the target thread");
    CHECK((long)interrupted == 1, "the signal interrupts the target's sleep with EINTR");
    return failures ? 1 : 0;
}
