"""host-cpu-litert: this machine shipping integer TFLite for LiteRT + XNNPACK. `auto` times each candidate
on the runtime that would ship it (an emitted .tflite under LiteRT, the float model and float islands
under onnxruntime), validate runs and times the shipped .tflite, and the device agent's smoke test runs
the artifact on LiteRT. No timed assertions: only which runtime each figure came from."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.require import require_module

from .helpers import build, write_pipeline

FULL = ("import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate", "package")
LITERT = "LiteRT (.tflite)"


def _kws_on_host_litert(examples_dir, tmp_path, **quantization) -> Path:
    return write_pipeline(tmp_path, examples_dir["kws"], "kws", target="host-cpu-litert",
                          quantization={"mode": "auto", "calibration": {"samples": 64}, **quantization},
                          budget={"accuracy": {"metric": "top1_agreement", "min": 0.9}}, validation={"samples": 32})


def test_profile_is_this_machine_shipping_int8_tflite_with_an_onnxruntime_fallback():
    from edgeship.stages.quant_policy import resolve_policy
    from edgeship.targets import load_target
    from edgeship.targets.backends import backend_spec, integer_only

    profile = load_target("host-cpu-litert")
    host = load_target("host-cpu")
    assert profile.measurable and profile.compute.accelerator == host.compute.accelerator
    assert backend_spec(profile.data) == ("tflite", {"threads": 4, "delegate": "xnnpack", "fallback": "onnxruntime"})
    assert not integer_only(profile.data)  # float and float islands ship as ONNX
    policy = resolve_policy({"quantization": {"mode": "auto"}}, profile.data)
    # XNNPACK accelerates 8-bit only: no int16 layers. uint8 activations first (emitted as int8, the same
    # .tflite; U8S8 where a candidate falls back to onnxruntime), int8 tried too
    assert (policy.activation_dtype, policy.weight_dtype) == ("uint8", "int8")
    assert not policy.int16_activations_allowed and policy.alternative_activation_dtypes == ("int8",)
    assert policy.per_channel_allowed and policy.per_tensor_allowed and not policy.integer_only


def test_auto_times_the_emitted_tflite_on_litert_and_ships_on_the_runtime_it_timed(examples_dir, tmp_path):
    require_module("ai_edge_litert")
    result = build(_kws_on_host_litert(examples_dir, tmp_path), stages=FULL)
    assert result.ok, result.error
    quant = result.ctx.report["quantize"]
    rows = {r["name"]: r for r in quant["candidates"]}
    assert rows["float"]["timed_on"] == "onnxruntime" and rows["float"]["latency_ms"] > 0
    integer = [r for r in rows.values() if r["kind"] == "static" and not r.get("float_nodes")]
    assert integer and all(r["scored_on"] == r["timed_on"] == LITERT and r["latency_ms"] > 0 for r in integer)
    selected = rows[quant["selected"]]
    assert "runtime that ships it" in quant["reason"]
    # whichever won on this machine's timing, it ships on the runtime it was timed on
    lower, validate = result.ctx.report["lower"], result.ctx.report["validate"]
    if selected["timed_on"] == LITERT:
        assert lower["runtime"] == "litert" and "model.tflite" in lower["files"]
        assert validate["runtime"] == "LiteRT" and validate["latency"]["runtime"] == "LiteRT (XNNPACK)"
        assert validate["op_time_ms"] == {} and "LiteRT" in validate["op_time_note"]
    else:
        assert lower["runtime"] == "onnxruntime" and validate["latency"]["runtime"] == "onnxruntime"
    assert validate["latency"]["single_thread"]["p50"] > 0 and validate["passed"]
    folder = Path(result.ctx.extra["artifact"]["dir"])
    assert json.loads((folder / "bundle.json").read_text())["runtime"] == lower["runtime"]


def test_html_report_says_which_runtime_timed_each_candidate():
    from edgeship.stages.quant_report import report_html

    section = {"accuracy_goal": {"metric": "top1_agreement", "summary": "top1 >= 0.9"}, "selected": "static-per-channel",
               "candidates": [{"name": "float", "kind": "float", "accuracy": {"top1_agreement": 1.0},
                               "scored_on": "onnxruntime", "latency_ms": 0.5, "timed_on": "onnxruntime"},
                              {"name": "static-per-channel", "kind": "static", "accuracy": {"top1_agreement": 0.99},
                               "scored_on": LITERT, "latency_ms": 0.28, "timed_on": LITERT, "selected": True}]}
    html = report_html(section)
    assert "<th>timed on</th>" in html and f"<td>0.28</td><td>{LITERT}</td>" in html
    assert "static-per-channel (selected)" in html


def test_a_float_island_falls_back_to_onnx_and_is_timed_on_onnxruntime(examples_dir, tmp_path):
    """A layer kept float: the emitter cannot write the candidate, so it ships as ONNX and is timed there."""
    require_module("ai_edge_litert")
    result = build(_kws_on_host_litert(examples_dir, tmp_path, keep_float=["/head/fc"]),
                   stages=("import", "normalize", "optimize", "quantize", "legalize", "lower", "validate"))
    assert result.ok, result.error
    rows = result.ctx.report["quantize"]["candidates"]
    islands = [r for r in rows if r["kind"] == "static"]
    assert islands and all(r["float_nodes"] == 1 for r in islands)
    assert all(r["scored_on"] == r["timed_on"] == "onnxruntime" and "not scored under LiteRT" in r["scoring_note"]
               for r in islands)
    assert result.ctx.report["lower"]["fallback"]["to"] == "onnxruntime"
    validate = result.ctx.report["validate"]
    assert "runtime" not in validate and validate["latency"]["runtime"] == "onnxruntime"


def test_a_timed_litert_call_is_the_model_on_inputs_quantized_once(tmp_path):
    """What auto, validate and the smoke test time: set the integer inputs, invoke, read the outputs; the
    same integer outputs as a full run (which also quantizes the float input)."""
    require_module("ai_edge_litert")
    import numpy as np

    from edgeship.targets.backends.litert_run import LiteRTSession, timed_call
    from edgeship.targets.backends.tflite_backend import write_tflite
    from tests.backends.qdq_models import const, one_op, quantize

    model = one_op("Gemm", [1, 16], [1, 8], [const("w", np.linspace(-1, 1, 128, dtype=np.float32).reshape(16, 8)),
                                              const("b", np.zeros(8, np.float32))], ["w", "b"])
    tflite, io, _ = write_tflite(quantize(model, tmp_path / "q"), tmp_path / "out")
    session = LiteRTSession(tflite, io)
    feed = {"x": np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)}
    call = timed_call(session, feed)
    first, again = [a.copy() for a in call()], call()
    assert first[0].dtype == np.int8 and np.array_equal(first[0], again[0])
    assert np.array_equal(first[0], session.runner.run_int(feed)[0])


def test_validate_runs_and_times_the_shipped_tflite_on_litert(examples_dir, tmp_path):
    """Static int8 (no choice left to timing): the artifact is the .tflite, validate scores and times it on
    LiteRT, and the device smoke test runs it there."""
    require_module("ai_edge_litert")
    result = build(_kws_on_host_litert(examples_dir, tmp_path, mode="static"), stages=FULL)
    assert result.ok, result.error
    lower, validate = result.ctx.report["lower"], result.ctx.report["validate"]
    assert lower["runtime"] == "litert" and "fallback" not in lower
    assert validate["candidate"] == "model.tflite" and validate["runtime"] == "LiteRT"
    assert validate["latency"]["runtime"] == "LiteRT (XNNPACK)" and validate["latency"]["source"] == "measured on this host"
    assert validate["latency"]["single_thread"]["threads"] == 1 and validate["passed"]
    shipped = Path(result.ctx.extra["artifact"]["dir"]) / "model.tflite"
    assert validate["size_kb"] == round(shipped.stat().st_size / 1024, 2)  # the size budget holds what ships

    from edgeship.fleet.agent_config import SmokeConfig
    from edgeship.fleet.smoke import smoke_test

    folder = Path(result.ctx.extra["artifact"]["dir"])
    assert json.loads((folder / "bundle.json").read_text())["runtime"] == "litert"
    assert smoke_test(folder, SmokeConfig(samples=2, runs=1))["runs"] == 2


def test_a_device_install_runs_the_tflite_without_the_build_side(examples_dir, tmp_path):
    """As on an `edgeship[agent,litert]` board (no jsonschema, onnx or onnxruntime): importing the LiteRT
    runner once pulled in the target-profile loader and its jsonschema, so the smoke test said
    "LiteRT is not installed" on a board that had it."""
    import os
    import subprocess
    import sys

    require_module("ai_edge_litert")
    result = build(_kws_on_host_litert(examples_dir, tmp_path, mode="static"), stages=FULL)
    assert result.ok, result.error
    folder = Path(result.ctx.extra["artifact"]["dir"])
    absent = ("onnx", "onnxruntime", "jsonschema", "fabric", "paramiko")
    code = (f"import sys; sys.modules.update(dict.fromkeys({absent!r}));"
            "from edgeship.fleet.agent_config import SmokeConfig; from edgeship.fleet.smoke import smoke_test;"
            f"print(smoke_test({str(folder)!r}, SmokeConfig(samples=1, runs=1))['runs'])")
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
