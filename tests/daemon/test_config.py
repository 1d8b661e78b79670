"""Home resolution and config.toml: defaults, validation, rates, atomic writes."""

import os
import stat
import tomllib
from pathlib import Path

import pytest

from shoal.daemon import toml_file
from shoal.daemon.config import Config, Settings, load_config, parse_host_port, parse_rate, set_config_value
from shoal.errors import ConfigError
from shoal.home import ensure_home, resolve_home, socket_path


def test_home_comes_from_the_flag_then_the_environment_then_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("SHOAL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_home(None) == tmp_path / "xdg" / "shoal"


def test_a_relative_home_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert resolve_home("state") == tmp_path / "state"


def test_ensure_home_creates_a_private_directory_and_tightens_a_loose_one(tmp_path):
    fresh = ensure_home(tmp_path / "a" / "home")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    ensure_home(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_a_socket_path_too_long_for_unix_sockets_is_refused_with_advice(tmp_path):
    assert socket_path(Path("/tmp/h")) == Path("/tmp/h/control.sock")
    with pytest.raises(ConfigError, match="shorter --home"):
        socket_path(Path("/tmp") / ("x" * 100))


def test_a_missing_file_means_every_default(tmp_path):
    config = load_config(tmp_path)
    assert config == Config()
    assert config.to_dict() == {
        "listen": "0.0.0.0:7453",
        "discovery": True,
        "bandwidth.global_limit": 0,
        "bandwidth.per_peer_limit": 0,
        "retention.max_versions": 5,
        "retention.max_fraction": 0.25,
        "retention.min_bytes": 2 * 1024**3,
        "share.default_audience": "all",
        "watch.quiet": 2.0,
        "watch.max_wait": 600.0,
        "fetch.workers": 0,
    }


def test_fetch_workers_take_zero_to_fifteen(tmp_path):
    assert set_config_value(tmp_path, "fetch.workers", "4").workers == 4
    assert load_config(tmp_path).workers == 4
    for bad in ("16", "-1", "two"):
        with pytest.raises(ConfigError, match="not a number of workers"):
            set_config_value(tmp_path, "fetch.workers", bad)
    assert load_config(tmp_path).workers == 4


def test_values_are_read_from_tables_and_rates_may_be_text(tmp_path):
    (tmp_path / "config.toml").write_text(
        'listen = "127.0.0.1:9000"\ndiscovery = false\n'
        '[bandwidth]\nglobal_limit = "100MB/s"\nper_peer_limit = 1000\n'
        "[retention]\nmax_versions = 2\nmax_fraction = 1\nmin_bytes = \"1.5GB\"\n"
    )
    config = load_config(tmp_path)
    assert config.listen == "127.0.0.1:9000"
    assert config.discovery is False
    assert config.global_limit == 100_000_000
    assert config.per_peer_limit == 1000
    assert config.get("retention.max_versions") == 2
    assert config.max_fraction == 1.0
    assert config.min_bytes == 1_500_000_000


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ("[bandwidth]\nglobal = 1\n", "unknown key 'bandwidth.global'"),
        ("discovery = 1\n", "discovery"),
        ('listen = "nohost"\n', "HOST:PORT"),
        ("[retention]\nmax_versions = 0\n", "at least 1"),
        ("[retention]\nmax_fraction = 1.5\n", "(0, 1]"),
        ("[retention]\nmin_bytes = -1\n", "not a size"),
        ("[watch]\nquiet = 0\n", "above 0"),
        ('[watch]\nmax_wait = "long"\n', "not a duration"),
        ("[bandwidth]\nglobal_limit = -5\n", "not a rate"),
        ("listen = \n", "not valid TOML"),
    ],
)
def test_bad_files_are_reported_with_the_path_and_the_key(tmp_path, text, fragment):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert fragment in str(caught.value)
    assert str(tmp_path / "config.toml") in str(caught.value)


def test_set_writes_the_file_and_keeps_other_keys(tmp_path):
    set_config_value(tmp_path, "listen", "[::1]:7000")
    config = set_config_value(tmp_path, "bandwidth.global_limit", "50Mbit")
    assert config.listen == "[::1]:7000"
    assert config.global_limit == 6_250_000
    on_disk = tomllib.loads((tmp_path / "config.toml").read_text())
    assert on_disk == {"listen": "[::1]:7000", "bandwidth": {"global_limit": 6_250_000}}
    assert load_config(tmp_path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"], "no temporary file is left behind"


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("colour", "red", "unknown config key 'colour'"),
        ("discovery", "maybe", "not a boolean"),
        ("retention.max_versions", "many", "whole number"),
        ("retention.max_fraction", "0", "(0, 1]"),
        ("retention.min_bytes", "2 pounds", "not a size"),
        ("watch.quiet", "soon", "number of seconds"),
        ("bandwidth.per_peer_limit", "fast", "not a rate"),
        ("listen", "host:99999", "HOST:PORT"),
    ],
)
def test_set_refuses_bad_values_and_leaves_the_file_alone(tmp_path, key, value, fragment):
    set_config_value(tmp_path, "discovery", "off")
    before = (tmp_path / "config.toml").read_bytes()
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
        set_config_value(tmp_path, key, value)
    assert (tmp_path / "config.toml").read_bytes() == before


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    set_config_value(tmp_path, "retention.max_versions", "3")

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(toml_file.os, "replace", explode)
    with pytest.raises(OSError):
        set_config_value(tmp_path, "retention.max_versions", "9")
    assert load_config(tmp_path).max_versions == 3
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


@pytest.mark.parametrize(
    "text, rate",
    [
        ("0", 0),
        ("unlimited", 0),
        ("12500000", 12_500_000),
        ("100MB/s", 100_000_000),
        ("100 MB/s", 100_000_000),
        ("100mb/s", 12_500_000),
        ("50Mbit", 6_250_000),
        ("50Mbps", 6_250_000),
        ("1.5GB/s", 1_500_000_000),
        ("2GiB/s", 2 * 1024**3),
        ("10KiB", 10 * 1024),
        ("8kbit/s", 1000),
    ],
)
def test_rates_are_read_as_bytes_per_second(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1MB/s", "10 XB/s", "1bit"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ConfigError):
        parse_rate(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("192.168.1.20:7453", ("192.168.1.20", 7453)),
        ("[fe80::1]:7453", ("fe80::1", 7453)),
        ("peer.local:1", ("peer.local", 1)),
    ],
)
def test_host_port_parsing(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["7453", "host:", ":7453", "host:0", "fe80::1:7453", "host:port"])
def test_bad_host_ports_are_refused(text):
    with pytest.raises(ConfigError):
        parse_host_port(text)


def test_port_zero_is_allowed_only_where_asked_for():
    assert parse_host_port("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)


def test_settings_hand_out_the_configuration_in_force_after_a_reload():
    settings = Settings(Config(global_limit=100, per_peer_limit=10))
    read_by_a_service = settings.current
    assert settings.limits() == (100, 10)
    settings.replace(Config(global_limit=0, per_peer_limit=5, max_versions=2))
    assert read_by_a_service().max_versions == 2
    assert settings.limits() == (0, 5)
