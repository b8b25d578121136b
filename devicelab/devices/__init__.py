"""Device kinds, registered explicitly. Only the android kind imports adbutils, only ios pymobiledevice3."""

from __future__ import annotations

import importlib

from devicelab.devices.base import Cluster, Device, DeviceEntry, DeviceFacts, Job
from devicelab.errors import UnknownNameError

DEVICE_KINDS: dict[str, str] = {
    "host": "devicelab.devices.host:HostDevice",
    "android": "devicelab.devices.android:AndroidDevice",
}


def device_class(kind: str) -> type[Device]:
    if kind not in DEVICE_KINDS:
        raise UnknownNameError("device kind", kind, DEVICE_KINDS)
    module, _, cls = DEVICE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_device(entry: DeviceEntry) -> Device:
    return device_class(entry.kind)(entry)


def discovered(known: set[str]) -> tuple[list[DeviceEntry], list[str]]:
    """Phones attached to this machine that the inventory does not list (adb serials in `known` are skipped):
    entries, and one note per device that is attached but unusable (unauthorized, offline) or per missing adb."""
    from devicelab.devices.android import discovered_entries

    return discovered_entries(known)


__all__ = ["Cluster", "Device", "DeviceEntry", "DeviceFacts", "Job", "DEVICE_KINDS", "device_class", "open_device",
           "discovered"]
