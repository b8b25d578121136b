"""Run an emulated usbmuxd with one emulated iPhone attached, for trying devicelab's iOS kind without a phone.

    python -m devicelab.testing.emulated_ios --root DIR [--udid UDID] [--product-type T] [--product-version V]
                                             [--build-version B] [--pairing-folder DIR] [--install APP]...

The first line on stdout is the usbmuxd address (127.0.0.1:PORT): export it as USBMUXD_SOCKET_ADDRESS. Everything
else goes to stderr. SIGUSR1 detaches the phone (as a pulled cable does) until SIGUSR2; SIGTERM/SIGINT stop.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devicelab.testing.emulated_ios.apps import InstallError
from devicelab.testing.emulated_ios.phone import EmulatedIPhone
from devicelab.testing.emulated_ios.usbmuxd import EmulatedUsbmuxd
from devicelab.testing.signals import catch_signals, serve_signals


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devicelab.testing.emulated_ios", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder holding the phone's files")
    parser.add_argument("--udid", default="00008110-000A1B2C3D4E5F60")
    parser.add_argument("--product-type", default="iPhone14,2")
    parser.add_argument("--product-version", default="16.7.2")
    parser.add_argument("--build-version", default="20H115")
    parser.add_argument("--pairing-folder", type=Path,
                        help="also write the host's pair record here (pymobiledevice3's pairing_records_cache_folder)")
    parser.add_argument("--install", type=Path, action="append", default=[], help="an .app folder or .ipa to "
                                                                                  "install before starting")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wake_r = catch_signals()  # before the server threads: they never see a signal
    err = sys.stderr
    phone = EmulatedIPhone(root=args.root, udid=args.udid, product_type=args.product_type,
                           product_version=args.product_version, build_version=args.build_version)
    try:
        for package in args.install:
            try:
                app = phone.apps.install_package(package)
            except (InstallError, OSError) as e:
                print(f"emulated_ios: --install {package}: {e}", file=err)
                return 2
            print(f"emulated_ios: installed {app.bundle_id}", file=err)
        if args.pairing_folder is not None:
            print(f"emulated_ios: pair record {phone.pair_record_folder(args.pairing_folder)}", file=err)
        mux = EmulatedUsbmuxd()
        try:
            mux.attach(phone)
            print(mux.address, flush=True)
            print(f"emulated_ios: usbmuxd on {mux.address}; UDID {phone.udid} (iOS {phone.product_version}); "
                  f"root {phone.root}", file=err, flush=True)

            def drop() -> None:
                print("emulated_ios: SIGUSR1: phone detached until SIGUSR2", file=err, flush=True)
                mux.detach(phone)

            def restore() -> None:
                print("emulated_ios: SIGUSR2: phone attached", file=err, flush=True)
                mux.attach(phone)

            return serve_signals(wake_r, drop, restore)
        finally:
            mux.close()
    finally:
        phone.close()


if __name__ == "__main__":
    sys.exit(main())
