"""The command line: parse, call, render. No device I/O and no SQL here (docs/architecture.md)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from typer.exceptions import TyperException

from devicelab.errors import DevicelabError

if TYPE_CHECKING:
    from rich.console import Console

# Start-up (README: "Commands"): this module imports typer and nothing heavy. numpy, pandas, scipy, jinja2, onnx, the
# engines, adbutils and even rich are imported inside the commands that use them, so `devicelab --help` and
# `devicelab runs` start in a fraction of a second; tests/test_cli_startup.py fails if one of them comes back here.


def _defer_typer_coercion() -> None:
    """Keep pydantic out of the commands that need no conversion.

    typer (0.29) converts every option and argument with a pydantic TypeAdapter, and builds it even for a value
    that needs none (an option left at None, the group's unused --help), so any command imported pydantic: about
    half of `devicelab runs`'s start-up. Here a value that is already what its parameter declares (None, a string
    for a str, a default int or float inside its bounds) is passed as typer would pass it; any other value (a
    number typed on the command line, a list, a path, a choice) goes to typer's own conversion, with its messages.
    typer's internals can move: without them this does nothing (slower, never wrong), and
    tests/test_cli_startup.py then fails on pydantic in `devicelab runs`."""
    try:
        from typer import core
        from typer._coercion import RuntimeParam, build_runtime_param
    except ImportError:
        return
    if not hasattr(core, "_TyperParameter") or not hasattr(core._TyperParameter, "get_runtime_param"):
        return
    if getattr(core._TyperParameter.get_runtime_param, "deferred", False):
        return  # patched already (main() called again in this process)
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Deferred(RuntimeParam):  # type: ignore[misc]
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                info = self.parameter_info
                plain = (self.annotation in (str, int, float) and type(value) is self.annotation
                         and info.parser is None
                         and (self.annotation is str or ((info.min is None or value >= info.min)
                                                         and (info.max is None or value <= info.max))))
            except Exception:  # noqa: BLE001 - typer's internals moved: let typer convert
                plain = False
            if plain:
                return value
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)

    original = core._TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            try:
                desc = self.type_descriptor
                self._runtime_param = Deferred(parameter_info=desc.parameter_info, annotation=desc.annotation)
            except Exception:  # noqa: BLE001 - typer's internals moved: its own converter, as without this
                return original(self)
        return self._runtime_param

    get_runtime_param.deferred = True  # type: ignore[attr-defined]
    core._TyperParameter.get_runtime_param = get_runtime_param


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Benchmark and profile inference engines on devices and the host.")


# No markup and no emoji codes: names from users (labels, models, suites) are printed as they are; "[base]" would be
# read as a style, ":b:" as an emoji.
# Made on first use: rich.console alone takes longer to import than typer, and --help prints through neither.
@functools.cache
def out() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


@functools.cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, emoji=False)


DbOpt = typer.Option(None, "--db", help="SQLite file or postgresql:// URL (default: DEVICELAB_DB, else the data folder)")
DevicesOpt = typer.Option(None, "--devices", help="inventory YAML (default: DEVICELAB_DEVICES, ./devices.yaml, built-in)")
JsonOpt = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


def _output_file(value: Optional[str]) -> Optional[str]:
    """An output path option, checked before any work: its folder must exist (nothing half-done, nothing written)."""
    if value:
        path = Path(value).expanduser()
        if path.is_dir():
            raise typer.BadParameter(f"{path} is a folder; give a file name")
        if not path.parent.is_dir():
            raise typer.BadParameter(f"folder {path.parent} does not exist (create it first)")
    return value


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")


@app.command()
def devices(devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt) -> None:
    """List the inventory's devices and the phones attached to this machine (adb), with their facts."""
    from devicelab.config import load_inventory
    from devicelab.devices import discovered, open_device

    inventory = load_inventory(devices_file)
    found, notes = discovered({str(e.options.get("serial") or e.options.get("udid") or e.id) for e in inventory.devices})
    rows: list[dict[str, Any]] = []
    for entry in [*inventory.devices, *found]:
        try:
            row = open_device(entry).facts().to_dict()
        except DevicelabError as e:
            row = {"id": entry.id, "kind": entry.kind, "error": str(e)}
        row["source"] = "discovered" if entry in found else "inventory"
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    from devicelab.terminal import print_table

    cells: list[list[str]] = []
    for f in rows:
        if "error" in f:
            cells.append([f["id"], f["kind"], f"unreachable: {f['error']}", "", "", "", "", "", ""])
            continue
        clusters = " ".join(f"[{','.join(map(str, c['cpus']))}]" + (f"@{c['max_khz'] // 1000}MHz" if c["max_khz"] else "")
                            + (f" cap {c['capacity']}" if c["capacity"] else "") for c in f["clusters"])
        battery = ""
        if f.get("battery_percent") is not None:
            battery = f"{f['battery_percent']} % {f.get('battery_status') or ''}".strip()
            battery += " (charging)" if f.get("charging") else ""
        model = " ".join(x for x in (f.get("manufacturer"), f["model"]) if x)
        if f.get("hardware_model"):  # an iPhone: ProductType (HardwareModel)
            model += f" ({f['hardware_model']})"
        cells.append([f["id"], f["kind"], model, f["os"], f["abi"], f.get("soc") or "",
                      str(f["cpus"]) if f["cpu_ids"] else "", clusters, battery])
    print_table(out(), ["id", "kind", "model", "os", "abi", "soc", "cpus", "clusters", "battery"], cells)
    for note in notes:
        err().print(f"note: {note}", markup=False)


@app.command()
def clean(device: str = typer.Argument(..., metavar="DEVICE", help="a device id or an adb serial"),
          devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt) -> None:
    """Remove devicelab's folder on DEVICE (/data/local/tmp/devicelab on a phone) and nothing else."""
    from devicelab.config import ConfigError, load_inventory
    from devicelab.devices import open_device
    from devicelab.sweep import select_devices

    entries, problems = select_devices([device], load_inventory(devices_file))
    if problems:
        raise ConfigError("clean", problems)
    try:
        removed = open_device(entries[0]).clean()
    except OSError as e:
        err().print(f"error: {e}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        _print_json(removed)
    elif removed["removed"]:
        out().print(f"{device}: removed {removed['removed']} ({removed['bytes'] / 2**20:.1f} MiB)")
    else:
        out().print(f"{device}: nothing to remove")


@app.command("calibrate-energy")
def calibrate_energy(
    device: str = typer.Argument(..., metavar="DEVICE", help="a phone: device id or adb serial"),
    seconds: float = typer.Option(60.0, "--seconds", min=5.0, help="length of the discharge window"),
    no_load: bool = typer.Option(False, "--no-load", help="discharge idle (the charge moves slower)"),
    allow_charging: bool = typer.Option(False, "--allow-charging", help="calibrate even with a charger attached"),
    devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt,
) -> None:
    """Calibrate a phone's battery sensor (sign and scale of current_now) against charge_counter, for energy runs."""
    from devicelab.config import ConfigError, load_inventory
    from devicelab.devices import open_device
    from devicelab.sweep import select_devices

    entries, problems = select_devices([device], load_inventory(devices_file))
    if problems:
        raise ConfigError("calibrate-energy", problems)
    from devicelab.energy import battery

    phone = open_device(entries[0])
    if not isinstance(phone.energy_source(), battery.BatterySource):
        raise DevicelabError(f"calibrate-energy: {device} is a {entries[0].kind} device; only phones (android) have "
                             "a battery sensor to calibrate")
    err().print(f"{device}: discharging for {seconds:g} s{'' if no_load else ' with every CPU busy'}...", markup=False)
    try:
        calibration, path = battery.calibrate_device(phone, seconds, load=not no_load, allow_charging=allow_charging)
    except OSError as e:
        err().print(f"error: {e}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        _print_json({"device": device, "profile": str(path), "energy": calibration.to_dict()})
        return
    out().print(f"{device}: {calibration.describe()}; charge {calibration.charge_delta_uah:+.0f} µAh over "
              f"{calibration.window_s:.0f} s ({calibration.mean_discharge_ma:.0f} mA), ratio "
              f"{calibration.measured_ratio:+.4g} µA per unit; stored in {path}", markup=False)


@app.command()
def models(as_json: bool = JsonOpt) -> None:
    """List the zoo models (built locally on first use, cached by content hash)."""
    from devicelab import paths, zoo

    rows = []
    for name, entry in zoo.ZOO.items():
        mf = zoo.zoo_model(name, paths.zoo_dir())
        data = mf.path.read_bytes()
        rows.append({"name": name, "description": entry.description, "params": zoo.count_params(data),
                     "macs": zoo.count_macs(data), "published_params": entry.params, "published_macs": entry.macs,
                     "bytes": mf.bytes, "sha256": mf.sha256, "path": str(mf.path)})
    if as_json:
        _print_json(rows)
        return
    from devicelab.terminal import print_table

    cells: list[list[str]] = []
    for r in rows:
        size = f"{r['bytes'] / 2**20:.1f} MiB" if r["bytes"] >= 2**20 else f"{r['bytes'] / 2**10:.1f} KiB"
        cells.append([r["name"], _si(r["params"]), _si(r["macs"]), size, r["sha256"][:12], r["description"]])
    print_table(out(), ["model", "params", "MACs", "size", "sha256", "description"], cells)


def _si(n: float) -> str:
    """4.221 M, 0.569 G, 88.064 k: the zoo spans ten thousand to ten billion."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:g}"


@app.command()
def engines(devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt) -> None:
    """List engines: version, availability, formats, precisions, backends, and which devices can run them."""
    from devicelab.config import load_inventory
    from devicelab.engines import engine_names, get_engine
    from devicelab.plan import capability_reason

    inventory = load_inventory(devices_file)
    kinds = {e.id: e.kind for e in inventory.devices}
    rows = []
    for name in engine_names():
        engine = get_engine(name)
        combos = [(p, b) for p in engine.precisions for b in engine.backends]
        info = engine.info(combos)
        row = info.to_dict()
        # Per device: which of the engine's declared precision/backend pairs can run there, and why not.
        row["devices"] = []
        for dev_id, kind in kinds.items():
            runs = {f"{p}/{b}": capability_reason(info, kind, p, b, info.formats) for p, b in combos}
            row["devices"].append({"id": dev_id, "kind": kind, "available": kind in info.device_kinds and info.available,
                                   "runs": [k for k, why in runs.items() if why is None],
                                   "unsupported": {k: why for k, why in runs.items() if why}})
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    from devicelab.terminal import print_table

    cells: list[list[str]] = []
    for r in rows:
        here = next((d for d in r["devices"] if d["kind"] == "host"), None)
        # An engine available in general may still run nothing here (dlbench not built for the host): say why.
        why_not_here = next(iter(here["unsupported"].values()), "") if here and not here["runs"] else ""
        cells.append([r["name"], r["version"] or "—", "yes" if r["available"] else "no", ",".join(r["formats"]),
                      " ".join(here["runs"]) if here else "", r["reason"] or why_not_here])
    print_table(out(), ["engine", "version", "available", "formats", "runs here (precision/backend)", "reason"], cells)


@app.command()
def run(
    suite: Optional[str] = typer.Option(None, "--suite", help="suite YAML (default: the built-in default suite)"),
    quick: bool = typer.Option(False, "--quick", help="a short built-in suite for a first try"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID", help="run what RUN_ID is missing"),
    device: Optional[list[str]] = typer.Option(None, "--device", help="only these device ids"),
    engine: Optional[list[str]] = typer.Option(None, "--engine", help="only these engines"),
    model: Optional[list[str]] = typer.Option(None, "--model", help="only these models (zoo names or .onnx paths)"),
    threads: Optional[list[str]] = typer.Option(None, "--threads", help="thread counts, or 'all'"),
    precision: Optional[list[str]] = typer.Option(None, "--precision", help="fp32, fp16, bf16, int8"),
    backend: Optional[list[str]] = typer.Option(None, "--backend", help="cpu, gpu, opencl, vulkan, metal, ..."),
    affinity: Optional[list[str]] = typer.Option(None, "--affinity", help="big, little, all, or a CPU list"),
    devices_file: Optional[str] = DevicesOpt,
    db: Optional[str] = DbOpt,
    report_path: Optional[str] = typer.Option(None, "--report", help="where to write the HTML report",
                                              callback=_output_file),
    farm: Optional[str] = typer.Option(None, "--farm", metavar="ADDRESS",
                                       help="run on the device farm whose scheduler is at ADDRESS (tcp://host:port)"),
    farm_wait: float = typer.Option(600.0, "--farm-wait", min=0.0, help="with --farm: seconds work waits for an "
                                    "offline phone before its configs are infra-failed"),
    tls_ca: Optional[str] = typer.Option(None, "--tls-ca", help="with --farm: CA certificate (TLS)"),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="with --farm: this client's certificate"),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="with --farm: this client's private key"),
    profile: bool = typer.Option(False, "--profile", help="after each config's timing, a per-op profiling pass "
                                 "(the row's ext.profile); the suite's `profile: true` does the same"),
    as_json: bool = JsonOpt,
) -> None:
    """Run a suite (or --resume one) and store every Result. Exit 1 if any config failed."""
    from devicelab import paths, report, sweep
    from devicelab.config import load_inventory, resolve_suite
    from devicelab.store import open_store

    inventory = load_inventory(devices_file)
    overrides = {"device": device, "engine": engine, "model": model, "threads": threads, "precision": precision,
                 "backend": backend, "affinity": affinity}
    if not farm and any((tls_ca, tls_cert, tls_key)):
        raise DevicelabError("--tls-ca/--tls-cert/--tls-key: only with --farm")
    if resume:
        if suite or quick or profile or any(overrides.values()):
            raise DevicelabError("--resume re-runs the stored suite; it takes no --suite, --quick, --profile or "
                                 "narrowing flags")
        store = open_store(db, create=False)
        store.get_run(resume)  # unknown ids fail here, before anything runs
        parsed = None
    elif farm:
        from devicelab.config import parse_suite

        raw, source = resolve_suite(suite, quick, overrides)
        if profile and not raw.get("profile"):  # a suite's {iterations: N} stays
            raw["profile"] = True
        parse_suite(raw, source)  # every problem of the suite at once, before the farm is asked anything
        store = open_store(db)
        parsed = None
    else:
        raw, source = resolve_suite(suite, quick, overrides)
        if profile and not raw.get("profile"):  # a suite's {iterations: N} stays
            raw["profile"] = True
        parsed = sweep.validate(raw, source, inventory)  # every problem at once, before any device is touched
        store = open_store(db)

    from devicelab import profiles

    profiles.use_store(db)  # a PostgreSQL store keeps the phones' profiles (battery calibrations) too; None: DEVICELAB_DB
    state: dict[str, Any] = {"run_id": resume}
    with _RunProgress(enabled=err().is_terminal) as progress:
        def on_event(kind: str, obj: Any) -> None:
            if kind == "run":
                state["run_id"] = obj
            progress.event(kind, obj)

        try:
            if farm:
                run_id = _run_on_farm(farm, (tls_ca, tls_cert, tls_key), farm_wait, store, resume,
                                      None if resume else raw, None if resume else source, on_event)
                results = store.results(run_id)
            elif resume:
                results = sweep.resume_run(store, resume, inventory, on_event)
                run_id = resume
            else:
                assert parsed is not None
                run_id, results = sweep.start_run(store, parsed, inventory, sys.argv, on_event)
        except KeyboardInterrupt:
            progress.stop()
            rid = state.get("run_id")
            kept = len(store.results(rid)) if rid else 0
            err().print(f"interrupted: {kept} finished results kept in {store.location}; "
                      f"resume with: devicelab run --resume {rid}")
            raise typer.Exit(130)

    for line in progress.push_summary():
        err().print(line, markup=False, highlight=False, soft_wrap=True)
    record = store.get_run(run_id)
    path = Path(report_path).expanduser() if report_path else paths.reports_dir() / f"{run_id}.html"
    report.write(path, [record], results)
    code = sweep.exit_code(results)
    if as_json:
        _print_json({"run_id": run_id, "report": str(path), "exit_code": code,
                     "results": [r.to_dict() for r in results]})
    else:
        _render_tables(results)
        counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "infra-failed", "unsupported")}
        out().print(f"run {run_id}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        from devicelab.terminal import print_wrapped

        for r in results:
            if r.status in ("failed", "infra-failed"):
                print_wrapped(out(), f"{r.status}: {r.device} {r.engine} {r.model} {r.threads}t: {r.reason}",
                              first="  ", rest="    ")
        out().print(f"report: {path}")
    raise typer.Exit(code)


def _run_on_farm(address: str, tls_files: tuple[Optional[str], Optional[str], Optional[str]], wait_s: float,
                 store: Any, resume: Optional[str], raw: Optional[dict[str, Any]], source: Optional[str],
                 on_event: Any) -> str:
    """A run (or --resume) on the farm: dask is imported here, never by a local run."""
    from devicelab.farm import client as farm_client
    from devicelab.farm.security import tls_options

    tls = tls_options(*tls_files)
    client = farm_client.connect(address, tls)
    try:
        if resume:
            farm_client.resume_farm_run(client, store, resume, wait_s, on_event)
            return resume
        assert raw is not None and source is not None
        return farm_client.start_farm_run(client, store, raw, source, sys.argv, wait_s, on_event).run_id
    finally:
        client.close()


farm_app = typer.Typer(no_args_is_help=True, help="The device farm: a Dask scheduler, an agent per host with phones, "
                                                  "their health.")
app.add_typer(farm_app, name="farm")
TlsCaOpt = typer.Option(None, "--tls-ca", help="CA certificate: TLS on every farm connection")
TlsCertOpt = typer.Option(None, "--tls-cert", help="this process's certificate (signed by the CA)")
TlsKeyOpt = typer.Option(None, "--tls-key", help="this process's private key")


@farm_app.command("scheduler")
def farm_scheduler(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8786, "--port", min=0, max=65535, help="port (0: the OS picks one)"),
    tls_ca: Optional[str] = TlsCaOpt, tls_cert: Optional[str] = TlsCertOpt, tls_key: Optional[str] = TlsKeyOpt,
) -> None:
    """Serve the farm's Dask scheduler (allowed-failures 0: a lost worker's task is never re-run). Prints its
    address first."""
    import asyncio

    from devicelab.farm import scheduler
    from devicelab.farm.security import tls_options

    asyncio.run(scheduler.serve(host, port, tls_options(tls_ca, tls_cert, tls_key)))


@farm_app.command("agent")
def farm_agent(
    scheduler: str = typer.Option(..., "--scheduler", metavar="ADDRESS", help="the scheduler (tcp://host:port)"),
    db: Optional[str] = typer.Option(None, "--db", help="the store heartbeats go to (default: DEVICELAB_DB or the "
                                                        "data folder)"),
    beat_seconds: float = typer.Option(10.0, "--beat-seconds", min=0.1, help="heartbeat interval per phone"),
    scan_seconds: float = typer.Option(10.0, "--scan-seconds", min=0.1, help="how often adb and usbmuxd are asked "
                                                                              "for phones"),
    devices: Optional[str] = DevicesOpt,
    host_device: Optional[str] = typer.Option(None, "--host-device", metavar="ID",
                                              help="also a worker for this host itself, as device ID (unique on the "
                                                   "farm)"),
    tls_ca: Optional[str] = TlsCaOpt, tls_cert: Optional[str] = TlsCertOpt, tls_key: Optional[str] = TlsKeyOpt,
) -> None:
    """Run one Dask worker per phone attached to this host (adb, usbmuxd), each its own process, until stopped."""
    import re

    from devicelab.config import load_inventory
    from devicelab.farm.agent import Agent
    from devicelab.farm.client import store_location
    from devicelab.farm.security import tls_options
    from devicelab.store import open_store

    if host_device is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]*", host_device):
        raise DevicelabError(f"--host-device: {host_device!r} is not allowed; allowed: a name of letters, digits "
                             "and . _ : @ -")
    inventory = load_inventory(devices)  # every problem of this host's devices.yaml, before any worker starts
    tls = tls_options(tls_ca, tls_cert, tls_key)
    store = open_store(db)  # created here if missing, so that the workers' first beats find it
    location = store_location(store)
    store.close()
    err().print(f"devicelab farm agent: scheduler {scheduler}, heartbeats every {beat_seconds:g} s to {location}",
                markup=False)
    Agent(scheduler, location, beat_seconds, scan_seconds, tls, lambda m: err().print(m, markup=False),
          inventory=inventory, host_device=host_device).serve()


@farm_app.command("status")
def farm_status(db: Optional[str] = DbOpt, as_json: bool = JsonOpt) -> None:
    """Every farm phone: its state (idle, busy, unreachable, offline), last beat, battery, temperature, job."""
    from datetime import datetime, timezone

    from devicelab.farm.client import phone_state
    from devicelab.store import open_store

    beats = open_store(db, create=False).heartbeats()
    now = datetime.now(timezone.utc)  # after reading: a beat written meanwhile is not in the future
    rows = [{**b.to_dict(), "state": phone_state(b, now),
             "age_s": round((now - datetime.fromisoformat(b.at)).total_seconds(), 1)} for b in beats]
    if as_json:
        _print_json(rows)
        return
    from devicelab.terminal import print_table

    cells = [[r["device"], r["state"], f"{_when(r['at'])} ({r['age_s']:.0f} s ago)",
              "" if r["battery_percent"] is None else f"{r['battery_percent']:g} %"
              + (" charging" if r["charging"] else ""),
              "" if r["temperature_c"] is None else f"{r['temperature_c']:.1f} °C", r["host"], r["job"] or ""]
             for r in rows]
    print_table(out(), ["phone", "state", "last beat (UTC)", "battery", "temperature", "host", "job"], cells)


class _RunProgress:
    """A rich progress bar with ETA on stderr; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err(),
                                 disable=not enabled, transient=False)
        self.task = self.progress.add_task("preparing", total=None)
        self.pushed: dict[str, dict[str, float]] = {}  # per device: files, pushed_files, bytes, seconds

    def __enter__(self) -> _RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stop(self) -> None:
        self.progress.stop()

    def event(self, kind: str, obj: Any) -> None:
        if kind == "planned":
            self.progress.update(self.task, total=obj, completed=0)
        elif kind == "start":
            c = obj.config
            self.progress.update(self.task, description=f"{c.device} {c.engine} {c.model} {c.precision} {c.threads}t")
        elif kind == "result" and obj.status != "unsupported":  # those take no time: keep them out of the ETA
            self.progress.advance(self.task)
        elif kind == "ab":
            said = ", ".join(f"{n} {k}" for k, n in obj["verdicts"].items() if n)
            if obj.get("at_level"):  # nightly series an acknowledged alert moved off 1 (docs/nightly.md)
                said += "; at the acknowledged level: " + ", ".join(f"{n} {k}" for k, n in obj["at_level"].items() if n)
            if obj.get("stopped"):
                self.progress.console.print(f"A/B after round {obj['rounds']}: {obj['stopped']}", markup=False)
            elif obj["decided"]:
                self.progress.console.print(f"A/B: every pair decided after {obj['rounds']} rounds ({said}); "
                                            "the rest of the rounds are not needed", markup=False)
            else:
                self.progress.console.print(f"A/B after {obj['rounds']} rounds: {said}: another round", markup=False)
        elif kind == "notice":  # what a device could not do, e.g. set back a setting of the run (best effort)
            self.progress.console.print(f"{obj['device']}: {obj['message']}", markup=False, highlight=False,
                                        soft_wrap=True)
        elif kind == "push":
            total = self.pushed.setdefault(obj["device"], {"files": 0, "pushed_files": 0, "bytes": 0, "seconds": 0.0})
            for key in total:
                total[key] += obj[key]
            if obj["pushed_files"]:
                self.progress.console.print(f"pushed {obj['pushed_files']} of {obj['files']} files "
                                            f"({obj['bytes'] / 2**20:.1f} MiB) to {obj['device']} in "
                                            f"{obj['seconds']:.1f} s", markup=False)

    def push_summary(self) -> list[str]:
        """One line per device that received files: what a second run should show as 0 bytes."""
        return [f"{device}: pushed {int(t['bytes'])} bytes ({int(t['pushed_files'])} files) in {t['seconds']:.1f} s; "
                f"{int(t['files'] - t['pushed_files'])} file pushes skipped (already on the device)"
                for device, t in self.pushed.items()]


def _render_tables(results: list[Any]) -> None:
    from devicelab.analysis.tables import slides_tables
    from devicelab.terminal import print_table

    for t in slides_tables(results):
        print_table(out(), t.columns, [[row.name, *t.row_cells(row)] for row in t.rows], title=f"{t.model} on {t.device}")


ThresholdOpt = typer.Option("2%", "--threshold", help="smallest change that counts: 2% or 0.02")
JunitOpt = typer.Option(None, "--junit", help="write a JUnit XML file for CI systems", callback=_output_file)
MarkdownOpt = typer.Option(None, "--markdown", help="write a markdown summary", callback=_output_file)


@app.command()
def compare(
    base: str = typer.Argument(..., metavar="BASE", help="RUN_ID or RUN_ID:LABEL"),
    candidate: str = typer.Argument(..., metavar="CANDIDATE", help="RUN_ID or RUN_ID:LABEL"),
    threshold: str = ThresholdOpt, db: Optional[str] = DbOpt, as_json: bool = JsonOpt,
    junit: Optional[str] = JunitOpt, markdown: Optional[str] = MarkdownOpt,
) -> None:
    """Faster / slower / same / unknown per matched config. Exit 1 if anything is slower."""
    from devicelab import verdicts
    from devicelab.analysis.compare import summarize
    from devicelab.store import open_store

    t = verdicts.parse_threshold(threshold)
    store = open_store(db, create=False)
    b, c = verdicts.resolve_side(store, base), verdicts.resolve_side(store, candidate)
    comparisons = verdicts.compare_sides(store, b, c, t)
    title = f"devicelab compare {base} → {candidate}"
    verdicts.write(junit, verdicts.junit_compare(comparisons, title))
    verdicts.write(markdown, verdicts.markdown_compare(comparisons, title))
    counts = summarize(comparisons)
    if as_json:
        _print_json({"base": base, "candidate": candidate, "threshold": t, "summary": counts,
                     "comparisons": [x.to_dict() for x in comparisons]})
    else:
        from devicelab.terminal import print_table

        cells: list[list[str]] = []
        for x in comparisons:
            v = x.verdict
            cells.append([x.name, v.verdict, _ms(x.base_median_s), _ms(x.candidate_median_s),
                          f"{v.ratio:.3f}" if v.ratio else "—", f"{v.ci[0]:.3f}–{v.ci[1]:.3f}" if v.ci else "—",
                          "; ".join(list(v.reasons) + x.warnings)])
        print_table(out(), ["config", "verdict", "base", "candidate", "ratio", "95% CI", "notes"], cells, title=title)
        out().print(", ".join(f"{n} {k}" for k, n in counts.items() if n))
    raise typer.Exit(1 if counts["slower"] else 0)


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds else "—"


@app.command()
def noise(
    device: str = typer.Argument(..., metavar="DEVICE"),
    model: str = typer.Option("mobilenet_v2", "--model"), engine: str = typer.Option("onnxruntime", "--engine"),
    threads: int = typer.Option(1, "--threads", min=1), repeats: int = typer.Option(3, "--repeats", min=3),
    paired: bool = typer.Option(False, "--paired", help="lockstep rounds compared paired: the floor for A/B labels "
                                                        "of one run (default: unpaired, for separate runs)"),
    devices_file: Optional[str] = DevicesOpt, db: Optional[str] = DbOpt, as_json: bool = JsonOpt,
) -> None:
    """Measure DEVICE's A/A noise floor: one config against itself, interleaved, and store it."""
    from devicelab import sweep, verdicts
    from devicelab.config import load_inventory
    from devicelab.store import open_store

    inventory = load_inventory(devices_file)
    raw = {"name": f"noise-{device}", "models": [model], "threads": [threads], "precisions": ["fp32"],
           "engines": [{"name": engine, "label": "A"}, {"name": engine, "label": "B"}], "devices": [device],
           "repeats": repeats}
    if not paired:
        # The unpaired floor guards comparisons of separate runs, so it is measured as they see the device: processes
        # one after another, compared unpaired (lockstep and pairing would hide the drift between them). A paired
        # comparison uses only a floor measured paired (verdicts.device_noise_floor).
        raw["protocol"] = {"lockstep": False}
    suite = sweep.validate(raw, "noise", inventory)
    store = open_store(db)
    with _RunProgress(enabled=err().is_terminal) as progress:
        run_id, results = sweep.start_run(store, suite, inventory, sys.argv, progress.event)
    if sweep.exit_code(results):
        raise DevicelabError(f"the A/A run {run_id} had failures: see devicelab show {run_id}")
    comparisons = verdicts.compare_sides(store, verdicts.resolve_side(store, f"{run_id}:A"),
                                         verdicts.resolve_side(store, f"{run_id}:B"), 0.02, pair=paired)
    floor, detail = verdicts.noise_floor_from(comparisons)
    detail["paired"] = paired
    store.add_noise_floor(device, comparisons[0].key, floor, run_id, detail)
    if as_json:
        _print_json({"device": device, "run_id": run_id, "noise_floor": floor, "paired": paired, "detail": detail})
    else:
        out().print(f"{device}: A/A noise floor {floor:.2%} ({'paired, lockstep rounds' if paired else 'unpaired'}; "
                  f"{detail['config']}, run {run_id}); compare will not call smaller changes "
                  f"{'between labels of one run' if paired else 'between separate runs'} on this device")


@app.command()
def regress(
    action: Optional[str] = typer.Argument(None, metavar="[ack ALERT]", help="ack ALERT: the alert is seen; keep the "
                                           "reference (the series is judged at the alert's level from now on)"),
    alert: Optional[str] = typer.Argument(None, metavar="", hidden=True),
    device: Optional[str] = typer.Option(None, "--device"), threshold: str = ThresholdOpt,
    strict: bool = typer.Option(False, "--strict", help="exit 1 on suspected regressions too"),
    reference: str = typer.Option("reference", "--reference", metavar="LABEL",
                                  help="the label that carries the reference build in nightly A/B runs"),
    reset_baseline: Optional[str] = typer.Option(None, "--reset-baseline", metavar="RUN_ID",
                                                 help="history of the series in RUN_ID starts there (intended change)"),
    series: Optional[str] = typer.Option(None, "--series", help="with --reset-baseline: only series whose name contains this"),
    note: Optional[str] = typer.Option(None, "--note", help="with --reset-baseline or ack: why"),
    suspect_p: float = typer.Option(0.0, "--suspect-p", metavar="P",
                                    help="nightly A/B: an undecided night whose paired p (slower) is below P opens a "
                                         "suspected alert too (default 0: only a night judged slower does; p alone "
                                         "gives about P false alerts per night without a change, docs/nightly.md)"),
    db: Optional[str] = DbOpt, as_json: bool = JsonOpt, junit: Optional[str] = JunitOpt,
    markdown: Optional[str] = MarkdownOpt,
) -> None:
    """Regressions over the stored history. Nightly A/B runs (a candidate label beside the reference label) are
    tracked by their paired ratio night by night; other series by change points over separate runs, the newest run
    checked at once. Exit 1 on a confirmed regression or an open confirmed alert (--strict: also suspected ones)."""
    from devicelab import verdicts
    from devicelab.store import open_store

    t = verdicts.parse_threshold(threshold)
    if not 0 <= suspect_p < 1:
        raise DevicelabError(f"--suspect-p: {suspect_p!r} is not allowed; allowed: 0 (off) or a p-value below 1, "
                             "like 0.01")
    if action is not None and action != "ack":
        raise DevicelabError(f"regress: '{action}' is not allowed; allowed: ack ALERT (or no argument)")
    if action == "ack" and not alert:
        raise DevicelabError("regress ack: ALERT is missing; `devicelab regress` lists the open alerts")
    store = open_store(db, create=False)
    if action == "ack":
        assert alert is not None
        acked = verdicts.acknowledge(store, alert, note, t, reference, suspect_p or None)
        if as_json:
            _print_json({"acknowledged": acked.to_dict()})
        else:
            out().print(f"alert {acked.id} acknowledged: {acked.series} is judged at {acked.level:.3f} from now on "
                        "(the reference stays)")
        return
    if reset_baseline:
        names = verdicts.reset_baseline(store, reset_baseline, series, note)
        if as_json:
            _print_json({"reset": reset_baseline, "series": names})
        else:
            out().print(f"history starts at run {reset_baseline} for {len(names)} series")
        return
    nightly = verdicts.nightly(store, t, reference, device, suspect_p or None)
    reports = verdicts.regress(store, t, device, exclude=verdicts.nightly_labels(store, reference, device))
    verdicts.write(junit, verdicts.junit_regress(reports, strict, nightly))
    verdicts.write(markdown, (verdicts.markdown_nightly(nightly) + "\n" if nightly else "")
                   + verdicts.markdown_regress(reports))
    bad = ("confirmed", "suspected") if strict else ("confirmed",)
    if as_json:
        _print_json({"threshold": t, "series": [r.to_dict() for r in reports],
                     "nightly": [s.report.to_dict() for s in nightly]})
    else:
        from devicelab.terminal import print_table

        if nightly:
            rows: list[list[str]] = []
            for s in nightly:
                r = s.report
                v = r.nights[-1].verdict if r.nights else None
                newest = (f"{v.ratio:.3f} [{v.ci[0]:.3f}, {v.ci[1]:.3f}] {v.verdict}" if v and v.ratio and v.ci
                          else "—")
                alerts = ", ".join(f"{a.id} {a.state} {a.level / a.level_before - 1:+.1%}" for a in r.open_alerts)
                rows.append([r.series, r.status, str(len(r.nights)), newest, alerts or "—", "; ".join(r.notes)])
            print_table(out(), ["series", "status", "nights", "newest candidate/reference", "open alerts", "notes"],
                        rows, title="devicelab regress: nightly A/B (paired)")
        cells: list[list[str]] = []
        for r in reports:
            cps = ", ".join(f"{c['run_id']} ({c['ratio'] - 1:+.1%})" for c in r.change_points) or "—"
            cells.append([r.series, r.status, str(r.points), cps, "; ".join(r.notes)])
        if cells or not nightly:
            print_table(out(), ["series", "status", "runs", "change points", "notes"], cells, title="devicelab regress")
    failed = any(r.status in bad for r in reports) or any(s.report.status in bad for s in nightly)
    raise typer.Exit(1 if failed else 0)


@app.command()
def accept(
    spec: str = typer.Argument(..., metavar="RUN:LABEL", help="the candidate label of a nightly run to accept"),
    reference: str = typer.Option("reference", "--reference", metavar="LABEL", help="the reference label"),
    note: Optional[str] = typer.Option(None, "--note", help="why"),
    db: Optional[str] = DbOpt, as_json: bool = JsonOpt,
) -> None:
    """The candidate becomes the reference: its series' nightly history restarts after RUN. Run the reference label
    with that build from the next night on."""
    from devicelab import verdicts
    from devicelab.store import open_store

    store = open_store(db, create=False)
    names = verdicts.accept(store, spec, note, reference)
    if as_json:
        _print_json({"accepted": spec, "series": names})
    else:
        out().print(f"{spec} accepted as the reference of {len(names)} series; their nightly history restarts after "
                    f"{spec.partition(':')[0]}: run the '{reference}' label with that build from now on")


@app.command()
def report(
    run_ids: Optional[list[str]] = typer.Argument(None, metavar="RUN_ID...", help="one or more runs, side by side"),
    history: bool = typer.Option(False, "--history", help="instead of runs: the history page, a chart per series "
                                 "over the stored runs with the alerts and change points regress finds"),
    device: Optional[str] = typer.Option(None, "--device", help="with --history: only this device's series"),
    since: Optional[str] = typer.Option(None, "--since", metavar="DATE",
                                        help="with --history: only runs created on or after DATE (ISO, 2026-11-01)"),
    threshold: str = ThresholdOpt,
    reference: str = typer.Option("reference", "--reference", metavar="LABEL",
                                  help="with --history: the label that carries the reference build in nightly A/B runs"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="where to write the HTML file",
                                         callback=_output_file),
    db: Optional[str] = DbOpt,
) -> None:
    """Write the offline HTML review report of one or more runs, or (--history) the history page of the store."""
    from devicelab import paths
    from devicelab import report as report_module
    from devicelab.store import open_store

    if history:
        from devicelab import report_history, verdicts

        if run_ids:
            raise DevicelabError("report: RUN_ID and --history are not allowed together; allowed: RUN_ID... or --history")
        t = verdicts.parse_threshold(threshold)
        when = report_history.parse_since(since) if since is not None else None  # checked before anything is read
        store = open_store(db, create=False)
        path = Path(output).expanduser() if output else paths.reports_dir() / "history.html"
        _, count = report_history.write(path, store, t, reference, device, when)
        out().print(f"history: {path} ({count} series)")
        return
    if device is not None or since is not None:
        raise DevicelabError("report: --device and --since are only allowed with --history")
    if not run_ids:
        raise DevicelabError("report: RUN_ID is missing; allowed: one or more run ids, or --history")
    store = open_store(db, create=False)
    records = [store.get_run(r) for r in run_ids]
    results = [x for r in run_ids for x in store.results(r)]
    path = Path(output).expanduser() if output else paths.reports_dir() / f"{'+'.join(run_ids)}.html"
    report_module.write(path, records, results)
    out().print(f"report: {path}")


@app.command()
def export(
    run_id: str = typer.Argument(..., metavar="RUN_ID"),
    fmt: str = typer.Option("csv", "--format", help="csv, json or parquet"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="file to write (default: stdout for csv/json)",
                                         callback=_output_file),
    db: Optional[str] = DbOpt,
    what: str = typer.Option("samples", "--what", help="samples (every timed iteration) or profiles (every "
                             "profiled op)"),
) -> None:
    """Every sample of a run: csv and parquet one row per sample, json one object per result (--what profiles:
    every profiled op; json one object per config)."""
    from devicelab import export as export_module
    from devicelab.store import open_store

    if fmt not in export_module.FORMATS:
        raise DevicelabError(f"--format: '{fmt}' is not allowed; allowed: {', '.join(export_module.FORMATS)}")
    if what not in export_module.WHAT:
        raise DevicelabError(f"--what: '{what}' is not allowed; allowed: {', '.join(export_module.WHAT)}")
    if fmt == "parquet" and not output:
        raise DevicelabError("--format parquet needs -o PATH (parquet is binary)")
    store = open_store(db, create=False)
    store.get_run(run_id)
    write = export_module.export_profiles if what == "profiles" else export_module.export
    written = write(store.results(run_id), fmt, Path(output).expanduser() if output else None)
    if written is not None:
        sys.stdout.write(written)


@app.command()
def profile(
    run_id: str = typer.Argument(..., metavar="RUN_ID"),
    configs: Optional[list[str]] = typer.Option(None, "--config", metavar="CONFIG",
                                                help="only this config ([device/]engine/model/precision/backend/Nt[@cpus…], as listed); "
                                                     "twice: the op-type diff between the two"),
    db: Optional[str] = DbOpt, as_json: bool = JsonOpt,
) -> None:
    """Where the time goes in a run's profiled configs: per op type, the top nodes, the profiling overhead, and the
    diff between fp32 and each other precision (or between the two --config given)."""
    from devicelab.opprof import diff
    from devicelab.store import open_store

    store = open_store(db, create=False)
    store.get_run(run_id)
    results = store.results(run_id)
    try:
        names = diff.config_names(results)
    except ValueError as e:
        raise DevicelabError(f"{run_id}: {e}") from None
    name_of = {id(r): n for n, r in names.items()}
    chosen = list(names.values())
    if configs:
        from devicelab.errors import UnknownNameError

        for c in configs:
            if c not in names:
                raise UnknownNameError("--config", c, names)
        chosen = [names[c] for c in configs]
    if configs and len(configs) == 2:
        pairs = [(chosen[0], chosen[1])]
    elif configs and len(configs) > 2:
        raise DevicelabError("--config: give one config, or two to diff them")
    else:
        pairs = diff.precision_pairs(chosen)
    summaries = [diff.summary(r, name_of[id(r)]) for r in chosen]
    diffs = []
    for a, b in pairs:
        try:
            diffs.append(diff.diff(a, b, (name_of[id(a)], name_of[id(b)])))
        except ValueError as e:
            if configs:
                raise DevicelabError(f"--config: {e}") from None
    if as_json:
        _print_json({"run_id": run_id, "configs": summaries, "diffs": diffs})
        return
    _render_profiles(summaries, diffs)


def _timeline_text(t: dict[str, Any]) -> str:
    """A config's timeline in one sentence: its marks, and the frequency and temperature ranges while timed."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else ('es' if word.endswith('h') else 's')}"

    parts = [f"{t['timed_s']:.3g} s timed in {n(t['slices'], 'lockstep slice')}" if t["slices"] else
             f"{t['timed_s']:.3g} s timed in {n(t['batches'], 'batch')}"]
    if t["warmup_iterations"]:
        parts.append(f"warmup {n(t['warmup_iterations'], 'iteration')} in {t['warmup_s']:.3g} s")
    for key, unit, scale in (("freq_khz", "MHz", 1e-3), ("temp_c", "°C", 1.0)):
        for k, (lo, hi) in (t[key] or {}).items():
            parts.append(f"{'cpu' + k if key == 'freq_khz' else k} {lo * scale:.0f}–{hi * scale:.0f} {unit}")
    parts.extend(t["unavailable"])
    return "; ".join(parts)


def _render_profiles(summaries: list[dict[str, Any]], diffs: list[dict[str, Any]]) -> None:
    from devicelab.terminal import print_table, print_wrapped

    for s in summaries:
        p = s["profile"]
        if s["timeline"]:
            print_wrapped(out(), f"{s['config']}: timeline {_timeline_text(s['timeline'])}")
        if p is None:
            print_wrapped(out(), f"{s['config']}: {s['why']}")
            continue
        def pct(key: str, sign: str = "") -> str:
            return f"{p[key] * 100:{sign}.1f} %" if isinstance(p.get(key), (int, float)) else "—"

        print_wrapped(out(), f"{s['config']}: op total {_ms(p.get('total_s'))} per iteration, profiled wall "
                             f"{_ms(p.get('wall_s'))}, timed median {_ms(p.get('median_s'))}; profiling overhead "
                             f"{pct('overhead', '+')} (profiled wall vs timed median), coverage {pct('coverage')} "
                             f"(op total vs profiled wall), op sum vs median {pct('op_sum_vs_median', '+')}, mapped "
                             f"{pct('mapped')} ({p.get('engine_source')}, {p.get('iterations')} iterations, node "
                             f"link {p.get('node_link')})")
        total = p.get("total_s") or 0
        print_table(out(), ["op type", "time", "share"],
                    [[t, _ms(v), f"{v / total * 100:.1f} %" if total else "—"] for t, v in p["by_type"].items()],
                    title=f"{s['config']}: by op type")
        print_table(out(), ["node", "engine op", "type", "time", "share"],
                    [[str(n["name"]) + (f" (fused {'+'.join(n['fused'])})" if n["fused"] else ""),
                      str(n["engine_type"]), str(n["type"]), _ms(n["s"]),
                      f"{n['share'] * 100:.1f} %" if n["share"] is not None else "—"] for n in p["top"]],
                    title=f"{s['config']}: top {len(p['top'])} nodes")
        for note in p["notes"]:
            print_wrapped(out(), f"note: {note}", first="  ", rest="    ")
    for d in diffs:
        print_table(out(), ["op type", "A", "B", "B/A"],
                    [[r["type"], _ms(r["a_s"]) if r["a_s"] else "—", _ms(r["b_s"]) if r["b_s"] else "—",
                      f"{r['ratio']:.2f}×" if r["ratio"] else "new"] for r in d["rows"]],
                    title=f"A {d['a']} → B {d['b']}")
        print_wrapped(out(), d["sentence"], first="  ", rest="    ")


@app.command("build-native")
def build_native(
    target: str = typer.Option("host", "--target", help="host, arm64 (static, Debian cross compiler), "
                               "android-arm64 (needs ANDROID_NDK_HOME) or ios (prints the Xcode steps: built on a Mac)"),
    ncnn_version: Optional[str] = typer.Option(None, "--ncnn-version", help="ncnn sdist version to build "
                                               "(default: the installed pip ncnn's)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="parallel compile jobs (default: CPUs)"),
    with_: Optional[list[str]] = typer.Option(None, "--with", help="extra dlbench backend: openvino (host only, "
                                              "links the installed openvino wheel)"),
    llm: bool = typer.Option(False, "--llm", help="also build llama.cpp (from the llama-cpp-python sdist, cached by "
                             "version and flags) with dlllm and llama-bench (host, arm64)"),
    as_json: bool = JsonOpt,
) -> None:
    """Build dlprobe and dlbench (with ncnn, cached per version) for a target and register them."""
    from devicelab import native
    from devicelab.analysis.tables import format_bytes
    from devicelab.config import split_values

    if target in native.PRINTED_TARGETS:
        if with_:
            raise DevicelabError(f"--with: only for --target host (the iOS app's backends are chosen in its CMake "
                                 f"project; `devicelab build-native --target {target}` prints how)")
        steps = native.ios_steps(ncnn_version)
        if as_json:
            _print_json({"target": target, "built": False, "steps": [
                {"title": s.title, "commands": list(s.commands)} for s in steps]})
            return
        out().print(f"devicelab cannot build the {target} runner app on this machine; on a Mac:", markup=False,
                    highlight=False, soft_wrap=True)
        for i, step in enumerate(steps, 1):
            out().print(f"\n{i}. {step.title}", markup=False, highlight=False, soft_wrap=True)
            for line in step.commands:
                out().print(f"     {line}", markup=False, highlight=False, soft_wrap=True)
        return
    if llm:
        from devicelab import native_llm

        if target not in native_llm.LLM_TARGETS:
            raise DevicelabError(f"--llm: --target {target} is not allowed; allowed: {', '.join(native_llm.LLM_TARGETS)}")
    try:
        record = native.build(target, ncnn=ncnn_version, jobs=jobs, log=lambda m: err().print(m, markup=False),
                              extra_backends=split_values(with_) or ())
        llm_build = native_llm.build(target, jobs=jobs, log=lambda m: err().print(m, markup=False)) if llm else None
    except native.NativeBuildError as e:  # not bad input: a step failed (exit 1), the message names its log
        err().print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if llm_build is not None:
        record = native.registered(target) or record  # now with dlllm (and llama-bench) among its artifacts
    if as_json:
        _print_json({**record.to_dict(), **({"llm": llm_build.to_dict()} if llm_build else {})})
        return
    from devicelab.terminal import print_table

    print_table(out(), ["artifact", "path", "size", "sha256"],
                [[name, str(a.path), format_bytes(a.bytes), a.sha256[:12]] for name, a in record.artifacts.items()],
                title=f"{target}: {record.dlbench_version} (backends: {', '.join(record.backends)})")
    if llm_build is not None:
        out().print(f"llama.cpp: {llm_build.version} ({llm_build.seconds:.0f} s)", markup=False, highlight=False)
    out().print(f"registered in {native.registry_path()}")


@app.command()
def runs(db: Optional[str] = DbOpt, limit: int = typer.Option(20, "--limit", min=1), as_json: bool = JsonOpt) -> None:
    """List stored runs, newest first."""
    from devicelab.store import open_store

    store = open_store(db, create=False)
    records = store.runs(limit)
    if as_json:
        _print_json([{**r.to_dict(), "results": sum(store.status_counts(r.run_id).values())} for r in records])
        return
    from devicelab.terminal import print_table

    cells: list[list[str]] = []
    for r in records:
        counts = store.status_counts(r.run_id)
        cells.append([r.run_id, _when(r.created_at), r.status, r.suite.get("name", ""),
                      f"{counts.get('ok', 0)}/{sum(counts.values())} ok"])
    print_table(out(), ["run", "created (UTC)", "status", "suite", "results"], cells)


def _when(timestamp: str) -> str:
    """2026-12-06T08:41:56.146+00:00 as 2026-12-06 08:41:56: the run table then fits 80 columns (--json keeps all)."""
    return timestamp[:19].replace("T", " ")


@app.command()
def show(run_id: str, db: Optional[str] = DbOpt, as_json: bool = JsonOpt) -> None:
    """Show one run's results."""
    from devicelab.store import open_store

    store = open_store(db, create=False)
    record = store.get_run(run_id)
    results = store.results(run_id)
    if as_json:
        _print_json({"run": record.to_dict(), "results": [r.to_dict() for r in results]})
        return
    from devicelab.terminal import print_wrapped

    print_wrapped(out(), f"run {record.run_id} ({record.status}), suite {record.suite.get('name')}, seed {record.seed}")
    _render_tables(results)
    for r in results:
        if r.status != "ok":  # a reason is prose: wrapped at spaces to the width, like the tables' cells
            print_wrapped(out(), f"{r.status}: {r.device} {r.engine} {r.model} {r.precision} {r.backend} {r.threads}t: "
                          f"{r.reason}", first="  ", rest="    ")


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit 2; Ctrl-C exits 130; bugs keep tracebacks."""
    _defer_typer_coercion()  # here, not at import: importing devicelab.cli changes no other typer app
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result or 0)
    except DevicelabError as e:
        err().print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as e:
        return int(e.exit_code)
    except TyperException as e:  # typer's (vendored click) usage errors: bad option, missing argument
        message = e.format_message()
        if "\n" in message.strip():  # no arguments: typer hands back the help text
            err().print(message, markup=False)
        else:
            err().print(f"error: {message}", markup=False, soft_wrap=True)
        return int(getattr(e, "exit_code", 2) or 2)
    except typer.Abort:
        err().print("interrupted")
        return 130
    except KeyboardInterrupt:
        err().print("interrupted")
        return 130
