"""Benchmark: push one artifact to N real sshd devices at --parallel 1, 4, 16, against plain scp.

Starts N sshd instances on loopback (tests/support/sshd.py), makes one signed bundle of about
--size-mb, and for each parallelism level times (a) edgeship's SSH push (connect + host key check +
SFTP upload + remote sha256 verification + rename) to every device through a bounded pool, and
(b) plain `scp` of the same file to the same hosts with the same number of concurrent scp
processes, in the same run. Each cell is the median of --repeats runs; uploads are removed
between runs so nothing is skipped.

    python bench/ssh_push.py [--devices 20] [--size-mb 4] [--parallel 1 4 16] [--repeats 3]

Prints a table: wall time, aggregate MB/s, and the ratio edgeship/scp (wall time; < 1 is faster).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeship import artifact  # noqa: E402
from edgeship.fleet.deploy import deploy  # noqa: E402
from edgeship.fleet.inventory import load_fleet  # noqa: E402
from edgeship.fleet.transports import close_transports  # noqa: E402
from tests.support.bundles import make_bundle, signing_keys  # noqa: E402
from tests.support.sshd import SshdFarm  # noqa: E402


def _clean(farm: SshdFarm) -> None:
    for dev in farm.devices:
        for sub in ("incoming", "releases", "scp"):
            shutil.rmtree(dev.root / sub, ignore_errors=True)
        (dev.root / "scp").mkdir(parents=True, exist_ok=True)


def time_edgeship(fleet_path: Path, bundle: Path, parallel: int) -> float:
    fleet = load_fleet(fleet_path)  # a fresh fleet: fresh connections, as scp makes its own
    digest = artifact.bundle_digest(bundle)
    start = time.perf_counter()
    outcomes = deploy(fleet, fleet.devices, bundle, digest, parallel=parallel, activate=False)
    wall = time.perf_counter() - start
    close_transports(fleet)
    failed = [o for o in outcomes if not o.ok or o.push is None or o.push.skipped]
    if failed:
        raise SystemExit(f"edgeship push failed: {failed[0].device_id}: {failed[0].reason} {failed[0].message}")
    return wall


def time_scp(farm: SshdFarm, bundle: Path, parallel: int) -> float:
    def one(dev) -> None:
        cmd = ["scp", "-q", "-B", "-i", str(farm.client_key), "-o", f"UserKnownHostsFile={farm.known_hosts}",
               "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-P", str(dev.port),
               str(bundle), f"{farm.user}@127.0.0.1:{dev.root / 'scp' / bundle.name}"]
        subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, farm.devices))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--size-mb", type=float, default=4.0, help="approximate bundle size")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-ssh-"))
    farm = SshdFarm(work / "farm", count=args.devices, prefix="bench")
    try:
        bundle = make_bundle(work, "bench", seed=1, pad_kb=int(args.size_mb * 1024))
        size_mb = bundle.stat().st_size / 1e6
        fleet_path = farm.write_fleet(work / "fleet.yaml", trust=[signing_keys(work)[1]])
        total_mb = size_mb * args.devices
        print(f"ssh push: {size_mb:.2f} MB bundle to {args.devices} sshd devices on loopback, "
              f"median of {args.repeats} run(s) per cell", flush=True)
        header = f"{'parallel':>8}  {'edgeship s':>10}  {'edgeship MB/s':>13}  {'scp s':>8}  {'scp MB/s':>9}  {'ratio (edgeship/scp time)':>25}"
        print(header)
        print("-" * len(header))
        for parallel in args.parallel:
            ours, theirs = [], []
            for _ in range(args.repeats):
                _clean(farm)
                ours.append(time_edgeship(fleet_path, bundle, parallel))
                theirs.append(time_scp(farm, bundle, parallel))
            e, s = statistics.median(ours), statistics.median(theirs)
            print(f"{parallel:>8}  {e:>10.2f}  {total_mb / e:>13.1f}  {s:>8.2f}  {total_mb / s:>9.1f}  {e / s:>25.2f}", flush=True)
    finally:
        farm.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
