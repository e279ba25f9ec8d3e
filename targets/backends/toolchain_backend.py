"""The part every out-of-process backend shares: prepare the request files, run the worker, wrap the answer.

A vendor backend (rknn, and third-party ones behind SDK containers) subclasses `ToolchainBackend`,
names its `Toolchain`, and says what goes in `target.platform` and `options`; the worker in the
toolchain environment does the vendor-specific work. Validation samples: the lower stage may pass
its validation inputs and the float reference; without them the backend makes seeded synthetic
inputs from the model's declared input shapes, so the vendor's simulator check always runs (said in
the report).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeship.errors import BuildError
from edgeship.targets.backends import Lowered
from edgeship.targets.toolchains import contract
from edgeship.targets.toolchains.runner import DEFAULT_TIMEOUT_S, run_worker, stderr_log
from edgeship.targets.toolchains.spec import Toolchain

SYNTHETIC_SAMPLES = 8
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_graph(model: Path):
    """The model's graph (weights not loaded); a BuildError line when the file is not ONNX."""
    import onnx

    try:
        return onnx.load(str(model), load_external_data=False).graph
    except Exception as err:  # a truncated or foreign file: protobuf's own exception types
        raise BuildError(f"{model}: not a readable ONNX model ({type(err).__name__})", stage="lower") from None


def synthetic_samples(model: Path, path: Path, count: int = SYNTHETIC_SAMPLES, seed: int = 0) -> Path:
    """Seeded standard-normal inputs for every graph input with a fixed shape (N, *shape) -> .npz."""
    import onnx

    graph = load_graph(model)
    inits = {i.name for i in graph.initializer}
    rng = np.random.default_rng(seed)
    arrays = {}
    for value in graph.input:
        if value.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        arrays[value.name] = rng.standard_normal((count, *dims)).astype(dtype)
    np.savez(path, **arrays)
    return path


def clean_log_line(line: str) -> str:
    """A vendor log line without colour codes and without the progress-bar redraws before its last `\\r`."""
    return _ANSI.sub("", line).split("\r")[-1].rstrip()


class ToolchainBackend:
    """Base of backends whose compiler runs in a toolchain environment."""

    name = ""
    version = "1"
    integer_only = False
    toolchain: Toolchain
    runtime = ""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, log: Callable[[str], None] | None = None, **options: Any):
        self.timeout_s = float(timeout_s)
        self.options = options
        self.log = log

    def platform(self, target: Any) -> str | None:
        return self.options.get("platform")

    def worker_options(self) -> dict:
        return {k: v for k, v in self.options.items() if k != "platform"}

    def lower(self, model: Path, target: Any, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        synthetic = samples is None
        if synthetic:
            samples = synthetic_samples(Path(float_model or model), workdir / "synthetic_samples.npz")
        target_name = getattr(target, "name", None) or (target or {}).get("metadata", {}).get("name", "")
        request = contract.request(
            self.toolchain.name, "lower", str(workdir), model=str(Path(model).resolve()),
            float_model=str(Path(float_model).resolve()) if float_model else None, samples=str(Path(samples).resolve()),
            target={"name": target_name, "platform": self.platform(target)}, options=self.worker_options())
        show = self.log or stderr_log(self.toolchain.name)

        def on_line(line: str) -> None:
            line = clean_log_line(line)
            if line and self.shown(line):
                show(line)

        response = run_worker(self.toolchain, request, workdir, log=on_line, timeout=self.timeout_s)
        report = dict(response.get("report") or {})
        report["inputs"] = "synthetic (seeded normal, from the model's input shapes)" if synthetic else "validation data"
        report["versions"] = response.get("versions") or {}
        report["worker_seconds"] = response["seconds"]
        report["log"] = response["log"]
        report.update(self.read_log(Path(response["log"]), Path(model)))
        files = {name: workdir / rel for name, rel in (response.get("files") or {}).items()}
        return Lowered(files, response.get("runtime") or self.runtime, report)

    def shown(self, line: str) -> bool:
        """Whether a log line streams to the user (all lines are kept in the log file regardless)."""
        return True

    def read_log(self, log: Path, model: Path) -> dict:
        """What the vendor said in its log that the report should carry; subclasses parse their tool's wording."""
        return {}
