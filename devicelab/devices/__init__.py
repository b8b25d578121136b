"""Device kinds, registered explicitly. Only the android kind will import adbutils, only ios pymobiledevice3."""

from __future__ import annotations

import importlib

from devicelab.devices.base import Cluster, Device, DeviceEntry, DeviceFacts, Job
from devicelab.errors import UnknownNameError

DEVICE_KINDS: dict[str, str] = {
    "host": "devicelab.devices.host:HostDevice",
}


def device_class(kind: str) -> type[Device]:
    if kind not in DEVICE_KINDS:
        raise UnknownNameError("device kind", kind, DEVICE_KINDS)
    module, _, cls = DEVICE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_device(entry: DeviceEntry) -> Device:
    return device_class(entry.kind)(entry)


__all__ = ["Cluster", "Device", "DeviceEntry", "DeviceFacts", "Job", "DEVICE_KINDS", "device_class", "open_device"]
