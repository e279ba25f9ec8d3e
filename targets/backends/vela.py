"""Backend `vela`: Arm Ethos-U55/U65/U85 (and the PSOC Edge E84's U55) through Arm's Vela compiler.

Lowering: integer TFLite (the `tflite` backend's emitter) -> Vela -> `model_vela.tflite`, whose
NPU parts are Ethos-U command streams and whose other ops run on the Cortex-M under TFLite Micro.
Vela 5.x prints no cycles on the console (DESIGN "Known pitfalls"): the figures come from
`<out>/*_summary_*.csv` (cycles_total, inference_time, SRAM, flash/DRAM) and `*_per-layer.csv`;
`--show-cpu-operations` and Vela's warnings say which ops stay on the CPU, and why.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path

from edgeship.errors import BuildError
from edgeship.targets.backends import Lowered
from edgeship.targets.backends.c_array import write_c_array
from edgeship.targets.backends.litert_run import IO_FILE
from edgeship.targets.backends.tflite_backend import litert_version, sample_feeds, self_check, write_tflite
from edgeship.targets.backends.tflite_emit import EMITTER_VERSION

VELA_TIMEOUT_S = 600
_CPU_WARNING = re.compile(r"^Warning: (?:Unsupported TensorFlow Lite semantics for )?(\w+) '(.+?)'.*Placing on CPU instead")
_CPU_ONLY = re.compile(r"^Info: (\w+) '(.+?)' is a CPU only op")
_REGOR_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.+?)'")
_OP_LINE = re.compile(r"^\s*(CPU|NPU): (\w+) = (.+?)(?: \(outputs .*\))?$")


def vela_version() -> str:
    try:
        return metadata.version("ethos-u-vela")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def config_path(name: str) -> str:
    """`edgeship` -> the packaged ini (PSOC Edge system config); anything else is passed to Vela as is."""
    if name == "edgeship":
        return str(resources.files("edgeship.targets.backends").joinpath("vela_configs/edgeship.ini"))
    return name


def parse_console(text: str) -> tuple[list[dict], dict[str, list[str]]]:
    """(ops listed by --show-cpu-operations with their unit, CPU reasons by output tensor name)."""
    ops, reasons, op_types = [], {}, {}
    current = None
    for line in text.splitlines():
        m = _REGOR_WARNING.match(line)
        if m:  # Vela 5's compiler: "Warning (supported operators) operator: X, ofm: 'name'" then "Reason: ..."
            current = m.group(2)
            op_types[current] = m.group(1)
            reasons.setdefault(current, [])
            continue
        if current and line.startswith("Reason: "):
            reasons[current].append(line[len("Reason: "):].strip())
            continue
        m = _CPU_WARNING.match(line) or _CPU_ONLY.match(line)
        if m:
            current = m.group(2)
            reasons.setdefault(current, [])
            if line.startswith("Info:"):
                reasons[current].append(f"{m.group(1)} is a CPU-only operator in Vela")
            continue
        if current and line.startswith((" - ", "   ")) and not _OP_LINE.match(line):
            reasons[current].append(line.strip(" -"))
            continue
        current = None
        m = _OP_LINE.match(line)
        if m:
            name = m.group(3).strip()
            op = m.group(2) if m.group(2) != "Passthrough" else op_types.get(name, m.group(2)).title().replace("_", "")
            ops.append({"unit": m.group(1), "op": op, "name": name})
    return ops, reasons


def read_summary(folder: Path) -> dict:
    files = sorted(folder.glob("*_summary_*.csv"))
    if not files:
        raise BuildError(f"Vela wrote no summary CSV in {folder}", stage="lower")
    with files[0].open(newline="") as fh:
        row = next(csv.DictReader(fh))
    num = lambda k: float(row.get(k) or 0)  # noqa: E731
    return {
        "accelerator": row.get("accelerator_configuration"), "system_config": row.get("system_config"),
        "memory_mode": row.get("memory_mode"), "core_clock_hz": num("core_clock"),
        "cycles": int(num("cycles_total")), "cycles_npu": int(num("cycles_npu")),
        "inference_time_ms": num("inference_time") * 1000.0, "inferences_per_second": num("inferences_per_second"),
        "nn_macs": int(num("nn_macs")),
        "memory": {"sram_kb": num("sram_memory_used"), "dram_kb": num("dram_memory_used"),
                   "on_chip_flash_kb": num("on_chip_flash_memory_used"),
                   "off_chip_flash_kb": num("off_chip_flash_memory_used"),
                   "weights_original_bytes": int(num("total_original_weights")),
                   "weights_encoded_bytes": int(num("total_npu_encoded_weights"))},
        "summary_csv": files[0].name,
    }


def read_per_layer(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*_per-layer.csv"))
    if not files:
        return []
    rows = []
    with files[0].open(newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({"name": row.get("Name", ""), "op": row.get("Original Operator", ""), "unit": row.get("Target", ""),
                         "cycles": int(float(row.get("Op Cycles") or 0)), "macs": int(float(row.get("MAC Count") or 0)),
                         "mac_util_pct": round(float(row.get("Util% (MAC)") or 0), 2)})
    return rows


class VelaBackend:
    name = "vela"
    version = "2+emitter" + EMITTER_VERSION
    integer_only = True

    def __init__(self, accelerator_config: str, system_config: str | None = None, memory_mode: str | None = None,
                 config: str = "Arm/vela.ini", optimise: str = "Performance", tensor_allocator: str | None = None,
                 max_block_dependency: int | None = None, arena_cache_size: int | None = None):
        self.accelerator_config, self.system_config, self.memory_mode = accelerator_config, system_config, memory_mode
        self.config, self.optimise = config, optimise
        self.tensor_allocator, self.max_block_dependency, self.arena_cache_size = (
            tensor_allocator, max_block_dependency, arena_cache_size)

    def command(self, model: Path, out: Path) -> list[str]:
        args = [str(model), "--accelerator-config", self.accelerator_config, "--output-dir", str(out),
                "--optimise", self.optimise, "--show-cpu-operations", "--verbose-performance"]
        configs = [config_path(c.strip()) for c in self.config.split(",") if c.strip()]
        for c in configs:
            args += ["--config", c]
        if self.system_config:
            args += ["--system-config", self.system_config]
        if self.memory_mode:
            args += ["--memory-mode", self.memory_mode]
        for flag, value in (("--tensor-allocator", self.tensor_allocator), ("--max-block-dependency", self.max_block_dependency),
                            ("--arena-cache-size", self.arena_cache_size)):
            if value is not None:
                args += [flag, str(value)]
        return [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main(sys.argv[1:]))", *args]

    def run_vela(self, model: Path, out: Path) -> str:
        out.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(self.command(model, out), capture_output=True, text=True, timeout=VELA_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BuildError(f"Vela did not finish in {VELA_TIMEOUT_S} s", stage="lower") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise BuildError(f"Vela failed (exit {proc.returncode}): {' | '.join(tail)}", stage="lower")
        return proc.stdout + "\n" + proc.stderr

    def lower(self, model: Path, target, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered:
        tflite, io, facts = write_tflite(model, workdir)
        out = workdir / "vela"
        console = self.run_vela(tflite, out)
        compiled = out / "model_vela.tflite"
        if not compiled.is_file():
            raise BuildError("Vela wrote no model_vela.tflite", stage="lower")
        summary = read_summary(out)
        layers = read_per_layer(out)
        ops, reasons = parse_console(console)
        origin = facts["tensor_origin"]
        placement = [{**op, "onnx_node": origin.get(op["name"], "")} for op in ops]
        cpu = [p for p in placement if p["unit"] == "CPU"]
        files = {"model.tflite": tflite, IO_FILE: workdir / IO_FILE, "model_vela.tflite": compiled}
        final = workdir / "model_vela.tflite"
        final.write_bytes(compiled.read_bytes())
        files["model_vela.tflite"] = final
        for csv_file in (out / summary["summary_csv"], *sorted(out.glob("*_per-layer.csv"))):
            target_name = "vela_summary.csv" if "summary" in csv_file.name else "vela_per_layer.csv"
            dest = workdir / target_name
            dest.write_bytes(csv_file.read_bytes())
            files[target_name] = dest
        source, header = write_c_array(final.read_bytes(), workdir)
        files[source.name], files[header.name] = source, header
        report = {
            "tool": "Arm Vela", "version": vela_version(), "runtime_version": litert_version(),
            "options": {"accelerator_config": self.accelerator_config, "system_config": self.system_config,
                        "memory_mode": self.memory_mode, "config": self.config, "optimise": self.optimise,
                        "tensor_allocator": self.tensor_allocator, "max_block_dependency": self.max_block_dependency},
            **{k: v for k, v in summary.items() if k != "summary_csv"},
            "latency_ms": summary["inference_time_ms"],
            "operators": {"npu": sum(1 for p in placement if p["unit"] == "NPU"), "cpu": len(cpu)},
            "placement": placement,
            "cpu_ops": [{"name": p["name"], "op": p["op"], "onnx_node": p["onnx_node"],
                         "reasons": reasons.get(p["name"], [])} for p in cpu],
            "per_layer": layers,
            "absorbed": facts["absorbed"],
            "self_check": self_check(model, tflite, io, sample_feeds(samples)),
        }
        return Lowered(files, "tflite-micro+ethos-u", report, io)
