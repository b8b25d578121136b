"""devicelab: benchmark and profile mobile inference engines on real devices and on the host.

Kept import-light on purpose: the host runner imports engine plug-ins from this package inside the
measured process, so nothing heavy may load here.
"""

__version__ = "0.1.0"
