"""The ``otel-tokens`` command as a whole: the instants every command takes, the exit codes.

``report`` and ``export`` take an instant or a UTC date; ``price --at``, ``budgets --at`` and
``reprice --since/--until`` take an instant with an offset only, as typed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_tokens.cli import main

PRICE = ["price", "gpt-4o", "--input", "1000", "--output", "100"]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [*PRICE, "--at", "yesterday"],
            "argument --at: not an ISO 8601 instant: 'yesterday' (e.g. 2026-03-01T12:00:00Z)\n",
        ),
        ([*PRICE, "--at", "2026-03-01"], "'2026-03-01' has no UTC offset; add Z or +HH:MM\n"),
        (
            ["budgets", "--at", "2026-03-01T00:00:00"],
            "argument --at: '2026-03-01T00:00:00' has no UTC offset; add Z or +HH:MM\n",
        ),
        (["reprice", "--since", "soon"], "argument --since: not an ISO 8601 instant: 'soon'"),
        (
            ["reprice", "--until", " 2026-03-01T00:00:00Z"],
            "argument --until: not an ISO 8601 instant: ' 2026-03-01T00:00:00Z'",
        ),
        (
            ["report", "--since", "2026-03-01T00:00:00"],
            "argument --since: '2026-03-01T00:00:00' has no UTC offset; add Z or +HH:MM, "
            "or give a date\n",
        ),
        (
            ["export", "--format", "focus", "--until", "soon"],
            "argument --until: not an ISO 8601 instant or date: 'soon' "
            "(e.g. 2026-03-01 or 2026-03-01T12:00:00Z)\n",
        ),
    ],
)
def test_bad_instants_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, argv)
    assert (code, out) == (2, "")
    assert message in err


def test_instants_with_offsets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, [*PRICE, "--at", "2026-03-01T12:00:00+02:00", "--json"])
    assert code == 0 and '"status": "priced"' in out
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    argv = ["reprice", "--ledger", ledger, "--since", "2026-03-01T00:00:00Z", "--dry-run"]
    code, out, _ = run(capsys, [*argv, "--until", "2026-03-02T00:00:00+01:00"])
    assert code == 0 and out.startswith("0 usage record(s) priced with ")


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, ["price", "no-such-model", "--input", "1", "--output", "1"])[0] == 3
    missing = str(tmp_path / "missing.yaml")
    assert run(capsys, [*PRICE, "--prices", missing])[0] == 4
    assert run(capsys, ["check-prices", missing])[0] == 4
    assert run(capsys, ["budgets", "--budgets", missing])[0] == 4
    assert run(capsys, ["reprice", "--prices", missing])[0] == 4
    assert run(capsys, ["report", "--ledger", f"sqlite:///{tmp_path / 'none.db'}"])[0] == 4
    window = ["--since", "2026-03-02", "--until", "2026-03-01"]
    assert run(capsys, ["report", *window])[0] == 2
    assert run(capsys, ["price", "gpt-4o", "--input", "-1", "--output", "1"])[0] == 2


def test_every_command_is_registered_one_way() -> None:
    """``add_command`` (``otel_tokens/_arguments.py``) is the one way to register a command:
    no other module makes a subparser itself, and every command has its help line."""
    import argparse

    from otel_tokens import cli

    src = Path(cli.__file__).parent
    makers = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if ".add_parser(" in p.read_text(encoding="utf-8")
    )
    assert makers == ["_arguments.py"]
    parser = cli._parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    assert all(helps.values()), helps
