"""Where devicelab's files live in the runner app's container, as pure functions: content-addressed files under
Documents/devicelab/files/<sha256>/<name>, run folders under Documents/devicelab/runs/<id>/, and the rewriting of
a run's config so it names the content-addressed files (AFC offers no copy on the device, and devicelab does not
rely on AFC links in an app's container: the config points at the files instead)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from devicelab.devices.base import relative_name

ROOT = "Documents/devicelab"  # relative to the app's container (house_arrest's VendContainer root)
FILES = f"{ROOT}/files"
RUNS = f"{ROOT}/runs"
MANIFEST = f"{ROOT}/manifest.json"  # {device path: size} of every content-addressed file devicelab completed
INSTALLED = f"{ROOT}/installed.json"  # the runner app's content hash as devicelab installed it
RUNNER_STDERR = f"{ROOT}/runner-stderr.txt"  # where the runner app sends its stderr (runners/ios; iOS relays none)


def file_path(sha256: str, name: str) -> str:
    """A file's place in the container, named by its content: a second run finds it and sends nothing."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"file name {name!r} cannot be placed on the iPhone")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{sha256!r} is not a sha256")
    return f"{FILES}/{sha256}/{name}"


def placements(files: Sequence[tuple[str, str]]) -> list[str]:
    """Where each of `files` (name relative to the run folder, sha256 of its content) goes in the container, in
    order. A file at the top of the run folder is `file_path(sha256, name)`. Files in a subfolder (a Core ML package,
    which the runner app opens as a folder) keep their folder: every file under the same top folder goes to
    `files/<tree>/<its name>`, `<tree>` being the sha256 of the whole folder (each file's relative path and
    content), so the folder exists whole in one place (the run folder's config names it there) and a second run
    of the same folder sends nothing."""
    trees: dict[str, Any] = {}
    for name, sha in sorted(files):
        rel = relative_name(name)
        if "/" in rel:
            top = rel.split("/", 1)[0]
            trees.setdefault(top, hashlib.sha256()).update(f"{rel}\0{sha}\0".encode())
    out = []
    for name, sha in files:
        rel = relative_name(name)
        if "/" not in rel:
            out.append(file_path(sha, rel))
            continue
        tree = trees[rel.split("/", 1)[0]].hexdigest()
        if any(part in (".", "..") or "\0" in part for part in rel.split("/")):
            raise ValueError(f"file name {name!r} cannot be placed on the iPhone")
        out.append(f"{FILES}/{tree}/{rel}")
    return out


def folder_targets(links: Mapping[str, str]) -> dict[str, str]:
    """The folders of a run folder's links (e.g. `model.mlpackage` for `model.mlpackage/Manifest.json`) that exist
    whole in one place in the container, as `placements` lays them out: folder name → its path there. A folder
    whose files are not laid out under one common path is left out (nothing could name it)."""
    found: dict[str, str | None] = {}
    for rel, target in links.items():
        rel = relative_name(rel)
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            tail = "/" + "/".join(parts[depth:])
            place = target[:-len(tail)] if target.endswith(tail) else None
            if found.get(folder, place) != place:
                place = None
            found[folder] = place
    return {k: v for k, v in found.items() if v is not None}


def inside_root(path: str) -> str:
    """`path` normalized, or ValueError when it is not under devicelab's folder (nothing else is touched)."""
    norm = posixpath.normpath(path)
    if "\0" in path or not norm.startswith(ROOT + "/"):
        raise ValueError(f"{path} is not under devicelab's folder ({ROOT}) in the app's container")
    return norm


def run_folder_of(path: str) -> str:
    norm = inside_root(path)
    if posixpath.dirname(norm) != RUNS:
        raise ValueError(f"{path} is not a run folder of devicelab's")
    return norm


# Where a runner config names files (docs/runner-protocol.md): the model, the weights option, and the `file` of each
# input spec (`inputs`, `accuracy_files`). Only these are rewritten: a tensor name or a label that happens to equal a
# file's name is data, not a path.
PATH_KEYS = ("model",)
PATH_OPTIONS = ("weights",)
SPEC_LISTS = ("inputs", "accuracy_files")


def rewrite_config(config: Any, folder: str, links: Mapping[str, str]) -> Any:
    """A runner config that names the run folder's files by their content-addressed paths, relative to the folder
    (dlbench resolves relative paths against its config's folder): where the config names a file (PATH_KEYS,
    PATH_OPTIONS, the `file` of the specs in SPEC_LISTS), a value equal to a link's name becomes the path to the file
    it links, and one equal to a folder of links (`model.mlpackage`) the path to that folder as `placements` laid it
    out. Everything else is kept as it is."""
    where = {relative_name(rel): posixpath.relpath(target, folder) for rel, target in links.items()}
    where.update({name: posixpath.relpath(target, folder) for name, target in folder_targets(links).items()})

    def path(value: Any) -> Any:
        return where.get(value, value) if isinstance(value, str) else value

    def specs(value: Any) -> Any:
        if isinstance(value, list):
            return [specs(v) for v in value]
        if isinstance(value, dict) and "file" in value:
            return {**value, "file": path(value["file"])}
        return value

    if not isinstance(config, dict):
        return config
    out = dict(config)
    for key in PATH_KEYS:
        if key in out:
            out[key] = path(out[key])
    if isinstance(out.get("options"), dict):
        out["options"] = {k: path(v) if k in PATH_OPTIONS else v for k, v in out["options"].items()}
    for key in SPEC_LISTS:
        if key in out:
            out[key] = specs(out[key])
    return out


def config_bytes(text: bytes, folder: str, links: Mapping[str, str]) -> bytes | None:
    """`rewrite_config` of a JSON object file, or None when the file is not one (it is then not rewritten)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    data = rewrite_config(data, folder, links)
    if isinstance(data.get("results_file"), str) and data["results_file"]:
        # Batch mode's results file: the app resolves it against its home (the container root), not the config's
        # folder, so it is named by its path from there — inside this run folder, removed with it.
        data["results_file"] = f"{folder}/{relative_name(data['results_file'])}"
    return json.dumps(data).encode()


def port_file_port(text: bytes) -> tuple[int, int | None] | None:
    """The runner's `{"port": N, "pid": P}` (written atomically by dlbench --port-file), or None while incomplete."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    port = data.get("port") if isinstance(data, dict) else None
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    pid = data.get("pid")
    return port, pid if isinstance(pid, int) else None
