"""What Android itself says about the conditions a config ran in, read from the states taken around it (pure): the
thermal status and the fixed performance mode, as Result extensions and notes (Transport.result_extras)."""

from __future__ import annotations

from typing import Any

# android.os.Temperature's THROTTLING_* constants, by value (ThermalManagerService's dump prints the number).
THERMAL_STATUS_NAMES = ("NONE", "LIGHT", "MODERATE", "SEVERE", "CRITICAL", "EMERGENCY", "SHUTDOWN")
# android.os.PowerManager documents LIGHT as light throttling "where UX is not impacted" and MODERATE as moderate
# throttling "where UX is not largely impacted": from MODERATE on the mitigation is meant to be felt. LIGHT is common on
# any warm phone and is recorded, not flagged.
THROTTLED_FROM = 2

# PowerManagerShellCommand gained set-fixed-performance-mode-enabled in Android 11.
FIXED_PERFORMANCE_SDK = 30


def thermal_status_name(status: int) -> str:
    """"3 (SEVERE)"; a number outside 0-6 stays a bare number."""
    return f"{status} ({THERMAL_STATUS_NAMES[status]})" if 0 <= status < len(THERMAL_STATUS_NAMES) else str(status)


def thermal_extras(before: dict[str, Any] | None, after: dict[str, Any] | None
                   ) -> tuple[dict[str, Any], list[str], bool]:
    """(ext, notes, throttled) from the thermal status in the states around a config: ext `thermal_status`
    {before, after} when either was read; a note and throttled when either was MODERATE (2) or worse."""
    seen = {"before": (before or {}).get("thermal_status"), "after": (after or {}).get("thermal_status")}
    statuses = [v for v in seen.values() if isinstance(v, int) and not isinstance(v, bool)]
    if not statuses:
        return {}, [], False
    ext = {"thermal_status": {k: v if isinstance(v, int) and not isinstance(v, bool) else None
                              for k, v in seen.items()}}
    if max(statuses) < THROTTLED_FROM:
        return ext, [], False
    said = " and ".join(f"{thermal_status_name(v)} {when} the config" for when, v in
                        (("before", ext["thermal_status"]["before"]), ("after", ext["thermal_status"]["after"]))
                        if v is not None)
    return ext, [f"Android's thermal status was {said}: from {thermal_status_name(THROTTLED_FROM)} on the platform "
                 "is throttling, so the row counts as throttled"], True


def fixed_performance_extras(boot_id: str | None, before: dict[str, Any] | None, after: dict[str, Any] | None
                             ) -> tuple[dict[str, Any], list[str]]:
    """(ext, notes) for a config run after devicelab turned fixed performance mode on, on the boot `boot_id`. The
    mode cannot be read back (PowerManagerService passes it to the power HAL and keeps no record), but a reboot ends
    it: a state with another boot id means the config ran without it."""
    ids = {s.get("boot_id") for s in (before, after) if s} - {None}
    if boot_id is not None and ids - {boot_id}:
        return {"fixed_performance": False}, ["the phone rebooted after devicelab turned fixed performance mode on "
                                              "(its boot id changed): this config ran without it"]
    return {"fixed_performance": True}, []
