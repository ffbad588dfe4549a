"""Settings: zero-config defaults, env and TOML parsing, precedence, and one-line errors that name
the bad key in both spellings."""

from __future__ import annotations

import inspect
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from relay.config import CLIENT_VARS, ENV_PREFIX, Settings, load_settings
from relay.errors import ConfigError
from relay.services import NOFILE_WANTED, raise_open_files_limit
from relay.storage import invites, members
from tests.conftest import settings_for

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[[str | bytes], Path]:
    def write(content: str | bytes) -> Path:
        path = tmp_path / "relay.toml"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return write


def config_error(*args: Any, **kwargs: Any) -> str:
    """The ConfigError message load_settings raises for these arguments (it must be one line)."""
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    message = str(info.value)
    assert message
    assert "\n" not in message
    return message


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_need_no_configuration() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.data_dir == "./data"
    assert settings.database is None
    assert settings.host == "127.0.0.1"
    assert (settings.http_port, settings.realtime_port, settings.relay_port) == (8080, 8081, 33333)
    assert settings.tls_cert is None
    assert settings.tls_key is None
    assert settings.log_format == "auto"
    assert settings.log_level == "info"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.secret_key is None
    assert settings.access_token_ttl_s == 900
    assert settings.refresh_token_ttl_s == 30 * 24 * 3600
    assert settings.rate_window_s == 60.0
    assert settings.db_readers == 4


def test_every_setting_is_in_the_settings_table() -> None:
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    missing = [
        name
        for name in Settings.__struct_fields__
        if not any(f"`{ENV_PREFIX}{name.upper()}`" in row and f"`{name}`" in row for row in rows)
    ]
    assert missing == []


def test_storage_limits_default_to_the_settings_defaults() -> None:
    """The storage functions' limits are parameters (the chat layer passes the settings);
    their defaults, for direct callers such as tests, are the settings' defaults."""
    defaults = Settings()

    def default(fn: Callable[..., Any], name: str) -> Any:
        return inspect.signature(fn).parameters[name].default

    assert default(members.join, "max_joined") == defaults.max_servers_joined
    assert default(members.join_public, "max_joined") == defaults.max_servers_joined
    assert default(invites.use_invite, "max_joined") == defaults.max_servers_joined
    assert default(invites.create_invite, "max_invites") == defaults.max_invites_per_server


def test_env_without_the_prefix_is_ignored() -> None:
    env = {"HOME": "/root", "PATH": "/bin", "HTTP_PORT": "nonsense", "relay_http_port": "1"}
    assert load_settings(env) == Settings()


def test_the_command_line_clients_variables_are_not_settings() -> None:
    """RELAY_URL, RELAY_TOKEN, ... (relay/roomctl.py) may be exported where the server runs."""
    assert load_settings(dict.fromkeys(CLIENT_VARS, "x")) == Settings()
    names = {name.removeprefix(ENV_PREFIX).lower() for name in CLIENT_VARS}
    assert not names & set(Settings.__struct_fields__)
    with pytest.raises(ConfigError):
        load_settings({"RELAY_TOKENS": "x"})  # typos are still errors


def test_db_path_defaults_to_data_dir() -> None:
    assert load_settings({"RELAY_DATA_DIR": "/srv/relay"}).db_path == Path("/srv/relay/relay.db")
    assert Settings().db_path == Path("data/relay.db")


def test_db_path_prefers_database() -> None:
    settings = load_settings({"RELAY_DATA_DIR": "/srv/relay", "RELAY_DATABASE": "/var/x.db"})
    assert settings.db_path == Path("/var/x.db")


def test_empty_database_falls_back_to_data_dir() -> None:
    assert load_settings({"RELAY_DATABASE": ""}).db_path == Path("data/relay.db")


# -- env parsing --------------------------------------------------------------------------------


def test_env_strings_are_parsed_to_field_types() -> None:
    settings = load_settings(
        {
            "RELAY_HOST": "0.0.0.0",
            "RELAY_HTTP_PORT": "9000",
            "RELAY_REALTIME_PORT": "0",
            "RELAY_RELAY_PORT": "65535",
            "RELAY_MAX_BODY_BYTES": "2048",
            "RELAY_RATE_WINDOW_S": "1.5",
            "RELAY_SHUTDOWN_GRACE_S": "3",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "debug",
            "RELAY_SECRET_KEY": "12345",
            "RELAY_DB_READERS": "64",
        }
    )
    assert settings.host == "0.0.0.0"
    assert settings.http_port == 9000
    assert settings.realtime_port == 0
    assert settings.relay_port == 65535
    assert settings.max_body_bytes == 2048
    assert settings.rate_window_s == 1.5
    assert settings.shutdown_grace_s == 3.0
    assert isinstance(settings.shutdown_grace_s, float)
    assert settings.log_format == "json"
    assert settings.log_level == "debug"
    assert settings.secret_key == "12345"  # a str field keeps digits as text
    assert settings.db_readers == 64


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("127.0.0.1", ("127.0.0.1",)),
        ("127.0.0.1,::1", ("127.0.0.1", "::1")),
        (" 10.0.0.0/8 ,  192.168.1.7\t::1 ", ("10.0.0.0/8", "192.168.1.7", "::1")),
    ],
)
def test_trusted_proxies_in_env_are_a_list(value: str, expected: tuple[str, ...]) -> None:
    assert load_settings({"RELAY_TRUSTED_PROXIES": value}).trusted_proxies == expected


def test_trusted_proxies_in_toml_and_overrides(write_toml: Callable[[str | bytes], Path]) -> None:
    toml = write_toml('trusted_proxies = ["127.0.0.1", "fd00::/8"]\n')
    assert load_settings({}, toml).trusted_proxies == ("127.0.0.1", "fd00::/8")
    assert load_settings({}, trusted_proxies=["::1"]).trusted_proxies == ("::1",)


@pytest.mark.parametrize("bad", ["nginx", "127.0.0.1/33", "10.0.0.0/8,localhost"])
def test_a_trusted_proxy_must_be_an_address_or_network(bad: str) -> None:
    message = config_error({"RELAY_TRUSTED_PROXIES": bad})
    assert message.startswith("invalid setting trusted_proxies (RELAY_TRUSTED_PROXIES): ")
    assert "not an IP address or network" in message


@pytest.mark.parametrize("word", ["off", "OFF", "Off", " off "])
def test_relay_port_off_in_env(word: str) -> None:
    assert load_settings({"RELAY_RELAY_PORT": word}).relay_port is None


def test_relay_port_off_in_toml_and_overrides(write_toml: Callable[[str | bytes], Path]) -> None:
    assert load_settings({}, write_toml('relay_port = "off"\n')).relay_port is None
    assert load_settings({}, relay_port="off").relay_port is None
    assert load_settings({}, relay_port=None).relay_port is None


def test_only_relay_port_accepts_off() -> None:
    message = config_error({"RELAY_HTTP_PORT": "off"})
    assert "http_port (RELAY_HTTP_PORT)" in message


def test_unknown_env_setting_is_refused() -> None:
    message = config_error({"RELAY_HTTP_PROT": "80"})
    assert "RELAY_HTTP_PROT" in message
    assert "unknown setting" in message


def test_bare_prefix_is_an_unknown_setting() -> None:
    assert ENV_PREFIX in config_error({ENV_PREFIX: "x"})


# -- TOML file and precedence -----------------------------------------------------------------


def test_toml_file(
    write_toml: Callable[[str | bytes], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    path = write_toml(
        'host = "::1"\nhttp_port = 7000\nrate_window_s = 30\nlog_level = "warning"\n'
        'tls_cert = "c.pem"\ntls_key = "k.pem"\n'
    )
    settings = load_settings({}, path)
    assert settings.host == "::1"
    assert settings.http_port == 7000
    assert settings.rate_window_s == 30.0
    assert settings.log_level == "warning"
    assert (settings.tls_cert, settings.tls_key) == ("c.pem", "k.pem")
    assert settings.realtime_port == 8081  # untouched keys keep their defaults
    assert load_settings({}, str(path)) == settings  # a str path works too


def test_env_beats_toml_and_overrides_beat_env(write_toml: Callable[[str | bytes], Path]) -> None:
    path = write_toml("http_port = 7000\nrealtime_port = 7001\nrelay_port = 7002\n")
    env = {"RELAY_REALTIME_PORT": "9001", "RELAY_RELAY_PORT": "9002"}
    settings = load_settings(env, path, relay_port=1234)
    assert settings.http_port == 7000  # TOML only
    assert settings.realtime_port == 9001  # env over TOML
    assert settings.relay_port == 1234  # override over env


def test_env_off_beats_toml_port(write_toml: Callable[[str | bytes], Path]) -> None:
    path = write_toml("relay_port = 7002\n")
    assert load_settings({"RELAY_RELAY_PORT": "off"}, path).relay_port is None


def test_unknown_toml_key_is_refused(write_toml: Callable[[str | bytes], Path]) -> None:
    path = write_toml("http_port = 1\nhttp_prot = 2\n")
    message = config_error({}, path)
    assert "'http_prot'" in message
    assert str(path) in message


def test_toml_keys_are_case_sensitive(write_toml: Callable[[str | bytes], Path]) -> None:
    assert "'HTTP_PORT'" in config_error({}, write_toml("HTTP_PORT = 1\n"))


def test_toml_table_is_an_unknown_key(write_toml: Callable[[str | bytes], Path]) -> None:
    assert "'server'" in config_error({}, write_toml("[server]\nhttp_port = 1\n"))


def test_bad_toml_value_names_the_key(write_toml: Callable[[str | bytes], Path]) -> None:
    message = config_error({}, write_toml('http_port = "eighty"\n'))
    assert message.startswith("invalid setting http_port (RELAY_HTTP_PORT): ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    message = config_error({}, path)
    assert str(path) in message
    assert "No such file" in message


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file whoever runs the tests (chmod 000 does not stop root).
    message = config_error({}, tmp_path)
    assert message.startswith(f"config file {tmp_path}: ")


@pytest.mark.parametrize(
    "content",
    [
        "http_port = \n",
        "http_port = 1\nhttp_port = 2\n",
        "[unclosed\n",
        'host = "unterminated\n',
        b'host = "caf\xe9"\n',  # Latin-1, not UTF-8: tomllib raises UnicodeDecodeError
        b"\xff\xfe\x00\x00",
    ],
)
def test_bad_toml(write_toml: Callable[[str | bytes], Path], content: str | bytes) -> None:
    path = write_toml(content)
    assert config_error({}, path).startswith(f"config file {path}: ")


# -- validation errors name the key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("http_port", "abc", "Expected `int`, got `str`"),
        ("http_port", "65536", "Expected `int` <= 65535"),
        ("realtime_port", "-1", "Expected `int` >= 0"),
        ("relay_port", "on", "got `str`"),
        ("relay_port", "", "got `str`"),
        ("max_body_bytes", "0", "Expected `int` >= 1"),
        ("access_token_ttl_s", "1.5", "Expected `int`"),
        ("login_per_ip", " 5", "Expected `int`"),
        ("rate_window_s", "0", "Expected `float` > 0.0"),
        ("rate_window_s", "nan", "Expected `float` > 0.0"),
        ("rate_window_s", "inf", "Expected `float` <= 86400.0"),
        ("actor_idle_s", "soon", "Expected `float`"),
        ("db_readers", "65", "Expected `int` <= 64"),
        ("log_level", "loud", "Invalid enum value 'loud'"),
        ("log_format", "xml", "Invalid enum value 'xml'"),
    ],
)
def test_env_error_names_both_spellings(key: str, value: str, reason: str) -> None:
    env_name = ENV_PREFIX + key.upper()
    message = config_error({env_name: value})
    assert message.startswith(f"invalid setting {key} ({env_name}): ")
    assert reason in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("host", 5), ("http_port", True), ("http_port", 1.5), ("db_readers", [1]), ("data_dir", {})],
)
def test_override_type_error_names_the_key(key: str, value: object) -> None:
    env_name = ENV_PREFIX + key.upper()
    assert config_error({}, **{key: value}).startswith(f"invalid setting {key} ({env_name}): ")


def test_unknown_override_is_refused() -> None:
    assert "`bogus`" in config_error({}, bogus=1)


@pytest.mark.parametrize("present", ["tls_cert", "tls_key"])
def test_tls_cert_and_key_come_together(present: str) -> None:
    message = config_error({ENV_PREFIX + present.upper(): "/etc/relay/x.pem"})
    assert "tls_cert and tls_key must be set together" in message


def test_tls_pair_from_toml_and_env(
    write_toml: Callable[[str | bytes], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    settings = load_settings({"RELAY_TLS_KEY": "k.pem"}, write_toml('tls_cert = "c.pem"\n'))
    assert (settings.tls_cert, settings.tls_key) == ("c.pem", "k.pem")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("cert")
    env = {"RELAY_TLS_CERT": str(tmp_path / "c.pem"), "RELAY_TLS_KEY": str(tmp_path / "no.pem")}
    assert "tls_key: no such file" in config_error(env)


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.http_port = 1  # type: ignore[misc]


def test_the_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
    try:
        raised = raise_open_files_limit(settings_for(tmp_path))
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == now
        assert now == (hard if hard != resource.RLIM_INFINITY else NOFILE_WANTED)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
