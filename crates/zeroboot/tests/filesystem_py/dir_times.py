# A directory's modification time moves when a name in it comes or goes
# (create, unlink, mkdir, rename in and out), in a new directory and in
# one of the image (/tmp); an attribute change of a file does not.
import functools
import os
import tempfile

print = functools.partial(print, flush=True)


def check(d):
    def mtime():
        return os.stat(d).st_mtime_ns

    def step(what, f, moves=True):
        os.utime(d, (1_000_000_000, 1_000_000_000))
        f()
        m = mtime()
        print(where, what, "moved" if m != 1_000_000_000 * 10**9 else "kept")

    p = os.path.join(d, "f")
    step("create", lambda: open(p, "w").close())
    step("chmod of a file", lambda: os.chmod(p, 0o600))
    step("write to a file", lambda: open(p, "a").write("x"))
    step("rename out", lambda: os.rename(p, os.path.join(other, "f")))
    step("rename in", lambda: os.rename(os.path.join(other, "f"), p))
    step("unlink", lambda: os.unlink(p))
    step("mkdir", lambda: os.mkdir(p))
    step("rmdir", lambda: os.rmdir(p))
    step("symlink", lambda: os.symlink("target", p))
    step("unlink of a symlink", lambda: os.unlink(p))
    print(where, "ctime follows", os.stat(d).st_ctime_ns >= os.stat(d).st_mtime_ns)


other = tempfile.mkdtemp()
where = "new dir"
check(tempfile.mkdtemp())
where = "/tmp"
check("/tmp")
