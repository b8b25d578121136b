"""Files on a phone: content-addressed blobs under /data/local/tmp/devicelab (the only place devicelab writes), pushed
once — a second run of the same configs pushes 0 bytes — and run folders of links to them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from devicelab.devices.android.adb import ADB_ERRORS, quote
from devicelab.devices.base import Placed, relative_name
from devicelab.paths import sha256_file
from devicelab.result import Transfer

if TYPE_CHECKING:
    from devicelab.devices.android.device import AndroidTransport

REMOTE_ROOT = "/data/local/tmp/devicelab"  # the only place devicelab writes on a phone (shell user: /data/local/tmp)
BLOBS = f"{REMOTE_ROOT}/a"  # content-addressed: a/<sha256 prefix>/<file name>
RUNS = f"{REMOTE_ROOT}/run"  # one folder per config while it runs: config, links to blobs, outputs


def blob_path(sha256: str, name: str) -> str:
    """Where a file lives on the device: named by its content, so a second run finds it and pushes nothing."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"file name {name!r} cannot be pushed")
    return f"{BLOBS}/{sha256[:32]}/{name}"


def chunks(items: Sequence[str], limit: int = 3000) -> Iterator[list[str]]:
    """Items in groups whose joined length stays under `limit` bytes: a shell command is an adb service name, and
    older devices take at most 4 KiB per message."""
    group: list[str] = []
    for item in items:
        if group and sum(len(x) + 4 for x in group) + len(item) > limit:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def push(phone: AndroidTransport, files: Sequence[tuple[str, Path]]) -> Placed:
    """Local files (name on the device, local path) as blobs; a blob already there with the same size is not
    pushed again. Device paths in the order given."""
    start = time.monotonic()
    wanted = [(blob_path(sha256_file(Path(local)), PurePosixPath(name).name), Path(local).resolve())
              for name, local in files]
    remote = [path for path, _ in wanted]
    # What is there already, in one round trip (a sync STAT per file would cost one adb connection each).
    there: dict[str, int] = {}
    for group in chunks(sorted(set(remote))):  # chunks: a service name must fit one adb message
        listing = phone.shell("stat -c '%s %n' " + quote(group) + " 2>/dev/null; true").stdout
        for line in listing.splitlines():
            size, _, path = line.partition(" ")
            if size.isdigit():
                there[path] = int(size)
    moves: list[str] = []
    pushed = sent = 0
    try:
        sync = phone.adb().sync
        for path, local in dict(wanted).items():
            size = local.stat().st_size
            if there.get(path) == size:
                continue
            # Push beside, then rename: a push cut off by a disconnect never leaves a truncated blob
            # under its final, trusted name.
            sync.push(local, f"{path}.part", mode=0o755 if os.access(local, os.X_OK) else 0o644)
            moves.append(f"mv -f {quote([path + '.part'])} {quote([path])}")
            pushed += 1
            sent += size
    except ADB_ERRORS as e:
        raise phone.fault(f"pushing to {phone.serial}", e) from None
    for group in chunks(moves):
        phone.check(" && ".join(group), "renaming pushed files")
    return Placed(remote, Transfer(files=len(wanted), pushed_files=pushed, bytes=sent,
                                   seconds=round(time.monotonic() - start, 3)))


def make_run_folder(phone: AndroidTransport, folder: str, links: Mapping[str, str]) -> None:
    """`folder` with a link per entry (relative name → blob): one shell round trip."""
    pairs = [(src, f"{folder}/{relative_name(rel)}") for rel, src in links.items()]
    folders = sorted({str(PurePosixPath(dst).parent) for _, dst in pairs} | {folder})
    steps = [f"mkdir -p {quote(folders)}"] + [f"ln -s {quote([src])} {quote([dst])}" for src, dst in pairs]
    for group in chunks(steps):
        phone.check(" && ".join(group), "preparing the run folder")
