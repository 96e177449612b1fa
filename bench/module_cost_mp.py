# What each module a node runs costs in the GC heap, imported in the order the node needs them:
#   micropython -X heapsize=1m module_cost_mp.py persist config asyncio ...
# Prints one JSON line: [[module, bytes], ...]. Frozen, a module's bytecode and constants stay
# in flash and its function and class objects are what remains; from .mpy the bytecode and its
# qstrs come into the heap too.
import gc
import json
import sys

out = []
for name in sys.argv[1:]:
    gc.collect()
    a = gc.mem_alloc()
    __import__(name)
    gc.collect()
    out.append([name, gc.mem_alloc() - a])
print(json.dumps(out))
