"""Test doubles built from real parts: an emulated Android phone that speaks the device side of the ADB protocol."""
