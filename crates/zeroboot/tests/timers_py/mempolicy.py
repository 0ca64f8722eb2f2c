# NUMA policy calls, answered as a Linux on a one-node machine answers.
import ctypes
import mmap

libc = ctypes.CDLL(None, use_errno=True)
MBIND, SET_MEMPOLICY, GET_MEMPOLICY = 237, 238, 239
L = ctypes.c_long


def call(nr, *args):
    r = libc.syscall(L(nr), *args)
    return r if r >= 0 else -ctypes.get_errno()


mode, mask = ctypes.c_int(-1), ctypes.c_ulong(0xFF)
node0, node1 = ctypes.c_ulong(1), ctypes.c_ulong(2)
ref = ctypes.byref
print("get default", call(GET_MEMPOLICY, ref(mode), ref(mask), L(64), None, L(0)), mode.value, mask.value)
print("bind node 0", call(SET_MEMPOLICY, L(2), ref(node0), L(64)))
print("get bind", call(GET_MEMPOLICY, ref(mode), ref(mask), L(64), None, L(0)), mode.value, mask.value)
print("bind node 1", call(SET_MEMPOLICY, L(2), ref(node1), L(64)))
print("default with nodes", call(SET_MEMPOLICY, L(0), ref(node0), L(64)))
print("bind without nodes", call(SET_MEMPOLICY, L(2), None, L(0)))
print("back to default", call(SET_MEMPOLICY, L(0), None, L(0)))
print("mems allowed", call(GET_MEMPOLICY, None, ref(mask), L(64), None, L(4)), mask.value)
m = mmap.mmap(-1, 8192)
addr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(m)))
print("mbind", call(MBIND, addr, L(8192), L(2), ref(node0), L(64), L(0)))
print("mbind node 1", call(MBIND, addr, L(8192), L(2), ref(node1), L(64), L(0)))
print("node of page", call(GET_MEMPOLICY, ref(mode), None, L(0), addr, L(3)), mode.value)
print("bad flags", call(GET_MEMPOLICY, None, None, L(0), None, L(8)))
