"""Bytes a link carried, counted by its backend where it reads and writes.

A network backend's protocol holds one :class:`LinkBytes` per connection and
adds to it at the two places every byte passes: ``dataReceived`` (what it
read from its transport, before any parsing) and where it hands bytes to its
transport (what it wrote, framing included).  Under TLS these are the
plaintext bytes the protocol sees, not the bytes on the socket.

Counting is two integer additions per read or write, on attributes of a
slotted object: nothing is wrapped and nothing is called per chunk, so the
streaming path stays as it was.

Who reads the counts:

* master side: each :class:`~workerwire.base_listener.BaseListener` has a
  :class:`LinkTotals` (``listener.link_totals``); its protocols
  :meth:`~LinkTotals.open` their counter as they are built (so the bytes of a
  login that is refused count too) and :meth:`~LinkBytes.close` it when the
  connection is lost.  A logged-in connection's counter is also its
  :class:`~workerwire.base_connection.BaseConnection`'s ``link_bytes``, for a
  per-worker view.
* worker side: a connector's ``link_bytes`` counts every connection it made
  (its protocols add to it directly).

Backends that do not count leave every counter at zero; nothing depends on
the counts.
"""

from __future__ import annotations

__all__ = ["LinkBytes", "LinkTotals"]


class LinkBytes:
    """Bytes one link (or, worker side, one connector's links) received and sent.

    A backend adds with ``counter.received += len(data)`` and
    ``counter.sent += n``; readers treat both as monotonic.
    """

    __slots__ = ("received", "sent", "_totals")

    def __init__(self, totals: "LinkTotals | None" = None):
        self.received = 0
        self.sent = 0
        self._totals = totals

    def close(self) -> None:
        """The link is gone: its counts move into its :class:`LinkTotals`
        (idempotent; a counter with none keeps them, and so does this one)."""
        totals, self._totals = self._totals, None
        if totals is not None:
            totals._fold(self)

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "sent": self.sent}

    def __repr__(self) -> str:
        return f"<LinkBytes received={self.received} sent={self.sent}>"


class LinkTotals:
    """The byte counts of a set of links: those closed, plus those still open."""

    def __init__(self) -> None:
        self._closed_received = 0
        self._closed_sent = 0
        self._open: set[LinkBytes] = set()

    def open(self) -> LinkBytes:
        """A counter for a new link, included in these totals from now on."""
        counter = LinkBytes(self)
        self._open.add(counter)
        return counter

    def _fold(self, counter: LinkBytes) -> None:
        if counter in self._open:
            self._open.discard(counter)
            self._closed_received += counter.received
            self._closed_sent += counter.sent

    @property
    def received(self) -> int:
        """Bytes every link received so far (read at scrape time: sums the open ones)."""
        return self._closed_received + sum(c.received for c in self._open)

    @property
    def sent(self) -> int:
        """Bytes every link sent so far."""
        return self._closed_sent + sum(c.sent for c in self._open)

    @property
    def open_links(self) -> int:
        return len(self._open)

    def __repr__(self) -> str:
        return f"<LinkTotals received={self.received} sent={self.sent} open={len(self._open)}>"
