"""Runs functions in wasmtime sandboxes: one engine, one linker, a fresh store per invocation.

- `engine`: the process's engine and the epoch ticker that makes deadlines bind;
- `calls`: what goes into a call (request, limits, warm-up) and what comes out;
- `imports`: the host functions a component imports, answering only inside the invocation's scope;
- `sandbox`: instantiating and calling a component in its own store;
- `runner`: the worker threads guest code runs on, left behind when a WASI call blocks past the deadline;
- `capture`: stdout, stderr and log messages, bounded before they are copied;
- `results`: the function's raw answer, checked and parsed;
- `pool`: instances prepared ahead of demand;
- `values`: direct conversion of the hottest values between Python and the component.

Never imports the store, the data generators, the catalogue, the audit trail or HTTP: what a
function may read reaches it through the callables and the scope its caller hands in.
"""
