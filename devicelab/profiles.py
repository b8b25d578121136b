"""Device profiles: what devicelab learned about one physical device and keeps between runs (e.g. its battery
sensor's calibration), keyed by the device's own serial number (not its adb address, which changes with the cable or
the network).

Where they live: with a PostgreSQL store (the farm's shared record: `use_store`, else DEVICELAB_DB) in its
`profiles` table, so a profile follows its phone from host to host; otherwise one JSON file per device under the data
folder's profiles/. A SQLite store is one host's file, as the data folder is, so a local setup keeps its files and
commands that open no store (calibrate-energy) create none. The first time a PostgreSQL store is asked for a profile
it does not have, this host's file for that device (if any) is copied into it: calibrations made before the farm
are kept."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from devicelab import paths

# The store the profiles go to, as set by a command that opened one (`--db`); None: DEVICELAB_DB decides.
_location: str | None = None


def use_store(location: str | None) -> None:
    """Profiles follow `location` (a store's location, credentials from libpq) when it is a PostgreSQL store."""
    global _location
    _location = location


def shared_store() -> str | None:
    """The PostgreSQL store profiles live in, or None (they are files of this host)."""
    from devicelab.store import is_postgres_url

    location = _location if _location is not None else os.environ.get("DEVICELAB_DB")
    return location if location and is_postgres_url(location) else None


def profile_path(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key) or "_"
    return paths.data_dir() / "profiles" / f"{safe}.json"


def _load_file(key: str) -> dict[str, Any]:
    try:
        data = json.loads(profile_path(key).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load(key: str) -> dict[str, Any]:
    """The device's profile ({} when there is none). A shared store that cannot be reached is said on stderr and
    this host's file is read instead: a phone's facts must not fail because the record is away."""
    location = shared_store()
    if location is None:
        return _load_file(key)
    from devicelab.errors import DevicelabError
    from devicelab.store import open_store

    try:
        store = open_store(location)
    except DevicelabError as e:
        print(f"profile of {key}: {e}; using this host's copy", file=sys.stderr, flush=True)
        return _load_file(key)
    try:
        data = store.profile(key)
        if data is None:
            data = _load_file(key)
            if data:
                store.put_profile(key, data)  # first use of the shared store: this host's profile moves in
        return data if isinstance(data, dict) else {}
    finally:
        store.close()


def update(key: str, section: str, value: dict[str, Any]) -> str:
    """Replace one section of the device's profile; where it was written (a file, or the store and key). A file is
    written atomically (a crash leaves the old one); a store writes it in one transaction."""
    data = load(key)
    data[section] = value
    location = shared_store()
    if location is not None:
        from devicelab.store import open_store

        store = open_store(location)
        try:
            store.put_profile(key, data)
            return f"{store.location} (profile {key})"
        finally:
            store.close()
    path = profile_path(key)
    paths.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return str(path)
