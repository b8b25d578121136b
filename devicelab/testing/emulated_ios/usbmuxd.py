"""An emulated usbmuxd on loopback TCP: the plist protocol that pymobiledevice3's `PlistMuxConnection` speaks
(4-byte little-endian length including itself, `<III` version/message/tag header, XML plist body).

Requests: ReadBUID, ListDevices, Listen (then Attached/Detached pushed with tag 0), Connect (after a Result of 0
the socket is a raw byte pipe to the device port), ReadPairRecord, SavePairRecord, DeletePairRecord.
"""

from __future__ import annotations

import plistlib
import socket
import struct
import threading
import uuid
from typing import TYPE_CHECKING, Any

from devicelab.testing.emulated_ios._wire import Conn, ConnClosedError

if TYPE_CHECKING:
    from devicelab.testing.emulated_ios.phone import EmulatedIPhone

PLIST_VERSION = 1
MESSAGE_RESULT = 1
MESSAGE_PLIST = 8
HEADER = struct.Struct("<IIII")  # length, version, message, tag

# usbmuxd's result codes (usbmux.py UsbmuxdResult): the client maps each to its exception
RESULT_OK = 0
RESULT_BADCOMMAND = 1
RESULT_BADDEV = 2
RESULT_CONNREFUSED = 3

APPLE_PRODUCT_ID_IPHONE = 0x12A8  # the USB product id every iPhone since the 5 reports


class EmulatedUsbmuxd:
    """usbmuxd on 127.0.0.1:0; `address` is what USBMUXD_SOCKET_ADDRESS / `usbmux_address=` take.

    `close()` is also the "usbmuxd not running" fault: the port then refuses connections, which pymobiledevice3
    reports as ConnectionFailedToUsbmuxdError."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = socket.create_server((host, port))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self.buid = str(uuid.uuid4()).upper()
        self._lock = threading.Lock()
        self._devices: dict[int, EmulatedIPhone] = {}
        self._next_id = 1
        self._listeners: list[Conn] = []
        self._clients: set[Conn] = set()
        # records the client saved with SavePairRecord (a host that paired through this usbmuxd)
        self._saved_records: dict[str, bytes] = {}
        # False: this usbmuxd holds no record of the phones' pairing with this host (a Linux host paired through
        # pymobiledevice3's own folder), so ReadPairRecord finds nothing and the client falls back to the folder
        self.serves_pair_records = True
        self._closed = False
        self.requests: list[str] = []  # every request's MessageType, in arrival order (what clients asked)
        self._thread = threading.Thread(target=self._accept_loop, name="usbmuxd-accept", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def attach(self, phone: EmulatedIPhone) -> int:
        """Plug the phone in: it is listed and Listen subscribers get Attached. Returns its DeviceID."""
        with self._lock:
            for device_id, attached in self._devices.items():
                if attached is phone:
                    return device_id  # already plugged in
            device_id = self._next_id
            self._next_id += 1
            self._devices[device_id] = phone
            listeners = list(self._listeners)
        phone._attached(self)
        for conn in listeners:
            self._push(conn, self._attached_message(device_id, phone))
        return device_id

    def detach(self, phone: EmulatedIPhone) -> None:
        """Pull the cable: the phone disappears from ListDevices, Listen subscribers get Detached, and every
        connection piped to the phone is cut mid-stream."""
        with self._lock:
            ids = [device_id for device_id, p in self._devices.items() if p is phone]
            for device_id in ids:
                del self._devices[device_id]
            listeners = list(self._listeners)
        phone._detached()
        for device_id in ids:
            for conn in listeners:
                self._push(conn, {"MessageType": "Detached", "DeviceID": device_id})

    def close(self) -> None:
        """Stop usbmuxd: refuse new connections and drop the open ones (pipes to phones included)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
            self._listeners.clear()
        # shutdown first: on Linux a close() alone leaves the socket listening while the accept thread is blocked
        # in accept(), and "not running" must mean connection refused
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=5)
        for conn in clients:
            conn.abort()

    def __enter__(self) -> EmulatedUsbmuxd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ server

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            conn = Conn(sock)
            with self._lock:
                if self._closed:
                    conn.abort()
                    return
                self._clients.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="usbmuxd-client", daemon=True).start()

    def _serve(self, conn: Conn) -> None:
        piped = False
        try:
            while True:
                packet = self._read_packet(conn)
                if packet is None:
                    return
                tag, message = packet
                piped = self._handle(conn, tag, message)
                if piped:
                    return
        except (ConnClosedError, ValueError, plistlib.InvalidFileException):
            return
        finally:
            with self._lock:
                self._clients.discard(conn)
                if conn in self._listeners:
                    self._listeners.remove(conn)
            if not piped:
                conn.abort()

    @staticmethod
    def _read_packet(conn: Conn) -> tuple[int, dict[str, Any]] | None:
        try:
            length, version, message_type, tag = HEADER.unpack(conn.recv_exact(HEADER.size))
        except ConnClosedError:
            return None
        body = conn.recv_exact(length - HEADER.size) if length > HEADER.size else b""
        if version != PLIST_VERSION or message_type != MESSAGE_PLIST:
            # the binary protocol is what old iTunes spoke; pymobiledevice3 probes with a plist ReadBUID
            raise ValueError(f"unsupported usbmuxd packet version={version} message={message_type}")
        value = plistlib.loads(body)
        if not isinstance(value, dict):
            raise ValueError("usbmuxd request is not a dictionary")
        return tag, value

    @staticmethod
    def _send(conn: Conn, tag: int, message: dict[str, Any]) -> None:
        body = plistlib.dumps(message, fmt=plistlib.FMT_XML)
        conn.sendall(HEADER.pack(HEADER.size + len(body), PLIST_VERSION, MESSAGE_PLIST, tag) + body)

    def _push(self, conn: Conn, message: dict[str, Any]) -> None:
        try:
            self._send(conn, 0, message)
        except ConnClosedError:
            with self._lock:
                if conn in self._listeners:
                    self._listeners.remove(conn)

    def _result(self, conn: Conn, tag: int, number: int) -> None:
        self._send(conn, tag, {"MessageType": "Result", "Number": number})

    @staticmethod
    def _attached_message(device_id: int, phone: EmulatedIPhone) -> dict[str, Any]:
        return {
            "MessageType": "Attached",
            "DeviceID": device_id,
            "Properties": {
                "ConnectionType": "USB",
                "DeviceID": device_id,
                "LocationID": 0x14100000 + device_id,
                "ProductID": APPLE_PRODUCT_ID_IPHONE,
                "SerialNumber": phone.udid,
                "ConnectionSpeed": 480000000,
                "USBSerialNumber": phone.udid.replace("-", ""),
            },
        }

    def _find(self, serial: str) -> EmulatedIPhone | None:
        with self._lock:
            for phone in self._devices.values():
                if phone.udid.replace("-", "") == serial.replace("-", ""):
                    return phone
        return None

    def _handle(self, conn: Conn, tag: int, message: dict[str, Any]) -> bool:
        """Answer one request; True when the socket now belongs to a device port (Connect succeeded)."""
        kind = message.get("MessageType")
        with self._lock:
            self.requests.append(str(kind))
        if kind == "ReadBUID":
            self._send(conn, tag, {"BUID": self.buid})
        elif kind == "ListDevices":
            with self._lock:
                devices = sorted(self._devices.items())
            self._send(conn, tag, {"DeviceList": [self._attached_message(i, p) for i, p in devices]})
        elif kind == "Listen":
            self._result(conn, tag, RESULT_OK)
            with self._lock:
                self._listeners.append(conn)
                devices = sorted(self._devices.items())
            for device_id, phone in devices:
                self._push(conn, self._attached_message(device_id, phone))
        elif kind == "Connect":
            return self._connect(conn, tag, message)
        elif kind == "ReadPairRecord":
            record = self._pair_record(str(message.get("PairRecordID", "")))
            if record is None:
                # what usbmuxd answers for a device this host never paired with: no PairRecordData
                self._result(conn, tag, RESULT_BADDEV)
            else:
                self._send(conn, tag, {"PairRecordData": record})
        elif kind == "SavePairRecord":
            data = message.get("PairRecordData")
            if not isinstance(data, bytes):
                self._result(conn, tag, RESULT_BADCOMMAND)
            else:
                with self._lock:
                    self._saved_records[str(message.get("PairRecordID", ""))] = data
                self._result(conn, tag, RESULT_OK)
        elif kind == "DeletePairRecord":
            with self._lock:
                self._saved_records.pop(str(message.get("PairRecordID", "")), None)
            self._result(conn, tag, RESULT_OK)
        else:
            self._result(conn, tag, RESULT_BADCOMMAND)
        return False

    def _pair_record(self, serial: str) -> bytes | None:
        if not self.serves_pair_records:
            return None
        with self._lock:
            saved = self._saved_records.get(serial)
        if saved is not None:
            return saved
        phone = self._find(serial)
        if phone is None:
            return None
        record = phone.host_pair_record()
        return None if record is None else plistlib.dumps(record)

    def _connect(self, conn: Conn, tag: int, message: dict[str, Any]) -> bool:
        device_id = message.get("DeviceID")
        with self._lock:
            phone = self._devices.get(device_id) if isinstance(device_id, int) else None
        if phone is None:
            self._result(conn, tag, RESULT_BADDEV)
            return False
        # PortNumber travels in network byte order inside the plist (the client sends socket.htons(port)), as
        # libusbmuxd does; usbmuxd swaps it back
        port = socket.ntohs(int(message.get("PortNumber", 0)) & 0xFFFF)
        handle = phone.open_port(port)
        if handle is None:
            self._result(conn, tag, RESULT_CONNREFUSED)
            return False
        with self._lock:
            self._clients.discard(conn)
        try:
            self._result(conn, tag, RESULT_OK)
        except ConnClosedError:
            handle.cancel()  # the client left before the pipe existed: release what open_port opened
            return True
        handle.serve(conn)
        return True
