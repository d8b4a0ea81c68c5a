"""The benchmark runner behind ``make bench``.

For each event loop (uvloop when installed, and the standard asyncio loop) it starts the
hub in its own process (``midihub serve --config <generated toml> --bind 127.0.0.1``) and
runs every scenario through three targets, each driven by a separate load-generator
process (``loadgen.py``): the hub, the fastest bare relay (``relay.py --kind fast``, the
hub's own socket technique: the baseline) and asyncio's ``DatagramProtocol`` relay
(``relay.py --kind protocol``, a second line). Runs alternate (the order rotates each
round) for ``ROUNDS`` rounds and every figure is reported as the median with its spread.
The "dashboards open" scenario runs the pair against a second hub serving a seeded 7-day
history (``tests/history_seed.py``) to dashboards and monitor viewers (``dashboards.py``),
alternating with the same run without them. Then it profiles the hub with py-spy and writes
``bench/results.json`` and ``docs/benchmarks.md``.

``--quick`` shortens every scenario for a smoke run and writes its output under /tmp.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import browser as browser_scenario
import midi2 as midi2_scenario
import psutil  # type: ignore[import-untyped]
from common import LOCALHOST, free_port_block, free_tcp_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

MANY_GROUPS = 50
ROOM_SIZE = 16
IDLE_ROOMS = 20
TARGET_NAMES = ("hub", "baseline", "protocol")
"""The hub; the fastest bare relay (the baseline); asyncio's DatagramProtocol relay."""
SCENARIOS = ("pair", "ceiling", "many", "room")
SCENARIO_TARGETS = {
    "pair": TARGET_NAMES,
    "ceiling": TARGET_NAMES,
    "many": ("hub", "baseline"),
    "room": ("hub", "baseline"),
}
"""The DatagramProtocol line is measured where the loop's own overhead decides the figure
(the pair and its ceiling); many and room compare with the fastest relay only."""
SECOND_LOOP_SCENARIOS = ("pair", "ceiling")
"""With both loops, the second (the standard loop) runs these only, to keep ``make bench``
near 6 minutes; ``--loop asyncio`` alone runs everything on it."""

FULL: dict[str, Any] = {
    "rounds": 3,
    "pair": {"rate": 1000, "duration": 3.0},
    "many": {"rate": 50, "duration": 2.0},
    "room": {"rate": 20, "duration": 2.0},
    "ceiling": {"start": 16000, "step": 0.6, "bisect": 3, "max_rate": 256000, "p99": 5.0},
    "memory": {"count": 1000},
    "dashboards": {
        "rate": 1000,
        "duration": 4.0,
        "dashboards": 3,
        "monitors": 20,
        "participants": 50,
        "days": 7,
        "probe_interval": 0.002,
        "settle_limit_s": 30.0,
        "profile": True,
    },
    "profile": {"seconds": 4.0, "pair_rate": 8000},
    "budget_s": 330,
}
QUICK: dict[str, Any] = {
    "rounds": 1,
    "pair": {"rate": 1000, "duration": 1.0},
    "many": {"rate": 50, "duration": 1.0},
    "room": {"rate": 20, "duration": 1.0},
    "ceiling": {"start": 16000, "step": 0.3, "bisect": 1, "max_rate": 256000, "p99": 5.0},
    "memory": {"count": 200},
    "dashboards": {
        "rate": 1000,
        "duration": 2.0,
        "dashboards": 3,
        "monitors": 20,
        "participants": 50,
        "days": 7,
        "probe_interval": 0.002,
        "settle_limit_s": 15.0,
        "profile": False,
    },
    "profile": {"seconds": 1.5, "pair_rate": 8000},
    "budget_s": 100,
}

PIN = {"cpus": True}  # --no-pin turns it off
BUDGET = {"until": 0.0}  # monotonic time after which no failed ceiling step is retried

TARGETS = {
    "pair_p99_ratio": 1.5,  # hub p99 / fastest relay p99, on uvloop
    "p99_ms": 2.0,
    "ceiling_fraction": 0.75,  # of the fastest relay's
    "bytes_per_participant": 100 * 1024,
    "generator_cpu_pct": 70.0,
    "dashboards_p99_ratio": 1.5,  # pair p99 with dashboards open / without
    "loop_lag_ms": 5.0,
}


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# -- the hub process -------------------------------------------------------------


class HubProcess:
    def __init__(
        self, loop: str, workdir: Path, pin_cpus: bool = True, ready_timeout: float = 30.0
    ) -> None:
        self.loop = loop
        self.workdir = workdir
        ports = free_port_block(2 + 2 * MANY_GROUPS + 1 + IDLE_ROOMS)
        self.pair = [ports[0], ports[1]]
        self.many = [[ports[2 + 2 * i], ports[3 + 2 * i]] for i in range(MANY_GROUPS)]
        self.room = ports[2 + 2 * MANY_GROUPS]
        self.idle = ports[3 + 2 * MANY_GROUPS :]
        self.web_port = free_tcp_port()
        self.database = workdir / "midihub.db"
        self.config = workdir / "bench.toml"
        self.config.write_text(self._toml())
        self.log_path = workdir / "hub.log"
        config = ["serve", "--config", str(self.config), "--bind", LOCALHOST]
        if loop == "asyncio" or not (BIN / "midihub").exists():
            self.command = [sys.executable, str(HERE / "hub_launcher.py"), "--loop", loop, *config]
        else:  # uvloop: the shipped entry point picks it by itself
            self.command = [str(BIN / "midihub"), *config]
        self._log = self.log_path.open("w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.command, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )
        if pin_cpus:
            mine = cpus()
            if len(mine) > 1:
                os.sched_setaffinity(self.process.pid, {mine[-1]})
        self._wait_ready(ready_timeout)
        self.start_seconds = time.monotonic() - self.started

    @property
    def web(self) -> str:
        return f"http://{LOCALHOST}:{self.web_port}"

    def _toml(self) -> str:
        lines = [
            'name = "midihub"',
            "[web]",
            f'listen = "{LOCALHOST}:{self.web_port}"',
            "monitor_viewers_per_ip = 64",  # the scenario's 20 viewers all come from 127.0.0.1
            "[stats]",
            f'database = "{self.database}"',
            # Every benchmark participant comes from 127.0.0.1 but stands for a machine of
            # its own: the per-IP limits would otherwise refuse the room and memory joins.
            "[limits]",
            "max_pending = 1024",
            "pending_per_source = 1024",
            "sessions_per_source = 1024",
            "[groups]",
            f"Pair = [{self.pair[0]}, {self.pair[1]}]",
        ]
        lines += [f"M{i:02d} = [{a}, {b}]" for i, (a, b) in enumerate(self.many)]
        lines += ["[rooms]", f"Room = {self.room}"]
        lines += [f"Idle{i:02d} = {port}" for i, port in enumerate(self.idle)]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if "dashboard and API on" in text:
                wanted = f"({self.loop} event loop)"
                if wanted not in text:
                    raise RuntimeError(f"the hub did not start with {self.loop}:\n{text}")
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited at start:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the hub did not become ready in {timeout:g} s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def problems(self) -> list[str]:
        """Warnings and errors in the hub's log, each with the exception that ended its
        traceback, repeats counted (``(x N)``) rather than listed."""
        found: dict[str, int] = {}
        current: str | None = None
        traceback = False
        for line in self.log_path.read_text().splitlines():
            if " WARNING " in line or " ERROR " in line:
                current, traceback = line.split(" ", 2)[-1], False  # without date and time
                found[current] = found.get(current, 0) + 1
            elif current is not None and line.startswith("Traceback"):
                traceback = True
            elif current is not None and traceback and line and not line[0].isspace():
                count = found.pop(current)  # the exception line ends the traceback
                text = f"{current}: {line.strip()[:200]}"
                found[text] = found.get(text, 0) + count
                current = None
            elif line and not line[0].isspace():
                current = None
        return [f"{text} (x {n})" if n > 1 else text for text, n in found.items()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# -- load generator runs ---------------------------------------------------------


def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    deadline = time.time() + (BUDGET["until"] - time.monotonic())  # the same, as epoch time
    spec = {**spec, "pin": PIN["cpus"], "deadline": deadline}
    command = [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        log(f"load generator failed ({spec['scenario']}, {spec['target']}):\n{done.stderr}")
        return {"error": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["run_seconds"] = round(time.monotonic() - started, 2)
    return result


def rotated(items: tuple[str, ...], round_index: int) -> list[str]:
    """Round r starts with item r: each target runs first, middle and last once."""
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure over the runs, its spread as [min, max], and
    the runs themselves under ``runs``."""
    out: dict[str, Any] = {"runs": runs}
    ok = [r for r in runs if "error" not in r]
    if not ok:
        out["error"] = runs[-1].get("error") if runs else "no run"
        return out
    spread: dict[str, list[float]] = {}
    for key in sorted(set().union(*(r.keys() for r in ok))):
        values = [r.get(key) for r in ok]
        numbers = [
            float(v)
            for v in values
            if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
        ]
        if numbers:
            out[key] = statistics.median(numbers)
            spread[key] = [min(numbers), max(numbers)]
        elif all(isinstance(v, str) for v in values) and len(set(values)) == 1:
            out[key] = values[0]
    out["spread"] = spread
    out["errors"] = len(runs) - len(ok)
    return out


def scenario_specs(hub: HubProcess, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ceiling = params["ceiling"]
    return {
        "pair": {"scenario": "pair", "groups": [hub.pair], **params["pair"]},
        "ceiling": {
            "scenario": "ceiling",
            "groups": [hub.pair],
            "start": ceiling["start"],
            "step": ceiling["step"],
            "bisect": ceiling["bisect"],
            "max_rate": ceiling["max_rate"],
            "p99_limit_ms": ceiling["p99"],
        },
        "many": {"scenario": "many", "groups": hub.many, **params["many"]},
        "room": {"scenario": "room", "room": hub.room, "size": ROOM_SIZE, **params["room"]},
    }


def run_loop(
    loop: str,
    params: dict[str, Any],
    *,
    scenarios: tuple[str, ...] = SCENARIOS,
    memory: bool = True,
    profile: bool = False,
    dashboards: bool = False,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"midihub-bench-{loop}-"))
    log(f"hub on the {loop} loop (workdir {workdir})")
    hub = HubProcess(loop, workdir, PIN["cpus"])
    results: dict[str, Any] = {"hub_command": " ".join(hub.command)}
    try:
        time.sleep(0.5)
        if memory:
            results["memory"] = {}
            for target in ("hub", "baseline"):
                spec = {"scenario": "memory", "idle": hub.idle, **params["memory"]}
                spec |= {"target": target, "loop": loop, "hub_pid": hub.pid}
                results["memory"][target] = loadgen(spec)
                log(f"  memory   {target:8s} {brief(results['memory'][target])}")
        specs = scenario_specs(hub, params)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            s: {t: [] for t in SCENARIO_TARGETS[s]} for s in scenarios
        }
        for round_index in range(params["rounds"]):
            log(f"  round {round_index + 1} of {params['rounds']}")
            for scenario in scenarios:
                for target in rotated(SCENARIO_TARGETS[scenario], round_index):
                    spec = {**specs[scenario], "target": target, "loop": loop, "hub_pid": hub.pid}
                    result = loadgen(spec)
                    result["round"] = round_index + 1
                    runs[scenario][target].append(result)
                    log(f"  {scenario:8s} {target:8s} {brief(result)}")
        for scenario in scenarios:
            results[scenario] = {t: aggregate(r) for t, r in runs[scenario].items()}
        if profile:
            results["profile"] = run_profile(hub, params)
    finally:
        hub.stop()
        results["hub_log_problems"] = hub.problems()[:20]
        shutil.rmtree(workdir, ignore_errors=True)
    if dashboards:
        results["dashboards"] = run_dashboards(loop, params, profile)
    return results


def brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    if "ceiling_msg_s" in result:
        limited = result.get("generator_limited_at")
        note = f" (generator limited at {limited:.0f})" if limited else ""
        return f"ceiling {result['ceiling_msg_s']:.0f} msg/s{note}"
    if "rss0_bytes" in result and "p99_ms" not in result:
        per = result.get("bytes_per_participant")
        extra = f", {per / 1024:.1f} KiB/participant" if per is not None else ""
        return f"rss0 {result['rss0_bytes'] / 2**20:.1f} MiB{extra}"
    probe = ""
    if "probe_max_ms" in result:
        probe = f" probe max {result['probe_max_ms']:.2f} ms"
    return (
        f"p50 {result['p50_ms']:.3f} ms p99 {result['p99_ms']:.3f} ms max {result['max_ms']:.2f}"
        f" lost {result['lost']} cpu {result['target_cpu_pct']:.0f}%"
        f" gen {result['generator_cpu_pct']:.0f}% others {result['others_cpu_pct']:.0f}%{probe}"
    )


# -- dashboards open ---------------------------------------------------------------


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


HAND_WRITTEN = "<!-- Hand-written sections below (other benchmarks): bench/run.py keeps them. -->"


def write_markdown(path: Path, generated: str) -> None:
    """``generated`` as the page, keeping whatever follows the ``HAND_WRITTEN`` marker
    (the sans-IO core, recording and memory benchmarks are run by their own commands)."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if HAND_WRITTEN in old:
            kept = "\n" + old[old.index(HAND_WRITTEN) :]
    path.write_text(generated + "\n" + kept)


def scrape_metrics(web: str) -> dict[str, float]:
    """``/metrics`` as {name{labels}: value}; empty when it cannot be read."""
    try:
        with urllib.request.urlopen(web + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            try:
                values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                continue
    return values


def loop_lag_from_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the hub's own loop-lag probe (``midihub_loop_lag_seconds``, when it exports one)
    saw between two scrapes: count, mean, and the upper bound of the highest histogram
    bucket that gained samples (a histogram has no exact maximum); a ``..._max...`` gauge
    (the longest lag since the hub started) only when it rose during the run."""
    buckets: list[tuple[float, float]] = []
    out: dict[str, Any] = {}
    for key, value in after.items():
        if not key.startswith("midihub_loop_lag"):
            continue
        delta = value - before.get(key, 0.0)
        name = key.split("{", 1)[0]
        if name.endswith("_bucket"):
            bound = re.search(r'le="([^"]+)"', key)
            if bound:
                buckets.append((float(bound.group(1)), delta))
        elif name.endswith("_count"):
            out["count"] = out.get("count", 0.0) + delta
        elif name.endswith("_sum"):
            out["sum_s"] = out.get("sum_s", 0.0) + delta
        elif "max" in name and delta > 0:  # a max since start: it rose during this run
            out["gauge_max_ms"] = max(out.get("gauge_max_ms", 0.0), 1000 * value)
    if not out and not buckets:
        return {}
    if out.get("count"):
        out["mean_ms"] = 1000 * out["sum_s"] / out["count"] if "sum_s" in out else None
        total = out["count"]
        below = [b for b, n in sorted(buckets) if n >= total]
        if below:
            out["max_le_ms"] = 1000 * below[0]
    return out


def seeded_names(participants: int) -> list[str]:
    """The participants ``tests/history_seed.py`` writes (``p00``, ``p01``, ...)."""
    return [f"p{i:02d}" for i in range(participants)]


def seed_history(path: Path, participants: int, days: int) -> int:
    """The store tests' seeded week (``tests/history_seed.py``: the first release's schema,
    one recursive-CTE INSERT into ``latency_minutes``); returns the rows written."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.history_seed import seed

    return seed(path, days=days, participants=participants)


def wait_idle(pid: int, limit: float, busy_pct: float = 15.0) -> float:
    """Wait (at most ``limit`` seconds) until process ``pid`` uses under ``busy_pct`` % of a
    core for two samples in a row; returns the seconds waited. After the viewers close, a
    hub may still be answering what they asked: the next run must not inherit that."""
    started = time.monotonic()
    try:
        process = psutil.Process(pid)
        process.cpu_percent(None)
        calm = 0
        while time.monotonic() - started < limit and calm < 2:
            calm = calm + 1 if process.cpu_percent(interval=0.25) < busy_pct else 0
    except psutil.Error:
        pass
    return round(time.monotonic() - started, 2)


class Viewers:
    """``dashboards.py`` in its own process (beside the generator, off the hub's CPU)."""

    def __init__(self, hub: HubProcess, params: dict[str, Any]) -> None:
        spec = {
            "web": hub.web,
            "dashboards": params["dashboards"],
            "monitors": params["monitors"],
            "monitor_port": hub.pair[0],
            "participants": seeded_names(params["participants"]),
            "interval": 1.0,
        }
        mine = cpus()
        if PIN["cpus"] and len(mine) > 1:
            spec["cpu"] = mine[0]
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "dashboards.py"), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.ready: dict[str, Any] = json.loads(line) if line.strip() else {"ready": False}

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGINT)
        try:
            out, errors = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, errors = self.process.communicate()
        lines = out.strip().splitlines()
        if self.process.returncode != 0 or not lines:
            return {"error": (errors.strip().splitlines() or ["no output"])[-1]}
        result: dict[str, Any] = json.loads(lines[-1])
        result["connect"] = self.ready
        return result


def run_dashboards(loop: str, params: dict[str, Any], profile: bool) -> dict[str, Any]:
    """The pair at 1,000 msg/s with a loop-lag probe, alternately with and without
    dashboards and monitor viewers open, against a hub serving a seeded 7-day history."""
    spec = params["dashboards"]
    workdir = Path(tempfile.mkdtemp(prefix=f"midihub-bench-dash-{loop}-"))
    database = workdir / "midihub.db"
    started = time.monotonic()
    rows = seed_history(database, spec["participants"], spec["days"])
    seeded_s = time.monotonic() - started
    log(f"dashboards open on the {loop} loop: {rows} rows seeded in {seeded_s:.1f} s")
    out: dict[str, Any] = {"rows": rows, "seed_seconds": round(seeded_s, 2)}
    try:
        hub = HubProcess(loop, workdir, PIN["cpus"], ready_timeout=120)
    except RuntimeError as error:
        shutil.rmtree(workdir, ignore_errors=True)
        return {**out, "error": str(error)[-500:]}
    out["hub_start_seconds"] = round(hub.start_seconds, 2)
    out["hub_busy_after_start_s"] = wait_idle(hub.pid, spec["settle_limit_s"])
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "open": []}
    viewers_runs: list[dict[str, Any]] = []
    try:
        load = {
            "scenario": "pair",
            "groups": [hub.pair],
            "rate": spec["rate"],
            "duration": spec["duration"],
            "probe_port": hub.idle[0],
            "probe_interval": spec["probe_interval"],
            "join_timeout": 30.0,
            "target": "hub",
            "loop": loop,
            "hub_pid": hub.pid,
        }
        for round_index in range(params["rounds"]):
            for variant in rotated(("quiet", "open"), round_index):
                viewers = Viewers(hub, spec) if variant == "open" else None
                before = scrape_metrics(hub.web)
                result = loadgen(load)
                after = scrape_metrics(hub.web)
                lag = loop_lag_from_metrics(before, after)
                if lag:
                    result["metrics_loop_lag"] = lag
                    for key in ("max_le_ms", "gauge_max_ms", "mean_ms"):
                        if isinstance(lag.get(key), float):
                            result[f"metrics_lag_{key}"] = lag[key]
                result["round"] = round_index + 1
                if viewers is not None:
                    seen = viewers.stop()
                    seen["round"] = round_index + 1
                    seen["hub_busy_after_s"] = wait_idle(hub.pid, spec["settle_limit_s"])
                    viewers_runs.append(seen)
                runs[variant].append(result)
                log(f"  dash     {variant:8s} {brief(result)}")
        out |= {variant: aggregate(r) for variant, r in runs.items()}
        out["viewers"] = viewers_runs
        if profile and spec["profile"]:
            out["profile"] = profile_loads(hub, {"dashboards open": load}, viewers=spec)
            wait_idle(hub.pid, spec["settle_limit_s"])
    finally:
        hub.stop()
        out["hub_log_problems"] = hub.problems()[:20]
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# -- profiling -------------------------------------------------------------------


def run_profile(hub: HubProcess, params: dict[str, Any]) -> dict[str, Any]:
    seconds = params["profile"]["seconds"]
    loads = {
        "pair": {
            "scenario": "pair",
            "groups": [hub.pair],
            "rate": params["profile"]["pair_rate"],
            "duration": seconds,
        },
        "room": {
            "scenario": "room",
            "room": hub.room,
            "size": ROOM_SIZE,
            "rate": params["room"]["rate"],
            "duration": seconds,
        },
    }
    return profile_loads(hub, loads)


def profile_loads(
    hub: HubProcess, loads: dict[str, dict[str, Any]], viewers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """py-spy on the hub during each load (with dashboard ``viewers`` open, if given)."""
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy is not installed"}
    out: dict[str, Any] = {}
    for name, spec in loads.items():
        raw = hub.workdir / f"profile-{name}.txt"
        opened = Viewers(hub, viewers) if viewers is not None else None
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(hub.pid),
                "--rate",
                "500",
                "--format",
                "raw",
                "--function",
                "--gil",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        cpus = sorted(os.sched_getaffinity(0))
        if PIN["cpus"] and len(cpus) > 1:  # beside the generator, off the hub's CPU
            os.sched_setaffinity(spy.pid, {cpus[0]})
        time.sleep(0.5)
        load = loadgen({**spec, "target": "hub", "loop": hub.loop, "hub_pid": hub.pid})
        spy.send_signal(signal.SIGINT)
        if opened is not None:
            opened.stop()
        try:
            _, errors = spy.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, errors = spy.communicate()
        if not raw.exists():
            out[name] = {"error": f"py-spy wrote nothing: {errors.strip()[-300:]}"}
            continue
        out[name] = {
            "load": brief(load),
            "rate": spec["rate"],
            "hub_cpu_pct": load.get("target_cpu_pct"),
            "hub_system_cpu_pct": load.get("target_system_cpu_pct"),
            **summarize_profile(raw),
        }
        log(f"  profile {name}: {out[name]['samples']} samples")
    return out


def _frame_name(frame: str) -> str:
    """``handle (midihub/hub/hub.py:140)`` → ``midihub/hub/hub.py handle``: line numbers
    are dropped, as py-spy does not always give a function's first line."""
    name, _, where = frame.partition(" (")
    if "__create_fn__" in name:
        return "dataclass __init__ (generated; frozen ones call object.__setattr__)"
    return f"{where.rstrip(')').rsplit(':', 1)[0]} {name}" if where else name


def _hub_frame(name: str) -> bool:
    """Frames worth an inclusive figure: midihub's own, below the CLI and event loop."""
    return name.startswith("midihub/") and not name.startswith(("midihub/cli/", "midihub "))


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f]  # drop process/thread labels
        if not frames:
            continue
        total += count
        leaf = _frame_name(frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        for name in {_frame_name(f) for f in frames}:
            if _hub_frame(name):
                inclusive[name] = inclusive.get(name, 0) + count

    def ranked(table: dict[str, int]) -> list[list[Any]]:
        rows = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [[name, round(100 * n / max(total, 1), 1)] for name, n in rows]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(inclusive)}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("uvloop", "psutil"):
        try:
            versions[package] = __import__(package).__version__
        except (ImportError, AttributeError):
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


def busy_seconds(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def own_cpu() -> float:
    """CPU seconds of this runner and every process it started and reaped (the hubs, the
    load generators and, through them, the relays)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def steal_percent(before: Any, after: Any) -> float:
    """Share of CPU time the hypervisor gave to other machines during the run (%)."""
    total = sum(after) - sum(before)
    stolen = getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
    return 100 * stolen / total if total > 0 else 0.0


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(hub: Any, base: Any) -> str:
    try:
        if hub is None or base is None or base == 0 or math.isnan(hub) or math.isnan(base):
            return "—"
        return f"{hub / base:.2f}"
    except TypeError:
        return "—"


def _get(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def spread(entry: Any, key: str, digits: int = 3) -> str:
    """``median (min to max)`` of an aggregated figure; the median alone for one run."""
    if not isinstance(entry, dict):
        return "—"
    median = entry.get(key)
    low, high = (entry.get("spread") or {}).get(key, [None, None])
    text = fmt(median, digits)
    if low is not None and high is not None and len(entry.get("runs", [])) > 1:
        text += f" ({fmt(low, digits)}\u2013{fmt(high, digits)})"
    return text


def figure_rows(loop_results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(scenario: str, figure: str, key: str, digits: int = 3, ratios: bool = True) -> None:
        entries = loop_results.get(scenario, {})
        hub, base, slow = (entries.get(t, {}) for t in TARGET_NAMES)
        row = [scenario, figure]
        row += [spread(hub, key, digits), spread(base, key, digits)]
        row.append(ratio(hub.get(key), base.get(key)) if ratios else "—")
        row.append(spread(slow, key, digits))
        row.append(ratio(hub.get(key), slow.get(key)) if ratios else "—")
        rows.append(row)

    for scenario in ("pair", "many", "room"):
        if scenario not in loop_results:
            continue
        add(scenario, "p50 latency, ms", "p50_ms")
        add(scenario, "p99 latency, ms", "p99_ms")
        add(scenario, "max latency, ms", "max_ms")
        add(scenario, "messages lost", "lost", 0, False)
        add(scenario, "deliveries", "received", 0)
        add(scenario, "target CPU, % of a core", "target_cpu_pct", 1)
        add(scenario, "generator CPU, % of a core", "generator_cpu_pct", 1)
        add(scenario, "others' CPU (contention), % of a core", "others_cpu_pct", 1, False)
    if "ceiling" in loop_results:
        add("ceiling", "highest sustained msg/s", "ceiling_msg_s", 0)
    if "memory" not in loop_results:
        return rows
    memory = loop_results.get("memory", {})
    hub, base = memory.get("hub", {}), memory.get("baseline", {})
    mib = 2**20
    rss0 = hub.get("rss0_bytes")
    base0 = base.get("rss0_bytes")
    rows.append(
        [
            "memory",
            "RSS with 0 participants, MiB",
            fmt(rss0 / mib if rss0 else None, 1),
            fmt(base0 / mib if base0 else None, 1),
            ratio(rss0, base0),
            "—",
            "—",
        ]
    )
    rss = hub.get("rss_bytes")
    rows.append(
        [
            "memory",
            f"RSS with {hub.get('participants', '?')} idle participants, MiB",
            fmt(rss / mib if rss else None, 1),
            "—",
            "—",
            "—",
            "—",
        ]
    )
    per = hub.get("bytes_per_participant")
    rows.append(
        ["memory", "bytes per idle participant", fmt(per, 0), "0 (keeps no state)", "—", "—", "—"]
    )
    return rows


def lag_max(entry: dict[str, Any]) -> float | None:
    """Loop lag max of a dashboards run: the probe's (from outside), else /metrics'."""
    for key in ("probe_max_ms", "metrics_lag_gauge_max_ms", "metrics_lag_max_le_ms"):
        value = entry.get(key)
        if isinstance(value, float) and not math.isnan(value):
            return value
    return None


def dashboards_rows(dash: dict[str, Any]) -> list[list[str]]:
    quiet, opened = dash.get("quiet", {}), dash.get("open", {})
    rows = []
    for figure, key, digits in (
        ("hub-added p50 latency, ms", "p50_ms", 3),
        ("hub-added p99 latency, ms", "p99_ms", 3),
        ("hub-added max latency, ms", "max_ms", 3),
        ("messages lost", "lost", 0),
        ("hub CPU, % of a core", "target_cpu_pct", 1),
        ("loop lag from outside (CK0→CK1), p50 ms", "probe_p50_ms", 3),
        ("loop lag from outside (CK0→CK1), p99 ms", "probe_p99_ms", 3),
        ("loop lag from outside (CK0→CK1), max ms", "probe_max_ms", 3),
        ("probes answered / sent", "probe_answered", 0),
        ("/metrics loop lag: highest bucket bound, ms", "metrics_lag_max_le_ms", 3),
        ("/metrics loop lag: max gauge, ms", "metrics_lag_gauge_max_ms", 3),
        ("others' CPU (contention), % of a core", "others_cpu_pct", 1),
    ):
        if key.startswith("metrics_") and key not in quiet and key not in opened:
            continue
        q, o = spread(quiet, key, digits), spread(opened, key, digits)
        if key == "probe_answered":
            q += f" / {fmt(quiet.get('probe_sent'), 0)}"
            o += f" / {fmt(opened.get('probe_sent'), 0)}"
        ratios = key.endswith("_ms") or key == "target_cpu_pct"
        rows.append([figure, q, o, ratio(opened.get(key), quiet.get(key)) if ratios else "—"])
    return rows


def viewer_lines(dash: dict[str, Any]) -> list[str]:
    lines = []
    for seen in dash.get("viewers", []):
        if "error" in seen:
            lines.append(f"- round {seen.get('round')}: viewers failed: {seen['error']}")
            continue
        parts = []
        for name, f in seen.get("figures", {}).items():
            if name == "/api/openapi.json":
                continue
            bits = []
            if "asked" in f:
                answered = f"{f['requests']} of {f['asked']} answered"
                if "p50_ms" in f:
                    answered += f" (p50 {fmt(f['p50_ms'], 0)} ms, max {fmt(f['max_ms'], 0)} ms)"
                if f["requests"] < f["asked"]:
                    answered += ", the rest still under way when the viewers closed"
                bits.append(answered)
            elif "streams" not in f:
                bits.append("never asked (the refresh before it had not returned)")
            if "streams" in f:
                bits.append(
                    f"{f['streams']} streams, {f['events']} events, {f['bytes'] // 1024} KiB"
                )
            if f.get("failures"):
                bits.append(f"{f['failures']} failed ({'; '.join(f.get('errors', []))})")
            if f.get("skipped_refreshes"):
                bits.append(f"{f['skipped_refreshes']} refresh ticks skipped (2 in flight)")
            parts.append(f"`{name}`: " + ", ".join(bits))
        busy = seen.get("hub_busy_after_s")
        if busy is not None:
            parts.append(f"hub busy for {busy:g} s after they closed")
        lines.append(f"- round {seen.get('round')}: " + "; ".join(parts))
    return lines


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    hub_p99 = _get(results, "pair", "hub", "p99_ms")
    base_p99 = _get(results, "pair", "baseline", "p99_ms")
    limit = TARGETS["pair_p99_ratio"]
    ok = None if hub_p99 is None or base_p99 is None else hub_p99 <= limit * base_p99
    rows.append(
        [
            f"pair p99 ≤ {limit:g}x the fastest relay's (medians)",
            f"{fmt(hub_p99)} ms vs {limit:g}x {fmt(base_p99)} = {fmt((base_p99 or 0) * limit)} ms",
            verdict(ok),
        ]
    )
    for scenario in ("many", "room"):
        if scenario not in results:
            continue
        p99 = _get(results, scenario, "hub", "p99_ms")
        lost = _get(results, scenario, "hub", "lost")
        ok = None if p99 is None else p99 < TARGETS["p99_ms"]
        rows.append([f"{scenario} p99 < 2 ms", f"{fmt(p99)} ms (lost {fmt(lost, 0)})", verdict(ok)])
    hub_ceiling = _get(results, "ceiling", "hub", "ceiling_msg_s")
    base_ceiling = _get(results, "ceiling", "baseline", "ceiling_msg_s")
    fraction = TARGETS["ceiling_fraction"]
    ok = None if hub_ceiling is None or not base_ceiling else hub_ceiling >= fraction * base_ceiling
    limited = _get(results, "ceiling", "baseline", "generator_limited_at")
    note = " (fastest relay limited by the generator: a lower bound)" if limited else ""
    share = f" = {100 * hub_ceiling / base_ceiling:.0f} %" if hub_ceiling and base_ceiling else ""
    rows.append(
        [
            f"ceiling ≥ {100 * fraction:.0f} % of the fastest relay's (medians)",
            f"{fmt(hub_ceiling, 0)} vs {fmt(base_ceiling, 0)} msg/s{share}{note}",
            verdict(ok),
        ]
    )
    dash = results.get("dashboards")
    if isinstance(dash, dict) and "error" not in dash:
        q99, o99 = _get(dash, "quiet", "p99_ms"), _get(dash, "open", "p99_ms")
        limit = TARGETS["dashboards_p99_ratio"]
        ok = None if q99 is None or o99 is None else o99 <= limit * q99
        rows.append(
            [
                f"dashboards open: p99 within {limit:g}x of without",
                f"{fmt(o99)} ms vs {fmt(q99)} ms: {ratio(o99, q99)}x",
                verdict(ok),
            ]
        )
        worst = [lag_max(run) for run in _get(dash, "open", "runs") or []]
        worst_values = [w for w in worst if w is not None]
        median = lag_max(dash.get("open", {}))
        ok = None if median is None else max(worst_values) < TARGETS["loop_lag_ms"]
        rows.append(
            [
                f"dashboards open: loop lag max < {TARGETS['loop_lag_ms']:g} ms (every round)",
                f"{fmt(median)} ms (median of the rounds' maxima), worst"
                f" {fmt(max(worst_values) if worst_values else None)} ms",
                verdict(ok),
            ]
        )
    elif isinstance(dash, dict):
        rows.append(["dashboards open", f"failed: {dash['error'][:200]}", "n/a"])
    per = _get(results, "memory", "hub", "bytes_per_participant")
    if "memory" in results:
        ok = None if per is None else per <= TARGETS["bytes_per_participant"]
        rows.append(
            [
                "≤ 100 KiB per idle participant",
                f"{fmt(per / 1024 if per is not None else None, 1)} KiB",
                verdict(ok),
            ]
        )
    gen = [
        _get(results, s, t, "generator_cpu_pct")
        for s in ("pair", "many", "room")
        for t in TARGET_NAMES
    ]
    gen = [g for g in gen if g is not None]
    at_ceiling = [ceiling_step(run) for run in _get(results, "ceiling", "hub", "runs") or []]
    ceiling_gen = max((s["generator_cpu_pct"] for s in at_ceiling if s), default=None)
    baseline_higher = bool(hub_ceiling and base_ceiling and base_ceiling > hub_ceiling)
    ok_steady = bool(gen) and max(gen) < TARGETS["generator_cpu_pct"]
    ok_ceiling = baseline_higher or (
        ceiling_gen is not None and ceiling_gen < TARGETS["generator_cpu_pct"]
    )
    rows.append(
        [
            "generator not the bottleneck",
            f"generator CPU ≤ {fmt(max(gen) if gen else None, 1)} % in pair/many/room;"
            f" ≤ {fmt(ceiling_gen, 1)} % at the hub's ceiling steps;"
            f" fastest relay's ceiling {'higher' if baseline_higher else 'not higher'}"
            " with the same generator",
            verdict(ok_steady and ok_ceiling),
        ]
    )
    return rows


def ceiling_step(run: dict[str, Any]) -> dict[str, Any] | None:
    """The highest passing step of one ceiling search."""
    passing = [s for s in run.get("steps", []) if s.get("passed")]
    return max(passing, key=lambda s: s["rate_per_sender"]) if passing else None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def ceiling_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for target in TARGET_NAMES:
        for run in _get(results, "ceiling", target, "runs") or []:
            if "error" in run:
                rows.append([target, str(run.get("round")), "error", "", "", "", "", ""])
                continue
            best = ceiling_step(run)
            steps = run.get("steps", [])
            retried = sum(1 for s in steps if s.get("retried"))
            rows.append(
                [
                    target,
                    str(run.get("round")),
                    fmt(run.get("ceiling_msg_s"), 0),
                    fmt(run.get("first_failure_msg_s"), 0),
                    fmt(best["p99_ms"]) if best else "—",
                    fmt(best["target_cpu_pct"], 0) if best else "—",
                    fmt(best["generator_cpu_pct"], 0) if best else "—",
                    ", ".join(
                        f"{s['rate_per_sender']:.0f}{'✓' if s['passed'] else '✗'}" for s in steps
                    )
                    + (f" ({retried} retried: others busy)" if retried else ""),
                ]
            )
    return rows


def busiest_run(report: dict[str, Any]) -> float:
    """The most CPU other processes used during any single measured run (% of a core)."""
    worst = 0.0

    def visit(node: Any) -> None:
        nonlocal worst
        if isinstance(node, dict):
            value = node.get("others_cpu_pct")
            if isinstance(value, int | float) and not math.isnan(value):
                worst = max(worst, float(value))
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(report.get("loops", {}))
    return worst


def contention_warning(report: dict[str, Any]) -> list[str]:
    share = 100 * report["others_cpu_seconds"] / max(report["runtime_s"], 1e-9)
    worst = busiest_run(report)
    if share < 20 and worst < 50:
        return []
    return [
        f"> **Not final:** other processes kept {share:.0f} % of a core busy on average "
        f"during this run, and up to {worst:.0f} % during single measurements (the machine "
        "was shared): latencies, ceilings and their ratios are disturbed (see the spreads "
        "and the *others' CPU* rows). Re-run `make bench` on a quiet machine.",
        "",
    ]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    p = report["params"]
    d = p["dashboards"]
    rounds = p["rounds"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` (`make bench`); do not edit by hand. Raw figures:",
        "`bench/results.json`.",
        "",
        f"- **Date:** {report['date']}",
        f"- **Command:** `{report['command']}`"
        + (" (quick smoke run: shortened scenarios)" if report["quick"] else ""),
        f"- **Machine:** {m['cores']} cores, {m['cpu_model']}, Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop'] or 'not installed'}, psutil {m['psutil']}",
        f"- **Background load:** system CPU {report['background_cpu_pct_before']:.0f} % busy "
        f"before the run and {report['background_cpu_pct_after']:.0f} % after it (1 s samples, "
        f"all cores, other users included); CPU stolen by the hypervisor during the run: "
        f"{report['steal_pct']:.1f} %; **other processes** (not the benchmark's) used "
        f"{report['others_cpu_seconds']:.0f} CPU-seconds during the run, "
        f"{100 * report['others_cpu_seconds'] / report['runtime_s']:.0f} % of one core on "
        "average (per run: the *others' CPU* rows). Figures are noisy when these are high.",
        f"- **Wall time of the runner:** {report['runtime_s']:.0f} s",
        "",
        *contention_warning(report),
        "## Method",
        "",
        "- The hub runs alone in its process: `midihub serve --config <generated toml> --bind "
        "127.0.0.1` (uvloop: the installed `midihub` script, which picks uvloop itself; the "
        "standard loop: `bench/hub_launcher.py`, which runs the same CLI with uvloop disabled).",
        "- The **baseline** is the fastest bare relay, `bench/relay.py --kind fast`: in its own "
        "process, one socket per route, forwarding each datagram unchanged (one destination, "
        "or the 15 other members for the room) with the hub's own socket technique "
        "(`midihub.net.udp`): `loop.add_reader` on a non-blocking socket, `recvfrom_into` one "
        "reused buffer, up to 64 datagrams per wake-up, each sent straight from the buffer. "
        "A second line, `--kind protocol`, is asyncio's `DatagramProtocol` (the slow path "
        "design.md warns of). Both run on the same event loop as the hub they are compared "
        "with.",
        f"- **Rounds:** every scenario runs {rounds} times through each target; the order "
        "rotates each round (hub, fastest relay, DatagramProtocol relay; then starting with "
        "the next), so no target always runs first or last. Tables give the **median** of "
        "the rounds and, in brackets, their **spread** (min\u2013max); ratios are of medians. "
        "The DatagramProtocol relay runs in pair and ceiling only (many and room compare "
        "with the fastest relay); with both loops, the second (standard) loop runs pair and "
        "ceiling only, and memory, dashboards open and the profiles run on the first "
        "(`bench/run.py --loop asyncio` alone runs everything on the standard loop).",
        "- The **load generator** (`bench/loadgen.py`, a separate process) opens real RTP MIDI "
        "sessions with `midihub.rtp.SessionTable` (IN/OK on the control port, then the data "
        "port; it keeps answering clock sync), then sends pre-encoded RTP MIDI packets "
        "(the session's SSRC, consecutive sequence numbers, one NoteOn or NoteOff each, Z = 1) "
        "on a fixed "
        "schedule. Every message in a run is unique (channel, note, velocity), so the "
        "receiving sockets, in the same process, match it to its send time. Send time: "
        "read just before `sendto`; receive time: the kernel's arrival timestamp "
        "(`SO_TIMESTAMPNS`), so the generator's own scheduling does not count as latency. "
        "A message not received 0.5 s after the last send is lost.",
        f"- Scenarios: **pair** 1 sender → 1 receiver through a group, "
        f"{p['pair']['rate']} msg/s for {p['pair']['duration']:g} s; **many** "
        f"{MANY_GROUPS} groups (100 participants), each sender {p['many']['rate']} msg/s for "
        f"{p['many']['duration']:g} s; **room** of {ROOM_SIZE}, each sending "
        f"{p['room']['rate']} msg/s for {p['room']['duration']:g} s (each message reaches 15); "
        f"**ceiling**: the pair at rising rates, {p['ceiling']['step']:g} s steps, doubling "
        f"from {p['ceiling']['start']} msg/s then {p['ceiling']['bisect']} bisection steps, "
        f"until p99 > {p['ceiling']['p99']:g} ms or anything is lost (a failed step while "
        "others used over 20 % of a core is run again, once per search); **memory** (once): "
        f"hub RSS with 0 and {p['memory']['count']} idle participants ({IDLE_ROOMS} rooms).",
        f"- **Dashboards open:** a second hub starts on a database seeded "
        "(`tests/history_seed.py`, the store tests' week: the first release's schema, one "
        "recursive-CTE INSERT into the raw per-minute table, migrated by the hub on start) with "
        f"{d['days']} days x {d['participants']} participants of per-minute latency history "
        f"({d['days'] * 1440 * d['participants']:,} rows). The pair runs at {d['rate']} msg/s "
        f"for {d['duration']:g} s while {d['dashboards']} dashboards (`bench/dashboards.py`, "
        "doing what the latency page does: every second, not waiting for the last refresh, "
        "GET `/api/latency` then `/api/latency/history` of one seeded participant over 1h, "
        "1d or 7d; at most 2 refreshes in flight each, a tick is skipped when both are "
        "still under way; plus the dashboard's SSE "
        f"stream when the hub's OpenAPI lists one) and {d['monitors']} monitor viewers "
        "(`/api/monitor` SSE on the pair's port) are open, and alternately (same rounds, "
        "rotating order) without them. **Loop lag** is measured from outside: an idle "
        "participant on another port sends a clock-sync CK0 every "
        f"{1000 * d['probe_interval']:g} ms; the hub answers CK0 at once, so the time to its "
        "CK1 (kernel timestamps) is how long the hub's loop took to reach the datagram, plus "
        "two loopback hops. When the hub exports `midihub_loop_lag_seconds` on `/metrics`, "
        "what it saw during each run is listed too.",
        "- All participants come from 127.0.0.1, each standing for a machine of its own, so "
        "the hub's per-IP limits are raised in the generated config (`[limits]` "
        "`pending_per_source`, `sessions_per_source`, `max_pending` = 1024; `[web]` "
        "`monitor_viewers_per_ip` = 64).",
        "- CPU is user + system time of the process over the sending window (psutil), in % "
        "of one core; RSS from psutil. *Target CPU* is the hub's in the hub column and the "
        "relay's in the relay columns. *Others' CPU* is what every other process on the "
        "machine used meanwhile (busy time of all CPUs less the target and the generator). "
        + (
            "The hub (or relay) is pinned to the last CPU and the generator (with py-spy and "
            "the dashboard viewers) to the first, so they never take CPU time from what they "
            "measure."
            if report.get("pinned")
            else ""
        ),
        "",
    ]
    for loop, results in report["loops"].items():
        lines += [f"## Results: {loop} event loop", ""]
        lines += table(
            [
                "scenario",
                "figure",
                "hub",
                "fastest relay (baseline)",
                "ratio hub/fastest",
                "DatagramProtocol relay",
                "ratio hub/DatagramProtocol",
            ],
            figure_rows(results),
        )
        dash = results.get("dashboards")
        if isinstance(dash, dict):
            lines += ["", f"### Dashboards open ({loop})", ""]
            if "error" in dash:
                lines += [f"Failed: `{dash['error']}`"]
            else:
                lines += [
                    f"Seeded {dash['rows']:,} rows in {dash['seed_seconds']:g} s; the hub was "
                    f"ready {dash['hub_start_seconds']:g} s after its start and idle "
                    f"{dash.get('hub_busy_after_start_s', 0):g} s later.",
                    "",
                ]
                lines += table(
                    ["figure", "without dashboards", "dashboards open", "ratio open/without"],
                    dashboards_rows(dash),
                )
                lines += ["", "What the viewers got (per round):", "", *viewer_lines(dash)]
                problems = dash.get("hub_log_problems") or []
                if problems:
                    lines += ["", "Hub log warnings/errors:", ""]
                    lines += [f"    {line}" for line in problems]
        lines += ["", f"### Targets ({loop})", ""]
        lines += table(["target", "measured", "verdict"], targets(results))
        lines += ["", f"### Ceiling searches ({loop})", ""]
        lines += table(
            [
                "target",
                "round",
                "ceiling msg/s",
                "first failure",
                "p99 ms at ceiling",
                "target CPU %",
                "generator CPU %",
                "steps (msg/s, ✓ pass ✗ fail)",
            ],
            ceiling_rows(results),
        )
        problems = results.get("hub_log_problems") or []
        if problems:
            lines += ["", "Hub log warnings/errors:", ""]
            lines += [f"    {line}" for line in problems]
        lines.append("")
    lines += browser_scenario.markdown(report.get("browser"))
    lines += midi2_scenario.markdown(report.get("midi2"))
    lines += ["## Hot spots", ""]
    for loop, results in report["loops"].items():
        profile = dict(results.get("profile") or {})
        profile |= _get(results, "dashboards", "profile") or {}
        if not profile:
            continue
        lines += [
            f"py-spy (`record --rate 500 --function --gil`) on the hub ({loop} loop): % of the "
            "samples in which the hub's thread held the GIL, i.e. ran Python code (system "
            "calls such as `sendto` release the GIL and are not in these tables: see the hub's "
            "system CPU share below each table). py-spy pauses the hub for each sample "
            "(`--nonblocking` tore the deep stacks here and under-counted the journal "
            "functions), so the latencies in these headings are not results. The pair load is "
            "raised above scenario 1's rate to collect enough samples; the room load is "
            "scenario 3's; *dashboards open* is that scenario's load with its viewers, on its "
            "hub (the seeded history).",
            "",
        ]
        for name, prof in profile.items():
            if "error" in prof:
                lines += [f"- {name}: {prof['error']}", ""]
                continue
            lines += [
                f"### Under {name} load ({prof['rate']} msg/s per sender; {prof['load']}; "
                f"{prof['samples']} samples)",
                "",
            ]
            rows = []
            for i in range(max(len(prof["self"]), len(prof["inclusive"]))):
                own = prof["self"][i] if i < len(prof["self"]) else ["", ""]
                inc = prof["inclusive"][i] if i < len(prof["inclusive"]) else ["", ""]
                rows.append([f"`{own[0]}`", str(own[1]), f"`{inc[0]}`", str(inc[1])])
            lines += table(["self time (leaf)", "%", "inclusive (midihub frames)", "%"], rows)
            lines += [
                "",
                f"Hub CPU during this load: {fmt(prof.get('hub_cpu_pct'), 0)} % of a core, of "
                f"which {fmt(prof.get('hub_system_cpu_pct'), 0)} % in the kernel (system "
                "time: mostly `recvfrom_into`/`sendto` on the loopback).",
                "",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--loop", action="append", choices=["asyncio", "uvloop"])
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--dashboards",
        choices=["first", "all", "none"],
        default="first",
        help="on which loops to run the dashboards-open scenario (default: the first)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not give the hub/relay a CPU of its own"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only rewrite the Markdown from a results file"
    )
    args = parser.parse_args()
    if args.render:
        md_path = args.markdown or ROOT / "docs" / "benchmarks.md"
        write_markdown(md_path, markdown(json.loads(args.render.read_text())))
        log(f"wrote {md_path}")
        return
    started = time.monotonic()
    params = dict(QUICK if args.quick else FULL)
    if args.rounds:
        params["rounds"] = args.rounds
    BUDGET["until"] = started + params["budget_s"]
    PIN["cpus"] = not args.no_pin
    out_dir = Path(tempfile.gettempdir()) / "midihub-bench-quick"
    json_path = args.json or (out_dir / "results.json" if args.quick else HERE / "results.json")
    md_path = args.markdown or (
        out_dir / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md"
    )
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    loops = args.loop or (["uvloop", "asyncio"] if has_uvloop else ["asyncio"])
    background_before = psutil.cpu_percent(interval=1.0)
    times_before = psutil.cpu_times()
    ours_before = own_cpu()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench" if os.environ.get("MAKELEVEL") else " ".join(sys.argv),
        "quick": args.quick,
        "machine": machine(),
        "params": params,
        "targets": TARGETS,
        "background_cpu_pct_before": background_before,
        "pinned": PIN["cpus"] and len(cpus()) > 1,
        "loops": {},
    }
    if os.environ.get("MAKELEVEL"):
        report["command"] += " (" + " ".join(["bench/run.py", *sys.argv[1:]]) + ")"
    for index, loop in enumerate(loops):
        report["loops"][loop] = run_loop(
            loop,
            params,
            scenarios=SCENARIOS if index == 0 else SECOND_LOOP_SCENARIOS,
            memory=index == 0,
            profile=not args.no_profile and index == 0,
            dashboards=args.dashboards == "all" or (args.dashboards == "first" and index == 0),
        )
    log("browser scenario (WebSocket participant)")
    report["browser"] = browser_scenario.run(args.quick)
    log("Network MIDI 2.0 scenario (a UMP client beside RTP peers)")
    report["midi2"] = midi2_scenario.run(args.quick)
    report["background_cpu_pct_after"] = psutil.cpu_percent(interval=1.0)
    times_after = psutil.cpu_times()
    report["steal_pct"] = steal_percent(times_before, times_after)
    busy = busy_seconds(times_after) - busy_seconds(times_before)
    report["others_cpu_seconds"] = max(0.0, busy - (own_cpu() - ours_before))
    report["runtime_s"] = time.monotonic() - started
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(md_path, markdown(report))
    log(f"done in {report['runtime_s']:.0f} s: {json_path}, {md_path}")


if __name__ == "__main__":
    main()
