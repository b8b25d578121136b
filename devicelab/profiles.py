"""Device profiles: what devicelab learned about one physical device and keeps between runs (e.g. its battery
sensor's calibration), one JSON file per device under the data folder's profiles/, keyed by the device's own
serial number (not its adb address, which changes with the cable or the network)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from devicelab import paths


def profile_path(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key) or "_"
    return paths.data_dir() / "profiles" / f"{safe}.json"


def load(key: str) -> dict[str, Any]:
    try:
        data = json.loads(profile_path(key).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update(key: str, section: str, value: dict[str, Any]) -> Path:
    """Replace one section of the device's profile (written atomically: a crash leaves the old file)."""
    data = load(key)
    data[section] = value
    path = profile_path(key)
    paths.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path
