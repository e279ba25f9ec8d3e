"""report.html: the budget verdict comes first, the accuracy chart has one legend entry per bar with
everything inside the SVG (the budget's metric first, with its bound), and a CPU target's nodes run
on the "host", not on an "accelerator"."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np

from edgeship.cli import main
from edgeship.stages.report import _text_width, grouped_bars, render_html

from .models import pipeline_doc, tiny_mlp, write_manifest

CANDIDATES = [(name, {"top1_agreement": a, "cosine": 0.999, "sqnr_db": 27.6, "max_abs_error": 0.47})
              for name, a in (("float (selected)", 1.0), ("static-per-channel", 0.95), ("static-per-tensor", 0.965))]
GOAL = {"metric": "top1_agreement", "bound": 0.97, "direction": "min"}


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_accuracy_chart_has_a_legend_entry_per_bar_all_inside_the_svg():
    svg = _svg(grouped_bars(CANDIDATES, "Accuracy per quantization candidate (vs float)", goal=GOAL))
    ns = "{http://www.w3.org/2000/svg}"
    width = float(svg.get("width"))
    legend = [r for r in svg.iter(f"{ns}rect") if r.get("width") == "10"]  # bars have widths like "123.4"
    bar_colours = {r.get("fill") for r in svg.iter(f"{ns}rect") if r.get("width") != "10"}
    assert len(legend) == len(bar_colours) == 4
    texts = list(svg.iter(f"{ns}text"))
    for t in texts:
        assert float(t.get("x")) + (0 if t.get("text-anchor") == "end" else _text_width(t.text or "", 11)) <= width, t.text
    labels = [t.text for t in texts]
    assert "top1_agreement (budget: min 0.97)" in labels  # the budget's metric, named with its bound
    first_legend_label = next(t.text for t in texts if float(t.get("y")) < 40 and t.get("font-weight") != "bold")
    assert first_legend_label.startswith("top1_agreement")
    assert any(line.get("stroke-dasharray") for line in svg.iter(f"{ns}line"))  # the bound drawn on the bars


def test_verdict_comes_first_with_the_numbers():
    report = {"name": "p", "target": "x", "stages": {"validate": {"passed": False, "budgets": [
        {"metric": "latency_ms.p95", "budget": 5.0, "measured": 7.5, "ok": False, "by": "over by 2.5 ms (+50%)", "source": "measured"},
        {"metric": "size_kb", "budget": 512.0, "measured": 75.2, "ok": True, "by": "ok, margin 436.8 KB", "source": "model file"},
    ]}}}
    page = render_html(report)
    verdict = page.index("class='verdict fail'")
    assert verdict < page.index("<table>")  # before the metadata table, stages and figures
    assert "FAIL</b>: 1 of 2 budget(s) exceeded" in page and "over by 2.5 ms (+50%)" in page and "7.5" in page


def test_built_report_on_host_cpu(tmp_path):
    tiny_mlp(tmp_path / "models" / "mlp.onnx")
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(0).standard_normal((16, 1, 8)).astype(np.float32))
    doc = pipeline_doc("models/mlp.onnx", {"x": [1, 8]}, validation={"data": "eval.npz"},
                       quantization={"mode": "auto", "calibration": {"data": "eval.npz"}},
                       budget={"latency_ms": {"p95": 50}, "accuracy": {"metric": "top1_agreement", "min": 0.5}})
    manifest = write_manifest(tmp_path / "p.yaml", doc)
    assert main(["build", str(manifest), "-o", str(tmp_path / "out"), "-q"]) == 0
    page = (tmp_path / "out" / "p" / "report.html").read_text()
    assert page.index("class='verdict pass'") < page.index("<h2>")
    assert re.search(r"PASS</b>: all \d budget\(s\) met", page) and "latency_ms.p95" in page
    assert "node(s) on the host CPU" in page and "on the accelerator" not in page
    assert "host (CPU) float32 roof" in page or "roof" not in page
