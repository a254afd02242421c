"""glibc's malloc thresholds, raised once per process for streamed output.

Process-wide, not protocol-specific: every network backend that receives (or
sends) command output in messages of a few hundred KiB calls
:func:`prime_allocator` when a connection is made (``amp`` and ``pb`` do).
"""

from __future__ import annotations

__all__ = ["prime_allocator", "ALLOCATOR_PRIME"]

#: Size of the block :func:`prime_allocator` frees, once per process.
ALLOCATOR_PRIME = 8 * 1024 * 1024
_primed = False


def prime_allocator() -> None:
    """Allocate and free one block of :data:`ALLOCATOR_PRIME` bytes, once per process.

    glibc's malloc serves a block above its mmap threshold (128 KiB at
    first) with mmap, and when it frees one, raises that threshold to the
    block's size and its heap-trim threshold to twice that.  A process
    receiving output messages (~300 KiB, with about three times that alive
    while one is parsed and decoded) otherwise ends with a trim threshold of
    about two messages, and unless a long-lived block happens to sit above
    them it gives the memory back to the OS after each message and
    page-faults it in again for the next: in about a third of amp master
    processes, ~600,000 minor faults and 1.2 s/GB more system time, a third
    of the throughput.  After this, blocks up to 8 MiB come from the heap and
    it is trimmed once 16 MiB at its top are free, as glibc would set itself
    after one 8 MiB message.  ``bytes(n)`` of a fresh mapping touches no
    page; with other allocators this is one allocation and nothing else.
    """
    global _primed
    if not _primed:
        _primed = True
        block = bytes(ALLOCATOR_PRIME)
        del block
