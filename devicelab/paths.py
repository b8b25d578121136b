"""Where devicelab keeps its data: XDG data folder by default, overridable for tests and farms."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """The data folder: zoo cache, converted models, reports, and the default SQLite store."""
    override = os.environ.get("DEVICELAB_DATA")
    path = Path(override) if override else Path(platformdirs.user_data_dir("devicelab"))
    return path.expanduser()


def default_db() -> Path:
    override = os.environ.get("DEVICELAB_DB")
    return Path(override).expanduser() if override else data_dir() / "devicelab.sqlite"


def reports_dir() -> Path:
    return data_dir() / "reports"


def zoo_dir() -> Path:
    return data_dir() / "zoo"
