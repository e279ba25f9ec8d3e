"""RKNN backend for real: rknn-toolkit2 2.5.0 in its own environment lowers edgeship's int8 kws model
to .rknn and checks it in the toolkit's simulator. The environment (~2.3 GB) is made once per machine
(scripts/install-toolchains.sh in CI, or the first test run) under $EDGESHIP_TOOLCHAIN_CACHE."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.errors import ToolchainError
from edgeship.targets import load_target
from edgeship.targets.backends.rknn import TOOLCHAIN, RknnBackend, parse_log

from .conftest import installed

pytestmark = pytest.mark.toolchain


@pytest.fixture
def rknn(vendor_cache):
    return installed(TOOLCHAIN)


def test_lower_keeps_edgeship_quantization_and_checks_it_in_the_simulator(rknn, kws_int8, tmp_path):
    lines: list[str] = []
    target = load_target("rockchip-rk3588")
    backend = RknnBackend(**target.data["backend"]["options"], log=lines.append)
    lowered = backend.lower(kws_int8["qdq"], target, tmp_path / "lower", float_model=kws_int8["float"],
                            samples=kws_int8["samples"])
    rknn_file = lowered.files["model.rknn"]
    assert rknn_file.is_file() and rknn_file.stat().st_size > 10_000
    assert lowered.runtime == "rknn-toolkit-lite2"
    report = lowered.report
    assert report["quantizer"] == "edgeship" and report["platform"] == "rk3588"
    assert report["versions"]["rknn-toolkit2"] == "2.5.0"
    sim = report["simulator"]
    assert sim["samples"] == 16
    assert sim["vs_float"]["cosine_mean"] > 0.99
    assert sim["vs_edgeship_qdq"]["cosine_mean"] > 0.99
    assert sim["vs_float"]["top1_agreement"] >= 0.8
    # the toolkit's own report: placement per layer, cycles, memory; its known false error is benign
    assert report["placement"] and all(p["unit"] in ("NPU", "CPU") for p in report["placement"])
    assert any(p["onnx_node"] for p in report["placement"])
    assert report["ops_on_accelerator_pct"] > 50 and report["cycles"] > 0
    assert report["memory"]["weights_kb"] > 0
    assert report["messages"]["errors"] == []
    log = Path(report["log"]).read_text()
    if "Unkown op target" in log:
        assert any("Unkown op target: 0" in m for m in report["messages"]["benign"])
    assert any("rknn building done" in line for line in lines)
    assert not any(line.startswith("D ") for line in lines)  # debug passes stay in the log file


def test_rknn_quantizes_itself_only_when_asked(rknn, kws_int8, tmp_path):
    backend = RknnBackend(platform="rk3576", quantizer="rknn", log=lambda line: None)
    lowered = backend.lower(kws_int8["qdq"], load_target("rockchip-rk3576"), tmp_path / "lower",
                            float_model=kws_int8["float"], samples=kws_int8["samples"])
    assert lowered.report["quantizer"] == "rknn" and lowered.report["platform"] == "rk3576"
    assert lowered.report["simulator"]["vs_float"]["cosine_mean"] > 0.98


def test_a_model_the_worker_rejects_is_one_line_naming_the_toolchain(rknn, kws_int8, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage, not protobuf")
    with pytest.raises(ToolchainError) as err:
        RknnBackend(platform="rk3588", log=lambda line: None).lower(broken, load_target("rockchip-rk3588"), tmp_path / "out",
                                                                   samples=kws_int8["samples"])
    text = str(err.value)
    assert text.startswith("lower: toolchain rknn: ") and "\n" not in text and "log: " in text


LOG = """\
I rknn building ...
D RKNN: [10:43:00.313] ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    RW(KB)       FullName        
D RKNN: [10:43:00.313] 0    InputOperator      FLOAT16  CPU    \\                                        (1,3,8,8)              0/0/0                    0            InputOperator:x 
D RKNN: [10:43:00.313] 1    Conv               FLOAT16  NPU    (1,3,8,8),(4,3,3,3)                      (1,4,8,8)              84/576/576               0            Conv:c1         
D RKNN: [10:43:00.313] 2    Sin                FLOAT16  CPU    (1,4,8,8)                                (1,4,8,8)              0/0/0                    1            Sin:s           
D RKNN: [10:43:00.313] 3    Det                FLOAT16  CPU    (1,4,8,8)                                (1,4)                  0/0/0                    0            Det:y0          
D RKNN: [10:43:00.313] 4    OutputOperator     FLOAT16  CPU    (1,4)                                    \\                      0/0/0                    0            OutputOperator:y0
D RKNN: [10:43:00.314] Total Internal Memory Size: 3.375KB
D RKNN: [10:43:00.314] Total Weight Memory Size: 2.5625KB
D RKNN: [10:4E RKNN: [10:44:58.509] Unkown op target: 0
\x1b[1;31mE\x1b[0m \x1b[1;31mbuild: Catch exception when building RKNN model!\x1b[0m
I rknn building done.
No lowering found for: y0, node type = Det, use CustomOperatorLower instead.
"""


def test_parse_log_reads_placement_cycles_memory_and_sorts_messages():
    found = parse_log(LOG.splitlines())
    assert [(p["name"], p["op"], p["unit"]) for p in found["placement"]] == [("c1", "Conv", "NPU"), ("s", "Sin", "CPU"),
                                                                            ("y0", "Det", "CPU")]
    assert [c["name"] for c in found["cpu_ops"]] == ["s", "y0"] and found["cpu_op_types"] == ["Det", "Sin"]
    assert found["unsupported_ops"] == ["Det"]
    assert found["cycles"] == 576
    assert found["memory"] == {"internal_kb": 3.375, "weights_kb": 2.5625}
    assert found["messages"]["benign"] == ["E RKNN: Unkown op target: 0"]
    assert found["messages"]["errors"] == ["E build: Catch exception when building RKNN model!"]


def test_lower_without_the_environment_names_the_install_command(kws_int8, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_TOOLCHAIN_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ToolchainError) as err:
        RknnBackend(platform="rk3588").lower(kws_int8["qdq"], load_target("rockchip-rk3588"), tmp_path / "out",
                                             samples=kws_int8["samples"])
    text = str(err.value)
    assert text.startswith("lower: toolchain rknn: not installed: run `edgeship toolchain install rknn`"), text
