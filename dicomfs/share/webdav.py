"""The WebDAV server: start-up rules, the wsgidav application, and cheroot serving it.

For hosts without FUSE (containers without /dev/fuse) and for clients that
map WebDAV folders (Windows ``net use``, macOS Finder). The same view as the
mount, read-only, with the same rule: no byte is served that the reader
could not read from the source directly (``dav_provider.py`` opens each
source as the request's Unix user).

Who a request is served as is decided once, at start (``plan_access``):

- without ``users_file``: every request as ``run_as`` (default ``nobody``),
  so a client on loopback gets only what that user may read;
- with ``users_file``: HTTP Basic, each HTTP user as the Unix user of their
  line (``webdav_users.py``);
- an address other than loopback needs a users file AND TLS, so passwords
  never cross a network in clear; otherwise the start is refused;
- a daemon that cannot switch credentials (``can_switch``) serves only as
  its own user, and refuses a run-as user or users-file line with another uid.

Every refusal is a ConfigError (exit status 2) that says what to change.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from dicomfs.errors import ConfigError
from dicomfs.fuse.caller import Caller, can_switch
from dicomfs.share.defaults import DEFAULT_BIND, DEFAULT_PORT, DEFAULT_RUN_AS
from dicomfs.share.files import sendfile_body
from dicomfs.share.gate import Gate, WsgiApp
from dicomfs.share.webdav_users import Users, account, own_account, read_users
from dicomfs.view.tree import View

log = logging.getLogger(__name__)

THREADS = 10
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class WebDavOptions:
    """What ``dicomfs webdav`` and ``serve --webdav-port`` are given."""

    port: int = DEFAULT_PORT
    bind: str = DEFAULT_BIND
    run_as: str | None = None
    users_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    threads: int = THREADS


@dataclass(frozen=True, slots=True)
class Access:
    """Decided at start: the users file, or the one user every request is served as."""

    users: Users | None
    run_as: Caller | None
    summary: str


def is_loopback(address: str) -> bool:
    """True when every address ``address`` stands for is a loopback one (127/8, ::1)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in found
    )


def plan_access(options: WebDavOptions, *, switching: bool | None = None) -> Access:
    """Apply the start-up rules (module docstring); ConfigError when one is broken."""
    switching = can_switch() if switching is None else switching
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    tls = options.tls_cert is not None
    if not is_loopback(options.bind) and not (options.users_file is not None and tls):
        raise ConfigError(
            f"refusing to serve WebDAV on {options.bind}, which is not a loopback address, "
            "without both --users FILE and TLS (--tls-cert, --tls-key): passwords and "
            "patient data would cross the network in clear. Bind to 127.0.0.1, or give both"
        )
    own = own_account()
    if options.users_file is not None:
        if options.run_as is not None:
            raise ConfigError(
                "--run-as applies without --users only: with a users file each HTTP user "
                "reads as the Unix user of their line"
            )
        users = read_users(options.users_file)
        if not switching:
            others = sorted(u.name for u in users.users.values() if u.caller.uid != own.uid)
            if others:
                raise ConfigError(
                    f"this daemon cannot take other users' credentials (it needs CAP_SETUID "
                    f"and CAP_SETGID, e.g. run as root), so it can serve only as itself; "
                    f"the users file maps {', '.join(others)} to other Unix users"
                )
        return Access(users, None, f"users from {options.users_file}")
    if not switching:
        if options.run_as is not None and account(options.run_as).uid != own.uid:
            raise ConfigError(
                f"cannot serve as {options.run_as!r}: this daemon cannot take other users' "
                "credentials (it needs CAP_SETUID and CAP_SETGID, e.g. run as root); leave "
                "--run-as out to serve as the daemon's own user"
            )
        log.warning("WebDAV: cannot switch credentials; every request reads as this daemon's user")
        return Access(None, own, f"as the daemon's own user (uid {own.uid})")
    name = options.run_as or DEFAULT_RUN_AS
    return Access(None, account(name), f"as Unix user {name}")


def build_app(view: View, access: Access) -> WsgiApp:
    """The gate in front of wsgidav with the view as its only share, read-only, no locks."""
    from wsgidav.error_printer import ErrorPrinter
    from wsgidav.request_resolver import RequestResolver
    from wsgidav.wsgidav_app import WsgiDAVApp

    from dicomfs.share.dav_provider import ViewProvider

    config: dict[str, Any] = {
        "provider_mapping": {"/": ViewProvider(view)},
        "lock_storage": False,  # no LOCK/UNLOCK: read-only, nothing to lock
        "property_manager": None,  # no dead properties: PROPPATCH has nothing to change
        "middleware_stack": [ErrorPrinter, RequestResolver],  # the gate authenticates
        "http_authenticator": {"accept_basic": False, "accept_digest": False},
        "dir_browser": {"enable": False},
        "logging": {"enable": False},  # wsgidav's loggers go to ours
        "verbose": 1,
        "suppress_version_info": True,
    }
    app = WsgiDAVApp(config)
    return Gate(app, view, users=access.users, run_as=access.run_as)


class SendfileGateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, except that a file's body goes out with ``socket.sendfile``.

    cheroot copies a body through its buffered writer (a bytearray it copies
    again on every partial send); the kernel can send from the page cache
    instead. Other answers go out as cheroot's own ``respond`` sends them.
    """

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        body = sendfile_body(response)
        try:
            if body is None:
                for chunk in filter(None, response):
                    self.write(chunk)
                return
            self.req.ensure_headers_sent()
            sent = self.req.conn.socket.sendfile(body.file, body.offset, body.length)
            if sent != body.length:  # the source shrank: the client must see a short answer
                self.req.close_connection = True
        finally:
            self.req.ensure_headers_sent()
            close = getattr(response, "close", None)
            if close is not None:
                close()


class WebDavServer:
    """cheroot serving ``build_app`` in a thread of its own; ``start`` binds or raises."""

    def __init__(self, view: View, options: WebDavOptions, access: Access) -> None:
        self.options = options
        self.access = access
        self.server = wsgi.Server(
            (options.bind, options.port),
            build_app(view, access),
            numthreads=options.threads,
            server_name="dicomfs",
            shutdown_timeout=5,
        )
        self.server.gateway = SendfileGateway
        self.server.max_request_header_size = 64 * 1024  # request line and headers
        if options.tls_cert is not None and options.tls_key is not None:
            self.server.ssl_adapter = _tls_adapter(options.tls_cert, options.tls_key)
        self._thread = threading.Thread(target=self._serve, name="dicomfs-webdav", daemon=True)
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.options.tls_cert is not None else "http"
        host = self.options.bind
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}/"

    def start(self) -> WebDavServer:
        try:
            self.server.prepare()  # binds and listens: an error here is the caller's
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.options.bind} port {self.options.port}: {exc}"
            ) from exc
        self._thread.start()
        log.info("serving WebDAV at %s (read-only; %s)", self.url, self.access.summary)
        return self

    def _serve(self) -> None:
        try:
            self.server.serve()
        except BaseException as exc:  # reported by whoever waits for us
            self.error = exc
            log.error("the WebDAV server stopped: %r", exc)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.server.stop()
        if self._thread.is_alive():
            self._thread.join(10)


def _tls_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    try:
        adapter = BuiltinSSLAdapter(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use TLS certificate {cert} with key {key}: {exc}") from exc
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def start_webdav(view: View, options: WebDavOptions) -> WebDavServer:
    """Check the start-up rules, bind, and serve in a background thread."""
    return WebDavServer(view, options, plan_access(options)).start()


def wait_for_stop(
    stopped: Callable[[], bool] | None = None, stop_event: threading.Event | None = None
) -> None:
    """Block until SIGTERM/SIGINT/SIGHUP (main thread only), ``stop_event`` or ``stopped()``."""
    wake = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            wake.set()

        previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        while not wake.wait(0.2):
            if stop_event is not None and stop_event.is_set():
                break
            if stopped is not None and stopped():
                break
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_webdav(
    view: View,
    options: WebDavOptions,
    *,
    on_ready: Callable[[WebDavServer], None] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Serve until a stop signal or ``stop_event``; 0 after a clean stop."""
    server = start_webdav(view, options)
    try:
        if on_ready is not None:
            on_ready(server)
        wait_for_stop(lambda: not server.alive(), stop_event)
    finally:
        server.stop()
    if server.error is not None:
        log.error("WebDAV server failed: %r", server.error)
        return 1
    return 0
