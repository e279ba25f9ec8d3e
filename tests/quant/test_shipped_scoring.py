"""`quantization.mode: auto` scores candidates on what ships: on a TFLite backend, the emitted .tflite
under LiteRT (what validate checks), so the candidate auto keeps is one validate passes."""

import shutil

from tests.support.require import require_module

from .helpers import build, write_pipeline

SHIPPING_STAGES = ("import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate")


def _kws_on_pi(examples_dir, tmp_path):
    """The kws example (examples/kws/pipeline.yaml: 200 calibration and 200 evaluation clips) for raspberry-pi-5."""
    folder = tmp_path / "kws"
    shutil.copytree(examples_dir["kws"], folder)
    return write_pipeline(folder, folder, "kws", target="raspberry-pi-5",
                          quantization={"mode": "auto", "calibration": {"samples": 200, "method": "minmax"}},
                          budget={"accuracy": {"metric": "top1_agreement", "min": 0.97}},
                          validation={"samples": 200})


def test_kws_on_raspberry_pi_5_scores_candidates_under_litert(examples_dir, tmp_path):
    require_module("ai_edge_litert")
    result = build(_kws_on_pi(examples_dir, tmp_path), stages=SHIPPING_STAGES)
    assert result.ok, result.error
    quant, validate = result.ctx.report["quantize"], result.ctx.report["validate"]
    assert validate["runtime"] == "LiteRT"
    rows = {r["name"]: r for r in quant["candidates"]}
    integer = [r for r in rows.values() if r["kind"] == "static" and not r.get("float_nodes")]
    assert integer and all(r["scored_on"] == "LiteRT (.tflite)" for r in integer)
    assert quant["scored_on"]["LiteRT (.tflite)"] == [r["name"] for r in integer]
    assert rows["float"]["scored_on"] == "onnxruntime" and "not scored under LiteRT" in rows["float"]["scoring_note"]
    # auto's figure for the kept candidate is validate's figure for the shipped .tflite, and it meets the budget
    selected = rows[quant["selected"]]
    check = next(c for c in validate["budgets"] if c["metric"] == "accuracy.top1_agreement")
    assert check["ok"] and check["measured"] >= 0.97
    assert abs(selected["accuracy"]["top1_agreement"] - check["measured"]) < 1e-9


def test_candidate_the_emitter_cannot_lower_is_scored_under_onnxruntime_with_a_note(examples_dir, tmp_path):
    """A float model handed over as `static` (as a float-layers candidate would be): the emitter refuses it."""
    require_module("ai_edge_litert")
    import numpy as np

    from edgeship.stages.quant_shipped import ONNXRUNTIME, ShippedRunner

    runner = ShippedRunner({"backend": {"name": "tflite"}}, tmp_path)
    data = {"audio": np.random.default_rng(0).normal(size=(3, 1, 49, 10)).astype(np.float32)}
    outs, runtime, note = runner.outputs(examples_dir["kws"] / "models" / "kws.onnx", data, "static")
    assert runtime == ONNXRUNTIME and note.startswith("not scored under LiteRT: the TFLite emitter cannot lower it")
    assert outs[0].shape[0] == 3


def test_onnxruntime_targets_are_scored_as_before(tmp_path):
    from edgeship.stages.quant_shipped import ShippedRunner, emits_tflite

    assert not emits_tflite({"backend": {"name": "onnxruntime"}}) and not emits_tflite({})
    assert emits_tflite({"backend": {"name": "vela"}}) and ShippedRunner({"backend": {"name": "vela"}}, tmp_path).tflite
