"""Settings for ``dicomfs serve``, resolved once: flags > environment > TOML file > defaults.

Resolution happens in one place so that every value the daemon acts on can
be logged once at start with where it came from, and an invalid value is
reported with its key and its source instead of surfacing later as a
crash deep in a worker thread (style.md, "Events are notifications").
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dicomfs.errors import ConfigError
from dicomfs.index import default_index_path, is_url, roots, shown
from dicomfs.share.defaults import DEFAULT_BIND
from dicomfs.view.paths import NAMES

DEFAULT_CONFIG = Path("/etc/dicomfs/dicomfs.toml")
ENV_PREFIX = "DICOMFS_"
WATCH_MODES = ("inotify", "poll")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``serve`` needs; built by :func:`resolve`, then passed down explicitly.

    ``origins`` records where each value came from (``default``, ``file``,
    ``env`` or ``flag``) for the start-up log line only.
    """

    sources: tuple[Path, ...] = ()
    mountpoint: Path | None = None
    index: Path | str = field(default_factory=default_index_path)  # a file or a database URL
    # Named source roots, (name, local folder): paths shared by hosts (index.roots).
    roots: tuple[tuple[str, str], ...] = ()
    # This host's name in a shared (PostgreSQL) index; None: the hostname (index.roots).
    host: str | None = None
    settle_seconds: float = 0.2
    reconcile_interval: float = 600.0
    batch_size: int = 500
    batch_window: float = 0.05
    queue_limit: int = 100_000
    workers: int = field(default_factory=_default_workers)
    watch: str = "inotify"
    allow_other: bool = False
    group: str | None = None
    symlinks: bool = False
    # What paths may show (view.paths.NAMES); None: view.paths.default_names.
    names: str | None = None
    # Serve files written without a PS3.10 header with one (view.tree).
    part10: bool = False
    log_level: str = "INFO"
    scp_port: int | None = None
    ae_title: str = "DICOMFS"
    scp_bind: str = "127.0.0.1"
    scp_allow: tuple[str, ...] = ()
    scp_store: Path | None = None
    webdav_port: int | None = None
    webdav_bind: str = DEFAULT_BIND
    webdav_run_as: str | None = None
    webdav_users: Path | None = None
    webdav_tls_cert: Path | None = None
    webdav_tls_key: Path | None = None
    config_file: Path | None = None
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def origin(self, key: str) -> str:
        return dict(self.origins).get(key, "default")

    def log_summary(self) -> str:
        """One line for the journal: paths and numbers only, never anything read from a file."""
        parts = []
        for f in fields(self):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            if f.name == "sources":
                value = ",".join(str(p) for p in value) or "-"
            elif f.name == "index" and isinstance(value, str):
                value = shown(value)  # never a password in the journal
            parts.append(f"{f.name}={value} ({self.origin(f.name)})")
        return "; ".join(parts)


# -- parsing one value -------------------------------------------------------


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _as_number(kind: type[int] | type[float], minimum: float) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a number, got {type(value).__name__}")
        try:
            number = kind(value) if not isinstance(value, str) else kind(value.strip())
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ValueError(f"{value!r} is not {noun}") from None
        if kind is int and isinstance(value, float) and value != int(value):
            raise ValueError(f"{value!r} is not an integer")
        if number != number or number < minimum or number in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} must be a finite number >= {minimum:g}")
        return number

    return parse


def _as_choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected one of {', '.join(choices)}")
        text = value.strip().upper() if upper else value.strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _as_text(value: object) -> str | None:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value.strip() or None


_PathBase = Path | None


def _as_path(value: object, base: _PathBase) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ValueError("expected a non-empty path")
    path = Path(os.path.expanduser(os.fspath(value)))
    return path if path.is_absolute() or base is None else base / path


def _as_roots(value: object) -> tuple[tuple[str, str], ...]:
    """A TOML table ``name = "/folder"``, or ``name=/folder,...`` from the environment."""
    try:
        mapping = roots.parse(value) if isinstance(value, str) else value
        if not isinstance(mapping, dict):
            raise ValueError('expected a table of name = "/absolute/folder"')
        made = roots.Roots({str(k): str(v) for k, v in mapping.items()})
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return tuple(sorted(made.mapping.items()))


def _as_paths(value: object, base: _PathBase) -> tuple[Path, ...]:
    if isinstance(value, str):
        # One string from the environment: os.pathsep-separated, like $PATH.
        items: list[object] = [v for v in value.split(os.pathsep) if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("expected a list of paths")
    return tuple(_as_path(item, base) for item in items)


def _as_ae_title(value: object) -> str:
    """PS3.5 AE titles: 1-16 characters, no backslash or control characters."""
    text = str(value).strip()
    if not 0 < len(text) <= 16 or "\\" in text or not text.isprintable():
        raise ValueError(f"{value!r} is not an AE title (1-16 printable characters)")
    return text


def _as_ae_titles(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a list of AE titles")
    return tuple(_as_ae_title(item) for item in items if str(item).strip())


_SCALARS: dict[str, Callable[[object], Any]] = {
    "settle_seconds": _as_number(float, 0.0),
    "reconcile_interval": _as_number(float, 1.0),
    "batch_size": _as_number(int, 1),
    "batch_window": _as_number(float, 0.0),
    "queue_limit": _as_number(int, 16),
    "workers": _as_number(int, 1),
    "watch": _as_choice(WATCH_MODES),
    "allow_other": _as_bool,
    "symlinks": _as_bool,
    "names": _as_choice(NAMES),
    "part10": _as_bool,
    "group": _as_text,
    "host": _as_text,
    "log_level": _as_choice(LOG_LEVELS, upper=True),
    "scp_port": _as_number(int, 1),
    "ae_title": _as_ae_title,
    "scp_bind": _as_text,
    "scp_allow": _as_ae_titles,
    "webdav_port": _as_number(int, 1),
    "webdav_bind": _as_text,
    "webdav_run_as": _as_text,
}
_PATHS = ("mountpoint", "index", "scp_store", "webdav_users", "webdav_tls_cert", "webdav_tls_key")
KEYS = ("sources", "roots", *_PATHS, *_SCALARS)
# Tables read by other commands from the same file (``dicomfs fetch --from NAME``).
OTHER_TABLES = ("pacs",)


def _parse(key: str, value: object, base: _PathBase) -> Any:
    if key == "sources":
        return _as_paths(value, base)
    if key == "roots":
        return _as_roots(value)
    if key == "index" and isinstance(value, str) and is_url(value):
        return value  # a PostgreSQL database (``index.database``)
    if key in _PATHS:
        return _as_path(value, base)
    return _SCALARS[key](value)


# -- the layers ----------------------------------------------------------------


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS) - set(OTHER_TABLES))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key {unknown[0]!r} (known keys: {', '.join(KEYS)})"
        )
    return data


def _config_path(flags: Mapping[str, object], environ: Mapping[str, str]) -> Path | None:
    explicit = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(str(explicit))
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def resolve(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from flags (None means "not given"), ``DICOMFS_*`` and the config file.

    Relative paths in the file are relative to the file's folder, so a config
    means the same thing whatever the service's working directory is.
    """
    flags = {
        k: v
        for k, v in (flags or {}).items()
        if v is not None and not (isinstance(v, list | tuple) and not v)
    }
    environ = os.environ if environ is None else environ
    config_file = _config_path(flags, environ)
    layers: list[tuple[str, Mapping[str, object], _PathBase]] = []
    if config_file is not None:
        from_file = {k: v for k, v in _read_file(config_file).items() if k in KEYS}
        layers.append(("file", from_file, config_file.parent))
    env_values = {
        k: environ[ENV_PREFIX + k.upper()] for k in KEYS if ENV_PREFIX + k.upper() in environ
    }
    layers.append(("env", env_values, None))
    layers.append(("flag", {k: v for k, v in flags.items() if k in KEYS}, None))

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, layer, base in layers:
        for key, raw in layer.items():
            where = {
                "file": f"key {key!r} in {config_file}",
                "env": f"environment variable {ENV_PREFIX}{key.upper()}",
                "flag": f"command-line option for {key}",
            }[origin]
            try:
                values[key] = _parse(key, raw, base)
            except ValueError as exc:
                raise ConfigError(f"invalid {key} from {where}: {exc}") from exc
            origins[key] = origin
    return Settings(**values, config_file=config_file, origins=tuple(sorted(origins.items())))
