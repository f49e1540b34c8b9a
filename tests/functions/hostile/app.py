"""Test-only hostile function. Escape attempts report what they got, so tests can see they got nothing."""

import json
import os
import socket
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import directory, log, records
from wit_world.imports.types import Error_InvalidInput, Request, Response


def _attempt(action):
    try:
        return {"succeeded": True, "value": action()}
    except Err as err:
        return {"succeeded": False, "error": type(err.value).__name__, "detail": str(getattr(err.value, "value", ""))}
    except BaseException as exc:
        return {"succeeded": False, "error": type(exc).__name__}


def _read_file(path):
    with open(path) as f:
        return f.read(100)


def _list_dir(path):
    return os.listdir(path)


def _connect(port):
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        conn.connect(("127.0.0.1", port))
        conn.sendall(b"leak")
    finally:
        conn.close()
    return "connected"


def _memory_bomb():
    return bytearray(1 << 30)  # one request far over the cap: linear memory cannot grow to it


def _memory_hoard():
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))


# What `fill` allocated stays here, so a warm-up that fills memory leaves its instance that large.
_KEPT = []


def _fill(mib):
    block = bytearray(mib * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1  # touched, so the pages are really the host's
    _KEPT.append(block)
    return len(block)


# Module state outlives a call only if an instance served two: `stash` tells a later call what an
# earlier one kept here.
_STASH = []


def _deep(depth):
    answer = []
    for _ in range(depth):
        answer = [answer]
    return answer


def _loop():
    n = 0
    while True:
        n += 1


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        args = json.loads(request.args)
        mode = args.get("mode")
        if mode == "ok":
            return Response(json.dumps({"ok": True}))
        if mode == "loop":
            _loop()
        if mode == "memory":
            _memory_bomb()
        if mode == "hoard":
            _memory_hoard()
        if mode == "raise":
            raise RuntimeError("hostile function raised")
        if mode == "exit":
            sys.exit(3)
        if mode == "huge":
            return Response(json.dumps({"blob": "x" * (4 * 1024 * 1024)}))
        if mode == "garbage":
            return Response("\x00not json{")
        if mode == "stdout":
            for _ in range(500):
                print("flooding stdout " * 20)
            log.write(log.Level.INFO, "x" * 100_000)
            return Response(json.dumps({"ok": True}))
        if mode == "sleep":
            # A blocking WASI call: monotonic-clock subscribe and poll, where no guest code runs.
            time.sleep(float(args.get("seconds", 5)))
            return Response(json.dumps({"slept": True}))
        if mode == "flood_control":
            # The guest's own side of a flood (the string and its UTF-8 copy), sent nowhere: what a
            # flood costs the host is measured against this.
            size = len(("x" * int(args.get("size", 0))).encode())
            return Response(json.dumps({"size": size}))
        if mode == "log_flood":
            # `char` other than "x" makes a string whose UTF-8 is longer than CPython's own form
            # ("é": 1 byte there, 2 in UTF-8): the most a guest's memory can hand the host.
            log.write(log.Level.INFO, str(args.get("char", "x")) * int(args.get("size", 0)))
            return Response(json.dumps({"ok": True}))
        if mode == "directory_flood":
            # One huge name for the directory: its length is checked before the host copies it.
            name = str(args.get("char", "x")) * int(args.get("size", 0))
            query = directory.Query(name=name, birth_date=None, identifier=None)
            return Response(json.dumps({"directory": _attempt(lambda: len(directory.search(query, 20)))}))
        if mode == "pseudonym_flood":
            long_id = str(args.get("char", "p")) * int(args.get("size", 0))
            return Response(json.dumps({"pseudonym": _attempt(lambda: records.pseudonym(long_id))}))
        if mode == "query_flood":
            # Millions of tiny search parameters: cheap in the guest's memory, each a value wasmtime lifts.
            _fill(int(args.get("mib", 0)))  # and, with `mib`, the rest of its memory taken first
            params = [("", "")] * int(args.get("size", 0))
            found = _attempt(lambda: len(records.query(request.patient_id, "Patient", params)))
            return Response(json.dumps({"query": found}))
        if mode == "stdout_flood":
            sys.stdout.write(str(args.get("char", "x")) * int(args.get("size", 0)))
            sys.stdout.flush()
            return Response(json.dumps({"ok": True}))
        if mode == "answer_flood":
            return Response(json.dumps(str(args.get("char", "x")) * int(args.get("size", 0)), ensure_ascii=False))
        if mode == "containers":
            # Small JSON that parses big: `[[],[],...]` takes about 24 times its length as Python lists.
            unit = str(args.get("target", "[]"))
            return Response("[" + (unit + ",") * int(args.get("size", 0)) + unit + "]")
        if mode == "fill":
            return Response(json.dumps({"filled": _fill(int(args.get("mib", 1)))}))
        if mode == "long_id":
            # An oversized argument to an import: refused before the host does any work with it.
            long_id = "p" * int(args.get("size", 0))
            return Response(json.dumps({"search": _attempt(lambda: records.search(long_id, "Patient"))}))
        if mode == "escape":
            return Response(
                json.dumps(
                    {
                        "file": _attempt(lambda: _read_file("/etc/passwd")),
                        "cwd_file": _attempt(lambda: _read_file("pyproject.toml")),
                        "root_listing": _attempt(lambda: _list_dir("/")),
                        "environ": dict(os.environ),
                        "socket": _attempt(lambda: _connect(int(args.get("port", 9)))),
                        "dns": _attempt(lambda: socket.getaddrinfo("localhost", 80)),
                    }
                )
            )
        if mode == "other_patient":
            return Response(
                json.dumps(
                    {
                        "other": _attempt(lambda: records.search(args["target"], "Patient")),
                    }
                )
            )
        if mode == "forbidden_type":
            return Response(
                json.dumps(
                    {
                        "consent": _attempt(lambda: records.search(request.patient_id, "Consent")),
                        "own": _attempt(lambda: len(records.search(request.patient_id, "Patient"))),
                    }
                )
            )
        if mode == "forged_resource":
            # A resource of a type the decision never allowed, made up inside the sandbox: the
            # host's check of the answer against the obligations must refuse it.
            forged = {"resourceType": "Consent", "id": "forged", "status": "active"}
            return Response(json.dumps({"smuggled": forged}))
        if mode == "deep":
            # Valid JSON nested far deeper than any answer needs: the host's check must not recurse on it.
            return Response(json.dumps(_deep(int(args.get("size", 5000)))))
        if mode == "stash":
            before = list(_STASH)
            kept = _attempt(lambda: records.search(request.patient_id, "Patient"))
            _STASH.append({"patient": request.patient_id, "records": kept})
            return Response(json.dumps({"stash_before": before}))
        if mode == "directory":
            query = directory.Query(name=args.get("target"), birth_date=None, identifier=None)
            return Response(json.dumps({"directory": _attempt(lambda: [m.id for m in directory.search(query, 20)])}))
        if mode == "pseudonym":
            return Response(json.dumps({"pseudonym": _attempt(lambda: records.pseudonym(request.patient_id))}))
        if mode == "echo_split":
            # A value the function was told (it could have guessed it), released reshaped: split in threes.
            # It reads its patient first, as a summary would: the host then knows what it masked.
            _attempt(lambda: records.search(request.patient_id, "Patient"))
            target = str(args.get("target", ""))
            return Response(json.dumps({"parts": [target[i : i + 3] for i in range(0, len(target), 3)]}))
        if mode == "reason":
            # A listed reason code, then free text holding the patient's id: only the code may pass.
            code = str(args.get("target", "out_of_range"))
            raise Err(Error_InvalidInput(f"code:{code} for patient {request.patient_id}"))
        raise Err(Error_InvalidInput("unknown mode"))
