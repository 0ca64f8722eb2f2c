# chroot: one root per sandbox; path errors first.
import errno
import os


def err(f, *a):
    try:
        f(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


print("chroot /", err(os.chroot, "/"))
print("chroot missing", err(os.chroot, "/nonexistent-dir"))
print("chroot a file", err(os.chroot, "/etc/passwd"))
print("chroot /tmp", err(os.chroot, "/tmp"))
