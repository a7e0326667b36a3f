"""``streamer logs eval`` and its metrics on a small labelled CSV written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.logs.evaluate import evaluate_raw, grouping_accuracy, normalise_template, parsing_accuracy

TEMPLATES = {
    "Accepted password for <*> from <*> port <*> ssh2": [
        f"Accepted password for {u} from 10.0.0.{i} port {40000 + i} ssh2"
        for i, u in enumerate(["alice", "bob", "carol", "dave", "erin"])
    ],
    "Connection closed by <*> port <*> [preauth]": [
        f"Connection closed by 192.0.2.{i} port {50000 + i} [preauth]" for i in range(6)
    ],
    "session opened for user <*> by (uid=<*>)": [
        f"session opened for user {u} by (uid={n})" for u, n in [("root", 0), ("deploy", 1001), ("backup", 34)]
    ],
    "Disk quota exceeded": ["Disk quota exceeded"] * 2,
}


def write_sample(
    path: Path, text_col: str = "Content", template_col: str = "EventTemplate", encoding: str = "utf-8"
) -> list[str]:
    rows = [(line, t) for t, lines in TEMPLATES.items() for line in lines]
    rows.sort(key=lambda r: r[0])  # interleave templates
    with path.open("w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(["LineId", text_col, template_col])
        for i, (line, t) in enumerate(rows, 1):
            w.writerow([i, line, t])
    return [r[1] for r in rows]


def test_grouping_accuracy_counts_lines_whose_group_is_exactly_right() -> None:
    truth = ["A", "A", "B", "B", "C"]
    assert grouping_accuracy(["x", "x", "y", "y", "z"], truth) == 1.0
    # B split in two: its two lines are wrong, the rest right.
    assert grouping_accuracy(["x", "x", "y", "w", "z"], truth) == pytest.approx(3 / 5)
    # B and C merged: three lines wrong.
    assert grouping_accuracy(["x", "x", "y", "y", "y"], truth) == pytest.approx(2 / 5)


def test_parsing_accuracy_collapses_spaces_adjacent_wildcards_and_kind_masks() -> None:
    assert normalise_template("from  <IP> port <*><*>") == "from <*> port <*>"
    assert parsing_accuracy(["a <*> b", "a <*>"], ["a  <*>  b", "a b"]) == 0.5


def test_logs_eval_scores_a_small_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.csv"
    write_sample(path)
    assert main(["logs", "eval", "--data", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["systems"]["mine"]
    assert s["lines"] == 16 and s["true_templates"] == 4
    assert s["ga"] == 1.0 and s["templates"] == 4
    assert s["pa"] == 1.0
    assert doc["average"]["ga"] == s["ga"]


def test_logs_eval_raw_scores_final_and_enriched_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.csv"
    write_sample(path, text_col="line", template_col="tpl")
    args = ["logs", "eval", "--data", str(path), "--raw", "--json", "--text-col", "line", "--template-col", "tpl"]
    assert main([*args, "--batch", "4"]) == 0
    s = json.loads(capsys.readouterr().out)["systems"]["mine"]
    assert s["ga"] == 1.0
    assert 0.0 <= s["ga_enriched"] <= 1.0 and "churn" in s


#: The first two-line batch mines 'for alice' alone; the next generalises it. A held batch leaves resolved.
QUOTA_LINES = ["Disk quota exceeded for alice"] * 2 + ["Disk quota exceeded for bob", "Disk quota exceeded for carol"]
QUOTA_TRUTH = ["Disk quota exceeded for <*>"] * 4


def test_enriched_ids_are_scored_as_the_worker_writes_them_held_or_not() -> None:
    lines = [*QUOTA_LINES, "Worker started", "Worker started"]
    truth = [*QUOTA_TRUTH, "Worker started", "Worker started"]
    held = evaluate_raw(lines, truth, batch=2, hold=True)
    unheld = evaluate_raw(lines, truth, batch=2, hold=False)
    assert held.ga == unheld.ga == 1.0
    assert held.ga_enriched == held.ga_enriched_held == 1.0
    assert unheld.ga_enriched == unheld.ga_enriched_unheld == pytest.approx(2 / 6)
    assert held.ga_enriched_unheld == unheld.ga_enriched_unheld and unheld.ga_enriched_held == 1.0


def test_logs_eval_hold_flag_picks_what_ga_enriched_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "quota.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Content", "EventTemplate"], *zip(QUOTA_LINES, QUOTA_TRUTH, strict=True)])
    args = ["logs", "eval", "--data", str(path), "--raw", "--json", "--batch", "2"]
    scores = {}
    for flag in ("--hold", "--no-hold"):
        assert main([*args, flag]) == 0
        scores[flag] = json.loads(capsys.readouterr().out)["systems"]["quota"]
    assert scores["--hold"]["ga_enriched"] == 1.0
    assert scores["--no-hold"]["ga_enriched"] == 0.0  # both halves are groups of their own
    assert main(args) == 0  # the worker's default holds
    assert json.loads(capsys.readouterr().out)["systems"]["quota"]["ga_enriched"] == 1.0


def test_logs_eval_prints_a_table_with_the_average(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    write_sample(folder / "one.csv")
    write_sample(folder / "two.csv")
    assert main(["logs", "eval", "--data", str(folder), "--systems", "two"]) == 0
    out = capsys.readouterr().out
    assert "two" in out and "one" not in out.split("average")[0] and "average" in out


def test_missing_columns_and_empty_folders_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.csv"
    write_sample(path, text_col="message")
    assert main(["logs", "eval", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no column 'Content'" in err and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["logs", "eval", "--data", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no labelled log samples" in err and err.count("\n") == 1


def test_a_spreadsheets_csv_with_a_byte_order_mark_and_long_cells_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "excel.csv"
    write_sample(path, text_col="message", template_col="template", encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    with path.open("a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([99, "trace " + "at x.y(Z.java:1) " * 10_000, "trace <*>"])  # 170,000 characters
    assert main(["logs", "eval", "--data", str(path), "--text-col", "message", "--template-col", "template"]) == 0
    assert "excel" in capsys.readouterr().out


def test_a_row_short_of_its_cells_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.csv"
    write_sample(path)
    with path.open("a", encoding="utf-8") as f:
        f.write("17,a line whose template cell is missing\n")
    assert main(["logs", "eval", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 18 has no 'Content' or 'EventTemplate' cell" in err and err.count("\n") == 1
