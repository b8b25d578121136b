"""The iPhone device kind (docs/devices.md): a transport over pymobiledevice3 — the only importer of it in
devicelab proper, and an optional one (`pip install 'devicelab[ios]'`: GPL-3.0, see README "iPhones")."""

from __future__ import annotations

from devicelab.facts import DeviceEntry

MISSING = "iPhones are not listed: pymobiledevice3 is not installed (pip install 'devicelab[ios]')"


def installed() -> bool:
    try:
        import pymobiledevice3  # noqa: F401 - the package itself is light; its services are imported on use
    except ImportError:
        return False
    return True


def discovered_entries(known: set[str]) -> tuple[list[DeviceEntry], list[str]]:
    """iPhones usbmuxd lists (USBMUXD_SOCKET_ADDRESS, else the system usbmuxd) that the inventory does not (UDIDs
    in `known` are skipped), and one note when they cannot be listed. The listing runs on an event loop of its own
    in a thread of its own, so a caller that is itself inside a running loop (a Dask worker, a notebook) gets the
    listing rather than asyncio.run's refusal."""
    if not installed():
        return [], [MISSING]
    import os

    from devicelab.devices.ios import errors
    from devicelab.devices.ios.loop import DeviceLoop

    address = os.environ.get("USBMUXD_SOCKET_ADDRESS") or None

    async def listed() -> list[str]:
        from pymobiledevice3 import usbmux

        return [d.serial for d in await usbmux.list_devices(usbmux_address=address)]

    loop = DeviceLoop("devicelab-ios-discovery")
    try:
        serials = loop.run(listed(), 10)
    except Exception as e:  # noqa: BLE001 - usbmuxd absent or refusing: one note, the rest of devicelab works
        if not address and not os.path.exists("/var/run/usbmuxd"):
            return [], []  # no usbmuxd on this machine at all: nobody uses iPhones here
        return [], [errors.usbmuxd_not_running(address, f"{type(e).__name__}: {e}")]
    finally:
        loop.close()
    entries = [DeviceEntry(s, "ios", {"udid": s}) for s in dict.fromkeys(serials) if s not in known]
    return entries, []


def __getattr__(name: str) -> object:
    if name == "IOSTransport":  # imported on use: it needs pymobiledevice3
        from devicelab.devices.ios.device import IOSTransport

        return IOSTransport
    raise AttributeError(name)
