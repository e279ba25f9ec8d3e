"""Whatever the input, validation returns diagnostics: it never raises (property tests)."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeship.pipelines.manifest import check_file

FIELDS = ["model", "path", "inputs", "target", "budget", "latency_ms", "p95", "memory_kb", "peak", "accuracy",
          "metric", "min", "max", "quantization", "mode", "calibration", "data", "validation", "stages", "devices",
          "id", "transport", "address", "labels", "transports", "ssh", "mqtt", "password", "broker", "trust",
          "public_keys", "fleet", "artifact", "digest", "pipeline", "selector", "matchLabels", "matchExpressions",
          "operator", "values", "strategy", "canary", "count", "percent", "waves", "max_unavailable", "gate"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
                    st.sampled_from(FIELDS + ["", "${X}", "host-cpu", "sha256:00", "In", "../x.onnx", "100%"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)), max_leaves=25)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(kind=st.sampled_from(["Pipeline", "Fleet", "Rollout", "Target", "Other"]),
       body=st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
def test_any_structure_of_any_kind(tmp_path, kind, body):
    doc = {"apiVersion": "edgeship/v1", "kind": kind, "metadata": {"name": "x"}, **body}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    documents, diagnostics = check_file(path)
    assert all(d.line >= 1 and d.col >= 1 for d in diagnostics)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes(tmp_path, raw):
    path = tmp_path / "m.yaml"
    path.write_bytes(raw)
    check_file(path)


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?\n  \t.1")), max_size=200))
def test_any_yaml_punctuation(tmp_path, text):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    check_file(path)
