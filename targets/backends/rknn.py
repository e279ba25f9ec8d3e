"""Rockchip RKNN backend: edgeship's QDQ ONNX -> `.rknn` for the RK3588/RK3576 NPUs, via rknn-toolkit2.

rknn-toolkit2 pins numpy <= 1.26, onnx <= 1.18 and torch <= 2.4 and imports torch at import time even
for ONNX input, so it runs in its own toolchain environment. torch 1.12.1 (inside the toolkit's
declared range, torch >= 1.10.1) is the newest PyPI torch for Linux that does not pull the separate
nvidia-* CUDA wheels: the environment is 2.4 GB instead of 5.6 GB with torch 2.4.0, and its wheels
are CPython 3.10 only, hence `python="3.10"`. The device runs the `.rknn` with rknn-toolkit-lite2.

What the toolkit reports (with verbose=True): its "Network Layer Information Table" (per layer: the
unit it runs on, NPU or CPU, and its cycle estimate) and the internal/weight memory totals. Layers it
places on the CPU are CPU rows there (`cpu_ops`); ops it has no lowering for at all print "No lowering
found for ..." and run as CPU custom operators (`unsupported_ops`). It also
prints `E RKNN: ... Unkown op target: 0` during builds that succeed: recorded as benign, not an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from edgeship.targets.backends.toolchain_backend import ToolchainBackend, clean_log_line, load_graph
from edgeship.targets.toolchains.spec import Toolchain

TOOLCHAIN = Toolchain(
    name="rknn",
    requirements=("rknn-toolkit2==2.5.0", "torch==1.12.1"),
    python="3.10",
    worker="rknn_worker.py",
    probe=("rknn.api",),
    description="Rockchip rknn-toolkit2 2.5.0 (RK3588, RK3576, RK3568, RV1106 ...): ONNX -> .rknn, simulator",
    notes=("torch 1.12.1 (CPU + bundled CUDA 10.2, no nvidia-* wheels) instead of torch 2.4.0 keeps the "
           "environment at ~2.4 GB instead of ~5.6 GB; rknn-toolkit2 imports torch even for ONNX input",),
)

BENIGN = (re.compile(r"Unkown op target: 0"),)  # printed by successful builds of rknn-toolkit2 2.5.0
_LAYER_ROW = re.compile(r"^D RKNN: \[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(NPU|CPU)\s+(\S+)\s+(\S+)\s+(\d+)/(\d+)/(\d+)\s+(\S+)\s+(.*)$")
_MEMORY = re.compile(r"Total (Internal|Weight) Memory Size:\s*([\d.]+)\s*(KB|MB)")
_NO_LOWERING = re.compile(r"No lowering found for: ([^,\s]+), node type = ([^,\s]+)")
_NATIVE_ERROR = re.compile(r"E RKNN: \[[^\]]*\]\s*(.*)")  # librknnc's stderr, often spliced into a stdout line
_PROGRESS = re.compile(r"\s\d{1,2}%\|")  # a progress bar before it reaches 100%


def parse_log(lines: list[str]) -> dict:
    """The toolkit's own report, read from its log: placement, cycles, memory, messages."""
    placement, memory, errors, warnings, benign, custom = [], {}, [], [], [], []
    for raw in lines:
        line = clean_log_line(raw)
        row = _LAYER_ROW.match(line)
        if row:
            op, unit, name = row.group(2), row.group(4), row.group(11).strip()
            if op not in ("InputOperator", "OutputOperator"):
                placement.append({"name": name.split(":", 1)[-1], "op": op, "unit": unit,
                                  "dtype": row.group(3), "cycles": int(row.group(9))})
            continue
        mem = _MEMORY.search(line)
        if mem:
            scale = 1024.0 if mem.group(3) == "MB" else 1.0
            memory["internal_kb" if mem.group(1) == "Internal" else "weights_kb"] = float(mem.group(2)) * scale
            continue
        low = _NO_LOWERING.search(line)
        if low:
            custom.append({"name": low.group(1), "op": low.group(2)})
        native = _NATIVE_ERROR.search(line)
        if native or line.startswith("E "):
            text = f"E RKNN: {native.group(1).strip()}" if native else line.strip()
            (benign if any(p.search(text) for p in BENIGN) else errors).append(text)
        elif line.startswith("W "):
            warnings.append(line.strip())
    # The table is printed once per build pass that compiles the graph; keep the last table.
    last = {}
    for entry in placement:
        last[entry["name"]] = entry
    placement = list(last.values())
    cpu = [p for p in placement if p["unit"] == "CPU"]
    return {"placement": placement,
            "cpu_ops": [{"name": p["name"], "op": p["op"], "reasons": [f"{p['op']} placed on the CPU by rknn-toolkit2"]}
                        for p in cpu],
            "cpu_op_types": sorted({p["op"] for p in cpu}),
            "unsupported_ops": sorted({c["op"] for c in custom}),
            "cycles": sum(p["cycles"] for p in placement) or None, "memory": memory,
            "messages": {"errors": errors, "warnings": warnings[:50], "benign": benign}}


class RknnBackend(ToolchainBackend):
    """Options (profile `backend.options`): platform (rk3588, rk3576, ...), quantizer (edgeship | rknn),
    config (extra keyword arguments for RKNN.config), timeout_s."""

    name = "rknn"
    version = f"1-{TOOLCHAIN.key()}"  # the lower stage's cache key changes with the toolchain's requirement set
    toolchain = TOOLCHAIN
    runtime = "rknn-toolkit-lite2"

    def platform(self, target: Any) -> str | None:
        return self.options.get("platform")

    def worker_options(self) -> dict:
        opts = super().worker_options()
        opts.setdefault("verbose", True)  # the layer table (placement, cycles, memory) is only printed verbose
        return opts

    def shown(self, line: str) -> bool:
        """Info, warnings and errors stream; debug passes and unfinished progress bars stay in the log file."""
        return not (line.startswith("D") or "RKNN: [" in line and ("<<<<" in line or ">>>>" in line)
                    or _PROGRESS.search(line))

    def read_log(self, log: Path, model: Path) -> dict:
        found = parse_log(log.read_text(errors="replace").splitlines())
        origin = onnx_origin(model)
        for entry in found["placement"] + found["cpu_ops"]:
            entry["onnx_node"] = origin(entry["name"])
        placement = found["placement"]
        if placement:
            on_npu = sum(1 for p in placement if p["unit"] == "NPU")
            found["operators"] = {"npu": on_npu, "cpu": len(placement) - on_npu}
            found["ops_on_accelerator_pct"] = round(100.0 * on_npu / len(placement), 1)
        return found


def onnx_origin(model: Path) -> Callable[[str], str]:
    """RKNN layer name -> the ONNX node it came from ("" when none).

    The toolkit names a layer after the ONNX node ("/stem/conv"), a fused part of one ("/head/fc#2") or,
    for nodes without a name, the node's output tensor. Layers it made itself (layout changes such as
    `..._tp_rs`) have no ONNX node."""
    graph = load_graph(model)
    names = {node.name for node in graph.node if node.name}
    by_output = {out: node.name for node in graph.node for out in node.output if node.name}

    def origin(layer: str) -> str:
        base = layer.split("#", 1)[0]
        return base if base in names else by_output.get(base, "")

    return origin
