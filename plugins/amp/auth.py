"""Challenge-response login: the password never crosses the wire.

The master sends 32 random bytes (``challenge``) in its ``Hello`` answer; the
worker answers ``Login`` with ``HMAC-SHA256(key=UTF-8 password, msg=challenge)``.
The master checks it through ``twisted.cred`` with the port's checker, as an
``IUsernameHashedPassword`` credential whose :meth:`checkPassword` recomputes
the HMAC from the registered password.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from twisted.cred.credentials import IUsernameHashedPassword
from zope.interface import Interface, implementer

__all__ = ["CHALLENGE_BYTES", "new_challenge", "login_response", "ChallengeResponse", "IAMPWorker"]

CHALLENGE_BYTES = 32


def new_challenge() -> bytes:
    """A fresh challenge for one connection."""
    return os.urandom(CHALLENGE_BYTES)


def login_response(password: str, challenge: bytes) -> bytes:
    """What a worker sends as ``Login.response``."""
    return hmac.new(password.encode("utf-8"), challenge, hashlib.sha256).digest()


@implementer(IUsernameHashedPassword)
class ChallengeResponse:
    """A worker's ``Login``, as a ``twisted.cred`` credential."""

    def __init__(self, username: str, challenge: bytes, response: bytes):
        self.username = username.encode("utf-8")
        self._challenge = challenge
        self._response = response

    def checkPassword(self, password: bytes) -> bool:
        expected = hmac.new(password, self._challenge, hashlib.sha256).digest()
        return hmac.compare_digest(expected, self._response)


class IAMPWorker(Interface):
    """The avatar interface an amp login asks the realm for (the worker's name)."""
