"""Example models (made by the examples' own make_model.py into a temp dir) and pipeline manifests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MODELS = {  # example -> (model file, input name, shape)
    "kws": ("kws.onnx", "audio", [1, 49, 10]),
    "fraud": ("fraud-mlp.onnx", "features", [1, 30]),
    "llm": ("tiny-decoder.onnx", "input_ids", [1, 16]),
}


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_example(name: str, out: Path, variant: str = "v1") -> Path:
    """Run examples/<name>/make_model.py --out OUT; returns OUT."""
    module = load_script(EXAMPLES / name / "make_model.py", f"make_{name}")
    args = ["--out", str(out)] + (["--variant", variant] if variant != "v1" else [])
    assert module.main(args) == 0
    return out


def write_pipeline(folder: Path, example_dir: Path, example: str, *, target: str = "host-cpu",
                   quantization: dict | None = None, budget: dict | None = None, validation: dict | None = None,
                   task: str | None = None, name: str = "p", calib: bool = True, evaluation: bool = True) -> Path:
    model, input_name, shape = MODELS[example]
    doc = {
        "apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": name},
        "model": {"path": str(example_dir / "models" / model), "inputs": {input_name: shape},
                  "task": task or ("generative" if example == "llm" else "classification")},
        "target": target,
    }
    if budget:
        doc["budget"] = budget
    q = dict(quantization or {"mode": "static"})
    if calib and q.get("mode") != "none":
        q.setdefault("calibration", {})
        q["calibration"] = {"data": str(example_dir / "data" / "calib.npz"), "samples": 32, **q["calibration"]}
    doc["quantization"] = q
    v = {"samples": 32, "latency": {"warmup": 2, "runs": 10}, **(validation or {})}
    if evaluation:
        v["data"] = str(example_dir / "data" / "eval.npz")
    doc["validation"] = v
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def build(manifest: Path, stages=("import", "normalize", "optimize", "quantize", "validate"), keep: bool = True):
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build as run_build

    doc = load_documents(manifest)[0]
    return run_build(doc, stages=list(stages), use_cache=False, keep_workdir=keep, progress=Progress(quiet=True))
