"""Device kinds, each a transport (docs/devices.md), registered explicitly. Only the android kind imports adbutils.
The kinds' inventory keys are data in devicelab.facts.KINDS, so planning and configuration never import a kind."""

from __future__ import annotations

import importlib

from devicelab.devices.base import Exit, Placed, Process, ResultExtras, Transport, TransportLostError
from devicelab.errors import UnknownNameError
from devicelab.facts import DeviceEntry

TRANSPORTS: dict[str, str] = {
    "host": "devicelab.devices.host:HostTransport",
    "android": "devicelab.devices.android:AndroidTransport",
    "ios": "devicelab.devices.ios.device:IOSTransport",
}


def transport_class(kind: str) -> type[Transport]:
    if kind not in TRANSPORTS:
        raise UnknownNameError("device kind", kind, TRANSPORTS)
    module, _, cls = TRANSPORTS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def open_device(entry: DeviceEntry) -> Transport:
    return transport_class(entry.kind)(entry)


def discovered(known: set[str]) -> tuple[list[DeviceEntry], list[str]]:
    """Phones attached to this machine that the inventory does not list (adb serials and iPhone UDIDs in `known` are
    skipped): entries, and one note per device that is attached but unusable (unauthorized, offline), per missing
    adb, or when iPhones cannot be listed (no pymobiledevice3, usbmuxd not running)."""
    from devicelab.devices import ios
    from devicelab.devices.android import discovered_entries

    entries, notes = discovered_entries(known)
    phones, phone_notes = ios.discovered_entries(known)
    return entries + phones, notes + phone_notes


__all__ = ["Exit", "Placed", "Process", "ResultExtras", "Transport", "TransportLostError", "TRANSPORTS",
           "transport_class", "open_device", "discovered"]
