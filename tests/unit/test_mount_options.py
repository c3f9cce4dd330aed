"""``mount.simvuefs`` option handling, without mounting; and its option tables against the
``simvuefs mount`` parser, so an option added to the command is either reachable from
fstab or deliberately excluded (``mounthelper.NOT_OPTIONS``, with the reason).

The real mount(8) and fstab paths are in tests/mount/test_mounthelper.py.
"""

from __future__ import annotations

import argparse

import pytest

from simvuefs.cli import build_parser
from simvuefs.control.mounthelper import (
    FLAGS,
    NOT_OPTIONS,
    VALUED,
    mount_argv,
    option_flags,
)
from simvuefs.logs import UsageError


def mount_parser() -> argparse.ArgumentParser:
    (subparsers,) = (
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return subparsers.choices["mount"]


def mount_flags() -> dict[str, argparse.Action]:
    """Every long flag of ``simvuefs mount`` (help aside) and its argparse action."""
    return {
        flag: action
        for action in mount_parser()._actions
        if not isinstance(action, argparse._HelpAction)
        for flag in action.option_strings
        if flag.startswith("--")
    }


def takes_no_value(action: argparse.Action) -> bool:
    return action.nargs == 0


def takes_one_value(action: argparse.Action) -> bool:
    return action.nargs is None


def test_flag_options_are_cli_switches():
    flags = mount_flags()
    for option, flag in FLAGS.items():
        assert flag in flags, f"mount option {option}: simvuefs mount has no {flag}"
        assert takes_no_value(flags[flag]), f"{flag} takes a value; mount option {option} none"


def test_valued_options_are_cli_options_with_one_value():
    flags = mount_flags()
    for option, flag in VALUED.items():
        assert flag in flags, f"mount option {option}=: simvuefs mount has no {flag}"
        assert takes_one_value(flags[flag]), f"{flag} does not take exactly one value"
    assert isinstance(flags[VALUED["run"]], argparse._AppendAction)  # run= may repeat


def test_offline_takes_an_optional_value_in_both():
    action = mount_flags()["--offline"]
    assert action.nargs == "?"
    assert option_flags("offline") == ["--offline"]
    assert option_flags("offline=/c") == ["--offline", "/c"]


def test_every_cli_flag_is_a_mount_option_or_excluded_by_name():
    reachable = set(FLAGS.values()) | set(VALUED.values()) | {"--offline"}
    flags = set(mount_flags())
    assert flags - reachable == set(NOT_OPTIONS), (
        "add the option to mounthelper.FLAGS/VALUED, or to NOT_OPTIONS with the reason"
    )
    assert not set(NOT_OPTIONS) & reachable
    assert all(reason for reason in NOT_OPTIONS.values())


def test_options_become_flags():
    options = "config=/x/s.toml,profile=p,metadata_ttl=10,ro,allow_other,offline=/c,run=a,run=b"
    assert option_flags(options + ",request_timeout=5,folder=/d,log_file=/l,spool_dir=/s") == [
        *("--config", "/x/s.toml", "--profile", "p", "--metadata-ttl", "10", "--read-only"),
        *("--allow-other", "--offline", "/c", "--run", "a", "--run", "b"),
        *("--request-timeout", "5", "--folder", "/d", "--log-file", "/l", "--spool-dir", "/s"),
    ]
    assert option_flags("read_only,offline") == ["--read-only", "--offline"]
    assert option_flags("no_verify") == ["--no-verify"]
    generic = "_netdev,nofail,rw,defaults,auto,noauto,user,users,nosuid,nodev,noexec,exec"
    assert option_flags(generic + ",x-systemd.automount,comment=hello") == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("bogus", "unknown mount option 'bogus'"),
        ("suid", "unknown mount option 'suid'"),
        ("config", "'config' needs a value"),
        ("config=", "'config' needs a value"),
        ("ro=1", "'ro' takes no value"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(UsageError, match=message):
        option_flags(options)


def test_sloppy_skips_unknown_options(capsys):
    assert option_flags("bogus,ro", sloppy=True) == ["--read-only"]
    assert "ignoring unknown option 'bogus'" in capsys.readouterr().err


def test_mount_argv_reads_mount8_order():
    assert mount_argv(["simvuefs", "/m", "-n", "-o", "ro", "-oconfig=/c"]) == [
        *("mount", "/m", "--read-only", "--config", "/c"),
    ]
    with pytest.raises(UsageError, match="usage"):
        mount_argv(["/m"])
    with pytest.raises(UsageError, match="unknown argument '-x'"):
        mount_argv(["simvuefs", "/m", "-x"])
