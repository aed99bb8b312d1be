"""Settings resolution: flags > DICOMFS_* > TOML file > defaults, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomfs.errors import ConfigError
from dicomfs.index import default_index_path
from dicomfs.service import config
from dicomfs.service.config import Settings, resolve


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The machine's /etc/dicomfs/dicomfs.toml must not leak into these tests.
    monkeypatch.setattr(config, "DEFAULT_CONFIG", tmp_path / "absent.toml")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = resolve({}, {})
    assert s == Settings()
    assert s.index == default_index_path()
    assert s.settle_seconds == 0.2 and s.reconcile_interval == 600.0
    assert s.watch == "inotify" and s.allow_other is False and s.group is None
    assert s.workers >= 1 and s.config_file is None
    assert s.origin("settle_seconds") == "default"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "d.toml",
        'sources = ["in"]\nmountpoint = "/mnt/x"\nsettle_seconds = 1.5\n'
        'workers = 3\nwatch = "poll"\nallow_other = true\n',
    )
    env = {"DICOMFS_SETTLE_SECONDS": "0.7", "DICOMFS_WORKERS": "5"}
    s = resolve({"config": str(toml), "workers": 7}, env)
    assert s.sources == (tmp_path / "in",)  # relative to the file's folder
    assert s.mountpoint == Path("/mnt/x")
    assert s.settle_seconds == 0.7 and s.origin("settle_seconds") == "env"
    assert s.workers == 7 and s.origin("workers") == "flag"
    assert s.watch == "poll" and s.origin("watch") == "file"
    assert s.allow_other is True
    assert s.config_file == toml


def test_environment_values_are_parsed(tmp_path: Path) -> None:
    env = {
        "DICOMFS_SOURCES": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}",
        "DICOMFS_INDEX": str(tmp_path / "i.sqlite"),
        "DICOMFS_ALLOW_OTHER": "yes",
        "DICOMFS_WATCH": "POLL",
        "DICOMFS_LOG_LEVEL": "debug",
        "DICOMFS_GROUP": "radonc",
    }
    s = resolve({}, env)
    assert s.sources == (tmp_path / "a", tmp_path / "b")
    assert s.index == tmp_path / "i.sqlite"
    assert (s.allow_other, s.watch, s.log_level, s.group) == (True, "poll", "DEBUG", "radonc")


def test_empty_flags_mean_not_given(tmp_path: Path) -> None:
    toml = write(tmp_path / "d.toml", f'sources = ["{tmp_path}"]\n')
    s = resolve({"config": str(toml), "sources": [], "allow_other": None})
    assert s.sources == (tmp_path,)


def test_config_file_from_environment(tmp_path: Path) -> None:
    toml = write(tmp_path / "d.toml", "batch_size = 50\n")
    assert resolve({}, {"DICOMFS_CONFIG": str(toml)}).batch_size == 50


def test_default_config_used_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = write(tmp_path / "etc.toml", "reconcile_interval = 60\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", toml)
    s = resolve({}, {})
    assert s.reconcile_interval == 60.0 and s.config_file == toml


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ({}, {"DICOMFS_SETTLE_SECONDS": "soon"}, None,
         "invalid settle_seconds from environment variable DICOMFS_SETTLE_SECONDS: "
         "'soon' is not a number"),
        ({}, {}, "settle_seconds = -1\n",
         "invalid settle_seconds from key 'settle_seconds' in {toml}: -1 must be a finite "
         "number >= 0"),
        ({"workers": 0}, {}, None,
         "invalid workers from command-line option for workers: 0 must be a finite number >= 1"),
        ({}, {}, "workers = 2.5\n",
         "invalid workers from key 'workers' in {toml}: 2.5 is not an integer"),
        ({}, {}, 'watch = "fanotify"\n',
         "invalid watch from key 'watch' in {toml}: 'fanotify' is not one of inotify, poll"),
        ({}, {"DICOMFS_ALLOW_OTHER": "maybe"}, None,
         "invalid allow_other from environment variable DICOMFS_ALLOW_OTHER: "
         "expected true or false"),
        ({}, {}, "sources = 3\n",
         "invalid sources from key 'sources' in {toml}: expected a list of paths"),
        ({}, {}, "reconcile_intreval = 5\n",
         "config file {toml}: unknown key 'reconcile_intreval' (known keys: sources, "),
        ({}, {}, "settle_seconds = [\n", "config file {toml} is not valid TOML: "),
        ({}, {}, "reconcile_interval = nan\n",
         "invalid reconcile_interval from key 'reconcile_interval' in {toml}: nan must be "),
    ],
)  # fmt: skip
def test_invalid_values_name_key_and_source(
    tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str | None, message: str
) -> None:
    path = tmp_path / "bad.toml"
    if toml is not None:
        write(path, toml)
        flags = {**flags, "config": str(path)}
    with pytest.raises(ConfigError) as raised:
        resolve(flags, env)
    assert str(raised.value).startswith(message.format(toml=path))


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        resolve({"config": str(tmp_path / "nope.toml")}, {})


def test_log_summary_names_every_setting_and_its_origin(tmp_path: Path) -> None:
    s = resolve({"sources": [str(tmp_path)], "settle_seconds": 0.5}, {"DICOMFS_WORKERS": "2"})
    line = s.log_summary()
    assert f"sources={tmp_path} (flag)" in line
    assert "settle_seconds=0.5 (flag)" in line
    assert "workers=2 (env)" in line
    assert "reconcile_interval=600.0 (default)" in line
    assert "\n" not in line


def test_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "systemd" / "dicomfs.toml.example"
    s = resolve({"config": str(example)}, {})
    assert s.sources and s.mountpoint is not None
    assert s.config_file == example


def test_a_shared_index_with_roots_and_a_host_name(tmp_path: Path) -> None:
    """Issue 17: the index as a PostgreSQL URL (kept as given, logged without its password),
    [roots] from the file, DICOMFS_ROOTS and DICOMFS_HOST from the environment."""
    toml = write(
        tmp_path / "d.toml",
        'index = "postgresql://ingest:secret@db.example.org/dicomfs"\nhost = "planning1"\n'
        '[roots]\nnas = "/mnt/nas"\nscans = "/mnt/scans/"\n',
    )
    s = resolve({"config": str(toml)}, {})
    assert s.index == "postgresql://ingest:secret@db.example.org/dicomfs"
    assert s.roots == (("nas", "/mnt/nas"), ("scans", "/mnt/scans")) and s.host == "planning1"
    summary = s.log_summary()
    assert "secret" not in summary and "postgresql://ingest@db.example.org/dicomfs" in summary
    s = resolve({}, {"DICOMFS_ROOTS": "nas=/srv/archive", "DICOMFS_HOST": "planning2"})
    assert s.roots == (("nas", "/srv/archive"),) and s.host == "planning2"
    for bad, message in (('[roots]\nnas = "relative"\n', "not an absolute path"),
                         ('roots = "x"\n', "name=/path")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            resolve({"config": str(write(tmp_path / "bad.toml", bad))}, {})


def test_a_database_password_is_never_shown() -> None:
    """In the URL's user part or as libpq's password parameter: both are dropped."""
    from dicomfs.index import shown

    url = "postgresql://ingest:secret@db.example.org/dicomfs?password=secret&sslmode=require"
    assert shown(url) == "postgresql://ingest@db.example.org/dicomfs?sslmode=require"
