"""`edgeship calibrate` and `edgeship compare` through the real CLI, onnxruntime and the build runner."""

import json

import onnx
import yaml

from edgeship.cli import main
from edgeship.targets import load_target

from .graphs import conv_lrn_conv, npu_profile


def test_calibrate_quick_writes_a_valid_override(capsys, _edgeship_home):
    assert main(["calibrate", "host-cpu", "--quick", "--runs", "2", "--warmup", "1", "--run-budget", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "estimate after" in out and "median |error|" in out and "conv-stack" in out
    override = _edgeship_home / "targets" / "host-cpu.yaml"
    assert override.is_file()
    prof = load_target("host-cpu")  # the merged profile still validates against the schema
    cm = prof.data["cost_model"]
    assert cm["calibrated"]["models"] and 0 < cm["efficiency"]["Conv"] <= 1
    assert cm["per_node_overhead_us"] >= 0 and 0 < cm["bandwidth_efficiency"] <= 1
    # int8 QDQ models were measured too: int8 convs get their own factor (QLinearConv)
    assert any(m.endswith("-int8") for m in cm["calibrated"]["models"])
    assert 0 < cm["efficiency"]["QLinearConv"] <= 1


def test_calibrate_rejects_a_target_it_cannot_measure(capsys):
    assert main(["calibrate", "amd-kria-k26-dpu", "--quick"]) == 2
    assert "not measurable" in capsys.readouterr().err


def _local_target(home, name, fallback):
    data = npu_profile(fallback=fallback)
    data["metadata"]["name"] = name
    data["sources"] = [{"figure": "compute", "url": "https://example.com/c"}, {"figure": "memory", "url": "https://example.com/m"}]
    folder = home / "targets"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


def test_compare_prints_one_row_per_target(tmp_path, capsys, _edgeship_home):
    _local_target(_edgeship_home, "test-npu", True)
    _local_target(_edgeship_home, "test-npu-strict", False)
    onnx.save(conv_lrn_conv(), str(tmp_path / "m.onnx"))
    (tmp_path / "p.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Pipeline\nmetadata: {name: cmp}\n"
        "model: {path: m.onnx}\ntarget: host-cpu\n"
        "budget: {latency_ms: {p95: 100}, memory_kb: {peak: 64}}\nquantization: {mode: none}\n")
    assert main(["compare", str(tmp_path / "p.yaml"), "--targets", "host-cpu,test-npu,test-npu-strict", "--json"]) == 0
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["host-cpu"]["accelerator_pct"] == 100.0 and rows["host-cpu"]["meets_budget"] is True
    assert rows["test-npu"]["partitions"] == 2 and rows["test-npu"]["host_round_trips"] == 1
    assert rows["test-npu-strict"]["meets_budget"] is False and "rejected" in rows["test-npu-strict"]["error"]
    assert main(["compare", str(tmp_path / "p.yaml"), "--targets", "host-cpu,test-npu-strict"]) == 0
    table = capsys.readouterr().out
    assert "host-cpu" in table and "no: 1 node(s) rejected" in table


def test_compare_unknown_target_is_one_line(tmp_path, capsys):
    onnx.save(conv_lrn_conv(), str(tmp_path / "m.onnx"))
    (tmp_path / "p.yaml").write_text("apiVersion: edgeship/v1\nkind: Pipeline\nmetadata: {name: cmp}\n"
                                     "model: {path: m.onnx}\ntarget: host-cpu\n")
    assert main(["compare", str(tmp_path / "p.yaml"), "--targets", "host-cpux"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "host-cpu" in err[0]


def test_calibrate_bad_input_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"x")
    assert main(["calibrate", "--quick", "--add", str(junk)]) == 2
    assert main(["calibrate", "--models", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "junk.onnx: not a valid ONNX model" in err[0] and "nosuch" in err[1]
