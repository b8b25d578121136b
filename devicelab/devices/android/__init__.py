"""Android phones over adb (docs/devices.md): `adb` (the server, discovery, the shell v2 stream; the only importer of
adbutils), `sysfs` (reading the phone), `push` (content-addressed files), `device` (the transport)."""

from devicelab.devices.android.adb import DeviceGoneError, attached, connect, discovered_entries, quote
from devicelab.devices.android.device import TARGETS_BY_ABI, AndroidTransport
from devicelab.devices.android.push import REMOTE_ROOT, blob_path
from devicelab.devices.android.sysfs import parse_getprop, parse_state, parse_topology

__all__ = ["AndroidTransport", "DeviceGoneError", "REMOTE_ROOT", "TARGETS_BY_ABI", "attached", "blob_path",
           "connect", "discovered_entries", "parse_getprop", "parse_state", "parse_topology", "quote"]
