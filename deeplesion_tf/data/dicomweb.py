"""A DICOMweb connection for `bin/fetch_from_pacs` and `bin/detect`: credentials, rate, retries.

`dicomweb-client` speaks QIDO-RS, WADO-RS and STOW-RS; this module gives it what a
hospital's server asks of a well-behaved client:

  * **Credentials from the environment or a file**, never from the command line (where
    `ps` and shell histories show them) and never in a log: `DEEPLESION_PACS_USER` and
    `DEEPLESION_PACS_PASSWORD` (HTTP basic), or `DEEPLESION_PACS_TOKEN` (a bearer
    token), or a JSON file `{"username": ..., "password": ...}` / `{"token": ...}`.
    A URL with a user or password in it is refused.
  * **A rate limit**: at most `requests_per_second` requests, spaced evenly.
  * **Retries with a back-off** on what a retry can fix: a refused or dropped
    connection, a timeout, and HTTP 408, 429, 500, 502, 503 and 504. The client's own
    retry is switched off because it covers status codes only, not a dropped connection;
    one policy in one place. Exhausted, or on an error no retry fixes (401, 403, 404...),
    a `ServerError` names the server (without credentials), the request and the cause.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Callable, Optional, TypeVar

import requests

USER_VARIABLE = "DEEPLESION_PACS_USER"
PASSWORD_VARIABLE = "DEEPLESION_PACS_PASSWORD"
TOKEN_VARIABLE = "DEEPLESION_PACS_TOKEN"
RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class ServerError(RuntimeError):
    """The server refused a request, or could not be reached within the retries."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """HTTP basic (`username`, `password`) or a bearer `token`; `repr` shows neither."""

    username: Optional[str] = dataclasses.field(default=None, repr=False)
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    token: Optional[str] = dataclasses.field(default=None, repr=False)
    source: str = "none"


def read_credentials(credentials_file: Optional[str] = None,
                     environ: Optional[dict] = None) -> Credentials:
    """The credentials from `credentials_file` if given, else from the environment.

    Raises:
      ValueError: the file is not a JSON object with a `token` or a `username` and a
        `password`, or the environment sets a user without a password (the message
        names the file or the variables, never a value).
    """
    environ = os.environ if environ is None else environ
    if credentials_file:
        try:
            with open(credentials_file, encoding="utf-8") as f:
                content = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{credentials_file}: cannot read the credentials "
                             f"({type(error).__name__})") from None
        if not isinstance(content, dict):
            raise ValueError(f"{credentials_file}: must be a JSON object")
        found = Credentials(content.get("username"), content.get("password"),
                            content.get("token"), source=credentials_file)
    else:
        found = Credentials(environ.get(USER_VARIABLE), environ.get(PASSWORD_VARIABLE),
                            environ.get(TOKEN_VARIABLE), source="environment")
    if found.token:
        return dataclasses.replace(found, username=None, password=None)
    if found.username and found.password is not None:
        return found
    if found.username or found.password:
        raise ValueError(f"{found.source}: a user needs a password ({USER_VARIABLE} and "
                         f"{PASSWORD_VARIABLE}, or 'username' and 'password' in the file)")
    return Credentials(source="none")


def public_url(url: str) -> str:
    """`url` as it may be logged: scheme, host, port and path (no query)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _RateLimitedSession(requests.Session):
    """A session that spaces its requests at least `1 / requests_per_second` apart."""

    def __init__(self, requests_per_second: float):
        super().__init__()
        self._interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def request(self, *args, **kwargs):
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            time.sleep(wait)
        return super().request(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the server is and how to treat it (`bin/` builds this from its flags).

    Attributes:
      url: the DICOMweb root, e.g. `https://pacs.example.org/dicom-web`.
      timeout_s: per request (connect and read).
      max_retries: further attempts after a failed one.
      requests_per_second: the rate limit (0: none).
      backoff_s: the first retry's wait; doubled for each further one.
      ca_bundle: a CA certificate file for a hospital's own TLS certificates.
    """

    url: str
    timeout_s: float = 30.0
    max_retries: int = 3
    requests_per_second: float = 10.0
    backoff_s: float = 1.0
    ca_bundle: Optional[str] = None


class Connection:
    """A `dicomweb_client.DICOMwebClient` with the credentials, rate and retries above."""

    def __init__(self, settings: Settings, credentials: Credentials = Credentials()):
        from dicomweb_client import DICOMwebClient

        parts = urllib.parse.urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{public_url(settings.url)}: not an http(s) URL of a DICOMweb root")
        if parts.username or parts.password:
            raise ValueError("the server URL holds credentials: give them in the environment "
                             f"({USER_VARIABLE}, {PASSWORD_VARIABLE}) or a credentials file")
        self.settings = settings
        self.name = public_url(settings.url)
        session = _RateLimitedSession(settings.requests_per_second)
        if credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials.username:
            session.auth = (credentials.username, credentials.password)
        if settings.ca_bundle:
            session.verify = settings.ca_bundle
        self.client = DICOMwebClient(settings.url.rstrip("/"), session=session,
                                     timeout=settings.timeout_s)
        self.client.set_http_retry_params(retry=False)
        # The client logs every request's UIDs at INFO: identifiers, kept out of our logs.
        logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

    def call(self, what: str, request: Callable[[], T]) -> T:
        """Runs `request` (a call on `self.client`), retrying what a retry can fix.

        Args:
          what: the request in words, for messages ("the series metadata of ...").

        Raises:
          ServerError: refused (an HTTP status no retry fixes) or still failing after
            `max_retries` retries; a 404 is a `ServerError` with `status` 404.
        """
        attempt = 0
        while True:
            try:
                return request()
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else None
                cause = f"HTTP {status}"
                if status in (401, 403):
                    raise _error(f"{self.name} refused {what}: {cause} (check the credentials "
                                 f"in {USER_VARIABLE}/{PASSWORD_VARIABLE}, {TOKEN_VARIABLE} or "
                                 "the credentials file)", status) from None
                if status not in RETRIED_STATUS:
                    raise _error(f"{self.name}: {what} failed: {cause}", status) from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as error:
                cause = f"{type(error).__name__}"
            if attempt >= self.settings.max_retries:
                raise _error(f"{self.name}: {what} failed after {attempt + 1} attempts "
                             f"({cause}); the server may be down or overloaded", None)
            time.sleep(self.settings.backoff_s * 2 ** attempt)
            attempt += 1


def _error(message: str, status: Optional[int]) -> ServerError:
    error = ServerError(message)
    error.status = status
    return error
