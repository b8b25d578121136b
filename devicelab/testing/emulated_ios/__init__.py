"""An emulated iPhone for tests: the real pymobiledevice3 client talks to it over loopback with its real wire
protocols — usbmuxd (plist protocol on TCP), lockdownd (with TLS from a self-minted pair record), AFC and
house_arrest, installation_proxy, diagnostics_relay, mobile_image_mounter, and DVT (dvt.py) posing as iOS 16.
The replies are reconstructed from pymobiledevice3's client source; no real iPhone was used to record them.

    mux = EmulatedUsbmuxd()                      # mux.address == "127.0.0.1:PORT" (USBMUXD_SOCKET_ADDRESS)
    phone = EmulatedIPhone(root=tmp / "iphone")  # udid, product_type, product_version... are parameters
    mux.attach(phone)                            # mux.detach(phone) pulls the cable mid-connection too
    phone.faults.locked = True                   # see Faults; phone.battery holds the IORegistry battery
    mux.close(); phone.close()
"""

from devicelab.testing.emulated_ios.apps import InstalledApp, LaunchError
from devicelab.testing.emulated_ios.phone import BatteryState, EmulatedIPhone, Faults
from devicelab.testing.emulated_ios.usbmuxd import EmulatedUsbmuxd

__all__ = ["BatteryState", "EmulatedIPhone", "EmulatedUsbmuxd", "Faults", "InstalledApp", "LaunchError"]
