"""Worker credentials a backend can use as they are, checked through ``twisted.cred``.

* Plain: ``twisted.cred.credentials.UsernamePassword(name, password)`` -- only
  over a link that is itself confidential (TLS, in-process).
* Challenge-response (:class:`ChallengeResponse`): the password never crosses
  the wire.  The master sends a fresh :func:`new_challenge` (32 random bytes);
  the worker answers :func:`login_response`, ``HMAC-SHA256(key=UTF-8
  password, msg=challenge)``; the master checks it with the port's checker
  (:class:`~workerwire.base_listener.WorkerCredentials`), which recomputes the
  HMAC from the registered password.  The ``amp`` backend uses it as is.

The realm every backend logs in through is :class:`WorkerRealm`: the avatar
is the worker's name (:class:`IWorkerName`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, Callable

from twisted.cred.credentials import IUsernameHashedPassword
from twisted.cred.portal import IRealm
from zope.interface import Interface, implementer

__all__ = ["CHALLENGE_BYTES", "new_challenge", "login_response", "ChallengeResponse", "IWorkerName", "WorkerRealm"]

CHALLENGE_BYTES = 32


def new_challenge() -> bytes:
    """A fresh challenge for one connection."""
    return os.urandom(CHALLENGE_BYTES)


def login_response(password: str, challenge: bytes) -> bytes:
    """What a worker answers to *challenge*."""
    return hmac.new(password.encode("utf-8"), challenge, hashlib.sha256).digest()


def _hmac_sha256(password: bytes, challenge: bytes) -> bytes:
    return hmac.new(password, challenge, hashlib.sha256).digest()


@implementer(IUsernameHashedPassword)
class ChallengeResponse:
    """A worker's answer to a challenge, as a ``twisted.cred`` credential.

    :param digest: ``digest(password, challenge) -> bytes``, the answer a
        worker knowing *password* gives; HMAC-SHA256 (:func:`login_response`)
        unless a dialect has its own (pb: PB's MD5 ``respond``).  Compared in
        constant time.
    """

    def __init__(self, username: str, challenge: bytes, response: bytes,
                 digest: Callable[[bytes, bytes], bytes] = _hmac_sha256):
        self.username = username.encode("utf-8")
        self._challenge = challenge
        self._response = response
        self._digest = digest

    def checkPassword(self, password: bytes) -> bool:
        return hmac.compare_digest(self._digest(password, self._challenge), self._response)


class IWorkerName(Interface):
    """The avatar interface of a worker login: the avatar is the worker's name (``str``)."""


@implementer(IRealm)
class WorkerRealm:
    """The realm of every backend's logins: the avatar is the worker's name.

    Building the backend's connection and offering it to the master is the
    listener's :meth:`~workerwire.base_listener.BaseListener.attach`, after the
    login was checked.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, str, Callable[[], None]]:
        if IWorkerName not in interfaces:
            raise NotImplementedError("a workerwire login asks for IWorkerName")
        return (IWorkerName, avatarId.decode("utf-8"), lambda: None)
