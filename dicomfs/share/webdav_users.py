"""Who may use the WebDAV share: the users file, its password hashes, and Unix accounts.

A users file maps each HTTP user to the Unix user whose rights their reads
get, with a PBKDF2-SHA256 hash of their password, one per line::

    # httpuser:unixuser:hash
    alice:alice:pbkdf2-sha256$600000$<salt>$<key>

Make a line with ``dicomfs webdav-passwd HTTPUSER UNIXUSER`` or
``python -m dicomfs.share.webdav_users hash HTTPUSER UNIXUSER`` (the password
is asked twice on a terminal, else read from the first line of stdin).

A hash costs about 0.2 s to check on purpose, and WebDAV clients send the
password with every request, so a password that matched once is remembered
for ``REMEMBER_SECONDS`` as an HMAC under a key that lives only in this
process: the next requests cost a microsecond, and nothing reversible is kept.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import os
import pwd
import re
import secrets
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicomfs.errors import ConfigError
from dicomfs.fuse.caller import Caller

log = logging.getLogger(__name__)

SCHEME = "pbkdf2-sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256 (2023)
REMEMBER_SECONDS = 300.0
_HTTP_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_HASH = re.compile(
    rf"{SCHEME}\$([1-9][0-9]{{3,7}})\$([A-Za-z0-9_-]{{16,64}})\$([A-Za-z0-9_-]{{43}})"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """``pbkdf2-sha256$ITERATIONS$SALT$KEY`` (URL-safe base64, no ``:``)."""
    salt = secrets.token_bytes(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(key)}"


def check_password(password: str, encoded: str) -> bool:
    match = _HASH.fullmatch(encoded)
    if match is None:
        return False
    iterations, salt, key = int(match[1]), _unb64(match[2]), _unb64(match[3])
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(candidate, key)


def account(name: str) -> Caller:
    """The credentials of Unix user ``name``: uid, primary gid and every group of theirs.

    The daemon's own user gets exactly the daemon's credentials, so reading
    as it never needs a switch (a daemon that cannot switch still works).
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"unknown Unix user {name!r}") from None
    if entry.pw_uid == os.geteuid():
        return own_account()
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Caller(entry.pw_uid, entry.pw_gid, groups)


def own_account() -> Caller:
    return Caller(os.geteuid(), os.getegid(), tuple(os.getgroups()))


@dataclass(frozen=True, slots=True)
class HttpUser:
    name: str
    unix_user: str
    caller: Caller
    password_hash: str


class Users:
    """The users file, read once at start; ``verify`` answers who a request is served as."""

    def __init__(self, users: dict[str, HttpUser]) -> None:
        self.users = users
        self._key = secrets.token_bytes(32)
        self._remembered: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        # Checked for unknown names too, so a wrong name costs what a wrong password does.
        self._decoy = hash_password(secrets.token_hex(8))

    def verify(self, name: str, password: str) -> HttpUser | None:
        user = self.users.get(name)
        seal = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), "sha256").digest()
        now = time.monotonic()
        if user is not None:
            with self._lock:
                remembered = self._remembered.get(name)
            fresh = remembered is not None and remembered[1] > now
            if fresh and remembered is not None and hmac.compare_digest(remembered[0], seal):
                return user
        if not check_password(password, user.password_hash if user else self._decoy):
            return None
        if user is None:
            return None
        with self._lock:
            self._remembered[name] = (seal, now + REMEMBER_SECONDS)
        return user


def read_users(path: Path) -> Users:
    """Parse ``path``; every fault is a ConfigError naming the line (never the hash)."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the WebDAV users file {path}: {exc}") from exc
    if mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH):
        log.warning("the WebDAV users file %s is readable by others: chmod 600 it", path)
    users: dict[str, HttpUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        parts = line.split(":")
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected httpuser:unixuser:hash")
        name, unix_user, encoded = parts
        if _HTTP_USER.fullmatch(name) is None:
            raise ConfigError(f"{where}: {name!r} is not a user name (letters, digits, ._@+-)")
        if name in users:
            raise ConfigError(f"{where}: user {name!r} is listed twice")
        if _HASH.fullmatch(encoded) is None:
            raise ConfigError(
                f"{where}: the hash is not {SCHEME}$ITERATIONS$SALT$KEY "
                "(make one with `dicomfs webdav-passwd`)"
            )
        try:
            caller = account(unix_user)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        users[name] = HttpUser(name, unix_user, caller, encoded)
    if not users:
        raise ConfigError(f"the WebDAV users file {path} lists no user")
    return Users(users)


def ask_password(stream_is_tty: bool | None = None) -> str:
    """Twice on a terminal (they must match), else the first line of stdin."""
    tty = sys.stdin.isatty() if stream_is_tty is None else stream_is_tty
    if not tty:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    if not password:
        raise ConfigError("empty password")
    return password


def users_line(http_user: str, unix_user: str, password: str) -> str:
    """One line of the users file; the names are checked as ``read_users`` will."""
    if _HTTP_USER.fullmatch(http_user) is None:
        raise ConfigError(f"{http_user!r} is not a user name (letters, digits, ._@+-)")
    account(unix_user)
    return f"{http_user}:{unix_user}:{hash_password(password)}"


def main(argv: list[str] | None = None) -> int:
    """``python -m dicomfs.share.webdav_users hash HTTPUSER UNIXUSER``: print a users-file line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "hash":
        print("usage: python -m dicomfs.share.webdav_users hash HTTPUSER UNIXUSER", file=sys.stderr)
        return 2
    try:
        print(users_line(args[1], args[2], ask_password()))
    except ConfigError as exc:
        print(f"dicomfs: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
