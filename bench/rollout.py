"""Rollout benchmark: 1,000 MQTT devices on one loopback mosquitto, canary 1% then waves 10/50/100%.

Measures (1) wall time for a fresh rollout to converge every device, once per combination of state
store (SQLite file, PostgreSQL server started for the run) and transfer (unicast, fan-out), each on
fresh devices, a fresh broker and a fresh journal, with the manager's bytes out, the broker's bytes
out and the manager's memory; then, on the last combination, (2) a re-apply of the same
rollout (must push 0 bytes), (3) a bad canary: part of the canary fails its smoke test for real
(agent.yaml smoke.max_latency_ms set tiny on those devices), time until the gate trips and until
the canary's switched devices are rolled back, and proof that no device outside the canary was touched.

Devices are real agents behind the real MQTT device service, many per process sharing one network
loop (no thread per device), in a few processes:

    python bench/rollout.py                       # 1,000 devices, 4 device processes, 4 combinations
    python bench/rollout.py --devices 200 --hosts 2 --timeout 300 --stores sqlite --transfers fanout

Bounded: every phase has a deadline (--timeout seconds); device processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.bundles: the same real signed bundles the tests use

TINY_MS = 0.000001


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- device host process ------------------------------------------------------------------------

def serve(args) -> int:
    """Run DeviceServices for args.ids on shared loops/workers until SIGTERM."""
    _raise_fd_limit()
    from edgeship.fleet.agent import Agent
    from edgeship.fleet.agent_config import config_for_root
    from edgeship.fleet.mqtt.client import SharedLoop, Worker
    from edgeship.fleet.mqtt.service import DeviceService, Ticker

    ids = args.ids.split(",")
    loops = [SharedLoop() for _ in range(2)]
    workers = [Worker() for _ in range(3)]
    services = []
    for i, device_id in enumerate(ids):
        root = Path(args.workdir) / "devices" / device_id
        agent = Agent(root, config_for_root(root), device_id=device_id)
        agent.ensure_layout()
        services.append(DeviceService(device_id, root, args.broker, agent=agent, loop=loops[i % len(loops)],
                                      worker=workers[i % len(workers)], min_backoff=0.5, max_backoff=5.0).start())
    ticker = Ticker(services, interval=2.0)
    deadline = time.monotonic() + 120
    for svc in services:
        svc.client.wait_connected(max(1.0, deadline - time.monotonic()))
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    ticker.stop()
    for svc in services:
        try:
            svc.stop()
        except Exception:
            pass
    return 0


class DeviceHosts:
    def __init__(self, workdir: Path, broker: str, ids: list[str], hosts: int):
        self.workdir, self.broker, self.ids, self.hosts = workdir, broker, ids, hosts
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float) -> float:
        t0 = time.monotonic()
        per = -(-len(self.ids) // self.hosts)
        for h in range(self.hosts):
            part = self.ids[h * per:(h + 1) * per]
            if not part:
                continue
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--serve", "--broker", self.broker, "--workdir", str(self.workdir),
                 "--ids", ",".join(part)], stdout=subprocess.PIPE, stderr=open(self.workdir / f"host-{h}.log", "ab"),
                text=True))
        for proc in self.procs:
            line = _readline(proc, max(1.0, timeout - (time.monotonic() - t0)))
            if line.strip() != "ready":
                raise RuntimeError(f"device host did not start (see {self.workdir}/host-*.log)")
        return time.monotonic() - t0

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        return ""
    return proc.stdout.readline()


# --- the benchmark ------------------------------------------------------------------------------

def start_broker(workdir: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
        "max_queued_messages 100000", "max_inflight_messages 200", "max_connections -1",
        "message_size_limit 0", "sys_interval 1", f"log_dest file {workdir / 'mosquitto.log'}", "log_type error", "log_type warning", ""]))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_raise_fd_limit)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc, f"mqtt://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def run_apply(rollout: Path, log: Path, timeout: float, take_over: bool = False):
    """Apply in-process (the engine, as `edgeship apply` runs it) with a deadline; returns
    (report, seconds, the MQTT manager's figures)."""
    import threading

    from edgeship.fleet.rollout.journal import Journal
    from edgeship.fleet.rollout.spec import load_rollout
    from edgeship.commands.rollout import _engine_for

    spec = load_rollout(rollout)
    out: list = []
    with open(log, "a") as fh, Journal() as journal:
        def write(line: str) -> None:
            fh.write(line + "\n")

        engine = _engine_for(spec, journal, write, take_over=take_over)
        transport = engine.transports.for_device(engine.devices[0])  # the one the engine uses (cached per fleet)

        def work():
            try:
                out.append(engine.apply())
            except Exception as err:  # said as one line below, with the log to read
                out.append(err)

        t0 = time.monotonic()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(timeout)
        took = time.monotonic() - t0
        if thread.is_alive():
            raise SystemExit(f"{rollout.name}: did not finish within {timeout:.0f}s (see {log})")
    if isinstance(out[0], Exception):
        raise SystemExit(f"{rollout.name}: {out[0]} (see {log})")
    manager = transport.manager
    figures = {"manager_bytes_out": manager.client.bytes_out,
               "chunk_bytes": manager.server.bytes_shared + sum(manager.server.bytes_sent.values())}
    return out[0], took, figures


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BrokerBytes:
    """mosquitto's $SYS/broker/bytes/sent, read from a plain client of the bench's own."""

    def __init__(self, url: str):
        from bench.mqtt_fleet import SysBytes
        from edgeship.fleet.mqtt.client import MqttClient

        self.client = MqttClient(url, label="bench-sys")
        self.counter = SysBytes(self.client)
        self.client.start().wait_connected(15)

    def read(self) -> int:
        return self.counter.read()

    def stop(self) -> None:
        self.client.stop()


def start_postgres():
    """A PostgreSQL server for the run (tests/support/postgres.py); None when it cannot start here."""
    try:
        from tests.support.postgres import start_server

        return start_server()
    except BaseException as err:  # pytest's skip/fail outcomes are BaseExceptions
        print(f"PostgreSQL not available ({err}): its rows are left out", file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=4, help="device processes (each runs many devices)")
    parser.add_argument("--timeout", type=float, default=900, help="deadline per phase, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--stores", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--transfers", nargs="+", choices=("unicast", "fanout"), default=["unicast", "fanout"])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    _raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="edgeship-bench-rollout-"))
    os.environ["EDGESHIP_HOME"] = str(workdir / "home")
    import yaml

    from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, SmokeConfig
    from edgeship.fleet.rollout.journal import Journal
    from edgeship.fleet.rollout.waves import plan_waves
    from edgeship.fleet.rollout.spec import Canary
    from tests.support.bundles import make_bundle, signing_keys

    ids = [f"dev-{i:04d}" for i in range(args.devices)]
    priv, pub = signing_keys(workdir)
    os.environ["EDGESHIP_SIGNING_KEY"] = str(priv)  # the manager signs desired state with the artifacts' key
    v1, v2 = make_bundle(workdir, "kws", seed=1), make_bundle(workdir, "kws", seed=2)
    strategy = {"canary": {"percent": 1}, "waves": [10, 50, 100], "max_unavailable": "10%",
                "gate": {"min_success_ratio": 1.0}}
    postgres = start_postgres() if "postgres" in args.stores else None
    combos = [(store, transfer) for store in args.stores for transfer in args.transfers
              if store == "sqlite" or postgres is not None]
    matrix, rows = [], []
    broker = hosts = None
    try:
        for n, (store, transfer) in enumerate(combos):
            last = n == len(combos) - 1
            here = workdir / f"{store}-{transfer}"
            os.environ["EDGESHIP_HOME"] = str(here / "home")
            if store == "postgres":
                os.environ["EDGESHIP_DATABASE_URL"] = postgres.new_database()
            else:
                os.environ.pop("EDGESHIP_DATABASE_URL", None)
            here.mkdir(parents=True)
            broker, url = start_broker(here)
            for d in ids:
                root = here / "devices" / d
                root.mkdir(parents=True)
                (root / CONFIG_NAME).write_text(yaml.safe_dump(AgentConfig(trusted_keys=[pub]).to_yaml_dict(relative_to=root)))
            fleet = {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "bench"},
                     "transports": {"mqtt": {"broker": url, "fanout": transfer == "fanout"}},
                     "devices": [{"id": d, "target": "host-cpu", "transport": "mqtt", "labels": {"site": "bench"}}
                                 for d in ids]}
            (here / "fleet.yaml").write_text(yaml.safe_dump(fleet))

            def rollout(name, bundle):
                doc = {"apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": name},
                       "fleet": "fleet.yaml", "artifact": {"path": str(bundle)}, "strategy": strategy}
                path = here / f"{name}.yaml"
                path.write_text(yaml.safe_dump(doc))
                return path

            hosts = DeviceHosts(here, url, ids, args.hosts)
            started = hosts.start(args.timeout)
            sysbytes = BrokerBytes(url)
            print(f"[{store}, {transfer}] {args.devices} MQTT devices in {args.hosts} processes connected in "
                  f"{started:.1f}s; bundle {v1.stat().st_size / 1024:.0f} KiB; work dir {here}", file=sys.stderr)
            log = here / "apply.log"
            rss0, wire0 = rss_mb(), sysbytes.read()
            cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # this process is the manager
            report, took, figures = run_apply(rollout("bench-v1", v1), log, args.timeout)
            cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
            wire = sysbytes.read() - wire0
            ok = sum(r.result == "activated" for r in report.rows)
            matrix.append((store, transfer, f"{took:.1f}", f"{cpu:.1f}", f"{ok}/{len(ids)}", f"{report.bytes_pushed / 1e6:.2f} MB",
                           f"{figures['manager_bytes_out'] / 1e6:.2f} MB", f"{figures['chunk_bytes'] / v1.stat().st_size:.2f}x",
                           f"{wire / 1e6:.1f} MB", f"{rss_mb():.0f} MB (+{rss_mb() - rss0:.0f})"))
            print("  " + "  ".join(matrix[-1]), file=sys.stderr)
            if last:
                rows.append((f"converge (canary 1%, 10/50/100%) [{store}, {transfer}]", f"{took:.1f}", report.state,
                             f"{ok}/{len(ids)} activated", f"{report.bytes_pushed / 1e6:.2f} MB"))
                report, took, _ = run_apply(rollout("bench-v1", v1), log, args.timeout)
                rows.append(("re-apply unchanged", f"{took:.1f}", report.state,
                             "0 changed" if report.state == "unchanged" else "?", f"{report.bytes_pushed} B"))

                canary = plan_waves(ids, Canary(percent=1), (10, 50, 100))[0].devices
                failing = canary[1::2] or canary[:1]  # half of the canary fails its smoke test for real
                hosts.stop()
                for d in failing:
                    root = here / "devices" / d
                    config = AgentConfig(trusted_keys=[pub], smoke=SmokeConfig(max_latency_ms=TINY_MS))
                    (root / CONFIG_NAME).write_text(yaml.safe_dump(config.to_yaml_dict(relative_to=root)))
                hosts.start(args.timeout)
                report, took, _ = run_apply(rollout("bench-v2-bad", v2), log, args.timeout, take_over=True)
                with Journal() as j:
                    run = j.runs("bench-v2-bad")[-1]
                    gate_ts = j.gates(run["id"])[0]["ts"]
                    steps = j.steps("bench-v2-bad")
                rollbacks = [s for s in steps if s["action"] == "rollback" and s["phase"] == "end" and s["ok"]]
                touched = {s["device"] for s in steps}
                detect = gate_ts - run["started"]
                rolled = (max(s["ts"] for s in rollbacks) - run["started"]) if rollbacks else detect
                rows.append(("bad canary: gate tripped", f"{detect:.1f}", report.state,
                             f"{len(failing)}/{len(canary)} canary failed smoke", "-"))
                rows.append(("bad canary: rolled back", f"{rolled:.1f}", report.state,
                             f"{len(rollbacks)} rolled back; {len(touched - set(canary))} outside canary touched", "-"))
                if report.state != "failed":
                    raise SystemExit(f"the bad canary was not stopped: {report.state} {report.reason}")
            sysbytes.stop()
            hosts.stop()
            broker.terminate()
            broker.wait(10)
            broker = hosts = None
    finally:
        if hosts is not None:
            hosts.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        if postgres is not None:
            postgres.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    head = ("store", "transfer", "converge s", "manager CPU s", "activated", "to devices", "manager out", "chunks/artifact",
            "broker out", "manager RSS")
    widths = [max(len(str(r[i])) for r in [head, *matrix]) for i in range(len(head))]
    print(f"\nConverge {args.devices} MQTT devices (real agents), canary 1% then 10/50/100%, max_unavailable 10%:")
    for row in [head, *matrix]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("to devices: bytes the devices received (journal); manager out: bytes the manager published; "
          "chunks/artifact: chunk bytes the manager published over the bundle size; broker out: mosquitto's $SYS "
          "bytes sent; manager RSS: this process after the run (+ growth during it).")

    header = ("phase", "seconds", "state", "devices", "pushed")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\nRollout benchmark: {args.devices} MQTT devices, one loopback mosquitto, canary 1% then 10/50/100%, "
          f"max_unavailable 10%")
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
