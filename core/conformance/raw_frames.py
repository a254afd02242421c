"""Raw frames: a logged-in worker link taken over byte by byte, for the hostile-peer tests.

A backend offers it through :meth:`workerwire.backend.Backend.raw_frames`:
given one of its own worker connectors that has logged in, it returns a
:class:`RawFrames` that owns that link from then on.  The connector no longer
interprets anything on it: what the master sends is only counted
(:attr:`RawFrames.received`), and what the test writes goes to the master as
is.  The backend builds the frames (its own framing, built by hand, so that a
frame may carry what its encoder refuses to build, such as a value nested
60,000 levels deep).

The conformance suite (:mod:`workerwire.conformance.suite_hostile`) uses it
to play a worker with valid credentials that sends without reading, that
makes the master answer errors about huge input, and that sends values
nested too deep.
"""

from __future__ import annotations

import abc

__all__ = ["RawFrames"]


class RawFrames(abc.ABC):
    """One logged-in worker link under the test's control (see the module)."""

    def __init__(self) -> None:
        #: Bytes received from the master since the takeover (for the null
        #: backend: bytes of its messages).
        self.received = 0
        #: The last 64 KiB received (a test looks for a name in the answers).
        self.tail = b""

    def count(self, data: bytes) -> None:
        """What the backend calls for every read from the master instead of parsing it."""
        self.received += len(data)
        self.tail = (self.tail + data)[-64 * 1024:]

    @abc.abstractmethod
    def request(self, name: str) -> bytes:
        """One message the master must answer with an error about *name*, an id
        or a name the peer made up (on amp and null an update of a command of
        that id, which is not running; on pb a call of a method of that name on
        the worker's perspective, which has none)."""

    @abc.abstractmethod
    def nested_update(self, command_id: str, depth: int) -> bytes:
        """An update of the running command *command_id* with one pair
        ``("stdout", value)`` whose value is *depth* lists nested in one
        another, the innermost empty, encoded by hand."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send *data*, one frame (or several concatenated, on a backend
        whose link is a byte stream), to the master as it is (nothing once
        the link is gone)."""

    @abc.abstractmethod
    def unsent(self) -> int:
        """Bytes written here that the master has not taken yet (this end's
        write buffer), so a flooding test does not grow its own memory."""

    @abc.abstractmethod
    def stop_reading(self) -> None:
        """Read nothing more from the master: what it sends stays queued on
        its side (on a socket: in the kernel's buffers, then in the master's
        transport)."""
