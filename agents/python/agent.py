"""zeroboot's Python agent: runs inside the sandbox, imports the heavy
modules once, then serves requests from the control channel.

The process blocks reading the control channel (fd ZEROBOOT_CONTROL_FD):
that blocked state is what a template is. Every fork of it receives one
request, runs the code as __main__ with fds 1 and 2 going to buffers the
VMM captures, replies, and blocks again.

Frames on the channel are a 4-byte little-endian length and a JSON object.
Request: {"code": str, "seed": int, "persist": bool, "env": {str: str}}.
Reply: {"exit_code": int}. A request with "seed" reseeds the process's
PRNGs (`random`, numpy's): every one-shot execution, and a live sandbox's
first request only, so that a seed set in one request holds for the next.

A one-shot execution (no "persist") runs in a fresh __main__. A live
sandbox's requests carry "persist": true and share one __main__, so names
defined by one request are there for the next. "env", when present, is
added to os.environ first.
"""

import builtins
import gc
import json
import os
import random
import struct
import sys
import traceback
import types

# Modules users reach for, imported once in the template so that forks
# start with them loaded.
import collections  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import io  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import pathlib  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import tempfile  # noqa: F401
import time  # noqa: F401

try:
    import numpy
except ImportError:  # an image without numpy
    numpy = None

CONTROL_FD = int(os.environ.get("ZEROBOOT_CONTROL_FD", "3"))


# A request is read with one large read (every system call is a VM exit)
# into this buffer, made once in the template, and split from `pending`.
read_buffer = bytearray(1 << 16)
read_view = memoryview(read_buffer)
pending = bytearray()


def read_exact(n):
    while len(pending) < n:
        got = os.readv(CONTROL_FD, [read_buffer])
        if not got:
            raise EOFError("control channel closed")
        pending.extend(read_view[:got])
    data = bytes(pending[:n])
    del pending[:n]
    return data


def read_request():
    """The next request: parks here (the template's state) until one comes."""
    (n,) = struct.unpack("<I", read_exact(4))
    return json.loads(read_exact(n))


def reply(obj):
    data = json.dumps(obj).encode()
    frame = struct.pack("<I", len(data)) + data
    while frame:
        frame = frame[os.write(CONTROL_FD, frame):]


def exit_code_of(e):
    """The exit status `python3 -c` would give for SystemExit e."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def reseed(seed):
    """Per-execution entropy for every process-global PRNG."""
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed % (2**32))


# The __main__ that a live sandbox's requests share (made by the first).
session_main = None


def new_main():
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    return main


def run(code, persist=False):
    global session_main
    if persist:
        if session_main is None:
            session_main = new_main()
        main = session_main
    else:
        main = new_main()
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
        return 0
    except SystemExit as e:
        return exit_code_of(e)
    except BaseException:
        # As the interpreter prints an uncaught exception (without this
        # frame).
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next if tb else None)
        return 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        try:
            sys.stderr.flush()
        except Exception:
            pass


def main():
    # Objects created so far live forever: keep the collector off them.
    gc.collect()
    gc.freeze()
    while True:
        req = read_request()
        if "seed" in req:
            reseed(int(req["seed"]))
        env = req.get("env")
        if isinstance(env, dict):
            os.environ.update({str(k): str(v) for k, v in env.items()})
        code = run(req.get("code", ""), bool(req.get("persist", False)))
        reply({"exit_code": code})


if __name__ == "__main__":
    main()
