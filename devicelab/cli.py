"""The command line: parse, call, render. No device I/O and no SQL here (style.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.exceptions import TyperException
from rich.console import Console
from rich.table import Table

from devicelab.errors import DevicelabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Benchmark and profile inference engines on devices and the host.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

DbOpt = typer.Option(None, "--db", help="SQLite database (default: DEVICELAB_DB or the data folder)")
DevicesOpt = typer.Option(None, "--devices", help="inventory YAML (default: DEVICELAB_DEVICES, ./devices.yaml, built-in)")
JsonOpt = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")


@app.command()
def devices(devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt) -> None:
    """List the devices in the inventory with their facts."""
    from devicelab.config import load_inventory
    from devicelab.devices import open_device

    facts = [open_device(e).facts() for e in load_inventory(devices_file).devices]
    if as_json:
        _print_json([f.to_dict() for f in facts])
        return
    table = Table("id", "kind", "model", "os", "abi", "cpus", "clusters")
    for f in facts:
        clusters = " ".join(f"[{','.join(map(str, c.cpus))}]" + (f"@{c.max_khz // 1000}MHz" if c.max_khz else "")
                            for c in f.clusters)
        table.add_row(f.id, f.kind, f.model, f.os, f.abi, str(len(f.cpu_ids)), clusters)
    out.print(table)


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
    table = Table("model", "params", "MACs", "size", "sha256", "description")
    for r in rows:
        table.add_row(r["name"], f"{r['params'] / 1e6:.3f} M", f"{r['macs'] / 1e9:.3f} G",
                      f"{r['bytes'] / 2**20:.1f} MiB", r["sha256"][:12], r["description"])
    out.print(table)


@app.command()
def engines(devices_file: Optional[str] = DevicesOpt, as_json: bool = JsonOpt) -> None:
    """List engines: version, availability, formats, precisions, backends, and which devices can run them."""
    from devicelab.config import load_inventory
    from devicelab.engines import engine_names, get_engine

    inventory = load_inventory(devices_file)
    rows = []
    for name in engine_names():
        info = get_engine(name).info().to_dict()
        info["devices"] = [d.id for d in inventory.devices if d.kind in info["device_kinds"]]
        rows.append(info)
    if as_json:
        _print_json(rows)
        return
    table = Table("engine", "version", "available", "precisions", "backends", "devices", "reason")
    for r in rows:
        table.add_row(r["name"], r["version"] or "—", "yes" if r["available"] else "no", ",".join(r["precisions"]),
                      ",".join(r["backends"]), ",".join(r["devices"]), r["reason"] or "")
    out.print(table)


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
    report_path: Optional[str] = typer.Option(None, "--report", help="where to write the HTML report"),
    as_json: bool = JsonOpt,
) -> None:
    """Run a suite (or --resume one) and store every Result. Exit 1 if any config failed."""
    from devicelab import paths, report, sweep
    from devicelab.config import load_inventory, resolve_suite
    from devicelab.store import open_store

    inventory = load_inventory(devices_file)
    overrides = {"device": device, "engine": engine, "model": model, "threads": threads, "precision": precision,
                 "backend": backend, "affinity": affinity}
    if resume:
        if suite or quick or any(overrides.values()):
            raise DevicelabError("--resume re-runs the stored suite; it takes no --suite, --quick or narrowing flags")
        store = open_store(db, create=False)
        store.get_run(resume)  # unknown ids fail here, before anything runs
        parsed = None
    else:
        raw, source = resolve_suite(suite, quick, overrides)
        parsed = sweep.validate(raw, source, inventory)  # every problem at once, before any device is touched
        store = open_store(db)

    state: dict[str, Any] = {"run_id": resume}
    with _RunProgress(enabled=not as_json or err.is_terminal) as progress:
        def on_event(kind: str, obj: Any) -> None:
            if kind == "run":
                state["run_id"] = obj
            progress.event(kind, obj)

        try:
            if resume:
                results = sweep.resume_run(store, resume, inventory, on_event)
                run_id = resume
            else:
                assert parsed is not None
                run_id, results = sweep.start_run(store, parsed, inventory, sys.argv, on_event)
        except KeyboardInterrupt:
            progress.stop()
            rid = state.get("run_id")
            kept = len(store.results(rid)) if rid else 0
            err.print(f"interrupted: {kept} finished results kept in {store.path}; "
                      f"resume with: devicelab run --resume {rid}")
            raise typer.Exit(130)

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
        out.print(f"run {run_id}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        for r in results:
            if r.status in ("failed", "infra-failed"):
                out.print(f"  {r.status}: {r.engine} {r.model} {r.threads}t: {r.reason}")
        out.print(f"report: {path}")
    raise typer.Exit(code)


class _RunProgress:
    """A rich progress bar with ETA on stderr; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err,
                                 disable=not enabled, transient=False)
        self.task = self.progress.add_task("preparing", total=None)

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


def _render_tables(results: list[Any]) -> None:
    from devicelab.analysis.tables import format_bytes, slides_tables

    for t in slides_tables(results):
        table = Table(*t.columns, title=f"{t.model} on {t.device}", title_justify="left")
        for row in t.rows:
            table.add_row(row.name, *[row.cells[n].text() if n in row.cells else "—" for n in t.threads],
                          format_bytes(row.peak_rss_bytes))
        out.print(table)


@app.command("build-native")
def build_native(
    target: str = typer.Option("host", "--target", help="host, arm64 (static, Debian cross compiler) or "
                               "android-arm64 (needs ANDROID_NDK_HOME)"),
    ncnn_version: Optional[str] = typer.Option(None, "--ncnn-version", help="ncnn sdist version to build "
                                               "(default: the installed pip ncnn's)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="parallel compile jobs (default: CPUs)"),
    with_: Optional[list[str]] = typer.Option(None, "--with", help="extra dlbench backend: openvino (host only, "
                                              "links the installed openvino wheel)"),
    as_json: bool = JsonOpt,
) -> None:
    """Build dlprobe and dlbench (with ncnn, cached per version) for a target and register them."""
    from devicelab import native
    from devicelab.analysis.tables import format_bytes
    from devicelab.config import split_values

    try:
        record = native.build(target, ncnn=ncnn_version, jobs=jobs, log=lambda m: err.print(m, markup=False),
                              extra_backends=split_values(with_) or ())
    except native.NativeBuildError as e:  # not bad input: a step failed (exit 1), the message names its log
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if as_json:
        _print_json(record.to_dict())
        return
    table = Table("artifact", "path", "size", "sha256", title=f"{target}: {record.dlbench_version} "
                  f"(backends: {', '.join(record.backends)})",
                  title_justify="left")
    for name, a in record.artifacts.items():
        table.add_row(name, str(a.path), format_bytes(a.bytes), a.sha256[:12])
    out.print(table)
    out.print(f"registered in {native.registry_path()}")


@app.command()
def runs(db: Optional[str] = DbOpt, limit: int = typer.Option(20, "--limit", min=1), as_json: bool = JsonOpt) -> None:
    """List stored runs, newest first."""
    from devicelab.store import open_store

    store = open_store(db, create=False)
    records = store.runs(limit)
    if as_json:
        _print_json([{**r.to_dict(), "results": len(store.results(r.run_id))} for r in records])
        return
    table = Table("run", "created", "status", "suite", "results")
    for r in records:
        rs = store.results(r.run_id)
        ok = sum(x.status == "ok" for x in rs)
        table.add_row(r.run_id, r.created_at, r.status, r.suite.get("name", ""), f"{ok}/{len(rs)} ok")
    out.print(table)


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
    out.print(f"run {record.run_id} ({record.status}), suite {record.suite.get('name')}, seed {record.seed}")
    _render_tables(results)
    for r in results:
        if r.status != "ok":
            out.print(f"  {r.status}: {r.engine} {r.model} {r.precision} {r.backend} {r.threads}t: {r.reason}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit 2; Ctrl-C exits 130; bugs keep tracebacks."""
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result or 0)
    except DevicelabError as e:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as e:
        return int(e.exit_code)
    except TyperException as e:  # typer's (vendored click) usage errors: bad option, missing argument
        message = e.format_message()
        if "\n" in message.strip():  # no arguments: typer hands back the help text
            err.print(message, markup=False)
        else:
            err.print(f"error: {message}", markup=False, soft_wrap=True)
        return int(getattr(e, "exit_code", 2) or 2)
    except typer.Abort:
        err.print("interrupted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
