"""`edgeship compare` lists the RKNN and OpenVINO targets and says where each latency comes from: the
roofline (edgeship's estimate) or a vendor compiler; the vendor's own figures get their own column."""

from __future__ import annotations

import json

from edgeship.cli import main
from edgeship.commands.compile import vendor_figures
from edgeship.targets.backends.rknn import parse_log

from .test_rknn import LOG

NEW_TARGETS = ["rockchip-rk3588", "rockchip-rk3576", "intel-core-ultra-npu", "intel-core-ultra-cpu"]


def test_compare_shows_the_new_targets_and_names_the_figure_sources(kws_int8, vendor_cache, tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Pipeline\nmetadata: {name: cmp}\n"
        f"model: {{path: {kws_int8['float']}}}\ntarget: host-cpu\nbudget: {{latency_ms: {{p95: 100}}}}\n"
        "quantization: {mode: none}\n")
    assert main(["compare", str(tmp_path / "p.yaml"), "--targets", ",".join(NEW_TARGETS), "--json"]) == 0
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == sorted(NEW_TARGETS)
    assert all(r["latency_source"] == "edgeship estimate" and r["error"] is None for r in rows.values())
    assert main(["compare", str(tmp_path / "p.yaml"), "--targets", "rockchip-rk3588,intel-core-ultra-npu"]) == 0
    table = capsys.readouterr().out
    assert "latency from" in table and "vendor's figures" in table and "rockchip-rk3588" in table
    assert "'edgeship estimate' is the roofline cost model" in table


def test_vendor_column_carries_the_toolkits_own_figures():
    rknn = {"backend": "rknn", "tool": "rknn-toolkit2", **parse_log(LOG.splitlines()), "ops_on_accelerator_pct": 33.3,
            "simulator": {"vs_float": {"cosine_mean": 0.9991}}}
    assert vendor_figures(rknn) == ("rknn-toolkit2: 576 cycles; 33.3% on NPU; internal 3 KiB, weights 3 KiB; "
                                    "simulator cosine 0.9991")
    ov = {"backend": "openvino", "tool": "openvino", "latency_ms": None, "host_validation": {"p50_ms": 0.123}}
    assert vendor_figures(ov) == "openvino: host CPU p50 0.123 ms (this machine)"
    assert vendor_figures({}) == "-" and vendor_figures({"backend": "onnxruntime"}) == "-"
