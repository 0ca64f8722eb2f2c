# multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor.
import multiprocessing as mp
import concurrent.futures as cf

def square(x):
    return x * x

if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as p:
        print("pool map", sum(p.map(square, range(100))))
    with cf.ProcessPoolExecutor(2) as ex:
        print("executor", list(ex.map(square, [1, 2, 3, 4])))
