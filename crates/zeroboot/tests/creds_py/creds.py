# Credentials and file ownership as Linux has them, run as root (natively
# or in the sandbox): the setuid family, ownership of created files, chown's
# rules, and the permission checks an unprivileged process meets.
import errno, os, sys, tempfile

def err(f, *a):
    try:
        r = f(*a)
        return "ok" if r is None else r
    except OSError as e:
        return errno.errorcode[e.errno]

def opened(p, mode):
    open(p, mode).close()

def owner(p):
    st = os.lstat(p)
    return (st.st_uid, st.st_gid)

def child(fn):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        except Exception as e:
            print("child failed:", repr(e))
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.waitpid(pid, 0)

os.setgroups([])
print("root", os.getresuid(), os.getresgid(), os.getgroups())
d = tempfile.mkdtemp(dir="/tmp")
os.chmod(d, 0o777)
with open(f"{d}/rootfile", "w") as f:
    f.write("root's\n")
opened(f"{d}/rootfile2", "w")
print("root's file", owner(f"{d}/rootfile"))

def as_user():
    os.setgroups([27])
    print("groups", os.getgroups())
    os.setresgid(1000, 1000, 1000)
    os.setreuid(1000, 1000)
    print("user", os.getresuid(), os.getresgid())
    print("setuid(0)", err(os.setuid, 0))
    print("setreuid(-1, 0)", err(os.setreuid, -1, 0))
    print("setresuid(-1, 0, -1)", err(os.setresuid, -1, 0, -1))
    print("setgid(0)", err(os.setgid, 0))
    print("setgroups", err(os.setgroups, []))
    print("setuid(1000)", err(os.setuid, 1000))
    print("write root's file", err(opened, f"{d}/rootfile", "w"))
    print("read root's file", err(lambda: open(f"{d}/rootfile").read().strip()))
    print("create in /etc", err(opened, "/etc/x", "w"))
    print("mkdir in /etc", err(os.mkdir, "/etc/d"))
    print("unlink in /etc", err(os.unlink, "/etc/passwd"))
    print("chmod root's file", err(os.chmod, f"{d}/rootfile", 0o666))
    print("list /root", err(os.listdir, "/root"))
    with open(f"{d}/mine", "w") as f:
        f.write("mine\n")
    os.mkdir(f"{d}/mydir")
    print("mine", owner(f"{d}/mine"), owner(f"{d}/mydir"))
    print("give away", err(os.chown, f"{d}/mine", 0, -1))
    print("to a group of mine", err(os.chown, f"{d}/mine", -1, 27), owner(f"{d}/mine"))
    print("to another group", err(os.chown, f"{d}/mine", -1, 5))
    print("chown root's file", err(os.chown, f"{d}/rootfile", -1, -1), err(os.chown, f"{d}/rootfile", 0, 0))
    print("access", os.access("/etc/passwd", os.R_OK), os.access("/etc/passwd", os.W_OK),
          os.access(f"{d}/mine", os.W_OK), os.access("/bin/sh", os.X_OK))
    print("chmod mine", err(os.chmod, f"{d}/mine", 0o600))
    print("unlink root's file", err(os.unlink, f"{d}/rootfile2"))

child(as_user)
os.chmod(d, 0o1777)

def sticky():
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)
    print("sticky unlink", err(os.unlink, f"{d}/rootfile"), err(os.rename, f"{d}/rootfile", f"{d}/x"))
    print("own in sticky", err(os.rename, f"{d}/mine", f"{d}/mine2"), err(os.unlink, f"{d}/mine2"))

child(sticky)
print("root chowns", err(os.chown, f"{d}/mydir", 0, 0), owner(f"{d}/mydir"))

def saved():
    os.setresuid(-1, 1000, -1)
    print("seteuid", os.getresuid(), "write", err(opened, f"{d}/rootfile", "a"))
    os.setresuid(-1, 0, -1)
    print("back", os.getresuid(), "write", err(opened, f"{d}/rootfile", "a"))
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    print("setfsuid", libc.setfsuid(1000), libc.setfsuid(0xFFFFFFFF), libc.setfsuid(0))
    os.setresuid(1000, 1000, 1000)
    print("setfsuid unprivileged", libc.setfsuid(0), libc.setfsuid(0xFFFFFFFF))

child(saved)

def exec_keeps():
    os.setresgid(1000, 1000, 1000)
    os.setresuid(1000, 1000, 1000)
    os.execv("/usr/bin/python3", ["python3", "-c",
             "import os; print('after exec', os.getresuid(), os.getresgid())"])

child(exec_keeps)
