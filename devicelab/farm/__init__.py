"""The device farm (README: "Device farm"): Dask distributed as the executor, one Dask worker per phone.

`devicelab farm scheduler` wraps a Dask scheduler that never re-runs a task (allowed-failures 0); `devicelab farm
agent` runs on each host with phones and starts one worker process per phone (name = the adb serial, one thread,
resource `device:SERIAL` = 1), whose plugin beats the phone's health into the store and takes the resource to 0
while the phone is offline; `devicelab run --farm ADDRESS` plans as a local run and submits one task per config
(or per lockstep group of A/B labels) bound to its phone's resource. Dask is imported only here, and only by the
farm commands (the rest of the CLI never loads it)."""

from __future__ import annotations

RESOURCE_PREFIX = "device:"
PLUGIN_NAME = "devicelab-phone"
MISSED_BEATS_OFFLINE = 3  # a phone is offline after this many missed beats in a row (and gets no work)


def resource(serial: str) -> str:
    """The Dask resource that binds a task to one phone: only that phone's worker offers it."""
    return f"{RESOURCE_PREFIX}{serial}"
