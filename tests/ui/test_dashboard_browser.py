"""The dashboard in a real headless Chromium against a real local fleet mid-rollout: every page
renders, a live update arrives while `edgeship apply` runs (and the rollout page ends showing
`done` without a reload), no console error anywhere, and screenshots of the fleet and rollout
pages land in the test output folder (out/test-output/ui, or $EDGESHIP_TEST_OUTPUT)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.support.bundles import signing_keys
from tests.support.require import require_binary, require_module
from tests.ui.ui_kit import ROOT, TARGETS, fleet_mid_rollout_setup, start_apply, start_ui, stop, wait_for

pytestmark = pytest.mark.integration


def _output_dir() -> Path:
    folder = Path(os.environ.get("EDGESHIP_TEST_OUTPUT") or ROOT / "out" / "test-output") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _rollout_state(name: str) -> str | None:
    db = Path(os.environ["EDGESHIP_HOME"]) / "rollouts.db"
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            row = con.execute("SELECT state FROM rollouts WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def test_dashboard_in_chromium_mid_rollout(tmp_path, monkeypatch):
    binary = require_binary("chromium", "chromium-browser")
    require_module("websocket")
    from tests.ui.chromium import Chromium

    monkeypatch.setenv("EDGESHIP_SIGNING_KEY", str(signing_keys(tmp_path)[0]))  # the key the test fleet trusts
    fleet, rollout = fleet_mid_rollout_setup(tmp_path, devices=8, soak_s=4.0)
    out = _output_dir()
    ui, url, _ = start_ui(fleet, tmp_path / "ui.log")
    browser = apply = None
    try:
        browser = Chromium(binary, tmp_path / "chromium-profile")  # up before the rollout starts

        # the fleet, before and while the rollout runs: the page changes in place (a live update)
        browser.navigate(url)
        assert browser.evaluate("document.querySelectorAll('#fleet-lab tbody tr').length") == 8
        assert browser.evaluate("document.title") == "Fleet · edgeship"
        assert browser.evaluate("document.querySelectorAll('tr[data-health=\"empty\"]').length") == 8
        apply = start_apply(rollout, tmp_path / "apply.log")
        wait_for(lambda: _rollout_state("kws-v1") == "running", 120, "the rollout to start")
        browser.wait_for("document.querySelector('tr[data-health=\"healthy\"]') !== null"
                         " && Number(document.body.dataset.liveUpdates) > 0", 120, "a live update on the fleet page")
        assert browser.evaluate("document.getElementById('live').textContent") == "live"
        browser.screenshot(out / "fleet.png")

        # the rollout: its waves with gate figures, its timeline; live until it is done
        browser.navigate(url + "rollouts/kws-v1")
        assert browser.evaluate("document.querySelectorAll('.wave').length") == 3
        assert browser.evaluate("document.querySelectorAll('#timeline tbody tr').length") > 0
        browser.wait_for("document.querySelector('.wave[data-wave=\"0\"] .gate.ok') !== null", 120,
                         "the canary's gate figures")
        browser.screenshot(out / "rollout.png")
        assert apply.wait(timeout=300) == 0, (tmp_path / "apply.log").read_text()
        browser.wait_for("document.querySelector('.title-row .badge').textContent === 'done'", 60,
                         "the rollout page to show done without a reload")
        assert browser.evaluate("document.querySelectorAll('.wave[data-status=\"passed\"]').length") == 3
        browser.screenshot(out / "rollout-done.png")

        # rollouts list, builds (compare table across targets) and one artifact's report
        browser.navigate(url + "rollouts")
        assert browser.evaluate("document.querySelector('tr[data-rollout=\"kws-v1\"]').dataset.state") == "done"
        browser.navigate(url + "builds")
        targets = browser.evaluate("[...document.querySelectorAll('table[data-pipeline=\"kws\"] tbody tr td:first-child')]"
                                   ".map(td => td.textContent)")
        assert sorted(targets) == sorted(TARGETS)
        assert browser.evaluate("document.querySelectorAll('.badge.v-pass').length") >= len(TARGETS)
        browser.screenshot(out / "builds.png")
        report = browser.evaluate("document.querySelector('a[href$=\"report.html\"]').getAttribute('href')")
        browser.navigate(url + report.lstrip("/"))
        assert "PASS" in browser.evaluate("document.body.innerText")
        browser.pump(1.0)
        assert browser.console_errors == []
    finally:
        if browser is not None:
            browser.close()
        if apply is not None:
            stop(apply)
        stop(ui)
    for name in ("fleet.png", "rollout.png", "builds.png"):
        assert (out / name).stat().st_size > 10_000
    log = (tmp_path / "ui.log").read_text()
    assert "Traceback" not in log, log
