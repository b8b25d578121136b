"""The emulated iPhone's DVT service: the device side of Apple's Instruments remote server (the DTX protocol), so
that the real pymobiledevice3 client (`DvtProvider`, `ProcessControl`, `DeviceInfo`, `Sysmontap`, `EnergyMonitor`)
works against it on loopback.

    serve_dvt(conn, device)   # conn: a socket or ssl.SSLSocket (or anything with recv and sendall); device: DvtDevice

The wire format was reconstructed from pymobiledevice3's own client (no iPhone was used):

* A message travels as fragments. A fragment header is 32 bytes, little endian: magic 0x1F3D5B79, header size,
  fragment index and count (u16 each), body size, message identifier, conversation index (0 = a request or
  notification, request+1 = its reply), channel code (signed) and transport flags (bit 0: the sender expects a
  reply). A message longer than one fragment is sent as a header-only first fragment whose size field is the whole
  message's size, then the body fragments.
* A message body starts with a 16-byte header (message type, aux size, aux+payload size), then the aux (the
  arguments of a method call, as a "primitive dictionary" of NULL-keyed values; objects travel as
  NSKeyedArchiver archives inside buffer values), then the payload (an archived object: the selector of a call,
  or a reply's value).
* Channel 0 carries the handshake (`_notifyOfPublishedCapabilities:` both ways) and opens channels
  (`_requestChannelWithCode:identifier:`). The client names a channel with a positive code; the server sends its
  own notifications on it with the code negated, and replies with the code it received.

Services: processcontrol (launch, sendSignal:toPid: with SIGKILL, killPid:), deviceinfo (isRunningPid:, the sysmon
attribute lists), sysmontap (setConfig:, start, stop; a sample every `ur` milliseconds) and the Xcode energy gauge
(unitless scores from the device). Everything else is answered the way the client expects an unknown selector to
be answered ("... - it does not respond to the selector").

`HostProcesses` is the reference device: its "apps" are host programs, and its samples are read from /proc.
"""

from __future__ import annotations

import os
import plistlib
import queue
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# --- wire constants (DTX) -------------------------------------------------------------------------------------------

FRAGMENT_MAGIC = 0x1F3D5B79
# magic, header size, fragment index, count, body size, message id, conversation index, channel code, flags
FRAGMENT_HEADER = struct.Struct("<IIHHIIIiI")
PAYLOAD_HEADER = struct.Struct("<BBBBIII")  # type, 3 reserved bytes, aux size, aux+payload size, flags
MAX_FRAGMENT_BODY = 128 * 1024  # the client's own fragment limit: larger messages are split
MAX_MESSAGE = 128 * 1024 * 1024  # the client refuses larger messages; so does this server
EXPECTS_REPLY = 1

MSG_OK, MSG_DATA, MSG_DISPATCH, MSG_OBJECT, MSG_ERROR = 0, 1, 2, 3, 4

# Primitive-dictionary value tags (the aux of a message).
P_STRING, P_BUFFER, P_INT32, P_INT64, P_DOUBLE, P_NULL, P_DICT = 1, 2, 3, 6, 9, 10, 0xF0
P_DICT_MAGIC = 0x1F0  # the header word the client writes (and most often seen from devices)

PROCESSCONTROL = "com.apple.instruments.server.services.processcontrol"
DEVICEINFO = "com.apple.instruments.server.services.deviceinfo"
SYSMONTAP = "com.apple.instruments.server.services.sysmontap"
ENERGY = "com.apple.xcode.debug-gauge-data-providers.Energy"
SERVICES = (PROCESSCONTROL, DEVICEINFO, SYSMONTAP, ENERGY)

# The sysmon attributes this phone can sample (DeviceInfo's sysmonProcessAttributes); Sysmontap rows carry them in
# the order the client configured. No system-wide attribute is emulated.
PROCESS_ATTRIBUTES = ("pid", "name", "physFootprint", "memResidentSize", "cpuUsage")
SYSTEM_ATTRIBUTES: tuple[str, ...] = ()

SIGKILL = 9  # Darwin's number, which is what the client sends (ProcessControl.kill)
DEFAULT_SAMPLE_INTERVAL_MS = 500


class DvtProtocolError(Exception):
    """The peer broke the DTX framing; the connection is dropped, as a device would."""


class ConnectionGoneError(Exception):
    """The connection failed under a send; the server stops."""


class LaunchError(Exception):
    """The device cannot launch an app. `message` becomes the NSError's NSLocalizedFailureReason and
    `code_description` its BSErrorCodeDescription, as FrontBoard reports them ("NotFound" for a missing app)."""

    def __init__(self, message: str, code_description: str = "NotFound") -> None:
        super().__init__(message)
        self.message = message
        self.code_description = code_description


class DvtConnection(Protocol):
    """The connection serve_dvt speaks on. Best a socket.socket or ssl.SSLSocket, whose settimeout (looked up, not
    required) bounds the wait for input while a sysmontap sample is due, so one thread does all the reading and
    writing; an object with only recv and sendall works too, with a thread that receives."""

    def recv(self, bufsize: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...


class DvtDevice(Protocol):
    """What the DVT service needs of the phone it runs on."""

    def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str], kill_existing: bool) -> int:
        """Start the app; its pid. Raises LaunchError, this module's or a phone's own class of that name (missing
        app, expired signature...)."""
        ...

    def kill(self, pid: int) -> None:
        """SIGKILL the process (nothing happens when it is gone)."""
        ...

    def is_running(self, pid: int) -> bool: ...

    def processes(self) -> list[dict[str, Any]]:
        """One sysmon row per running app process: pid, name, physFootprint and memResidentSize (bytes), cpuUsage
        (% of one core since the previous call; None the first time)."""
        ...

    def energy(self, pids: list[int]) -> dict[int, dict[str, Any]]:
        """Unitless energy-impact scores by pid, for the running ones."""
        ...


# --- NSKeyedArchiver ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NSError:
    """An NSError to archive (a reply of type ERROR carries one)."""

    domain: str
    code: int
    user_info: dict[str, Any] = field(default_factory=dict)


_CLASSES = {"NSDictionary": ["NSDictionary", "NSObject"], "NSArray": ["NSArray", "NSObject"],
            "NSError": ["NSError", "NSObject"]}


def archive(obj: Any) -> bytes:
    """`obj` as a binary NSKeyedArchiver plist: str, int, float, bool, bytes inline; dict, list/tuple, NSError as
    objects; None as $null."""
    objects: list[Any] = ["$null"]
    class_uids: dict[str, plistlib.UID] = {}

    def class_uid(name: str) -> plistlib.UID:
        if name not in class_uids:
            objects.append({"$classname": name, "$classes": _CLASSES[name]})
            class_uids[name] = plistlib.UID(len(objects) - 1)
        return class_uids[name]

    def add(value: Any) -> plistlib.UID:
        if value is None:
            return plistlib.UID(0)
        if isinstance(value, (bool, int, float, str, bytes)):
            objects.append(value)
            return plistlib.UID(len(objects) - 1)
        index = len(objects)
        objects.append(None)  # reserved: children follow their parent, as NSKeyedArchiver orders them
        if isinstance(value, NSError):
            body: dict[str, Any] = {"NSDomain": add(value.domain), "NSCode": value.code,
                                    "NSUserInfo": add(value.user_info), "$class": class_uid("NSError")}
        elif isinstance(value, Mapping):
            keys = [add(k) for k in value]
            body = {"NS.keys": keys, "NS.objects": [add(v) for v in value.values()],
                    "$class": class_uid("NSDictionary")}
        elif isinstance(value, (list, tuple)):
            body = {"NS.objects": [add(v) for v in value], "$class": class_uid("NSArray")}
        else:
            raise TypeError(f"cannot archive a {type(value).__name__}")
        objects[index] = body
        return plistlib.UID(index)

    root = add(obj)
    return plistlib.dumps({"$version": 100000, "$archiver": "NSKeyedArchiver", "$top": {"root": root},
                           "$objects": objects}, fmt=plistlib.FMT_BINARY, sort_keys=False)


_MAPS = {"NSDictionary", "NSMutableDictionary"}
_LISTS = {"NSArray", "NSMutableArray", "NSSet", "NSMutableSet", "NSOrderedSet", "NSMutableOrderedSet"}


def unarchive(data: bytes) -> Any:
    """The object of an NSKeyedArchiver plist (the Foundation containers and scalars a client sends)."""
    top = plistlib.loads(data)
    if top.get("$archiver") != "NSKeyedArchiver":
        raise ValueError("not an NSKeyedArchiver archive")
    objects: list[Any] = top["$objects"]

    def decode(ref: Any, depth: int = 0) -> Any:
        if depth > 64:
            raise ValueError("archive nests too deeply")
        value = objects[ref.data] if isinstance(ref, plistlib.UID) else ref
        if isinstance(ref, plistlib.UID) and ref.data == 0:
            return None
        if not isinstance(value, dict) or "$class" not in value:
            return value
        name = objects[value["$class"].data]["$classname"]
        if name in _MAPS:
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in zip(value["NS.keys"], value["NS.objects"])}
        if name in _LISTS:
            return [decode(v, depth + 1) for v in value["NS.objects"]]
        if name in ("NSString", "NSMutableString"):
            return decode(value["NS.string"], depth + 1)
        if name in ("NSData", "NSMutableData"):
            return decode(value["NS.data"], depth + 1)
        if name == "NSNull":
            return None
        if name == "NSDate":
            return value["NS.time"]
        raise ValueError(f"cannot decode an archived {name}")

    return decode(top["$top"]["root"])


# --- primitive dictionaries (a message's aux) -----------------------------------------------------------------------


def build_aux(args: Sequence[Any]) -> bytes:
    """Positional arguments as a primitive dictionary: every key NULL, objects archived into buffers."""
    if not args:
        return b""
    body = bytearray()
    for arg in args:
        body += struct.pack("<I", P_NULL)
        if arg is None:
            body += struct.pack("<II", P_BUFFER, 0)
        else:
            blob = archive(arg)
            body += struct.pack("<II", P_BUFFER, len(blob)) + blob
    return struct.pack("<IIQ", P_DICT_MAGIC, 0, len(body)) + bytes(body)


def parse_aux(data: bytes) -> list[Any]:
    """The positional arguments of a primitive dictionary (the client's encoding of a call's arguments)."""
    if not data:
        return []
    magic, _flags, length = struct.unpack_from("<IIQ", data, 0)
    if magic & 0xFF != P_DICT or 16 + length > len(data):
        raise DvtProtocolError(f"aux is not a primitive dictionary (magic {magic:#x})")
    offset, end, args = 16, 16 + length, []
    while offset < end:
        key, offset = _primitive(data, offset)
        value, offset = _primitive(data, offset)
        if key is not _NULL:
            raise DvtProtocolError("aux holds a keyed value; only positional arguments are understood")
        args.append(value)
    return args


_NULL = object()


def _primitive(data: bytes, offset: int) -> tuple[Any, int]:
    (tag,) = struct.unpack_from("<I", data, offset)
    offset += 4
    tag &= 0xFF
    if tag == P_NULL:
        return _NULL, offset
    if tag in (P_STRING, P_BUFFER):
        (n,) = struct.unpack_from("<I", data, offset)
        raw = bytes(data[offset + 4:offset + 4 + n])
        if len(raw) != n:
            raise DvtProtocolError("truncated aux value")
        if tag == P_STRING:
            return raw.decode("utf-8", "replace"), offset + 4 + n
        return (unarchive(raw) if raw else None), offset + 4 + n
    if tag == P_INT32:
        return struct.unpack_from("<i", data, offset)[0], offset + 4
    if tag == P_INT64:
        return struct.unpack_from("<q", data, offset)[0], offset + 8
    if tag == P_DOUBLE:
        return struct.unpack_from("<d", data, offset)[0], offset + 8
    raise DvtProtocolError(f"unknown aux value type {tag:#x}")


# --- messages -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One assembled DTX message as received."""

    type: int
    identifier: int
    conversation: int
    channel: int  # as on the wire
    expects_reply: bool
    aux: bytes
    payload: bytes


def encode_message(msg_type: int, identifier: int, conversation: int, channel: int, *, expects_reply: bool = False,
                   aux: bytes = b"", payload: bytes = b"") -> bytes:
    """The fragments of one message, split at the client's fragment size."""
    body = PAYLOAD_HEADER.pack(msg_type, 0, 0, 0, len(aux), len(aux) + len(payload), 0) + aux + payload
    flags = EXPECTS_REPLY if expects_reply else 0

    def header(index: int, count: int, size: int) -> bytes:
        return FRAGMENT_HEADER.pack(FRAGMENT_MAGIC, FRAGMENT_HEADER.size, index, count, size, identifier,
                                    conversation, channel, flags)

    if len(body) <= MAX_FRAGMENT_BODY:
        return header(0, 1, len(body)) + body
    chunks = [body[i:i + MAX_FRAGMENT_BODY] for i in range(0, len(body), MAX_FRAGMENT_BODY)]
    out = [header(0, len(chunks) + 1, len(body))]
    out += [header(i + 1, len(chunks) + 1, len(c)) + c for i, c in enumerate(chunks)]
    return b"".join(out)


class _Reader:
    """Turns received bytes into whole messages (fragments reassembled)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        # identifier -> (fragment count, declared size, bodies so far, conversation, channel, flags)
        self._partial: dict[int, tuple[int, int, list[bytes], int, int, int]] = {}

    def feed(self, data: bytes) -> list[Message]:
        """The messages `data` completes, in order."""
        self._buf += data
        messages = []
        while len(self._buf) >= FRAGMENT_HEADER.size:
            raw = bytes(self._buf[:FRAGMENT_HEADER.size])
            magic, hsize, index, count, size, ident, conv, channel, flags = FRAGMENT_HEADER.unpack(raw)
            if magic != FRAGMENT_MAGIC or hsize < FRAGMENT_HEADER.size or index >= count or size > MAX_MESSAGE:
                raise DvtProtocolError(f"bad fragment header {raw.hex()}")
            first_of_many = count > 1 and index == 0  # header only: its size is the whole message's
            end = hsize + (0 if first_of_many else size)
            if len(self._buf) < end:
                break
            body = bytes(self._buf[hsize:end])
            del self._buf[:end]
            if first_of_many:
                if ident in self._partial:
                    raise DvtProtocolError(f"message {ident} started twice")
                self._partial[ident] = (count, size, [], conv, channel, flags)
                continue
            if count > 1:
                if ident not in self._partial:
                    raise DvtProtocolError(f"fragment {index} of message {ident}, which never started")
                total_count, total, parts, conv, channel, flags = self._partial[ident]
                parts.append(body)
                if len(parts) < total_count - 1:
                    continue
                del self._partial[ident]
                body = b"".join(parts)
                if len(body) != total:
                    raise DvtProtocolError(f"message {ident}: {len(body)} bytes assembled, {total} declared")
            messages.append(self._parse(body, ident, conv, channel, flags))
        return messages

    @staticmethod
    def _parse(body: bytes, ident: int, conv: int, channel: int, flags: int) -> Message:
        if len(body) < PAYLOAD_HEADER.size:
            raise DvtProtocolError(f"message {ident} is shorter than its header")
        msg_type, _a, _b, _c, aux_size, total, _flags = PAYLOAD_HEADER.unpack_from(body)
        if total != len(body) - PAYLOAD_HEADER.size or aux_size > total:
            raise DvtProtocolError(f"message {ident} declares inconsistent sizes")
        start = PAYLOAD_HEADER.size
        return Message(msg_type, ident, conv, channel, bool(flags & EXPECTS_REPLY), body[start:start + aux_size],
                       body[start + aux_size:])


# --- the server -----------------------------------------------------------------------------------------------------


def _unrecognized(selector: str) -> NSError:
    # The client turns exactly this description into its UnrecognizedSelectorError.
    return NSError("DTXMessage", 1, {"NSLocalizedDescription":
                                     f"Unable to invoke {selector!r} - it does not respond to the selector"})


@dataclass
class _Tap:
    """A started sysmontap channel: what to sample, how often, and when next."""

    channel: int
    attributes: list[str]
    interval_s: float
    due: float  # time.monotonic() of the next message


class _Server:
    """One DTX connection: channel bookkeeping, dispatch, replies and the taps' samples.

    Everything runs on the calling thread, reads and writes alike: the connection may be an ssl.SSLSocket (lockdown
    wraps DVT in TLS), and OpenSSL forbids one connection being read and written from two threads at once. Between
    messages the server waits for input only until the next sample is due."""

    def __init__(self, conn: DvtConnection, device: DvtDevice) -> None:
        self.conn = conn
        self.device = device
        self._next_id = 1
        self.channels: dict[int, str] = {0: "ctrl"}
        self._tap_configs: dict[int, dict[str, Any]] = {}
        self._taps: dict[int, _Tap] = {}

    # sending

    def _send(self, msg_type: int, channel: int, *, identifier: int = 0, conversation: int = 0,
              aux: bytes = b"", payload: bytes = b"", expects_reply: bool = False) -> None:
        if identifier == 0:
            identifier = self._next_id
            self._next_id += 1
        data = encode_message(msg_type, identifier, conversation, channel, expects_reply=expects_reply, aux=aux,
                              payload=payload)
        try:
            self.conn.sendall(data)
        except Exception as e:  # a wrapper may raise its own error for a closed connection
            raise ConnectionGoneError(str(e)) from e

    def notify(self, channel: int, payload: Any) -> None:
        """An OBJECT notification on a channel the client opened (the client expects its code negated)."""
        self._send(MSG_OBJECT, -channel, payload=archive(payload))

    def reply(self, request: Message, result: Any) -> None:
        conv = request.conversation + 1
        if isinstance(result, NSError):
            self._send(MSG_ERROR, request.channel, identifier=request.identifier, conversation=conv,
                       payload=archive(result))
        elif result is None:
            self._send(MSG_OK, request.channel, identifier=request.identifier, conversation=conv)
        else:
            self._send(MSG_OBJECT, request.channel, identifier=request.identifier, conversation=conv,
                       payload=archive(result))

    # receiving

    def run(self) -> None:
        reader = _Reader()
        capabilities = {"com.apple.private.DTXConnection": 1, "com.apple.private.DTXBlockCompression": 0,
                        **{name: 1 for name in SERVICES}}
        self._send(MSG_DISPATCH, 0, payload=archive("_notifyOfPublishedCapabilities:"),
                   aux=build_aux([capabilities]))
        receive = self._receiver()
        while True:
            due = min((t.due for t in self._taps.values()), default=None)
            data = receive(None if due is None else max(due - time.monotonic(), 0.001))
            if data == b"":
                return
            for message in reader.feed(data or b""):
                self._handle(message)
            self._sample_due_taps()

    def _receiver(self) -> Callable[[float | None], bytes | None]:
        """A function that waits up to so many seconds (None: for ever) for input: bytes, None when none came in
        time, b"" when the connection is gone."""
        settimeout = getattr(self.conn, "settimeout", None)
        if settimeout is not None:
            def on_this_thread(timeout: float | None) -> bytes | None:
                # A timeout only on the wait for input, so a send never gives up half way through a message.
                # (Never 0: that would make the socket non-blocking, where an idle read raises another error.)
                settimeout(timeout)
                try:
                    return self.conn.recv(65536)
                except TimeoutError:
                    return None
                finally:
                    settimeout(None)
            return on_this_thread

        # A connection that cannot bound a read (only recv and sendall): a thread does nothing but receive, and
        # every send stays on this thread. On TLS that reads and writes the connection from two threads at once,
        # which OpenSSL does not promise to survive: give serve_dvt the socket itself where there is one.
        inbox: queue.Queue[bytes] = queue.Queue()

        def pump() -> None:
            data = b"x"
            while data:
                try:
                    data = self.conn.recv(65536)
                except Exception:  # whatever the wrapper raises, the connection is gone
                    data = b""
                inbox.put(data)

        threading.Thread(target=pump, name="dvt-recv", daemon=True).start()

        def from_the_pump(timeout: float | None) -> bytes | None:
            try:
                return inbox.get(timeout=timeout)
            except queue.Empty:
                return None
        return from_the_pump

    def _sample_due_taps(self) -> None:
        now = time.monotonic()
        for tap in list(self._taps.values()):
            if tap.due <= now:
                rows = [{"Processes": {int(p["pid"]): [p.get(a) for a in tap.attributes]
                                       for p in self.device.processes()}}]
                self.notify(tap.channel, rows)
                # On schedule while it can keep up; a late sample (a slow call in between) restarts the beat.
                tap.due += tap.interval_s
                if tap.due <= now:
                    tap.due = now + tap.interval_s

    def _handle(self, message: Message) -> None:
        if message.conversation % 2 == 1:
            return  # a reply to something this server sent; it never waits for one
        if message.type != MSG_DISPATCH:
            if message.expects_reply:
                self.reply(message, NSError("DTXMessage", 1, {"NSLocalizedDescription":
                                                              f"Unsupported message type {message.type}"}))
            return
        try:
            selector = unarchive(message.payload)
            args = parse_aux(message.aux)
        except (DvtProtocolError, ValueError, KeyError, IndexError, TypeError, plistlib.InvalidFileException,
                struct.error) as e:
            result: Any = NSError("DTXMessage", 1, {"NSLocalizedDescription": f"NSCoding error: {e}"})
        else:
            result = self._dispatch(message.channel, str(selector), args)
        if message.expects_reply:
            self.reply(message, result)

    def _dispatch(self, channel: int, selector: str, args: list[Any]) -> Any:
        service = self.channels.get(channel)
        if service is None:
            return NSError("DTXMessage", 1, {"NSLocalizedDescription": f"No channel registered for code {channel}"})
        handler = _HANDLERS.get((service, selector))
        if handler is None:
            return _unrecognized(selector)
        try:
            return handler(self, channel, *args)
        except Exception as e:
            # A phone may define its own LaunchError (the emulated phone's apps module does): known by its name.
            if isinstance(e, LaunchError) or type(e).__name__ == "LaunchError":
                # FrontBoard's answer to an open request it refuses (e.g. no such app), as devices send it back.
                return NSError("FBSOpenApplicationServiceErrorDomain", 4, {
                    "BSErrorCodeDescription": getattr(e, "code_description", "NotFound"),
                    "NSLocalizedFailureReason": getattr(e, "message", str(e))})
            if isinstance(e, TypeError):  # wrong argument count or type from the peer
                return NSError("DTXMessage", 1, {"NSLocalizedDescription":
                                                 f"In invocation of method {selector!r}: {e}"})
            raise

    # channel 0

    def _capabilities(self, _channel: int, _capabilities: Any) -> None:
        return None

    def _request_channel(self, _channel: int, code: int, identifier: str) -> Any:
        if identifier not in SERVICES:
            return NSError("DTXMessage", 1, {"NSLocalizedDescription": f"Unknown service identifier {identifier!r}"})
        if code <= 0 or code in self.channels:
            return NSError("DTXMessage", 1, {"NSLocalizedDescription": f"Channel code {code} is already in use"})
        self.channels[code] = identifier
        return None

    def _cancel_channel(self, _channel: int, code: int) -> None:
        self.channels.pop(code, None)
        self._taps.pop(code, None)
        return None

    # processcontrol

    def _launch(self, _channel: int, _path: str, bundle_id: str, environment: Mapping[str, Any] | None,
                arguments: Sequence[Any] | None, options: Mapping[str, Any] | None) -> Any:
        options = options or {}
        if options.get("StartSuspendedKey"):
            return NSError("DTXMessage", 1, {"NSLocalizedDescription":
                                             "StartSuspendedKey is not emulated: no debugger can attach here"})
        return self.device.launch(str(bundle_id), [str(a) for a in arguments or []],
                                  {str(k): str(v) for k, v in (environment or {}).items()},
                                  bool(options.get("KillExisting", False)))

    def _send_signal(self, _channel: int, sig: int, pid: int) -> Any:
        if int(sig) != SIGKILL:
            return NSError("DTXMessage", 1, {"NSLocalizedDescription": f"only SIGKILL is emulated, not {sig}"})
        self.device.kill(int(pid))
        return None

    def _kill_pid(self, _channel: int, pid: int) -> Any:
        self.device.kill(int(pid))
        return None

    # deviceinfo

    def _is_running(self, _channel: int, pid: int) -> bool:
        return bool(self.device.is_running(int(pid)))

    def _process_attributes(self, _channel: int) -> list[str]:
        return list(PROCESS_ATTRIBUTES)

    def _system_attributes(self, _channel: int) -> list[str]:
        return list(SYSTEM_ATTRIBUTES)

    # sysmontap

    def _set_config(self, channel: int, config: Mapping[str, Any] | None) -> Any:
        self._tap_configs[channel] = dict(config or {})
        return None

    def _start_tap(self, channel: int) -> Any:
        if channel not in self._taps:
            config = self._tap_configs.get(channel, {})
            interval_s = max(int(config.get("ur") or DEFAULT_SAMPLE_INTERVAL_MS), 1) / 1000.0
            self._taps[channel] = _Tap(channel, [str(a) for a in config.get("procAttrs") or PROCESS_ATTRIBUTES],
                                       interval_s, time.monotonic() + interval_s)
            # The client reads the first message after `start` as an acknowledgement and drops it.
            self.notify(channel, [])
        return None

    def _stop_tap(self, channel: int) -> Any:
        self._taps.pop(channel, None)
        return None

    # energy

    def _energy_start_stop(self, _channel: int, _pids: Any) -> Any:
        return None  # sampling is on demand: sampleAttributes:forPIDs: reads the device each time

    def _energy_sample(self, _channel: int, _attributes: Any, pids: Iterable[Any] | None) -> Any:
        return {int(pid): values for pid, values in self.device.energy([int(p) for p in pids or []]).items()}


_HANDLERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("ctrl", "_notifyOfPublishedCapabilities:"): _Server._capabilities,
    ("ctrl", "_requestChannelWithCode:identifier:"): _Server._request_channel,
    ("ctrl", "_channelCanceled:"): _Server._cancel_channel,
    (PROCESSCONTROL, "launchSuspendedProcessWithDevicePath:bundleIdentifier:environment:arguments:options:"):
        _Server._launch,
    (PROCESSCONTROL, "sendSignal:toPid:"): _Server._send_signal,
    (PROCESSCONTROL, "killPid:"): _Server._kill_pid,
    (DEVICEINFO, "isRunningPid:"): _Server._is_running,
    (DEVICEINFO, "sysmonProcessAttributes"): _Server._process_attributes,
    (DEVICEINFO, "sysmonSystemAttributes"): _Server._system_attributes,
    (SYSMONTAP, "setConfig:"): _Server._set_config,
    (SYSMONTAP, "start"): _Server._start_tap,
    (SYSMONTAP, "stop"): _Server._stop_tap,
    (ENERGY, "startSamplingForPIDs:"): _Server._energy_start_stop,
    (ENERGY, "stopSamplingForPIDs:"): _Server._energy_start_stop,
    (ENERGY, "sampleAttributes:forPIDs:"): _Server._energy_sample,
}


def serve_dvt(conn: DvtConnection, device: DvtDevice) -> None:
    """Serve one DVT connection until the peer closes it (or breaks the framing, or the socket fails). `conn` is
    best a blocking socket.socket or ssl.SSLSocket (see DvtConnection); it is not closed here."""
    try:
        _Server(conn, device).run()
    except (DvtProtocolError, ConnectionGoneError, OSError, ValueError):
        # A device drops a connection that misbehaves or goes away; there is no one to tell. (ValueError: a socket
        # closed under a read by another thread, as a pulled cable is emulated.)
        pass


# --- a reference device: host programs as apps ----------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def phys_footprint_bytes(pid: int) -> int:
    """The Linux counterpart of iOS's phys_footprint: Private_Dirty + Swap from /proc/PID/smaps_rollup.

    phys_footprint (what jetsam and Xcode's memory gauge count) is the memory only this process keeps alive: its
    dirty private pages plus those compressed away, but not clean pages the kernel can drop and re-read from their
    file. On Linux that is Private_Dirty (written private pages, anonymous or file-backed) plus Swap (the pages
    swapped out, iOS's compressor in this picture); Private_Clean is left out because clean pages are reclaimable,
    and shared pages because they are not this process's alone."""
    total_kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Dirty", "Swap"):
            total_kb += int(rest.split()[0])
    return total_kb * 1024


def resident_bytes(pid: int) -> int:
    """VmRSS from /proc/PID/status (sysmon's memResidentSize)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie has no VmRSS line


@dataclass(frozen=True)
class AppCommand:
    """How a host program plays an installed app: its argv (the launch's arguments are appended; argv[0]'s file name
    is the process name sysmon reports, as an app's executable name is) and its working folder (an app's is its
    container root)."""

    argv: list[str]
    cwd: Path | None = None


@dataclass
class _HostApp:
    bundle_id: str
    popen: subprocess.Popen[bytes]
    name: str


class HostProcesses:
    """A DvtDevice whose apps are host programs. `resolve(bundle_id)` says how to start one (None: not installed;
    it may raise LaunchError itself, e.g. for an expired signature); without it, `apps` maps a bundle id to the argv
    that starts it, run in `cwd`. Processes get `base_environment` plus the launch's environment; their stdout and
    stderr go to files in `log_dir` (iOS relays neither) or nowhere. Samples come from /proc."""

    def __init__(self, apps: Mapping[str, Sequence[str]] | None = None, *, cwd: Path | None = None,
                 resolve: Callable[[str], AppCommand | None] | None = None, log_dir: Path | None = None,
                 base_environment: Mapping[str, str] | None = None) -> None:
        self.apps: dict[str, list[str]] = {k: list(v) for k, v in (apps or {}).items()}
        self.cwd = cwd
        self.resolve = resolve or self._from_apps
        self.log_dir = log_dir
        self.base_environment = dict(base_environment if base_environment is not None
                                     else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self._lock = threading.Lock()
        self._running: dict[int, _HostApp] = {}
        # CPU time and wall clock at the previous reading, per reader ("sysmon", "energy") and pid.
        self._cpu_marks: dict[tuple[str, int], tuple[float, float]] = {}

    def _from_apps(self, bundle_id: str) -> AppCommand | None:
        argv = self.apps.get(bundle_id)
        return None if argv is None else AppCommand(argv, self.cwd)

    def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str], kill_existing: bool) -> int:
        command = self.resolve(bundle_id)
        if command is None:
            # FrontBoard's words for a bundle id no installed app has.
            raise LaunchError(f'Application info provider (FBSApplicationLibrary) returned nil for "{bundle_id}"')
        argv = command.argv
        if kill_existing:
            for pid in [p for p, app in self._snapshot() if app.bundle_id == bundle_id]:
                self.kill(pid)
        out: Any = subprocess.DEVNULL
        err: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{bundle_id}.stdout", "ab")
            err = open(self.log_dir / f"{bundle_id}.stderr", "ab")
        try:
            popen = subprocess.Popen([*argv, *arguments], cwd=command.cwd,
                                     env={**self.base_environment, **environment}, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=err, start_new_session=True)
        except OSError as e:  # the emulator's own words: a host program that cannot start has no iOS counterpart
            raise LaunchError(f"cannot start {argv[0]}: {e.strerror}", "Failed") from e
        finally:
            if self.log_dir is not None:
                out.close()
                err.close()
        with self._lock:
            self._running[popen.pid] = _HostApp(bundle_id, popen, Path(argv[0]).name)
        return popen.pid

    def _snapshot(self) -> list[tuple[int, _HostApp]]:
        with self._lock:
            return list(self._running.items())

    def kill(self, pid: int) -> None:
        with self._lock:
            app = self._running.get(pid)
        if app is None:
            return
        if app.popen.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)  # the app's whole session: an app's helpers die with it on iOS
            except ProcessLookupError:
                pass
        app.popen.wait()  # reaped here, so is_running turns False at once
        with self._lock:
            self._running.pop(pid, None)

    def is_running(self, pid: int) -> bool:
        with self._lock:
            app = self._running.get(pid)
        return app is not None and app.popen.poll() is None

    def _cpu_percent(self, reader: str, pid: int) -> float | None:
        """% of one core since this reader's previous reading of pid; None the first time."""
        now, cpu = time.monotonic(), _proc_cpu_s(pid)
        with self._lock:
            before = self._cpu_marks.get((reader, pid))
            self._cpu_marks[(reader, pid)] = (now, cpu)
        if before is None or now <= before[0]:
            return None
        return 100.0 * (cpu - before[1]) / (now - before[0])

    def processes(self) -> list[dict[str, Any]]:
        rows = []
        for pid, app in self._snapshot():
            if app.popen.poll() is not None:
                continue
            try:
                rows.append({"pid": pid, "name": app.name, "physFootprint": phys_footprint_bytes(pid),
                             "memResidentSize": resident_bytes(pid), "cpuUsage": self._cpu_percent("sysmon", pid)})
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited between the check and the read
        return rows

    def energy(self, pids: list[int]) -> dict[int, dict[str, Any]]:
        """Energy impact, emulated: the host has no energy model of a phone, so the only component reported is the
        CPU's, scored as the process's CPU use (% of one core) since the previous sample (0 the first time), and the
        total equals it. A unitless score, like Xcode's; never joules."""
        scores: dict[int, dict[str, Any]] = {}
        for pid in pids:
            if not self.is_running(pid):
                continue
            try:
                cpu = self._cpu_percent("energy", pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            score = 0.0 if cpu is None else cpu
            scores[pid] = {"energy.cost": score, "energy.cpu.cost": score}
        return scores

    def close(self) -> None:
        """Kill every app this device started."""
        for pid, _app in self._snapshot():
            self.kill(pid)
