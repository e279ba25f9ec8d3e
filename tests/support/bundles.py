"""Real signed bundles for fleet tests (agent, SSH, MQTT, rollouts), made in code in a few ms.

A tiny two-layer MLP built with onnx.helper, written into the artifact layout by hand (model.onnx,
samples.npz, bundle.json, edgeship.lock.json, report.json, report.html), then checksummed, signed
and packed with edgeship.artifact: exactly what the build produces, minus the build.

    priv, pub = signing_keys(tmp_path)                 # one key pair per folder, reused
    tar = make_bundle(tmp_path, "kws", seed=1)         # -> Path to a signed .tar
    tar = make_bundle(tmp_path, "kws", pad_kb=2048)    # a bigger model (for upload/resume tests)
    tar = make_bundle(tmp_path, "kws", variant="nan")  # runs, but outputs NaN (smoke test fails)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeship import artifact

IN_DIM, OUT_DIM = 16, 8


def signing_keys(folder: Path) -> tuple[Path, Path]:
    """(private, public) ed25519 key pair under folder/keys/, generated on first use."""
    priv = Path(folder) / "keys" / "signing.key"
    pub = priv.with_suffix(".pub")
    if not priv.exists():
        artifact.generate_keypair(priv, pub)
    return priv, pub


def _model(seed: int, hidden: int, variant: str) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((IN_DIM, hidden)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((hidden, OUT_DIM)).astype(np.float32) * 0.1
    b2 = np.full((OUT_DIM,), np.nan if variant == "nan" else 0.01 * seed, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "w2"], ["z"], name="fc2"),
        helper.make_node("Add", ["z", "b2"], ["y"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, f"tiny-{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN_DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT_DIM])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_artifact_dir(folder: Path, name: str = "tiny", seed: int = 0, *, pad_kb: int = 0, variant: str = "ok",
                      budget_p95_ms: float = 1000.0, key: Path | None = None, sign: bool = True,
                      release: int | None = None, target: str = "host-cpu", runtime: str | None = None) -> Path:
    """Write a signed artifact folder at `folder` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = max(32, (pad_kb * 1024) // (4 * (IN_DIM + OUT_DIM)))
    onnx.save(_model(seed, hidden, variant), folder / "model.onnx")
    rng = np.random.default_rng(1000 + seed)
    np.savez(folder / "samples.npz", x=rng.standard_normal((4, 1, IN_DIM)).astype(np.float32))
    meta = {
        "format": 1, "name": name, "target": target,
        "inputs": {"x": {"shape": [1, IN_DIM], "dtype": "float32"}},
        "outputs": {"y": {"shape": [1, OUT_DIM], "dtype": "float32"}},
        "budget": {"latency_ms": {"p95": budget_p95_ms}},
        "smoke": {"samples": 4, "expected_p95_ms": 0.05},
        "created": "2026-11-25T08:00:00Z", "edgeship_version": "0.1.0",
        "variant": {"seed": seed, "variant": variant, "pad_kb": pad_kb},
    }
    if release is not None:  # the anti-rollback counter the package stage writes
        meta["release"] = release
    if runtime is not None:  # the package stage names it next to the target (target binding)
        meta["runtime"] = runtime
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    (folder / "edgeship.lock.json").write_text(json.dumps({"inputs": {}, "tools": {"onnx": onnx.__version__}, "stages": {}}))
    (folder / "report.json").write_text(json.dumps({"name": name, "seed": seed}))
    (folder / "report.html").write_text(f"<html><body><h1>{name}</h1></body></html>\n")
    artifact.write_checksums(folder)
    if sign:
        artifact.sign(folder, key or signing_keys(folder.parent)[0])
    return folder


def make_bundle(tmp: Path, name: str = "tiny", seed: int = 0, **options) -> Path:
    """A signed bundle (.tar) under tmp/bundles/; options as for make_artifact_dir
    (pad_kb, variant="ok"|"nan", budget_p95_ms, key, sign, release, target, runtime). Keys come from signing_keys(tmp)."""
    tmp = Path(tmp)
    default_key = signing_keys(tmp)[0]
    options.setdefault("key", default_key)
    tag = f"{name}-{seed}-{options.get('variant', 'ok')}-{options.get('pad_kb', 0)}"
    if options.get("release") is not None:
        tag += f"-r{options['release']}"
    if Path(options["key"]) != default_key:  # the same model signed by another key is another artifact
        tag += f"-{artifact.key_id(artifact.load_private_key(options['key']).public_key())[:8]}"
    if options.get("target", "host-cpu") != "host-cpu":
        tag += f"-{options['target']}"
    folder = make_artifact_dir(tmp / "bundles" / tag, name, seed, **options)
    return artifact.pack(folder, tmp / "bundles" / f"{tag}.tar")
