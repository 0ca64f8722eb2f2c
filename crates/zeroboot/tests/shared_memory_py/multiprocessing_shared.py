# What agents write with multiprocessing: Queue, Value/Array with a Lock,
# shared_memory (Pool and ProcessPoolExecutor are in pool.py).
import multiprocessing as mp
from multiprocessing import shared_memory

def square(x):
    return x * x

def bump(v, arr, lock, n):
    for _ in range(n):
        with lock:
            v.value += 1
    for i in range(len(arr)):
        arr[i] += 1

def producer(q):
    for i in range(5):
        q.put(i)
    q.put(None)

def write_shm(name):
    s = shared_memory.SharedMemory(name=name)
    s.buf[:5] = b"child"
    s.close()

if __name__ == "__main__":
    mp.set_start_method("fork")
    q = mp.Queue()
    pr = mp.Process(target=producer, args=(q,))
    pr.start()
    got = []
    while (x := q.get(timeout=30)) is not None:
        got.append(x)
    pr.join()
    print("queue", got, pr.exitcode)
    v = mp.Value("i", 0)
    arr = mp.Array("d", [1.0, 2.0, 3.0])
    lock = mp.Lock()
    ps = [mp.Process(target=bump, args=(v, arr, lock, 200)) for _ in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    print("value", v.value, "array", list(arr))
    s = shared_memory.SharedMemory(create=True, size=4096)
    p = mp.Process(target=write_shm, args=(s.name,))
    p.start()
    p.join()
    print("shared_memory", bytes(s.buf[:5]))
    s.close()
    s.unlink()
    import os
    print("dev shm left", os.listdir("/dev/shm"))
