"""A test worker that needs nothing but the standard library: it exercises the toolchain contract
(request/response files, streamed log, failures, time limit) without a vendor SDK."""

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.environ["EDGESHIP_WORKER_LIB"])
from _worker_io import WorkerError, log, serve  # noqa: E402


def lower(request):
    options = request.get("options") or {}
    outdir = Path(request["outdir"])
    for i in range(3):
        log(f"step {i}")
    if options.get("fail"):
        raise WorkerError(options["fail"], "toolkit")
    if options.get("raise"):
        raise ValueError(options["raise"] + "\nsecond line of the vendor's message")
    if options.get("sleep"):
        (outdir / "worker.pid").write_text(str(os.getpid()))
        time.sleep(float(options["sleep"]))
    if options.get("crash"):
        os._exit(3)
    if options.get("bad_response"):
        return {"files": {"x": 5}}
    if options.get("escape"):
        return {"files": {"passwd": "../../etc/passwd"}}
    shutil.copyfile(request["model"], outdir / "echo.bin")
    return {"files": {"echo.bin": "echo.bin"}, "runtime": "echo-runtime", "report": {"tool": "echo", "platform": request["target"]["platform"]},
            "versions": {"echo": "1.0"}}


def probe(request):
    return {"versions": {"echo": "1.0"}}


if __name__ == "__main__":
    sys.exit(serve({"lower": lower, "probe": probe}))
