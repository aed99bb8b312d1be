"""Where the PACS is: ``AE@HOST:PORT`` on the command line or ``[pacs.NAME]`` in a config file.

Kept apart from the code that talks DICOM so that a bad address or config
entry is reported before any association is attempted, with the key and
the file it came from (style.md, "Errors say what happened and what to do").
The lead will merge the ``[pacs.*]`` tables into the central config module;
until then this module reads only that table and ignores the rest of the
file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dicomfs.errors import ConfigError, DicomfsError

DEFAULT_CONFIG = Path("/etc/dicomfs/dicomfs.toml")

# PS3.5 6.2 (AE VR): at most 16 characters of the default repertoire, no
# backslash and no control characters; leading/trailing spaces are padding.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_ADDRESS = re.compile(
    r"^(?P<ae>[^@]+)@(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d+)$"
)


class PacsError(DicomfsError):
    """A PACS could not be reached, refused us, or answered with a failure."""


class ReceiverError(DicomfsError):
    """The receiver cannot listen (port in use, privileged port) or its store is unusable."""


def check_ae_title(value: str, what: str = "AE title") -> str:
    """The title without padding, or ConfigError: a bad title fails every association later."""
    title = value.strip(" ")
    if not _AE_TITLE.match(title):
        raise ConfigError(
            f"{what} {value!r} is not a valid AE title "
            "(1 to 16 printable ASCII characters, no backslash)"
        )
    return title


def check_port(value: object, what: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{what} {value!r} is not a port number")
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what} {port} is outside 1..65535")
    return port


@dataclass(frozen=True, slots=True)
class PacsAddress:
    """A DICOM peer: its AE title, host and port; ``name`` is the config name, if any."""

    ae_title: str
    host: str
    port: int
    name: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.ae_title}@{host}:{self.port}"
        return f"{self.name} ({text})" if self.name else text


def parse_address(spec: str) -> PacsAddress:
    """``AE@HOST:PORT`` (``AE@[::1]:104`` for IPv6) into a PacsAddress."""
    match = _ADDRESS.match(spec.strip())
    if match is None:
        raise ConfigError(
            f"PACS address {spec!r} is not AE@HOST:PORT (for example ORTHANC@127.0.0.1:4242) "
            "nor a name from the config file"
        )
    host = match.group("ip6") or match.group("host")
    return PacsAddress(
        ae_title=check_ae_title(match.group("ae"), "AE title in " + repr(spec)),
        host=host,
        port=check_port(match.group("port"), "port in " + repr(spec)),
    )


def _load(path: Path) -> Mapping[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_pacs_table(path: Path) -> dict[str, PacsAddress]:
    """Every ``[pacs.NAME]`` entry of ``path``; each must have ae_title, host and port."""
    table = _load(path).get("pacs", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: 'pacs' must be a table of [pacs.NAME] entries")
    result: dict[str, PacsAddress] = {}
    for name, entry in table.items():
        where = f"config file {path}, [pacs.{name}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with ae_title, host and port")
        unknown = sorted(set(entry) - {"ae_title", "host", "port"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: ae_title, host, port)")
        missing = [key for key in ("ae_title", "host", "port") if key not in entry]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        host = entry["host"]
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"{where}: host must be a non-empty string")
        ae_title = entry["ae_title"]
        if not isinstance(ae_title, str):
            raise ConfigError(f"{where}: ae_title must be a string")
        result[name] = PacsAddress(
            ae_title=check_ae_title(ae_title, f"{where}: ae_title"),
            host=host.strip(),
            port=check_port(entry["port"], f"{where}: port"),
            name=name,
        )
    return result


def config_path(explicit: str | Path | None) -> Path | None:
    """``--config`` when given (must exist), else the system file when present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def resolve_pacs(spec: str, config: str | Path | None = None) -> PacsAddress:
    """``--from`` value: an ``AE@HOST:PORT`` address, or a NAME looked up in the config file."""
    if "@" in spec:
        return parse_address(spec)
    path = config_path(config)
    if path is None:
        raise ConfigError(
            f"--from {spec!r} is not AE@HOST:PORT and there is no config file to look the "
            f"name up in (give --config FILE, or create {DEFAULT_CONFIG} with a [pacs.{spec}] "
            "table)"
        )
    table = load_pacs_table(path)
    if spec not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(
            f"no [pacs.{spec}] entry in {path} (known: {known}); "
            "an entry needs ae_title, host and port"
        )
    return table[spec]
