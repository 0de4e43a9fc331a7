"""Progress bars nest in one live display; tables go to stdout with 3-decimal floats."""

from __future__ import annotations

import pytest

from digin_cli.io import progress as prog
from digin_cli.io.progress import console, print_table, progress, track


def test_nested_track_yields_everything_and_shares_one_display():
    seen = []
    for i in track(range(2), "items"):
        outer = prog._current
        for j in track([10, 20, 30], "iterations"):
            assert prog._current is outer  # inner loop joined the outer display
            seen.append((i, j))
    assert seen == [(i, j) for i in range(2) for j in (10, 20, 30)]
    assert prog._current is None


def test_inner_bars_are_removed_so_the_display_does_not_grow():
    with progress() as bar:
        for _ in track(range(3), "outer"):
            for _ in track(range(2), "inner"):
                pass
        assert [t.description for t in bar.tasks] == ["outer"]
        assert bar.tasks[0].completed == 3


def test_track_inside_explicit_progress_and_generators_without_len():
    with progress() as bar:
        with progress() as again:
            assert again is bar
        assert list(track((x for x in "abc"), "letters")) == ["a", "b", "c"]
        task = bar.add_task("manual", total=2)
        bar.advance(task)
    assert prog._current is None


def test_early_break_and_errors_release_the_display():
    for i in track(range(10), "breaks"):
        if i == 1:
            break
    assert prog._current is None
    with pytest.raises(ZeroDivisionError):
        for i in track(range(3), "fails"):
            1 / 0
    assert prog._current is None
    assert list(track(range(2), "after")) == [0, 1]


def test_print_table_formats_floats_on_stdout(capsys: pytest.CaptureFixture[str]):
    rows = [{"item": "red fox", "p_f": 0.123456, "steps": 20}, {"item": "tench", "loss": float("nan"), "x": None}]
    print_table("results", rows)
    out, err = capsys.readouterr()
    assert "results" in out and "0.123" in out and "0.1234" not in out and "nan" in out
    for column in ("item", "p_f", "steps", "loss", "x"):
        assert column in out
    assert out.index("p_f") < out.index("steps") < out.index("loss")  # first-seen order
    assert err == ""

    print_table("subset", rows, columns=["item"])
    out, _ = capsys.readouterr()
    assert "red fox" in out and "p_f" not in out


def test_console_writes_to_stderr(capsys: pytest.CaptureFixture[str]):
    console.print("hello")
    out, err = capsys.readouterr()
    assert out == "" and "hello" in err
