"""What a user meets with an iPhone, each as one line naming the fix. pymobiledevice3's exceptions are matched by
class name (and the library is imported only where it is needed), so the words stay testable on their own."""

from __future__ import annotations

from devicelab.devices.base import TransportLostError

TUNNELD = "sudo pymobiledevice3 remote tunneld"


class IOSSetupError(TransportLostError):
    """The iPhone cannot serve devicelab until the user does something (the message says what). Found before a
    run, the run is refused (exit 2); during a run its configs become infra-failed rows with this line, and
    `--resume` runs them once it is fixed."""


def usbmuxd_not_running(address: str | None, error: object) -> str:
    where = address or "the system socket (/var/run/usbmuxd)"
    return (f"usbmuxd is not running ({where}: {error}): start it (Linux: `sudo systemctl start usbmuxd`; macOS "
            "runs it always), or set usbmux_address in devices.yaml / USBMUXD_SOCKET_ADDRESS")


def not_attached(udid: str, listed: list[str]) -> str:
    return (f"iPhone {udid} is not attached (usbmuxd lists: {', '.join(listed) or 'none'}): connect it with a cable "
            "and unlock it")


def not_paired(udid: str) -> str:
    return (f"iPhone {udid} is not paired with this computer: unlock it, tap Trust on its \"Trust This Computer?\" "
            "dialog, and run again")


def trust_pending(udid: str) -> str:
    return (f"iPhone {udid} shows the \"Trust This Computer?\" dialog: unlock it, tap Trust and enter the passcode, "
            "then run again")


def locked(udid: str) -> str:
    return (f"iPhone {udid} is locked: unlock it and keep it unlocked for the run (Settings > Display & Brightness "
            "> Auto-Lock > Never)")


def developer_mode_off(udid: str) -> str:
    return (f"Developer Mode is off on iPhone {udid}: turn it on in Settings > Privacy & Security > Developer Mode "
            "(the iPhone restarts; confirm after the restart), then run again")


def image_not_mounted(udid: str, major: int) -> str:
    extra = (" — on iOS 17+ the personalized image is signed per device by Apple's server, so auto-mount needs this "
             "computer to reach Apple" if major >= 17 else "")
    return (f"the developer disk image is not mounted on iPhone {udid}: run `pymobiledevice3 mounter auto-mount`"
            f"{extra}")


def tunnel_missing(udid: str, version: str, error: object = None) -> str:
    why = f" ({error})" if error else ""
    return (f"iPhone {udid} runs iOS {version}: its developer services need the RSD tunnel, and no tunnel serves it"
            f"{why}: start `{TUNNELD}` and keep it running")


def app_unusable(udid: str, bundle_id: str, error: object) -> str:
    return (f"the runner app {bundle_id} is not installed on iPhone {udid} or its signature expired ({error}): "
            "re-sign runner_app with a valid provisioning profile (a free Apple ID's lasts 7 days) and run again "
            "(devicelab installs it when its content changes)")


def classify(error: BaseException, udid: str, version: str, bundle_id: str | None = None,
             address: str | None = None) -> str | None:
    """The one line for a pymobiledevice3 exception a user can fix, or None for anything else."""
    names = {c.__name__ for c in type(error).__mro__}
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if "ConnectionFailedToUsbmuxdError" in names:
        return usbmuxd_not_running(address, error)
    if "PairingDialogResponsePendingError" in names:
        return trust_pending(udid)
    if names & {"NotPairedError", "UserDeniedPairingError", "InvalidHostIDError", "FatalPairingError",
                "NotTrustedError"}:
        return not_paired(udid)
    if names & {"PasswordRequiredError", "PasscodeRequiredError"}:
        return locked(udid)
    if "DeveloperModeIsNotEnabledError" in names:
        return developer_mode_off(udid)
    if names & {"RSDRequiredError", "TunneldConnectionError"}:
        return tunnel_missing(udid, version, error)
    if names & {"InvalidServiceError", "NotMountedError", "DeveloperDiskImageNotFoundError"}:
        return image_not_mounted(udid, major)
    if names & {"AppNotInstalledError", "LaunchingApplicationError"} and bundle_id:
        return app_unusable(udid, bundle_id, error)
    return None
