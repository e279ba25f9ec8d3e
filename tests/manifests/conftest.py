"""Fixtures for the manifest tests: a private copy of the test manifests with a real model beside them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

CASES = Path(__file__).parent / "cases"


def write_tiny_model(path: Path) -> None:
    """A real (tiny) ONNX model: y = relu(x @ W), x: [1, 4]."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], [0.5, -1.0, 1.0, 0.25, -0.5, 2.0, 1.5, -0.75])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


@pytest.fixture(scope="session")
def cases_dir(tmp_path_factory) -> Path:
    """tests/manifests/cases copied to a temp dir, plus models/tiny.onnx and data/calib.npz."""
    root = tmp_path_factory.mktemp("manifest-cases") / "cases"
    shutil.copytree(CASES, root)
    write_tiny_model(root / "models" / "tiny.onnx")
    (root / "data").mkdir()
    np.savez(root / "data" / "calib.npz", x=np.random.default_rng(0).standard_normal((8, 1, 4)).astype(np.float32))
    return root


@pytest.fixture
def in_cases(cases_dir, monkeypatch) -> Path:
    """Run with the cases dir as cwd, so diagnostics show short relative file names."""
    monkeypatch.chdir(cases_dir)
    return cases_dir
