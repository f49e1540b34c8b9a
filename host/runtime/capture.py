"""What a guest writes (stdout, stderr, `log.write`), kept up to a byte budget; the rest counted, never copied.

wasmtime-py's own `WasiConfig.stdout_custom` copies every chunk the guest writes into a Python
`bytes` before the callback sees its length, so one 300 MiB write cost the host 300 MiB more
before it could be refused. The callback here is registered with the C API directly: it reads
the chunk's declared length first and copies at most what the budget still has room for.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import weakref

from wasmtime import WasiConfig
from wasmtime import _ffi as ffi


class Bounded:
    """Text collected up to a byte budget; the rest is counted and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.lines: list[str] = []

    def room(self, size: int) -> bool:
        """Whether `size` more bytes fit; a caller asks before it copies anything that large."""
        return self.used + size <= self.limit

    def drop(self, size: int) -> None:
        self.dropped += size

    def add(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        if not self.room(len(data)):
            self.drop(len(data))
            return
        self.used += len(data)
        self.lines.append(text)

    def add_bytes(self, data: bytes) -> None:
        if not self.room(len(data)):
            self.drop(len(data))
            return
        self.used += len(data)
        self.lines.append(data.decode("utf-8", "replace"))

    def reset(self) -> None:
        self.used = self.dropped = 0
        self.lines = []


# Weakly held: an entry goes when its sink does. No C finalizer is registered for it: wasmtime drops
# a WASI context's output streams on a Tokio worker thread, possibly while the interpreter is
# finalizing, and a callback into Python then aborts the process (seen with wasmtime 50.0.1).
_OUTPUTS: weakref.WeakValueDictionary[int, Bounded] = weakref.WeakValueDictionary()
_ids = itertools.count(1)  # 0 would reach the callback as a NULL `data`, i.e. None


def _output(data: int | None, pointer: ctypes._Pointer[ctypes.c_ubyte], size: int) -> int:
    """wasmtime's stdout/stderr callback: keep what fits, count the rest; always report it all written."""
    try:
        sink = _OUTPUTS.get(data or 0)
        if sink is None or size == 0:
            return size
        # Only what still fits is copied out of wasmtime's buffer; the rest is counted by its length.
        kept = max(0, min(size, sink.limit - sink.used))
        if kept:
            sink.add_bytes(ctypes.string_at(pointer, kept))
        sink.drop(size - kept)
        return size
    except Exception:  # an exception must not cross into wasmtime: the write fails instead
        return -errno.EIO


# Module-level so the C function pointers outlive every WASI context that holds them.
_OUTPUT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t)(
    _output
)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()  # a NULL function pointer


def capture_stdio(wasi: WasiConfig, sink: Bounded) -> None:
    """The guest's stdout and stderr go into `sink`, bounded before they are copied."""
    for setter in (ffi.wasi_config_set_stdout_custom, ffi.wasi_config_set_stderr_custom):
        key = next(_ids)
        _OUTPUTS[key] = sink
        setter(wasi.ptr(), _OUTPUT_CALLBACK, key, _NO_FINALIZER)
