"""Accuracy recovery: task-aware goals, subset models by surgery, sensitivity and the mixed-precision searches.

The search is checked on a small model with one deliberately sensitive layer: its input tensor has
one channel 30x larger than the others, so int8 (256 levels over the whole range) wipes out the
small channels - which the next layer then weights up again. Only that layer must leave int8.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgeship.errors import BudgetExceeded
from edgeship.stages import quant_goal, quant_subset
from edgeship.stages.quant_measure import run_all, session

from .helpers import build

WIDTH = 16
OUTLIER = 30.0  # int8 steps over the outlier's range drown the other channels; int16 steps do not


def sensitive_mlp(path: Path) -> Path:
    """x(1,16) -> fc1 -> Relu -> fc2 (one outlier output channel, x30) -> fc3 (undoes it) -> fc4 -> y."""
    rng = np.random.default_rng(0)
    w = [rng.normal(0, 0.5, (WIDTH, WIDTH)).astype(np.float32) for _ in range(4)]
    w[1][:, 0] *= OUTLIER  # fc2's channel 0 is huge ...
    w[2][0, :] /= OUTLIER  # ... and fc3 brings it back: the small channels carry the signal
    nodes, inits, prev = [], [], "x"
    for i, weight in enumerate(w):
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        out = f"h{i}" if i < 3 else "y"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out], name=f"fc{i + 1}"))
        prev = out
        if i == 0:
            nodes.append(helper.make_node("Relu", [prev], ["r0"], name="relu1"))
            prev = "r0"
    graph = helper.make_graph(nodes, "sensitive", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _data(folder: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.normal(0, 1, (64, 1, WIDTH)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.normal(0, 1, (100, 1, WIDTH)).astype(np.float32))


def _pipeline(folder: Path, target: str, quantization: dict | None = None, budget: dict | None = None) -> Path:
    model = sensitive_mlp(folder / "mlp.onnx")
    _data(folder)
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "mlp"},
           "model": {"path": str(model), "task": "regression"}, "target": target,
           "budget": budget or {"accuracy": {"metric": "cosine", "min": 0.995}},
           "quantization": {"mode": "auto", "calibration": {"data": "calib.npz", "samples": 64}, **(quantization or {})},
           "validation": {"data": "eval.npz", "samples": 100, "latency": {"warmup": 1, "runs": 3}}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- the accuracy goal ------------------------------------------------------------------------------

def _softmax_model(path: Path, classes: int) -> Path:
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("Identity", ["x"], ["raw"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, classes])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, classes]),
                               helper.make_tensor_value_info("raw", TensorProto.FLOAT, [1, classes])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_goal_is_inferred_per_output(tmp_path):
    model = _softmax_model(tmp_path / "m.onnx", 10)
    logits = np.random.default_rng(0).normal(size=(8, 1, 10))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    goal = quant_goal.accuracy_goal(None, None, ["p", "raw"], [probs, logits], model)
    assert goal["outputs"]["p"]["metric"] == "top1_agreement" and "Softmax" in goal["outputs"]["p"]["why"]
    assert goal["outputs"]["raw"]["metric"] == "cosine"  # raw scores are not probabilities
    assert goal["inferred"] and "p: top1_agreement >= 0.99" in quant_goal.describe(goal)


def test_detector_output_never_gets_top1(tmp_path):
    model = _softmax_model(tmp_path / "m.onnx", 4)
    boxes = np.random.default_rng(0).uniform(0, 640, size=(2, 1, 84, 2100))  # boxes x classes, not class scores
    goal = quant_goal.accuracy_goal(None, None, ["raw"], [boxes], model)
    assert goal["outputs"]["raw"]["metric"] == "cosine"
    # probabilities without a Softmax node are recognised by their rows; an explicit task wins
    rows = np.full((4, 1, 5), 0.2)
    assert quant_goal.accuracy_goal(None, None, ["raw"], [rows], model)["metric"] == "top1_agreement"
    assert quant_goal.accuracy_goal("detection", None, ["raw"], [rows], model)["metric"] == "cosine"
    budget = quant_goal.accuracy_goal("detection", {"metric": "sqnr_db", "min": 20}, ["raw"], [rows], model)
    assert budget["outputs"]["raw"] == {"metric": "sqnr_db", "bound": 20.0, "direction": "min",
                                        "why": "budget.accuracy in the manifest"}


def test_goal_met_only_when_every_output_meets():
    goal = {"outputs": {"a": {"metric": "cosine", "bound": 0.99}, "b": {"metric": "max_abs_error", "bound": 0.1}}}
    ok = {"outputs": {"a": {"cosine": 0.995}, "b": {"max_abs_error": 0.05}}}
    bad = {"outputs": {"a": {"cosine": 0.995}, "b": {"max_abs_error": 0.3}}}
    assert quant_goal.evaluate(goal, ok)[0] and not quant_goal.evaluate(goal, bad)[0]
    assert quant_goal.evaluate(goal, bad)[1] == pytest.approx(0.2)


# --- surgery -----------------------------------------------------------------------------------------

def test_composing_every_layer_reproduces_the_quantizer(tmp_path):
    from edgeship.stages.quant_ort import ArrayReader, quiet_quantizer
    from onnxruntime.quantization import QuantFormat, quantize_static

    model = sensitive_mlp(tmp_path / "mlp.onnx")
    data = {"x": np.random.default_rng(2).normal(size=(16, 1, WIDTH)).astype(np.float32)}
    with quiet_quantizer():
        quantize_static(str(model), str(tmp_path / "q.onnx"), ArrayReader(data), quant_format=QuantFormat.QDQ)
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    nodes = quant_subset.quantized_nodes(qdq)
    assert {"fc1", "fc2", "fc3", "fc4"} <= set(nodes)
    composed = quant_subset.compose(onnx.load(str(model)), {n: qdq for n in nodes})
    onnx.save(composed, str(tmp_path / "c.onnx"))
    expected = run_all(session(tmp_path / "q.onnx"), data)[0]
    np.testing.assert_allclose(run_all(session(tmp_path / "c.onnx"), data)[0], expected, rtol=1e-5, atol=1e-5)
    nothing = quant_subset.compose(onnx.load(str(model)), {})
    onnx.save(nothing, str(tmp_path / "n.onnx"))
    np.testing.assert_allclose(run_all(session(tmp_path / "n.onnx"), data)[0], run_all(session(model), data)[0])


# --- the searches through the real stage ---------------------------------------------------------------

def test_host_keeps_only_the_sensitive_layer_float(tmp_path):
    result = build(_pipeline(tmp_path, "raspberry-pi-5"), stages=("import", "quantize", "validate"))
    assert result.ok, result.error
    q = result.ctx.report["quantize"]
    assert not any(c["meets_accuracy"] for c in q["candidates"] if c["kind"] == "static" and "+" not in c["name"])
    layers = q["sensitivity"]["layers"]
    assert layers[0]["node"] in ("fc2", "fc3")  # the outlier tensor is fc2's output, fc3's input
    mixed = next(c for c in q["candidates"] if "+float" in c["name"])
    assert mixed["meets_accuracy"] and 1 <= len(mixed["kept_float"]) <= 2 and set(mixed["kept_float"]) <= {"fc2", "fc3"}
    assert mixed["layer_precision"]["fc1"] == "int8" and mixed["layer_precision"][mixed["kept_float"][0]] == "float"
    assert result.ctx.extra["layer_precision"] == q["layer_precision"]  # what the backend reads


def test_integer_only_target_gets_int16_on_the_sensitive_layer(tmp_path):
    result = build(_pipeline(tmp_path, "arm-ethos-u85"), stages=("import", "quantize"))
    assert result.ok, result.error
    q = result.ctx.report["quantize"]
    chosen = next(c for c in q["candidates"] if c["selected"])
    assert not chosen.get("float_nodes") and chosen["meets_accuracy"]
    assert "int16" in q["layer_precision"].values() and "int8" in q["layer_precision"].values()
    assert "float" not in q["layer_precision"].values()
    model = onnx.load(str(result.ctx.model_path))
    zero_point_types = {t.data_type for t in model.graph.initializer if t.name.endswith("zero_point")}
    assert TensorProto.INT16 in zero_point_types and TensorProto.INT8 in zero_point_types


def test_integer_only_target_fails_with_the_layers_that_break_it(tmp_path):
    manifest = _pipeline(tmp_path, "arm-ethos-u85", quantization={"recovery": []})
    result = build(manifest, stages=("import", "quantize"))
    assert not result.ok and isinstance(result.error, BudgetExceeded)
    assert "accuracy.cosine" in result.error.rows[0].metric
    assert "float" not in result.ctx.report["quantize"].get("selected", "")


def test_budget_only_change_reuses_the_sensitivity(tmp_path):
    first = build(_pipeline(tmp_path, "raspberry-pi-5"), stages=("import", "quantize"))
    assert first.ok and first.ctx.report["quantize"]["sensitivity_cache"] in ("miss", "hit")
    again = build(_pipeline(tmp_path, "raspberry-pi-5", budget={"accuracy": {"metric": "cosine", "min": 0.996}}),
                  stages=("import", "quantize"))
    assert again.ok and again.ctx.report["quantize"]["sensitivity_cache"] == "hit"
    assert again.ctx.report["quantize"]["calibration_cache"] == "hit"  # the activation ranges too


def test_report_shows_sensitivity_and_chosen_precision(tmp_path):
    from edgeship.stages.report import render_html

    result = build(_pipeline(tmp_path, "arm-ethos-u85"), stages=("import", "quantize"))
    assert result.ok, result.error
    page = render_html({"name": "mlp", "stages": {"quantize": result.ctx.report["quantize"]}})
    assert "Per-layer sensitivity" in page and "<svg" in page and "shipped int16" in page
    assert "Accuracy goal" in page and "budget.accuracy in the manifest" in page
    assert "Chosen precision per layer" in page and "int16" in page


def _mlp_with_sub(path: Path) -> Path:
    """x -> fc1 -> Sub(const) -> fc2 -> y: onnxruntime's default op list leaves the Sub float on the host;
    an integer-only target quantizes it too, so it needs the Sub output's range."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (WIDTH, WIDTH)).astype(np.float32), n) for n in ("w0", "w1")]
    inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (WIDTH,)).astype(np.float32), "shift"))
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="fc1"), helper.make_node("Sub", ["h0", "shift"], ["h1"], name="sub"),
             helper.make_node("MatMul", ["h1", "w1"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "sub", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_integer_only_build_does_not_reuse_the_hosts_calibration(tmp_path):
    """bench/quant.py built magika for the host, then for the Ethos-U65 with the same model and data: the
    U65 build took the host's stored activation ranges, which lack the LayerNorm Sub the host leaves
    float, and onnxruntime's quantizer refused ("Quantization parameters are not specified")."""
    path = _pipeline(tmp_path, "host-cpu")
    _mlp_with_sub(tmp_path / "mlp.onnx")
    doc = yaml.safe_load(path.read_text())
    doc["budget"] = {"accuracy": {"metric": "cosine", "min": 0.9}}
    path.write_text(yaml.safe_dump(doc))
    host = build(path, stages=("import", "quantize"))
    assert host.ok, host.error
    doc["target"] = "arm-ethos-u85"
    path.write_text(yaml.safe_dump(doc))
    integer = build(path, stages=("import", "quantize"))
    assert integer.ok, integer.error
    assert integer.ctx.report["quantize"]["calibration_cache"] == "miss"
    assert integer.ctx.report["quantize"]["layer_precision"]["sub"] in ("int8", "int16")
