"""Run a toolchain's worker in its environment: request file in, response file out, log streamed.

The worker runs as `<env>/bin/python -E -s <worker.py> request.json response.json` in the output
folder, with a hard time limit. Its log (the vendor SDK's chatter included) streams to `log` line by
line, prefixed with the toolchain's name, and is kept in `<outdir>/<toolchain>.log`. Every failure
(not installed, timeout, crash, `ok: false`, a response that breaks the contract) becomes one
ToolchainError line naming the toolchain, the reason, and where the full log is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from edgeship.errors import ToolchainError
from edgeship.targets.toolchains import contract
from edgeship.targets.toolchains.env import ToolchainEnv
from edgeship.targets.toolchains.process import stream
from edgeship.targets.toolchains.spec import WORKERS_DIR, Toolchain

DEFAULT_TIMEOUT_S = 900.0
WORKER_LIB_ENV = "EDGESHIP_WORKER_LIB"  # folder holding _worker_io.py, for workers kept elsewhere


def stderr_log(name: str) -> Callable[[str], None]:
    def write(line: str) -> None:
        print(f"  [{name}] {line}", file=sys.stderr, flush=True)

    return write


def _worker_env() -> dict[str, str]:
    """A clean environment: no PYTHONPATH or user site leaking edgeship's packages into the vendor's."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                WORKER_LIB_ENV: str(WORKERS_DIR)})
    return env


def run_worker(toolchain: Toolchain, request: dict[str, Any], outdir: Path,
               log: Callable[[str], None] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run one request; the response document on success, ToolchainError otherwise."""
    env = ToolchainEnv(toolchain)
    env.require()
    outdir.mkdir(parents=True, exist_ok=True)
    request_path, response_path = outdir / "request.json", outdir / "response.json"
    log_path = outdir / f"{toolchain.name}.log"
    request_path.write_text(json.dumps(request, indent=2))
    response_path.unlink(missing_ok=True)
    show = log or (lambda line: None)
    with open(log_path, "w", encoding="utf-8") as log_file:
        def on_line(line: str) -> None:
            log_file.write(line + "\n")
            show(line)

        cmd = [str(env.python), "-E", "-s", str(toolchain.worker_path), str(request_path), str(response_path)]
        done = stream(cmd, on_line, timeout=timeout, env=_worker_env(), cwd=str(outdir))
    where = f"log: {log_path}"
    if done.timed_out:
        raise ToolchainError(toolchain.name, f"worker stopped after the {timeout:.0f} s time limit ({where})", stage="lower")
    try:
        response = json.loads(response_path.read_text())
    except (OSError, ValueError):
        last = done.tail[-1].strip()[:300] if done.tail else "no output"
        raise ToolchainError(toolchain.name, f"worker exited {done.returncode} without a response: {last} ({where})",
                             stage="lower") from None
    problems = contract.response_problems(response)
    if problems:
        raise ToolchainError(toolchain.name, f"worker response breaks {contract.CONTRACT}: {problems[0]} ({where})",
                             stage="lower")
    if not response["ok"]:
        error = response.get("error") or {"kind": "error", "message": "no message"}
        raise ToolchainError(toolchain.name, f"{error['message']} [{error['kind']}] ({where})", stage="lower")
    for name, rel in (response.get("files") or {}).items():
        if not (outdir / rel).resolve().is_relative_to(outdir.resolve()) or not (outdir / rel).is_file():
            raise ToolchainError(toolchain.name, f"worker names file {name!r} -> {rel!r}, which is not a file in "
                                 f"{outdir} ({where})", stage="lower")
    response["log"] = str(log_path)
    response["seconds"] = round(done.seconds, 3)
    return response
