"""The CLI entry point: user mistakes end in one clear message and an exit code, never a traceback."""

from netrazor.cli import main


def test_unknown_option_is_a_usage_error_with_exit_code_2(capsys):
    assert main(["train", "--modle", "lenet5"]) == 2
    assert "--modle" in capsys.readouterr().err


def test_netrazor_error_is_one_line_with_exit_code_2(capsys):
    assert main(["compress", "no-such-recipe-anywhere"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not found" in err and "Traceback" not in err


def test_help_exits_cleanly():
    assert main(["--help"]) == 0
