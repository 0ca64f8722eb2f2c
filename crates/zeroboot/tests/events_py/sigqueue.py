import ctypes, errno, functools, os, signal, threading

# Every line leaves at once: children fork with no buffered output.
print = functools.partial(print, flush=True)

libc = ctypes.CDLL(None, use_errno=True)
SI_USER, SI_QUEUE, SI_TKILL = 0, -1, -6
RT = signal.SIGRTMIN + 1


class Siginfo(ctypes.Structure):
    _fields_ = [
        ("signo", ctypes.c_int),
        ("errno", ctypes.c_int),
        ("code", ctypes.c_int),
        ("pad", ctypes.c_int),
        ("pid", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("value", ctypes.c_long),
        ("rest", ctypes.c_byte * 96),
    ]


def sigset(*sigs):
    s = (ctypes.c_ulong * 16)()
    for n in sigs:
        s[0] |= 1 << (n - 1)
    return s


def waitinfo(*sigs):
    """sigtimedwait through libc, to see si_value (CPython hides it)."""
    info = Siginfo()
    ts = (ctypes.c_long * 2)(0, 50_000_000)
    n = libc.sigtimedwait(ctypes.byref(sigset(*sigs)), ctypes.byref(info), ts)
    if n < 0:
        return errno.errorcode[ctypes.get_errno()]
    return info


def sigqueue(pid, sig, value):
    r = libc.sigqueue(pid, sig, ctypes.c_void_p(value))
    return r if r == 0 else errno.errorcode[ctypes.get_errno()]


def rt_sigqueueinfo(pid, sig, code, value):
    info = Siginfo(signo=sig, code=code, pid=os.getpid(), uid=os.getuid(), value=value)
    r = libc.syscall(129, pid, sig, ctypes.byref(info))
    return r if r == 0 else errno.errorcode[ctypes.get_errno()]


me = os.getpid()
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, RT, RT + 1])

# A real-time signal queues once per send, in order, with its si_value.
for v in (11, 22, 33):
    sigqueue(me, RT, v)
print("pending", RT in signal.sigpending())
for _ in range(3):
    i = waitinfo(RT)
    print("rt", i.signo == RT, i.code, i.pid == me, i.value)
print("drained", waitinfo(RT))

# A standard signal coalesces: the first sender's siginfo is kept.
sigqueue(me, signal.SIGUSR1, 7)
sigqueue(me, signal.SIGUSR1, 8)
os.kill(me, signal.SIGUSR1)
i = waitinfo(signal.SIGUSR1)
print("standard", i.code, i.value, waitinfo(signal.SIGUSR1))

# kill() is SI_USER; both it and pthread_kill (tgkill) carry the sender's
# pid and uid; the thread's own signals come first.
os.kill(me, RT + 1)
signal.pthread_kill(threading.get_ident(), RT)
i = signal.sigwaitinfo([RT, RT + 1])
print("tgkill", i.si_signo == RT, i.si_pid == me, i.si_uid == os.getuid())
i = signal.sigwaitinfo([RT, RT + 1])
print("kill", i.si_signo == RT + 1, i.si_code, i.si_pid == me)

# From a child: sigqueue reaches the parent with the child's pid; a
# siginfo claiming to be kill()'s (si_code >= 0) or tgkill()'s is EPERM
# towards another process, allowed towards oneself.
pid = os.fork()
if pid == 0:
    print("child SI_USER", rt_sigqueueinfo(os.getppid(), RT, SI_USER, 1))
    print("child SI_TKILL", rt_sigqueueinfo(os.getppid(), RT, SI_TKILL, 1))
    print("child queue", sigqueue(os.getppid(), RT, 99))
    os._exit(0)
os.waitpid(pid, 0)
i = waitinfo(RT)
print("from child", i.code, i.pid == pid, i.value, waitinfo(RT))
print("self SI_USER", rt_sigqueueinfo(me, RT, SI_USER, 5), waitinfo(RT).code)
print("bad pid", rt_sigqueueinfo(-1, RT, SI_QUEUE, 0), rt_sigqueueinfo(0, RT, SI_QUEUE, 0))
print("bad signal", rt_sigqueueinfo(me, 65, SI_QUEUE, 0))

# rt_tgsigqueueinfo: to one thread.
info = Siginfo(signo=RT, code=SI_QUEUE, pid=me, value=44)
tid = threading.get_native_id()
print("tgsigqueueinfo", libc.syscall(297, me, tid, RT, ctypes.byref(info)))
print("thread", waitinfo(RT).value)
r = libc.syscall(297, me, 0, RT, ctypes.byref(info))
print("bad tid", r, errno.errorcode[ctypes.get_errno()])

# pidfd_send_signal with a siginfo: queued like sigqueue's; si_signo must
# match the signal.
fd = os.pidfd_open(me)
info = Siginfo(signo=RT, code=SI_QUEUE, pid=me, value=55)
print("pidfd", libc.syscall(424, fd, RT, ctypes.byref(info), 0), waitinfo(RT).value)
r = libc.syscall(424, fd, RT + 1, ctypes.byref(info), 0)
print("pidfd mismatch", r, errno.errorcode[ctypes.get_errno()])
signal.pidfd_send_signal(fd, RT)
print("pidfd plain", waitinfo(RT).code)
# A /proc/PID directory serves as a pidfd (CPython's test_signal uses one).
pfd = os.open(f"/proc/{me}", os.O_DIRECTORY)
signal.pidfd_send_signal(pfd, RT)
print("proc dir", waitinfo(RT).code)
os.close(pfd)

# Unblocked, a queued signal runs its handler; a default action of a
# real-time signal ends the process.
got = []
signal.signal(RT, lambda s, f: got.append(s))
sigqueue(me, RT, 1)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [RT])
print("handled", got == [RT])
pid = os.fork()
if pid == 0:
    signal.signal(RT, signal.SIG_DFL)
    sigqueue(os.getpid(), RT, 1)
    os._exit(0)
print("default action", os.waitpid(pid, 0)[1] == RT)
