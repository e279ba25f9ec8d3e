"""A "retrained last layer" model pair for the delta-transfer measurements: an MLP whose v2 differs
from v1 only in the output layer's weights (what fine-tuning a head produces), packed as signed bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeship import artifact
from tests.support.bundles import signing_keys

IN, HIDDEN, LAYERS, OUT = 256, 512, 4, 16


def mlp(variant: str) -> onnx.ModelProto:
    trunk = np.random.default_rng(7)  # the trunk is the same in both variants
    head = np.random.default_rng(8 if variant == "v1" else 9)
    inits, nodes, x, width = [], [], "x", IN
    for i in range(LAYERS):
        w = (trunk.standard_normal((width, HIDDEN)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"/trunk/fc{i}/w"))
        nodes += [helper.make_node("MatMul", [x, f"/trunk/fc{i}/w"], [f"h{i}"], name=f"/trunk/fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"/trunk/relu{i}")]
        x, width = f"r{i}", HIDDEN
    inits.append(numpy_helper.from_array((head.standard_normal((HIDDEN, OUT)) * 0.05).astype(np.float32), "/head/w"))
    nodes.append(helper.make_node("MatMul", [x, "/head/w"], ["y"], name="/head/fc"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-tests")
    model.ir_version = 8
    return model


def mlp_bundle(tmp: Path, variant: str) -> Path:
    tmp = Path(tmp)
    folder = tmp / "bundles" / f"mlp-{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp(variant), folder / "model.onnx")
    np.savez(folder / "samples.npz", x=np.random.default_rng(1).standard_normal((4, 1, IN)).astype(np.float32))
    meta = {"format": 1, "name": "mlp", "target": "host-cpu",
            "inputs": {"x": {"shape": [1, IN], "dtype": "float32"}},
            "outputs": {"y": {"shape": [1, OUT], "dtype": "float32"}},
            "budget": {"latency_ms": {"p95": 1000.0}}, "smoke": {"samples": 4, "expected_p95_ms": 1.0},
            "created": "2026-11-25T08:00:00Z", "edgeship_version": "0.1.0"}
    (folder / "bundle.json").write_text(json.dumps({**meta, "variant": variant}, indent=2, sort_keys=True))
    (folder / "edgeship.lock.json").write_text(json.dumps({"variant": variant}))
    (folder / "report.json").write_text(json.dumps({"name": "mlp", "variant": variant}))
    (folder / "report.html").write_text(f"<html><body>mlp {variant}</body></html>\n")
    artifact.write_checksums(folder)
    artifact.sign(folder, signing_keys(tmp)[0])
    return artifact.pack(folder, tmp / "bundles" / f"mlp-{variant}.tar")
