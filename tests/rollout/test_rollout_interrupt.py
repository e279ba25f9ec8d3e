"""Ctrl-C during an SSH upload: `apply` stops with exit 130 (it used to count the device as a failed
upload), the journal holds an unfinished push and nothing else, and the next `apply` resumes the
same run, appends to the half-sent bundle and converges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from edgeship import artifact
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import make_bundle, signing_keys, write_rollout
from tests.support.sshd import DroppingProxy, SshdFarm

pytestmark = pytest.mark.integration


def test_ctrl_c_mid_upload_stops_cleanly_and_apply_resumes(tmp_path):
    with SshdFarm(tmp_path / "sshd", count=1) as farm:
        device = farm.devices[0]
        bundle = make_bundle(tmp_path, "big", seed=3, pad_kb=4096)
        size, digest = bundle.stat().st_size, artifact.bundle_digest(bundle)
        proxy = DroppingProxy(device.port, drop_after=size // 2, stall=True)  # the first link hangs mid-upload
        try:
            known = tmp_path / "known_hosts_proxy"
            known.write_text(device.host_key_line().replace(f":{device.port} ", f":{proxy.port} "))
            doc = farm.fleet_document(trust=[signing_keys(tmp_path)[1]], known_hosts=str(known))
            doc["devices"][0]["address"] = f"127.0.0.1:{proxy.port}"
            fleet = tmp_path / "fleet.yaml"
            fleet.write_text(yaml.safe_dump(doc))
            rollout = write_rollout(tmp_path, "big", fleet, bundle, {"waves": [100]})
            apply = [sys.executable, "-m", "edgeship", "apply", str(rollout)]

            proc = subprocess.Popen(apply, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert proxy.stalled.wait(120), "the upload never started"
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == 130, err
            assert "interrupted" in err and "again to resume" in err and "Traceback" not in err
            assert "upload failed" not in err and "FAILED" not in err  # not counted as a failed device

            (part,) = (device.root / "incoming").glob(f"{artifact.short(digest, 64)}.tar.*.part")  # one per writer
            assert 0 < part.stat().st_size < size  # the half-sent bundle stays for the resume
            with Journal() as j:
                (run,) = j.runs("big")
                assert run["state"] == "running"
                steps = [(s["action"], s["phase"]) for s in j.steps("big")]
                assert steps == [("push", "begin")]  # consistent: one unfinished push, no failure recorded

            done = subprocess.run(apply, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert "resuming run" in done.stderr
            with Journal() as j:
                (run,) = j.runs("big")  # the same run, finished
                assert run["state"] == "done"
                pushes = [s for s in j.steps("big") if s["action"] == "push" and s["phase"] == "end"]
                assert len(pushes) == 1 and pushes[0]["ok"] and 0 < pushes[0]["bytes"] < size  # appended, not re-sent
            status = subprocess.run([sys.executable, "-m", "edgeship", "fleet", "status", str(fleet)],
                                    capture_output=True, text=True, timeout=120, env=dict(os.environ))
            assert artifact.short(digest) in status.stdout, status.stdout + status.stderr
        finally:
            proxy.close()
