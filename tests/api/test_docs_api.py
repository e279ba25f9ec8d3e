"""docs/api.md's examples run as written: every ```python block, in order, in one namespace, in an
empty folder with its own state dir (a real build, a real local fleet driven by the device agent)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_api_doc_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8, "docs/api.md lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGESHIP_DOCS_DIR", str(tmp_path))
    namespace: dict = {"__name__": "docs_api"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{DOC.name} example {number}", "exec"), namespace)
        except Exception as err:  # name the example that broke, with its output so far
            raise AssertionError(f"docs/api.md example {number} failed: {type(err).__name__}: {err}\n"
                                 f"{capsys.readouterr().out[-2000:]}") from err
    out = capsys.readouterr().out
    assert "DeviceActivated" in out and "Synced Healthy" in out
    assert "fleet" in out and "no rollout named 'no-such-rollout'" in out
