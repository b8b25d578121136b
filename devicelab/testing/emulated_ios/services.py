"""The lockdown services behind StartService, each serving one connection: house_arrest (then AFC on the vended
container), installation_proxy, diagnostics_relay (the IORegistry battery entry) and mobile_image_mounter. The
replies carry the keys and error codes pymobiledevice3's clients read (services/house_arrest.py,
installation_proxy.py, diagnostics.py, mobile_image_mounter.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devicelab.testing.emulated_ios._wire import Conn, recv_plist_be, send_plist_be
from devicelab.testing.emulated_ios.afc import AfcServer
from devicelab.testing.emulated_ios.apps import InstallError

if TYPE_CHECKING:
    from devicelab.testing.emulated_ios.phone import EmulatedIPhone

# installd's progress stages for an install, with the percentages it reports
_INSTALL_STAGES = (("CreatingStagingDirectory", 5), ("ExtractingPackage", 15), ("InspectingPackage", 20),
                   ("PreflightingApplication", 30), ("VerifyingApplication", 40), ("CreatingContainer", 50),
                   ("InstallingApplication", 60), ("PostflightingApplication", 70), ("SandboxingApplication", 80),
                   ("GeneratingApplicationMap", 90))


def serve_house_arrest(conn: Conn, phone: EmulatedIPhone) -> None:
    request = recv_plist_be(conn)
    if request is None:
        return
    command = request.get("Command")
    bundle_id = str(request.get("Identifier", ""))
    app = phone.apps.get(bundle_id)
    error: str | None = None
    if command not in ("VendContainer", "VendDocuments"):
        error = "UnknownCommand"
    elif app is None:
        error = "ApplicationLookupFailed"
    elif command == "VendContainer" and not app.development_signed:
        # the whole container is vended only to apps signed with get-task-allow (development builds)
        error = "InstallationLookupFailed"
    elif command == "VendDocuments" and not app.file_sharing:
        error = "InstallationLookupFailed"
    if error is not None or app is None:
        send_plist_be(conn, {"Error": error})
        return
    send_plist_be(conn, {"Status": "Complete"})
    # VendDocuments shows the container with only its Documents folder in it (pymobiledevice3's shell starts
    # in /Documents), so the same device paths work for both vends
    AfcServer(conn, app.container, only="Documents" if command == "VendDocuments" else None).serve()


def serve_installation_proxy(conn: Conn, phone: EmulatedIPhone) -> None:
    while True:
        request = recv_plist_be(conn)
        if request is None:
            return
        command = request.get("Command")
        options = request.get("ClientOptions") or {}
        if command in ("Install", "Upgrade"):
            _install(conn, phone, str(request.get("PackagePath", "")))
        elif command == "Uninstall":
            bundle_id = str(request.get("ApplicationIdentifier", ""))
            send_plist_be(conn, {"Status": "RemovingApplication", "PercentComplete": 50})
            # installd completes an uninstall of an app that is not there as well
            phone.apps.uninstall(bundle_id)
            send_plist_be(conn, {"Status": "Complete"})
        elif command == "Lookup":
            send_plist_be(conn, {"LookupResult": {e["CFBundleIdentifier"]: e for e in _entries(phone, options)},
                                 "Status": "Complete"})
        elif command == "Browse":
            entries = _entries(phone, options)
            send_plist_be(conn, {"Status": "BrowsingApplications", "CurrentIndex": 0,
                                 "CurrentAmount": len(entries), "Total": len(entries), "CurrentList": entries})
            send_plist_be(conn, {"Status": "Complete"})
        elif command == "CheckCapabilitiesMatch":
            send_plist_be(conn, {"LookupResult": True, "Status": "Complete"})
        else:
            send_plist_be(conn, {"Error": "UnknownCommand", "ErrorDescription": f"Unknown command {command}"})


def _entries(phone: EmulatedIPhone, options: dict[str, Any]) -> list[dict[str, Any]]:
    if options.get("ApplicationType", "Any") not in ("Any", "User"):
        return []  # the emulated phone has no system apps
    wanted = options.get("BundleIDs")
    attributes = options.get("ReturnAttributes")
    entries: list[dict[str, Any]] = []
    for app in phone.apps.all():
        if wanted is not None and app.bundle_id not in wanted:
            continue
        entry = app.lookup_entry()
        if attributes:
            entry = {k: v for k, v in entry.items() if k in attributes or k == "CFBundleIdentifier"}
        entries.append(entry)
    return entries


def _install(conn: Conn, phone: EmulatedIPhone, package_path: str) -> None:
    package = phone.media_path(package_path)
    if package is None or not package.exists():
        send_plist_be(conn, {"Error": "PackageExtractionFailed",
                             "ErrorDescription": f"Could not find the package at {package_path}"})
        return
    for stage, percent in _INSTALL_STAGES[:3]:
        send_plist_be(conn, {"Status": stage, "PercentComplete": percent})
    try:
        phone.apps.install_package(package)
    except InstallError as e:
        send_plist_be(conn, {"Error": e.code, "ErrorDescription": e.description})
        return
    for stage, percent in _INSTALL_STAGES[3:]:
        send_plist_be(conn, {"Status": stage, "PercentComplete": percent})
    send_plist_be(conn, {"Status": "Complete"})


def serve_diagnostics(conn: Conn, phone: EmulatedIPhone) -> None:
    while True:
        request = recv_plist_be(conn)
        if request is None:
            return
        kind = request.get("Request")
        if kind == "IORegistry":
            battery = request.get("EntryClass") == "IOPMPowerSource" or \
                request.get("EntryName") == "AppleSmartBattery"
            busy = phone.apps.busy(phone.battery.busy_cores) if battery and phone.battery.busy_extra_ma else False
            registry = phone.battery.ioregistry(busy) if battery else {}
            send_plist_be(conn, {"Status": "Success", "Diagnostics": {"IORegistry": registry}})
        elif kind == "MobileGestalt":
            send_plist_be(conn, {"Status": "Success",
                                 "Diagnostics": {"MobileGestalt": {"Status": "MobileGestaltDeprecated"}}})
        elif kind == "Goodbye":
            send_plist_be(conn, {"Status": "Success"})
            return
        else:
            send_plist_be(conn, {"Status": "UnknownRequest"})


def serve_image_mounter(conn: Conn, phone: EmulatedIPhone) -> None:
    while True:
        request = recv_plist_be(conn)
        if request is None:
            return
        command = request.get("Command")
        mounted = not phone.faults.image_not_mounted
        if command == "LookupImage":
            signature = [phone.developer_image_signature] if mounted else []
            send_plist_be(conn, {"ImageSignature": signature, "Status": "Complete"})
        elif command == "CopyDevices":
            entries = [{"DiskImageType": "Developer", "IsMounted": True,
                        "ImageSignature": phone.developer_image_signature}] if mounted else []
            send_plist_be(conn, {"EntryList": entries, "Status": "Complete"})
        elif command == "QueryDeveloperModeStatus":
            send_plist_be(conn, {"DeveloperModeStatus": not phone.faults.developer_mode_off,
                                 "Status": "Complete"})
        elif command == "Hangup":
            send_plist_be(conn, {"Status": "Complete"})
            return
        else:
            # mounting needs a real developer disk image and Apple's signing server: not emulated
            send_plist_be(conn, {"Error": "UnsupportedCommand", "Status": "Failure"})

