# POSIX timers through the C library (ctypes): SIGEV_SIGNAL, SIGEV_NONE,
# SIGEV_THREAD_ID, TIMER_ABSTIME, overruns, errors.
import ctypes
import os
import signal
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]


class Sigevent(ctypes.Structure):
    _fields_ = [
        ("value", ctypes.c_void_p),
        ("signo", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("tid", ctypes.c_int),
        ("pad", ctypes.c_int * 11),
    ]


SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID = 0, 1, 4
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
TIMER_ABSTIME = 1
libc.timer_create.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.timer_gettime.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
libc.timer_getoverrun.argtypes = [ctypes.c_void_p]
libc.timer_delete.argtypes = [ctypes.c_void_p]


def create(clock, notify, signo=0, tid=0):
    ev = Sigevent(None, signo, notify, tid)
    t = ctypes.c_void_p()
    if libc.timer_create(clock, ctypes.byref(ev), ctypes.byref(t)) != 0:
        return os.strerror(ctypes.get_errno())
    return t


def settime(t, value, interval=0.0, flags=0):
    def ts(x):
        return Timespec(int(x), int(round((x - int(x)) * 1e9)))

    spec = Itimerspec(ts(interval), ts(value))
    assert libc.timer_settime(t, flags, ctypes.byref(spec), None) == 0


def gettime(t):
    spec = Itimerspec()
    assert libc.timer_gettime(t, ctypes.byref(spec)) == 0
    f = lambda s: s.sec + s.nsec / 1e9
    return f(spec.value), f(spec.interval)


# SIGEV_SIGNAL, periodic every 50 ms.
hits = []
signal.signal(signal.SIGUSR1, lambda s, f: hits.append(1))
t = create(CLOCK_MONOTONIC, SIGEV_SIGNAL, signal.SIGUSR1)
settime(t, 0.05, 0.05)
value, interval = gettime(t)
print("gettime", 0 < value <= 0.05, interval == 0.05)
deadline = time.monotonic() + 5
while len(hits) < 5 and time.monotonic() < deadline:
    time.sleep(0.01)
print("periodic SIGUSR1", len(hits) >= 5)
# Blocked, the signal stays pending while the timer runs on: overruns.
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
time.sleep(0.5)
n = len(hits)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
print("one signal for many expiries", len(hits) == n + 1)
print("overrun counted", libc.timer_getoverrun(t) >= 3)
print("delete", libc.timer_delete(t))
n = len(hits)
time.sleep(0.1)
print("none after delete", len(hits) == n)

# SIGEV_NONE: armed, observable, silent.
t = create(CLOCK_MONOTONIC, SIGEV_NONE)
settime(t, 10)
print("SIGEV_NONE left", 9 < gettime(t)[0] <= 10)
libc.timer_delete(t)

# SIGEV_THREAD_ID: to one thread (here the main one), absolute time.
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append(threading.get_native_id()))
t = create(CLOCK_REALTIME, SIGEV_SIGNAL | SIGEV_THREAD_ID, signal.SIGUSR2, threading.get_native_id())
settime(t, time.time() + 0.1, flags=TIMER_ABSTIME)
time.sleep(0.5)
print("to the thread", got == [threading.get_native_id()])
# An absolute time already past fires at once.
settime(t, 1.0, flags=TIMER_ABSTIME)
time.sleep(0.05)
print("past time fires", len(got) == 2)
libc.timer_delete(t)

# Errors.
print("bad thread", create(CLOCK_MONOTONIC, SIGEV_SIGNAL | SIGEV_THREAD_ID, signal.SIGUSR2, 999999))
print("bad signal", create(CLOCK_MONOTONIC, SIGEV_SIGNAL, 99))
print("bad clock", create(12345, SIGEV_SIGNAL, signal.SIGUSR2))
print("delete twice", libc.timer_delete(t), os.strerror(ctypes.get_errno()))
