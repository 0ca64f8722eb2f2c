import errno, fcntl, functools, os, signal, tempfile

# Every line leaves at once (the output is compared line by line).
print = functools.partial(print, flush=True)

got = []
signal.signal(signal.SIGIO, lambda s, f: got.append("SIGIO"))
signal.signal(signal.SIGRTMIN, lambda s, f: got.append("RT"))
d = tempfile.mkdtemp()
fd = os.open(d, os.O_RDONLY)

# CPython's test_fcntl: DN_MULTISHOT does not fit in a C int.
print("multishot", fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_CREATE | fcntl.DN_MULTISHOT))
open(os.path.join(d, "a"), "w").close()
print("create", got)
open(os.path.join(d, "b"), "w").close()
print("again", got)

# One-shot: one signal, then the registration is gone.
del got[:]
fcntl.fcntl(fd, fcntl.F_NOTIFY, 0)
print("cleared", fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_DELETE))
os.unlink(os.path.join(d, "a"))
os.unlink(os.path.join(d, "b"))
print("oneshot", got)

# Only the events asked for; F_SETSIG chooses the signal.
del got[:]
print("setsig", fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGRTMIN), fcntl.fcntl(fd, fcntl.F_GETSIG))
fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_RENAME | fcntl.DN_MULTISHOT)
open(os.path.join(d, "c"), "w").close()
print("not asked", got)
os.rename(os.path.join(d, "c"), os.path.join(d, "e"))
print("rename", got[:1])
# Closing the directory ends it.
os.close(fd)
del got[:]
os.rename(os.path.join(d, "e"), os.path.join(d, "f"))
print("after close", got)

# Errors: not a directory, a bad signal.
f = os.open(os.path.join(d, "f"), os.O_RDONLY)
for what, call in (
    ("file", lambda: fcntl.fcntl(f, fcntl.F_NOTIFY, fcntl.DN_CREATE)),
    ("bad signal", lambda: fcntl.fcntl(f, fcntl.F_SETSIG, 65)),
):
    try:
        call()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
print("file cleared", fcntl.fcntl(f, fcntl.F_NOTIFY, 0))
