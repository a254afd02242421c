"""Speed-ups for network backends: not part of the backend API.

What is here makes streaming cheaper on CPython and Linux (glibc's allocator,
Twisted's TCP write buffer) and may change, or go, in any release without a
deprecation period: :mod:`workerwire.backend_api` is the supported surface.
A backend uses them at its own risk, and works without them.

* :mod:`workerwire.speedups.allocator` -- ``prime_allocator()``, once per
  process, keeps glibc from returning the heap to the OS after every large
  message;
* :mod:`workerwire.speedups.socket_write` -- ``write_pieces()`` sends a
  message's pieces with one ``sendmsg`` while the transport's buffer is
  empty (it reads Twisted's private buffer attributes, guarded by
  ``tests/test_twisted_privates.py``).

Their old homes, ``workerwire.allocator`` and ``workerwire.socket_write``,
still import, with a ``DeprecationWarning``.
"""
