"""Server resolution checked against the official simvue 2.6.2 client on the same files.

Every case in CASES builds a directory tree (a working directory nested under ``work/``, a fake
HOME, config files, environment variables, command-line values). One subprocess runs the
official client's ``SimvueConfiguration.fetch`` on every case (with SIMVUE_NO_SERVER_CHECK=1);
our ``resolve_server`` must pick the same URL, token and offline directory, or fail where the
client fails. Each case also states the expected winner, so a broken oracle cannot pass.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from control_util import make_jwt

from simvuefs.config import (
    MIB,
    ServerConfig,
    Settings,
    api_base_url,
    check_token,
    mount_spool_dir,
    parse_size,
    parse_ttl,
    path_key,
    resolve_server,
    spool_root,
)
from simvuefs.errors import ConfigError


@functools.cache
def tok(name: str) -> str:
    """A distinct valid token per source, so the winner is identifiable."""
    return make_jwt({"sub": name, "exp": int(time.time()) + 86400})


EXPIRED = make_jwt({"sub": "old", "exp": int(time.time()) - 60})
NO_EXP = make_jwt({"sub": "forever"})


def server_toml(url: str | None, token: str | None, table: str = "server") -> str:
    lines = [f"[{table}]"]
    if url is not None:
        lines.append(f'url = "{url}"')
    if token is not None:
        lines.append(f'token = "{token}"')
    return "\n".join(lines) + "\n"


def env_server(name: str = "env", url: str = "http://env.example:1") -> dict[str, str]:
    return {"SIMVUE_URL": url, "SIMVUE_TOKEN": tok(name)}


PROFILES = (
    server_toml("http://server.example:1", tok("server"))
    + server_toml("http://a.example:1", tok("prof_a"), "profiles.a")
    + server_toml("http://b.example:1", tok("prof_b"), "profiles.b")
)


@dataclass(frozen=True)
class Case:
    """One resolution scenario; *expect* is the winning token's name, or "error".

    For errors, *why* holds a phrase of our message and one of the client's, so both are
    known to fail for the same reason.
    """

    id: str
    expect: str
    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    token: str | None = None
    profile: str | None = None
    cwd: str = "work/a/b/c"
    expect_url: str | None = None
    # Set only where we deliberately differ: the URL the official client produces.
    client_url: str | None = None
    why: tuple[str, str] = ("", "")


CASES = [
    # where the file is found
    Case(
        "cwd_file", "cwd", {"work/a/b/c/simvue.toml": server_toml("http://c.example", tok("cwd"))}
    ),
    Case("parent_file", "parent", {"work/simvue.toml": server_toml("http://p:2", tok("parent"))}),
    Case(
        "nearest_wins",
        "near",
        {
            "work/simvue.toml": server_toml("http://far:1", tok("far")),
            "work/a/b/simvue.toml": server_toml("http://near:1", tok("near")),
        },
    ),
    Case(
        "plain_name_beats_nearer_dotfile",
        "plain",
        {
            "work/a/b/c/.simvue.toml": server_toml("http://dot:1", tok("dot")),
            "work/simvue.toml": server_toml("http://plain:1", tok("plain")),
        },
    ),
    Case("dotfile_upward", "dot", {"work/a/.simvue.toml": server_toml("http://d:1", tok("dot"))}),
    Case("home_plain", "home", {"home/simvue.toml": server_toml("http://h:1", tok("home"))}),
    Case(
        "home_dotfile", "homedot", {"home/.simvue.toml": server_toml("http://h:1", tok("homedot"))}
    ),
    Case(
        "home_plain_beats_home_dotfile",
        "home",
        {
            "home/.simvue.toml": server_toml("http://hd:1", tok("homedot")),
            "home/simvue.toml": server_toml("http://h:1", tok("home")),
        },
    ),
    Case(
        "upward_dotfile_beats_home_plain",
        "dot",
        {
            "work/.simvue.toml": server_toml("http://d:1", tok("dot")),
            "home/simvue.toml": server_toml("http://h:1", tok("home")),
        },
    ),
    Case(
        "cwd_inside_home_walks_to_home",
        "homedot",
        {"home/.simvue.toml": server_toml("http://h:1", tok("homedot"))},
        cwd="home/project/sub",
    ),
    # precedence between environment, arguments and file
    Case("env_only", "env", env=env_server()),
    Case("args_only", "arg", url="http://arg:1", token=tok("arg")),
    Case(
        "env_over_file",
        "env",
        {"work/simvue.toml": server_toml("http://file:1", tok("file"))},
        env_server(),
        expect_url="http://env.example:1/api",
    ),
    Case(
        "arg_over_file",
        "arg",
        {"work/simvue.toml": server_toml("http://file:1", tok("file"))},
        url="http://arg:1",
        token=tok("arg"),
        expect_url="http://arg:1/api",
    ),
    Case(
        "env_over_arg",
        "env",
        env=env_server(),
        url="http://arg:1",
        token=tok("arg"),
        expect_url="http://env.example:1/api",
    ),
    Case(
        "url_from_env_token_from_file",
        "file",
        {"work/simvue.toml": server_toml("http://file:1", tok("file"))},
        {"SIMVUE_URL": "http://env.example:1"},
        expect_url="http://env.example:1/api",
    ),
    Case(
        "empty_arg_falls_back_to_file",
        "file",
        {"work/simvue.toml": server_toml("http://file:1", tok("file"))},
        url="",
        token="",
    ),
    Case(
        "empty_env_var_does_not_fall_back",
        "error",
        {"work/simvue.toml": server_toml("http://file:1", tok("file"))},
        {"SIMVUE_URL": ""},
        why=("SIMVUE_URL is set but empty", "No server URL"),
    ),
    # profiles
    Case(
        "profile_via_env", "prof_b", {"work/simvue.toml": PROFILES}, {"SIMVUE_SERVER_PROFILE": "b"}
    ),
    Case("profile_via_arg", "prof_a", {"work/simvue.toml": PROFILES}, profile="a"),
    Case(
        "env_profile_over_arg_profile",
        "prof_b",
        {"work/simvue.toml": PROFILES},
        {"SIMVUE_SERVER_PROFILE": "b"},
        profile="a",
    ),
    Case("no_profile_reads_server", "server", {"work/simvue.toml": PROFILES}),
    Case(
        "env_token_over_profile",
        "env",
        {"work/simvue.toml": PROFILES},
        {"SIMVUE_TOKEN": tok("env")},
        profile="a",
        expect_url="http://a.example:1/api",
    ),
    Case(
        "unknown_profile",
        "error",
        {"work/simvue.toml": PROFILES},
        profile="zzz",
        why=("profile 'zzz' not found", "profile not found"),
    ),
    Case(
        "empty_profile_table_is_unknown",
        "error",
        {"work/simvue.toml": PROFILES + "[profiles.empty]\n"},
        profile="empty",
        why=("profile 'empty' not found", "profile not found"),
    ),
    Case(
        "profile_without_file",
        "error",
        env=env_server(),
        profile="a",
        why=("profile 'a' not found", "profile not found"),
    ),
    Case(
        "profile_does_not_inherit_server_table",
        "error",
        {
            "work/simvue.toml": server_toml(None, tok("server"))
            + server_toml("http://a:1", None, "profiles.a")
        },
        profile="a",
        why=("no Simvue token", "No server token"),
    ),
    # legacy INI
    Case(
        "ini_in_cwd_only",
        "error",
        {"work/a/b/c/simvue.ini": "[server]\nurl = http://i\n"},
        why=("legacy INI", "INI configuration file format has been deprecated"),
    ),
    Case(
        "ini_in_home_even_with_env",
        "error",
        {"home/.simvue.ini": "[server]\nurl = http://i\n"},
        env_server(),
        why=("legacy INI", "INI configuration file format has been deprecated"),
    ),
    Case(
        "ini_ignored_when_toml_found",
        "parent",
        {
            "work/a/b/c/simvue.ini": "[server]\nurl = http://i\n",
            "work/simvue.toml": server_toml("http://p:1", tok("parent")),
        },
    ),
    # missing or invalid values
    Case(
        "missing_url",
        "error",
        {"work/simvue.toml": server_toml(None, tok("file"))},
        why=("no Simvue server URL", "No server URL"),
    ),
    Case(
        "missing_token",
        "error",
        env={"SIMVUE_URL": "http://env:1"},
        why=("no Simvue token", "No server token"),
    ),
    Case("nothing_at_all", "error", why=("no Simvue server URL", "No server URL")),
    Case(
        "bad_scheme",
        "error",
        env=env_server(url="ftp://h:1"),
        why=("must start with http:// or https://", "URL scheme should be 'http' or 'https'"),
    ),
    Case("no_host", "error", env=env_server(url="http://"), why=("has no host", "empty host")),
    Case(
        "expired_token",
        "error",
        env={"SIMVUE_URL": "http://h:1", "SIMVUE_TOKEN": EXPIRED},
        why=("has expired", "Simvue token has expired"),
    ),
    Case(
        "non_jwt_token",
        "error",
        env={"SIMVUE_URL": "http://h:1", "SIMVUE_TOKEN": "abc123"},
        why=("invalid token form", "invalid token form"),
    ),
    Case(
        "token_without_exp",
        "error",
        env={"SIMVUE_URL": "http://h:1", "SIMVUE_TOKEN": NO_EXP},
        why=("has no expiry", "KeyError: 'exp'"),
    ),
    Case(
        "malformed_toml",
        "error",
        {"work/simvue.toml": "[server\nurl = 1\n"},
        env_server(),
        why=("invalid TOML", "TomlDecodeError"),
    ),
    # URL normalisation
    Case("url_root", "env", env=env_server(url="http://h:1"), expect_url="http://h:1/api"),
    Case(
        "url_prefix_trailing_slash",
        "env",
        env=env_server(url="http://Host.Example:80/prefix/"),
        expect_url="http://host.example/prefix/api",
    ),
    Case(
        "url_already_api",
        "env",
        env=env_server(url="https://h:8443/x/api"),
        expect_url="https://h:8443/x/api",
    ),
    Case(
        "url_api_trailing_slash",
        "env",
        env=env_server(url="http://h:1/api/"),
        expect_url="http://h:1/api",
        client_url="http://h:1/api/api",
    ),
    # offline directory
    Case(
        "offline_from_env",
        "file",
        {
            "work/simvue.toml": server_toml("http://f:1", tok("file"))
            + '[offline]\ncache = "/nonexistent-unused"\n'
        },
        {"SIMVUE_OFFLINE_DIRECTORY": "{root}/env-cache"},
    ),
    Case(
        "offline_from_file",
        "file",
        {
            "work/simvue.toml": server_toml("http://f:1", tok("file"))
            + '[offline]\ncache = "{root}/c"\n'
        },
    ),
]

ORACLE = r"""
import importlib, json, os, sys
import simvue.config.user

MODULES = ("simvue.config.files", "simvue.config.parameters", "simvue.config.user")
base_env = {k: v for k, v in os.environ.items() if not k.startswith("SIMVUE_")}
results = {}
for case in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(base_env, HOME=case["home"], SIMVUE_NO_SERVER_CHECK="1", **case["env"])
    os.chdir(case["cwd"])
    # What a fresh process would see: files.py reads cwd and HOME at import time, and
    # config_file() is lru_cached on the class.
    for name in MODULES:
        importlib.reload(sys.modules[name])
    configuration = sys.modules["simvue.config.user"].SimvueConfiguration
    try:
        got = configuration.fetch(
            mode="online", server_url=case["url"], server_token=case["token"],
            profile=case["profile"],
        )
    except Exception as exc:
        results[case["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        results[case["id"]] = {
            "url": got.server.url,
            "token": got.server.token.get_secret_value(),
            "offline": str(got.offline.cache),
        }
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Tree:
    root: Path
    cwd: Path
    home: Path
    env: dict[str, str]


def build_tree(base: Path, case: Case) -> Tree:
    root = base / case.id
    (root / "work/a/b/c").mkdir(parents=True)
    (root / "home").mkdir()
    for relative, text in case.files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text.replace("{root}", str(root)))
    cwd = root / case.cwd
    cwd.mkdir(parents=True, exist_ok=True)
    env = {name: value.replace("{root}", str(root)) for name, value in case.env.items()}
    return Tree(root, cwd, root / "home", env)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tree]:
    base = tmp_path_factory.mktemp("resolution")
    return {case.id: build_tree(base, case) for case in CASES}


@pytest.fixture(scope="module")
def official(trees: dict[str, Tree]) -> dict[str, dict[str, str]]:
    """The official client's answer for every case, from one subprocess."""
    request = [
        {
            "id": case.id,
            "cwd": str(trees[case.id].cwd),
            "home": str(trees[case.id].home),
            "env": trees[case.id].env,
            "url": case.url,
            "token": case.token,
            "profile": case.profile,
        }
        for case in CASES
    ]
    done = subprocess.run(
        [sys.executable, "-c", ORACLE],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=next(iter(trees.values())).root.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, dict[str, str]] = json.loads(done.stdout.splitlines()[-1])
    return results


def assert_safe_message(exc: ConfigError, *tokens: str) -> None:
    """One line, and no token nor any of its segments."""
    message = str(exc)
    assert message
    assert "\n" not in message
    for token in tokens:
        assert token not in message
        for segment in token.split("."):
            if len(segment) > 3:
                assert segment not in message


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_resolution_matches_official_client(
    case: Case, trees: dict[str, Tree], official: dict[str, dict[str, str]]
) -> None:
    tree = trees[case.id]
    client = official[case.id]
    ours_error = ""
    every_token = [tok(name) for name in ("env", "arg", "file", "server")] + [EXPIRED, NO_EXP]
    try:
        ours: ServerConfig | None = resolve_server(
            url=case.url,
            token=case.token,
            profile=case.profile,
            cwd=tree.cwd,
            env=tree.env,
            home=tree.home,
        )
    except ConfigError as exc:
        assert_safe_message(exc, *every_token)
        ours, ours_error = None, str(exc)

    if case.expect == "error":
        assert ours is None
        assert case.why[0] in ours_error
        assert case.why[1] in client.get("error", "")
        return
    assert "error" not in client, client["error"][:300]
    assert ours is not None, ours_error
    assert client["token"] == ours.token == tok(case.expect)
    assert ours.url == (case.expect_url or client["url"])
    assert client["url"] == (case.client_url or ours.url)
    assert str(ours.offline_directory) == client["offline"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_sources_are_named(tmp_path: Path) -> None:
    config = write(tmp_path / "simvue.toml", PROFILES)
    got = resolve_server(cwd=tmp_path, env={"SIMVUE_URL": "http://e:1"}, home=tmp_path, profile="a")
    assert got.url_source == "environment variable SIMVUE_URL"
    assert got.token_source == f"{config} [profiles.a]"
    assert got.config_file == config
    got = resolve_server(
        url="http://x", token=tok("arg"), cwd=tmp_path / "nowhere", env={}, home=tmp_path / "h"
    )
    assert (got.url_source, got.token_source, got.config_file) == (
        "option --url",
        "option --token",
        None,
    )


def test_explicit_config_file_replaces_search(tmp_path: Path) -> None:
    write(tmp_path / "simvue.toml", server_toml("http://searched:1", tok("searched")))
    chosen = write(tmp_path / "elsewhere/mine.toml", server_toml("http://mine:1", tok("mine")))
    got = resolve_server(
        config_file=Path("elsewhere/mine.toml"), cwd=tmp_path, env={}, home=tmp_path
    )
    assert (got.url, got.token, got.config_file) == ("http://mine:1/api", tok("mine"), chosen)
    with pytest.raises(ConfigError, match="config file .*absent.toml does not exist"):
        resolve_server(config_file=tmp_path / "absent.toml", cwd=tmp_path, env={}, home=tmp_path)


def test_offline_directory_default_and_tilde(tmp_path: Path) -> None:
    env = env_server()
    got = resolve_server(cwd=tmp_path, env=env, home=tmp_path / "home")
    assert got.offline_directory == tmp_path / "home/.simvue"
    write(tmp_path / "simvue.toml", '[offline]\ncache = "~/cache"\n')
    got = resolve_server(cwd=tmp_path, env=env, home=tmp_path / "home")
    assert got.offline_directory == tmp_path / "home/cache"
    got = resolve_server(
        cwd=tmp_path, env={**env, "SIMVUE_OFFLINE_DIRECTORY": "rel"}, home=tmp_path
    )
    assert got.offline_directory == tmp_path / "rel"


def error_for(tmp_path: Path, files: Mapping[str, str] = {}, **kwargs: object) -> str:
    for relative, text in files.items():
        write(tmp_path / relative, text)
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as caught:
        resolve_server(cwd=tmp_path / "cwd", home=tmp_path / "home", **kwargs)  # type: ignore[arg-type]
    assert_safe_message(caught.value, tok("file"), tok("env"), EXPIRED, NO_EXP)
    return str(caught.value)


def test_missing_url_lists_places_searched(tmp_path: Path) -> None:
    (tmp_path / "cwd").mkdir()
    message = error_for(tmp_path, env={"SIMVUE_TOKEN": tok("env")})
    assert message.startswith(
        "no Simvue server URL: set SIMVUE_URL, pass --url, or add url to [server]"
    )
    assert f"simvue.toml and .simvue.toml in {tmp_path / 'cwd'} and its parents" in message
    assert str(tmp_path / "home/simvue.toml") in message
    assert str(tmp_path / "home/.simvue.toml") in message


def test_missing_token_names_the_file_and_profile(tmp_path: Path) -> None:
    files = {"cwd/simvue.toml": server_toml("http://a:1", None, "profiles.dev")}
    message = error_for(tmp_path, files, profile="dev")
    assert message == (
        "no Simvue token: set SIMVUE_TOKEN, pass --token, or add token to "
        f"[profiles.dev] in {tmp_path / 'cwd/simvue.toml'}"
    )


def test_unknown_profile_lists_known_ones(tmp_path: Path) -> None:
    message = error_for(tmp_path, {"cwd/simvue.toml": PROFILES}, env={"SIMVUE_SERVER_PROFILE": "x"})
    assert "profile 'x' not found" in message
    assert "profiles there: a, b" in message


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("abc123", "invalid token form"),
        ("a.b.c", "invalid token form"),
        (make_jwt({"sub": "x", "exp": "tomorrow"}), "invalid token form"),
        (EXPIRED, "has expired"),
        (NO_EXP, "has no expiry"),
    ],
)
def test_bad_tokens(tmp_path: Path, token: str, expected: str) -> None:
    message = error_for(tmp_path, env={"SIMVUE_URL": "http://h:1", "SIMVUE_TOKEN": token})
    assert expected in message
    assert "environment variable SIMVUE_TOKEN" in message
    assert token not in message


def test_token_check_accepts_unsigned_jwt_and_reports_expiry() -> None:
    exp = int(time.time()) + 100
    unsigned = make_jwt({"exp": exp}).rsplit(".", 1)[0] + "."
    assert check_token(unsigned, "test") == exp
    with pytest.raises(ConfigError, match=r"has expired \(at 1970-01-01 00:01:40 UTC\)"):
        check_token(make_jwt({"exp": 100}), "test")


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    secret = tok("file")
    files = {"cwd/simvue.toml": f'[server]\nurl = "http://h"\ntoken = {secret}\n'}
    message = error_for(tmp_path, files, env=env_server())
    assert message.startswith(f"invalid TOML in {tmp_path / 'cwd/simvue.toml'}: ")
    assert "line 3" in message


def test_legacy_ini_message(tmp_path: Path) -> None:
    message = error_for(tmp_path, {"home/.simvue.ini": "[server]\n"}, env=env_server())
    assert message.startswith(f"{tmp_path / 'home/.simvue.ini'} is a legacy INI configuration")
    assert "simvue.toml" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://h:1", "must start with http:// or https:// (scheme: 'ftp')"),
        ("h:1", "must start with http:// or https://"),
        ("https://", "has no host"),
        ("http://h:99999", "invalid port"),
        ("http://user:pw@h", "must not contain a user or password"),
        ("http://h/x?q=1", "must not contain a query or fragment"),
    ],
)
def test_bad_urls(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        api_base_url(url, "option --url")
    assert expected in str(caught.value)
    assert "pw" not in str(caught.value)


def test_api_base_url_ipv6() -> None:
    assert api_base_url("http://[::1]:8765", "x") == "http://[::1]:8765/api"


def test_reprs_hide_the_token(tmp_path: Path) -> None:
    server = resolve_server(cwd=tmp_path, env=env_server(), home=tmp_path)
    settings = Settings.from_server(server, mountpoint=tmp_path)
    for text in (repr(server), repr(settings)):
        assert tok("env") not in text
        assert "http://env.example:1/api" in text


def test_settings_from_server_applies_given_overrides(tmp_path: Path) -> None:
    server = resolve_server(cwd=tmp_path, env=env_server(), home=tmp_path)
    settings = Settings.from_server(
        server, mountpoint=tmp_path, metadata_ttl=math.inf, cache_bytes=4096, read_timeout=None
    )
    assert (settings.url, settings.token) == (server.url, server.token)
    assert settings.offline_directory == server.offline_directory
    assert settings.metadata_ttl == math.inf
    assert settings.cache_bytes == 4096
    assert settings.read_timeout == Settings.read_timeout
    with pytest.raises(ConfigError, match="request_timeout must be positive"):
        Settings.from_server(server, mountpoint=tmp_path, request_timeout=0)
    with pytest.raises(ConfigError, match="metadata_ttl must be zero or positive"):
        Settings.from_server(server, mountpoint=tmp_path, metadata_ttl=-1.0)
    with pytest.raises(TypeError):
        Settings.from_server(server, mountpoint=tmp_path, no_such_setting=1)


# -- the spool directory: decided here, once ---------------------------------------------


def test_spool_root_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert spool_root() == tmp_path / "cache" / "simvuefs" / "spool"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert spool_root() == tmp_path / "home" / ".cache" / "simvuefs" / "spool"


def test_each_server_and_mount_point_has_its_own_spool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = resolve_server(cwd=tmp_path, env=env_server(), home=tmp_path)
    here, there = tmp_path / "here", tmp_path / "there"
    spool = Settings.from_server(server, mountpoint=here).spool_dir
    assert spool == tmp_path / "cache" / "simvuefs" / "spool" / path_key(server.url, str(here))
    assert spool == mount_spool_dir(server.url, here)
    assert len(spool.name) == 16
    # The same server at the same place: the same spool, so its pending uploads resume.
    assert Settings.from_server(server, mountpoint=here).spool_dir == spool
    assert Settings.from_server(server, mountpoint=there).spool_dir != spool
    assert mount_spool_dir("http://other.example/api", here) != spool
    given = tmp_path / "mine"
    assert Settings.from_server(server, mountpoint=here, spool_dir=given).spool_dir == given


def test_offline_mounts_spool_beside_their_cache(tmp_path: Path) -> None:
    assert Settings.for_offline(tmp_path).spool_dir == tmp_path / "simvuefs" / "spool"
    given = tmp_path / "mine"
    assert Settings.for_offline(tmp_path, spool_dir=given).spool_dir == given


def test_settings_built_directly_spool_in_the_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert Settings(url="http://h/api", token="t").spool_dir == spool_root()


def test_spool_reserve_defaults_to_64_mib(tmp_path: Path) -> None:
    """SEMANTICS.md: "Before a file grows, 64 MiB must stay free there"; the reserve itself
    is enforced by the spool (tests/server/test_upload.py, spool_min_free)."""
    server = resolve_server(cwd=tmp_path, env=env_server(), home=tmp_path)
    for settings in (
        Settings.from_server(server, mountpoint=tmp_path),
        Settings.for_offline(tmp_path),
    ):
        assert settings.spool_min_free == 64 * MIB


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("minimal", 1.0),
        ("indefinite", math.inf),
        ("Indefinite", math.inf),
        ("0", 0.0),
        ("2.5", 2.5),
    ],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", "", "inf", "nan"])
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid time to live"):
        parse_ttl(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("0", 0),
        ("256MiB", 256 * 1024**2),
        ("1G", 1024**3),
        ("1.5k", 1536),
        ("10MB", 10_000_000),
        ("2 TiB", 2 * 1024**4),
        ("7b", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "1X", "MiB", "", "1e3", "1.G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size(text)
