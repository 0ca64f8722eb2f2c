"""A warm process forkserver: the `forkserver` peer of `zeroboot bench compare`.

One host python3 imports what zeroboot's Python agent imports, once, then
forks a child per snippet; the child runs the code as __main__ with fds 1
and 2 on pipes, as the agent does in a zeroboot fork. Process isolation
only (the child is an ordinary process of the host's kernel).

The protocol is on fd 0 (requests) and the fd 1 it started with (replies);
fd 1 itself is pointed at /dev/null so nothing else can corrupt it.

Request: op (1 byte), u32 LE length, code (UTF-8).
  op b"R": run the code; reply i32 LE exit status, u32 LE length + stdout,
           u32 LE length + stderr. A child killed by signal N gives 128 + N.
  op b"H": hold: fork a child that runs the code (which should print one
           line, then sleep); reply u32 LE pid once that line arrives. The
           caller kills the child; it is reaped at the next request.
"""

import builtins
import gc
import os
import random
import selectors
import struct
import sys
import traceback
import types

# What agents/python/agent.py imports in the template.
import collections  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import io  # noqa: F401
import itertools  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import pathlib  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import tempfile  # noqa: F401
import time  # noqa: F401

import numpy

PROTO_IN = 0
PROTO_OUT = os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 1)
os.close(_null)
held = []


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(PROTO_IN, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def exit_code_of(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def child(code, out_w, err_w):
    """In the forked child: run `code` as `python3 -c` would; never returns."""
    os.close(PROTO_OUT)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    if out_w > 2:
        os.close(out_w)
    if err_w > 2 and err_w != out_w:
        os.close(err_w)
    random.seed()
    numpy.random.seed()
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    rc = 0
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    except SystemExit as e:
        rc = exit_code_of(e)
    except BaseException:
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next if tb else None)
        rc = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


def status_of(st):
    if os.WIFSIGNALED(st):
        return 128 + os.WTERMSIG(st)
    return os.WEXITSTATUS(st)


def run(code):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        child(code, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    bufs = {out_r: [], err_r: []}
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ)
    sel.register(err_r, selectors.EVENT_READ)
    open_fds = 2
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if chunk:
                bufs[key.fd].append(chunk)
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds -= 1
    sel.close()
    _, st = os.waitpid(pid, 0)
    out = b"".join(bufs[out_r])
    err = b"".join(bufs[err_r])
    return (
        struct.pack("<iI", status_of(st), len(out))
        + out
        + struct.pack("<I", len(err))
        + err
    )


def hold(code):
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        null = os.open(os.devnull, os.O_WRONLY)
        child(code, out_w, null)
    os.close(out_w)
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(out_r, 1)
        if not chunk:
            break
        line += chunk
    os.close(out_r)
    held.append(pid)
    return struct.pack("<I", pid)


def reap():
    for pid in list(held):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            held.remove(pid)


def main():
    gc.collect()
    gc.freeze()
    while True:
        try:
            op = read_exact(1)
        except EOFError:
            return
        (n,) = struct.unpack("<I", read_exact(4))
        code = read_exact(n).decode()
        reap()
        reply = hold(code) if op == b"H" else run(code)
        write_all(PROTO_OUT, reply)


main()
