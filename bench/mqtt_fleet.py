"""Benchmark: roll one ~2 MB artifact out over MQTT to 200 and 1,000 simulated devices.

One loopback mosquitto (limits raised), one manager (this process: `MqttManager`, the same code as
the `mqtt` transport), and the devices in a few worker processes. Each process runs many
lightweight simulated devices on one `SharedLoop` (one selector thread drives every connection)
and a couple of shared worker threads: the real `DeviceService` protocol code (desired, chunk
requests, per-chunk sha256, whole-bundle sha256, reported), with an in-memory agent instead of
onnxruntime activation and a per-process chunk pool instead of a per-device folder.

Phases per fleet size:
  full   every device fetches the whole release (nothing cached)
  delta  then a "retrained last layer" v2: devices fetch only chunks v1 does not hold

Transfer modes: `unicast` (the manager answers each device's chunk requests on that device's topic:
bytes grow with the fleet) and `fanout` (each chunk published once, retained, on a shared
content-addressed topic that every device lacking it subscribes to; fleet/mqtt/server.py).

Prints, per fleet size, mode and phase: time until every device reports the new release, bytes the
manager published, bytes the broker sent (mosquitto's $SYS counter), chunk bytes each device received
and wire bytes per device against the artifact size, the manager's CPU time and resident memory.
Bounded by --timeout per phase; --repeat N gives median [min-max] over N runs.

    python bench/mqtt_fleet.py [--devices 1000 10000] [--modes unicast fanout] [--repeat 3] [--procs 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeship import artifact  # noqa: E402
from edgeship.fleet.agent_config import AgentConfig  # noqa: E402
from edgeship.fleet.mqtt.chunks import Recipe  # noqa: E402
from edgeship.fleet.mqtt.client import SharedLoop, Worker  # noqa: E402
from edgeship.fleet.mqtt.service import DeviceService, Ticker  # noqa: E402
from edgeship.fleet.mqtt.transport import MqttManager  # noqa: E402
from edgeship.fleet.types import Result  # noqa: E402


# --- the artifact -----------------------------------------------------------------------------

def make_artifact(tmp: Path, variant: str, size_mb: float) -> Path:
    """A real signed bundle of about size_mb: an MLP trunk (same in v1/v2) and a head that differs."""
    hidden = 512 if size_mb >= 1 else 256 if size_mb >= 0.25 else 128  # one layer is hidden^2 float32
    layers = max(1, int(size_mb * (1 << 20) / (hidden * hidden * 4)))
    trunk, head = np.random.default_rng(1), np.random.default_rng(2 if variant.startswith("v1") else 3)
    inits, nodes, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((trunk.standard_normal((hidden, hidden)) / 23).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        x = f"r{i}"
    inits.append(numpy_helper.from_array((head.standard_normal((hidden, 16)) / 23).astype(np.float32), "head"))
    nodes.append(helper.make_node("MatMul", [x, "head"], ["y"]))
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    folder = tmp / f"artifact-{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    np.savez(folder / "samples.npz", x=np.zeros((1, 1, hidden), np.float32))
    (folder / "bundle.json").write_text(json.dumps({"format": 1, "name": "bench", "target": "host-cpu",
                                                    "variant": variant}))
    for name in ("edgeship.lock.json", "report.json"):
        (folder / name).write_text(json.dumps({"variant": variant}))
    (folder / "report.html").write_text("<html></html>\n")
    key = tmp / "keys" / "signing.key"
    if not key.exists():
        artifact.generate_keypair(key)
    artifact.write_checksums(folder)
    artifact.sign(folder, key)
    return artifact.pack(folder, tmp / f"bench-{variant}.tar")


# --- simulated devices (worker processes) ------------------------------------------------------

class PooledStore:
    """A device's chunk store whose bytes live in a per-process pool (one copy per process)."""

    def __init__(self, pool: dict):
        self.pool, self.held = pool, set()

    def has(self, cid):
        return cid in self.held

    def put(self, cid, data):
        if hashlib.sha256(data).hexdigest() != cid:
            return False
        self.pool.setdefault(cid, data)
        self.held.add(cid)
        return True

    def missing(self, recipe):
        return [c for c in dict.fromkeys(recipe.ids()) if c not in self.held]

    def assemble(self, recipe: Recipe, out):
        h = hashlib.sha256()
        for cid, _ in recipe.chunks:
            if cid not in self.held:
                return False
            h.update(self.pool[cid])
        return h.hexdigest() == recipe.sha256

    def ids(self):
        return set(self.held)

    def retain(self, keep):
        dropped = self.held - keep
        self.held &= keep
        return len(dropped)


class SimAgent:
    """Stands in for the on-device Agent: remembers releases, activates instantly."""

    def __init__(self, device_id, trusted_key: Path):
        self.device_id, self.current, self.previous, self.releases_held = device_id, None, None, []
        self.config = AgentConfig(trusted_keys=[trusted_key])  # desired state is checked as on a device

    def has(self, digest):
        return digest in self.releases_held

    def incoming_path(self, digest):
        return None

    def activate(self, digest):
        self.previous, self.current = self.current, digest
        if digest not in self.releases_held:
            self.releases_held.append(digest)
        return Result(True, self.device_id, digest, "", "activated (simulated)")

    def current_hex(self):
        return self.current.split(":", 1)[-1] if self.current else None

    def rollback(self):
        self.current, self.previous = self.previous, self.current
        return Result(True, self.device_id, self.current or "", "", "rolled back (simulated)")

    def status(self):
        return {"current": self.current, "previous": self.previous, "releases": list(self.releases_held),
                "incoming": [], "disk_bytes": 0}


def raise_fd_limit() -> None:
    """Thousands of connections need thousands of descriptors (device processes and the broker)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def device_process(broker: str, ids: list[str], root: str, ready, stop, results) -> None:
    raise_fd_limit()
    loop = SharedLoop()
    workers = [Worker(f"w{i}") for i in range(2)]
    pool: dict = {}
    services = []
    for n, dev in enumerate(ids):
        agent = SimAgent(dev, Path(root).parent / "keys" / "signing.pub")
        svc = DeviceService(dev, Path(root) / dev, broker, agent=agent, loop=loop, worker=workers[n % 2],
                            store=PooledStore(pool), persist_state=False, window=4, request_timeout_s=30,
                            min_backoff=1.0, max_backoff=10.0)
        svc.start()
        services.append(svc)
    ticker = Ticker(services, interval=2.0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(s.client.connected.is_set() for s in services):
        time.sleep(0.1)
    ready.put(sum(s.client.connected.is_set() for s in services))
    stop.wait()
    results.put({"messages_in": sum(s.client.messages_in for s in services),
                 "messages_out": sum(s.client.messages_out for s in services),
                 "bytes_in": sum(s.client.bytes_in for s in services),
                 "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])})
    ticker.stop()
    for s in services:
        s.client.stop(clean=True)
    loop.stop()


# --- broker ------------------------------------------------------------------------------------

def start_broker(workdir: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000",
             "max_inflight_messages 100", "max_connections -1", "sys_interval 1", "message_size_limit 0",
             f"log_dest file {workdir / 'mosquitto.log'}"]
    if os.geteuid() == 0:
        import getpass
        lines.append(f"user {getpass.getuser()}")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=raise_fd_limit)
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


class SysBytes:
    """mosquitto's own counter of bytes it sent ($SYS/broker/bytes/sent, updated every second),
    read through an MQTT client of ours (the manager's here; bench/rollout.py brings its own)."""

    def __init__(self, client):
        self.value, self.updated = 0, threading.Event()
        client.subscribe("$SYS/broker/bytes/sent", self._on, qos=0)

    def _on(self, msg):
        self.value = int(msg.payload)
        self.updated.set()

    def read(self) -> int:
        self.updated.clear()
        self.updated.wait(3)
        return self.value


# --- one fleet size, one transfer mode ---------------------------------------------------------

def rss_mb() -> float:
    """This process's resident memory now (the manager: devices run in other processes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def converge(manager: MqttManager, ids: list[str], bundle: Path, timeout: float) -> tuple[int, float, float]:
    """Publish the release to every device; (devices converged, seconds, seconds spent publishing
    the desired states) bounded by `timeout`."""
    recipe = manager.recipe_for(bundle)
    t0 = time.monotonic()
    for dev in ids:
        manager.publish_desired(dev, "activate", recipe.digest, recipe, wait=False)
    published = time.monotonic() - t0
    done = 0
    while time.monotonic() - t0 < timeout:
        with manager._cond:
            done = sum(1 for d in ids if (manager.reported.get(d) or {}).get("current") == recipe.digest)
        if done == len(ids):
            break
        time.sleep(max(0.1, len(ids) / 20000))  # the count holds the manager's lock: not too often
    return done, time.monotonic() - t0, published


def run(size: int, procs: int, chunk_kb: int, timeout: float, bundles: list[Path], tmp: Path, mode: str,
        attempt: int = 0) -> list[dict]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tag = f"{size}-{mode}-{attempt}"
    workdir = tmp / f"broker-{tag}"
    workdir.mkdir()
    broker_proc = start_broker(workdir, port)
    url = f"mqtt://127.0.0.1:{port}"
    ctx = mp.get_context("spawn")
    ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    ids = [f"sim-{i:05d}" for i in range(size)]
    workers = [ctx.Process(target=device_process, args=(url, ids[p::procs], str(tmp / f"dev-{tag}"), ready, stop, results))
               for p in range(procs)]
    rows = []
    manager = None
    try:
        for w in workers:
            w.start()
        connected = sum(ready.get(timeout=max(180, size / 50)) for _ in workers)
        rss0 = rss_mb()
        manager = MqttManager(url, chunk_kb=chunk_kb, store_dir=tmp / f"manager-{tag}",
                               signing_key=tmp / "keys" / "signing.key", fanout=mode == "fanout",
                               timeout_s=timeout).start()
        sysbytes = SysBytes(manager.client)
        manager.sync()
        for phase, bundle in zip(("full", "delta"), bundles):
            wire0, cpu0 = sysbytes.read(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            msgs0 = manager.client.messages_in + manager.client.messages_out
            sent0 = sum(manager.server.bytes_sent.values()) + manager.server.bytes_shared
            out0 = manager.client.bytes_out
            done, elapsed, published = converge(manager, ids, bundle, timeout)
            cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
            time.sleep(1.2)
            wire = sysbytes.read() - wire0
            payload = sum(manager.server.bytes_sent.values()) + manager.server.bytes_shared - sent0
            with manager._cond:
                fetched = [int(((manager.reported.get(d) or {}).get("transfer") or {}).get("bytes_fetched") or 0)
                           for d in ids]
            rows.append({"devices": size, "mode": mode, "phase": phase, "converged": done, "seconds": elapsed, "publish_s": published,
                         "artifact_bytes": bundle.stat().st_size, "manager_chunk_bytes": payload,
                         "manager_bytes_out": manager.client.bytes_out - out0, "broker_bytes_out": wire,
                         "fetched_per_device": sum(fetched) / size, "wire_per_device": wire / size,
                         "manager_msgs": manager.client.messages_in + manager.client.messages_out - msgs0,
                         "manager_cpu_s": cpu, "manager_rss_mb": rss_mb(), "manager_rss_growth_mb": rss_mb() - rss0,
                         "connected": connected})
        stop.set()
        totals = [results.get(timeout=120) for _ in workers]
        for row in rows:
            row["device_cpu_s_all_phases"] = sum(t["cpu_s"] for t in totals)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
            if w.is_alive():
                w.kill()
        if manager:
            manager.close()
        broker_proc.terminate()
        broker_proc.wait(10)
        shutil.rmtree(tmp / f"dev-{tag}", ignore_errors=True)
        shutil.rmtree(tmp / f"manager-{tag}", ignore_errors=True)
    return rows


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """median [min-max] over the repeats (just the value when they all agree)."""
    values = sorted(values)
    median = values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    text = fmt.format(median)
    low, high = fmt.format(values[0]), fmt.format(values[-1])
    return text if low == high else f"{text} [{low}-{high}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000])
    parser.add_argument("--modes", nargs="+", choices=("unicast", "fanout"), default=["unicast", "fanout"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per (devices, mode): the table shows median [min-max]")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--chunk-kb", type=int, default=256)
    parser.add_argument("--size-mb", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per phase before giving up")
    parser.add_argument("--large", type=int, default=10000,
                        help="then a fan-out run with this many devices and a --large-size-mb artifact (0: none)")
    parser.add_argument("--large-size-mb", type=float, default=0.25)
    args = parser.parse_args()
    import collections
    grouped: dict = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="edgeship-mqtt-bench-") as tmpdir:
        tmp = Path(tmpdir)
        bundles = [make_artifact(tmp, "v1", args.size_mb), make_artifact(tmp, "v2", args.size_mb)]
        print(f"artifact: {bundles[0].stat().st_size / 1e6:.2f} MB, chunks avg {args.chunk_kb} KiB, "
              f"{args.procs} device processes, mosquitto on loopback, {os.cpu_count()} cores", flush=True)
        plan = [(size, mode, bundles) for size in args.devices for mode in args.modes]
        if args.large:
            small = [make_artifact(tmp, "v1-small", args.large_size_mb)]
            print(f"large run: {args.large} devices, fan-out, a {small[0].stat().st_size / 1e6:.2f} MB artifact, "
                  "full phase only", flush=True)
            plan.append((args.large, "fanout", small))
        for attempt in range(args.repeat):
            for size, mode, pair in plan:  # interleaved, so a busy spell on the shared machine hits every mode
                for row in run(size, args.procs, args.chunk_kb, args.timeout, pair, tmp, mode, attempt):
                    grouped[(row["devices"], row["mode"], row["phase"])].append(row)
                    print(f"  {row['devices']} {row['mode']} {row['phase']}: {row['converged']}/{row['devices']} "
                          f"in {row['seconds']:.1f}s (desired published in {row['publish_s']:.1f}s)", flush=True)
    head = ("devices", "mode", "phase", "artifact", "converged", "time s", "manager out", "mgr/artifact", "chunks/artifact", "broker out",
            "fetched/dev", "wire/dev", "manager CPU s", "manager RSS MB")
    table = [head]
    for (devices, mode, phase), runs in grouped.items():
        art = runs[0]["artifact_bytes"]
        table.append((str(devices), mode, phase, f"{art / 1e6:.2f} MB", f"{min(r['converged'] for r in runs)}/{devices}",
                      spread([r["seconds"] for r in runs]),
                      spread([r["manager_bytes_out"] / 1e6 for r in runs], "{:.2f}") + " MB",
                      spread([r["manager_bytes_out"] / art for r in runs], "{:.2f}") + "x",
                      spread([r["manager_chunk_bytes"] / art for r in runs], "{:.2f}") + "x",
                      spread([r["broker_bytes_out"] / 1e6 for r in runs], "{:.0f}") + " MB",
                      spread([r["fetched_per_device"] / art for r in runs], "{:.3f}") + "x",
                      spread([r["wire_per_device"] / art for r in runs], "{:.3f}") + "x",
                      spread([r["manager_cpu_s"] for r in runs]),
                      spread([r["manager_rss_mb"] for r in runs], "{:.0f}")))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print("manager out: bytes the manager published (chunks, desired, sync); mgr/artifact: that over the artifact "
          "size; chunks/artifact: chunk bytes alone over the artifact size. broker out: mosquitto's $SYS bytes sent to all clients. fetched/dev: chunk bytes each device "
          "received over the artifact size; wire/dev: broker out / devices over the artifact size (MQTT headers, "
          "desired, reports included). Values: median [min-max] over --repeat runs.")
    rows = [r for runs in grouped.values() for r in runs]
    return 0 if all(r["converged"] == r["devices"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
