"""OpenVINO backend for real, in edgeship's own process: IR from edgeship's int8 kws model, validated on
this host's CPU plugin with the precision hint pinned; NNCF's int8 when the profile asks; telemetry
declined before OpenVINO is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.errors import BuildError
from edgeship.targets import load_target
from tests.support.require import require_module


@pytest.fixture(scope="module")
def ov_backend():
    require_module("openvino")
    require_module("nncf")
    from edgeship.targets.backends import openvino

    return openvino


def _int8_layers(precisions: dict) -> int:
    return precisions.get("i8", 0) + precisions.get("u8", 0)


def test_ir_from_edgeship_qdq_runs_int8_on_the_cpu_plugin_at_f32_hint(ov_backend, kws_int8, tmp_path):
    backend = ov_backend.OpenVINOBackend(device="CPU", precision="f32", quantizer="edgeship")
    lowered = backend.lower(kws_int8["qdq"], load_target("intel-core-ultra-cpu"), tmp_path / "ir",
                            float_model=kws_int8["float"], samples=kws_int8["samples"])
    assert set(lowered.files) == {"model.xml", "model.bin", "openvino.json"} and all(p.is_file() for p in lowered.files.values())
    assert json.loads(lowered.files["openvino.json"].read_text())["device"] == "CPU"  # what the device agent compiles for
    assert lowered.runtime == "openvino"
    report = lowered.report
    assert report["int8_source"] == "edgeship-qdq" and report["version"].startswith("2026.4")
    host = report["host_validation"]
    assert host["precision_hint"] == "f32"
    assert report["telemetry"].startswith("declined (")
    assert _int8_layers(host["execution_precisions"]) > 0 and "bf16" not in host["execution_precisions"]
    assert host["accuracy"]["vs_float"]["top1_agreement"] >= 0.9
    assert host["accuracy"]["vs_edgeship_qdq_onnxruntime"]["top1_agreement"] >= 0.9
    assert host["p50_ms"] > 0 and host["samples"] == 32


def test_nncf_makes_the_int8_when_edgeship_chose_int8(ov_backend, kws_int8, tmp_path):
    backend = ov_backend.OpenVINOBackend(**load_target("intel-core-ultra-npu").data["backend"]["options"])
    assert backend.quantizer == "nncf" and backend.device == "NPU"
    lowered = backend.lower(kws_int8["qdq"], load_target("intel-core-ultra-npu"), tmp_path / "ir",
                            float_model=kws_int8["float"], samples=kws_int8["samples"])
    report = lowered.report
    assert report["int8_source"] == "nncf"
    assert _int8_layers(report["host_validation"]["execution_precisions"]) > 0
    assert report["host_validation"]["accuracy"]["vs_float"]["top1_agreement"] >= 0.9
    assert "not on NPU" in report["latency_note"]


def test_a_float_model_stays_float_whatever_the_quantizer(ov_backend, kws_int8, tmp_path):
    lowered = ov_backend.OpenVINOBackend(quantizer="nncf").lower(kws_int8["float"], None, tmp_path / "ir",
                                                                 samples=kws_int8["samples"])
    assert lowered.report["int8_source"] == "float"
    assert _int8_layers(lowered.report["host_validation"]["execution_precisions"]) == 0
    assert lowered.report["host_validation"]["accuracy"]["vs_model"]["top1_agreement"] == 1.0


def test_nncf_without_the_float_model_falls_back_to_edgeship_qdq_and_says_so(ov_backend, kws_int8, tmp_path):
    lowered = ov_backend.OpenVINOBackend(quantizer="nncf").lower(kws_int8["qdq"], None, tmp_path / "ir",
                                                                 samples=kws_int8["samples"])
    assert lowered.report["int8_source"].startswith("edgeship-qdq (nncf asked")


def test_a_model_openvino_cannot_read_is_one_line(ov_backend, kws_int8, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage, not protobuf")
    with pytest.raises(BuildError) as err:
        ov_backend.OpenVINOBackend(quantizer="edgeship").lower(broken, None, tmp_path / "ir", samples=kws_int8["samples"],
                                                               float_model=kws_int8["float"])
    assert str(err.value).startswith("lower: ") and "\n" not in str(err.value)


def test_unknown_quantizer_is_a_build_error(ov_backend):
    with pytest.raises(BuildError, match="quantizer must be 'edgeship' or 'nncf'"):
        ov_backend.OpenVINOBackend(quantizer="magic")


def _import_in(home: Path) -> subprocess.CompletedProcess:
    code = "from edgeship.targets.backends.openvino import load_openvino; load_openvino(); import openvino.tools.ovc"
    env = {**os.environ, "HOME": str(home), "CI": "", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_telemetry_is_declined_before_openvino_writes_an_id(ov_backend, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = _import_in(home)
    assert done.returncode == 0, done.stderr
    assert (home / "intel" / "openvino_telemetry").read_text() == "0"
    assert sorted(p.name for p in (home / "intel").iterdir()) == ["openvino_telemetry"]  # no client id, no stats


def test_a_users_own_telemetry_choice_is_kept(ov_backend, tmp_path):
    home = tmp_path / "home"
    (home / "intel").mkdir(parents=True)
    (home / "intel" / "openvino_telemetry").write_text("1")
    assert _import_in(home).returncode == 0
    assert (home / "intel" / "openvino_telemetry").read_text() == "1"
