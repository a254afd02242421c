"""acme-jsonlines' frames for the hostile-peer tests (``workerwire.conformance.raw_frames``), built by hand."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from workerwire.backend_api import login_response
from workerwire.conformance.raw_frames import TransportRawFrames, dial_raw, noise
from workerwire.values import encode


class JsonRawFrames(TransportRawFrames):
    def __init__(self, line: Any = None):
        super().__init__()
        self.ids = itertools.count(10_000_000)
        if line is not None:  # a logged-in worker's line, taken over: its input is only counted
            self.transport, line.dataReceived, line.on_lost = line.transport, self.count, self.closing_too(line.on_lost)

    def _call(self, method: str, *args: object, packed: bytes = b"") -> bytes:
        b64 = base64.b64encode(packed or encode(list(args))).decode()
        return json.dumps({"call": next(self.ids), "method": method, "args": b64}).encode() + b"\n"

    def request(self, name: str) -> bytes:
        return self._call("update", name, [])

    def nested_update(self, command_id: str, depth: int) -> bytes:
        nested = b"\x91" * (depth - 1) + b"\x90"
        return self._call("update", packed=b"\x92" + encode(command_id) + b"\x91\x92" + encode("stdout") + nested)

    def login(self, name: str, password: str) -> bytes:  # the response answers a challenge made up here
        return self._call("login", name, login_response(password, b"made-up"))

    def update(self, command_id: str, payload_size: int) -> bytes:
        return self._call("update", command_id, [["stdout", "x" * payload_size]])

    def complete(self, command_id: str) -> bytes:
        return self._call("complete", command_id, None)

    def oversized(self, size: int) -> bytes:
        return b'{"call": 0, "method": "hello", "args": "' + b"A" * size  # one line, never finished

    def garbage(self, n: int) -> bytes:
        return b"\xff" + noise(n).replace(b"\n", b"") + b"\n"  # not UTF-8, so not JSON
