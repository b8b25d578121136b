"""Test doubles built from real parts: an emulated Android phone that speaks the device side of the ADB protocol, and
an emulated iPhone (emulated_ios) that speaks usbmuxd's, lockdownd's and their services' protocols to pymobiledevice3."""
