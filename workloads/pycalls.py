# 1M (argv[1]) calls of one function with a no-op profile function set, so that CPython 3.11
# fires python:function__entry for each; prints ns per call of the loop. GC runs: argv[2]
# gc.collect() calls first (GC probe cost).
import gc, sys, time
calls = int(sys.argv[1])
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):
    gc.collect()
def work(x):
    return x
sys.setprofile(lambda *a: None)
t = time.perf_counter_ns()
for i in range(calls):
    work(i)
t = time.perf_counter_ns() - t
sys.setprofile(None)
print(t / calls, flush=True)
