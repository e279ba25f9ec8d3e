"""Typed events: the engine's and the runner's human lines are derived from them (one line per event
with text), every event round-trips through to_dict/from_dict, and `import edgeship` stays cheap."""

from __future__ import annotations

import subprocess
import sys

from edgeship import events
from edgeship.api import engine_for, load_rollouts
from edgeship.fleet.rollout.journal import Journal
from edgeship.pipelines.runner import Progress
from tests.rollout.rollout_kit import device_ids, make_bundle, make_failing, write_local_fleet, write_rollout


def test_engine_lines_are_the_events_text(tmp_path):
    ids = device_ids(3)
    fleet = write_local_fleet(tmp_path, ids)
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"canary": {"count": 1}})
    make_failing(tmp_path, ids[2:])
    lines, seen = [], []
    with Journal() as journal:
        engine = engine_for(load_rollouts(rollout)[0], journal, log=lines.append, on_event=seen.append)
        report = engine.apply()
    assert report.state == "failed"
    assert lines == [e.text() for e in seen if e.text()]
    kinds = [type(e) for e in seen]
    assert kinds[0] is events.RolloutStarted and kinds[-1] is events.RolloutFinished
    assert {events.DevicePushed, events.DeviceActivated, events.DeviceFailed, events.GatePassed,
            events.GateFailed, events.WaveRolledBack} <= set(kinds)
    failed = next(e for e in seen if isinstance(e, events.DeviceFailed))
    assert failed.device == ids[2] and failed.reason == "smoke-failed" and failed.text().endswith(failed.message)
    for event in seen:
        assert events.from_dict(event.to_dict()) == event


def test_progress_lines_are_derived_from_stage_events(capsys):
    got = []
    progress = Progress(on_event=got.append)
    progress.emit(events.BuildStarted("p", ["import", "normalize"]))
    progress.emit(events.StageFinished("p", "import", 1, 2, "ran", 0.5, "abcdef0123456789"))
    progress.emit(events.StageFinished("p", "normalize", 2, 2, "failed", 0.25))
    assert capsys.readouterr().err.splitlines() == [
        "[1/2] import     ran         0.50 s  abcdef012345",
        "[2/2] normalize  FAILED      0.25 s"]
    assert [e.type for e in got] == ["BuildStarted", "StageFinished", "StageFinished"]


def test_import_edgeship_does_not_load_the_api():
    code = "import sys, edgeship; assert 'edgeship.api' not in sys.modules; assert callable(edgeship.apply); " \
           "assert 'edgeship.api' in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
