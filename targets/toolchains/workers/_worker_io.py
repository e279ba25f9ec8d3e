"""Worker side of the toolchain contract: standard library only, runs inside a vendor's environment.

A worker script calls `serve(handlers)`: it reads the request named on the command line, checks the
contract version, calls the handler for the request's action, and writes the response. Anything the
handler raises becomes a response with `ok: false` and a one-line error, so edgeship can report it
naming the toolchain; the traceback goes to the log (stderr), which edgeship streams and keeps.
"""

from __future__ import annotations

import json
import platform
import sys
import traceback
from pathlib import Path
from typing import Callable

CONTRACT = "edgeship.toolchain/v1"  # keep equal to edgeship.targets.toolchains.contract.CONTRACT


class WorkerError(Exception):
    """An expected failure with a clear message (bad input, an op the vendor rejects)."""

    def __init__(self, message: str, kind: str = "error"):
        self.kind = kind
        super().__init__(message)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)


def serve(handlers: dict[str, Callable[[dict], dict]], argv: list[str] | None = None) -> int:
    """Run one request: argv = [request.json, response.json]. Exit status 0 when ok, 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        log("usage: worker.py REQUEST.json RESPONSE.json")
        return 2
    request_path, response_path = Path(args[0]), Path(args[1])
    response: dict = {"contract": CONTRACT, "ok": False, "versions": {"python": platform.python_version()}}
    try:
        request = json.loads(request_path.read_text())
        if request.get("contract") != CONTRACT:
            raise WorkerError(f"request contract {request.get('contract')!r} is not {CONTRACT!r} "
                              "(edgeship and the worker are from different versions)", "contract")
        handler = handlers.get(request.get("action"))
        if handler is None:
            raise WorkerError(f"unknown action {request.get('action')!r} (known: {', '.join(sorted(handlers))})", "contract")
        result = dict(handler(request) or {})
        versions = {**response["versions"], **(result.pop("versions", None) or {})}
        response.update(result)
        response["versions"] = versions
        response["ok"] = True
        response["error"] = None
    except WorkerError as err:
        response["error"] = {"kind": err.kind, "message": str(err)}
    except Exception as err:  # the vendor SDK's own exceptions: keep the traceback in the log
        traceback.print_exc(file=sys.stderr)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        response["error"] = {"kind": type(err).__name__, "message": first}
    _write(response_path, response)
    return 0 if response["ok"] else 1
