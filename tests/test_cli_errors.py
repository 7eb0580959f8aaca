"""CLI error policy: a user's mistake is one line and exit 2; a bug keeps its traceback; --debug shows both."""
import pytest

import resnetkit as rk
from resnetkit.cli import CLIError, list_cmd, main
from resnetkit.deploy.engines.base import EngineError, MissingEngineError
from resnetkit.errors import ResnetkitKeyError, ResnetkitTypeError, ResnetkitValueError, is_user_error
from resnetkit.train._deps import MissingExtraError
from resnetkit.train.data import DataError


def _buggy_run(args):
    options = {}
    return options["verbose"]  # an internal bug: a plain KeyError from a dict lookup


def test_a_bug_in_a_command_keeps_its_traceback(monkeypatch, capsys):
    monkeypatch.setattr(list_cmd, "run", _buggy_run)
    with pytest.raises(KeyError, match="verbose"):
        main(["list"])
    assert "error:" not in capsys.readouterr().err  # not dressed up as a user's mistake


def test_errors_raised_inside_torch_are_bugs_too(monkeypatch):
    import torch

    monkeypatch.setattr(list_cmd, "run", lambda args: torch.zeros(2, 3) @ torch.zeros(2, 3))
    with pytest.raises(RuntimeError):
        main(["list"])
    monkeypatch.setattr(list_cmd, "run", lambda args: torch.zeros("3"))  # a TypeError from a wrong call
    with pytest.raises(TypeError):
        main(["list"])


def test_a_plain_value_error_is_a_bug_even_when_raised_on_purpose_looking_code(monkeypatch, capsys):
    """By type, not by where it was raised: only ResnetkitError (and FileNotFoundError) is a user's mistake."""
    def run(args):
        raise ValueError("an internal check failed")  # what a bug in resnetkit's own code looks like

    monkeypatch.setattr(list_cmd, "run", run)
    with pytest.raises(ValueError, match="internal check"):
        main(["list"])
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnt50"], "unknown model 'resnt50'"),           # UnknownModelError (a KeyError too)
    (["list", "nomatch*"], "no model matches 'nomatch*'"),         # a ValueError raised on purpose
])
def test_user_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_debug_shows_the_traceback_of_user_errors_too(capsys):
    with pytest.raises(rk.UnknownModelError, match="resnt50"):
        main(["--debug", "summary", "resnt50"])


def test_every_named_error_is_a_resnetkit_error():
    for cls in (rk.TableError, rk.WeightsError, rk.UnknownModelError, DataError, EngineError, MissingEngineError,
                MissingExtraError, CLIError):
        assert issubclass(cls, rk.ResnetkitError), cls
    assert is_user_error(FileNotFoundError("no such file: x.pth"))
    assert not is_user_error(KeyError("x")) and not is_user_error(ValueError("x"))
    for cls in (ResnetkitValueError, ResnetkitTypeError, ResnetkitKeyError):  # still the builtin kinds for callers
        assert is_user_error(cls("x")) and issubclass(cls, (ValueError, TypeError, KeyError))
