"""The prompt sent for one escalation, from the template in ``resources/prompts/escalation.yaml``.

The wording lives in a data file so it can be tuned (and versioned, the version travels with every
answer) without touching code. This module fills it in and owns the last privacy check: personal data
found anywhere in what would be sent stops the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from streamer.errors import ConfigError
from streamer.triage.pii import find_pii

#: Names the template may use; anything else is a typo caught at start-up.
PLACEHOLDERS = frozenset({"what", "labels", "priorities", "candidates", "reasons", "subject", "text"})
#: Priorities asked for when the bundle has no priority head.
DEFAULT_PRIORITIES = ("urgent", "high", "normal", "low")
#: The intent that says "none of the labels fits": never exported as training data.
OTHER = "other"


def default_prompt_path() -> Path:
    return Path(str(resources.files("streamer") / "resources" / "prompts" / "escalation.yaml"))


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How one escalation kind is described to the model and which head's labels it answers with."""

    what: str
    head: str


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    version: str
    system: Template
    user: Template
    kinds: Mapping[str, KindSpec]


def load_prompt(path: Path | None = None) -> PromptTemplate:
    """Read and check a prompt template; every problem is one ``ConfigError`` naming the file."""
    path = path or default_prompt_path()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"prompt template not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with version, kinds, system and user")
    missing = [k for k in ("version", "kinds", "system", "user") if not doc.get(k)]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    kinds: dict[str, KindSpec] = {}
    for name, spec in dict(doc["kinds"]).items():
        if not isinstance(spec, dict) or not spec.get("what") or not spec.get("head"):
            raise ConfigError(f"{path}: kinds.{name} needs 'what' and 'head'")
        kinds[str(name)] = KindSpec(what=str(spec["what"]), head=str(spec["head"]))
    templates = {}
    for part in ("system", "user"):
        template = Template(str(doc[part]))
        if not template.is_valid():
            raise ConfigError(f"{path}: {part}: invalid placeholder (use $name, and $$ for a literal $)")
        unknown = set(template.get_identifiers()) - PLACEHOLDERS
        if unknown:
            raise ConfigError(f"{path}: {part}: unknown placeholder(s) {', '.join(sorted(unknown))}")
        static = template.safe_substitute({name: "" for name in PLACEHOLDERS})
        if find_pii(static):
            raise ConfigError(f"{path}: {part}: the template's own text looks like personal data")
        templates[part] = template
    return PromptTemplate(str(doc["version"]), templates["system"], templates["user"], kinds)


@dataclass(frozen=True, slots=True)
class LabelSet:
    """The labels answers are checked against: per head (``intent``, ``incident``) and the priorities."""

    heads: Mapping[str, tuple[str, ...]]
    priorities: tuple[str, ...] = DEFAULT_PRIORITIES

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LabelSet:
        heads = {str(name): tuple(map(str, head.get("labels", []))) for name, head in manifest.get("heads", {}).items()}
        priorities = heads.pop("priority", ()) or DEFAULT_PRIORITIES
        return cls(heads=heads, priorities=priorities)

    @classmethod
    def from_bundle(cls, bundle_dir: Path) -> LabelSet:
        """The labels of the bundle the workers run (its manifest only; the model is not loaded)."""
        from streamer.models.bundle import read_manifest
        from streamer.models.errors import ModelError

        try:
            return cls.from_manifest(read_manifest(bundle_dir))
        except ModelError as exc:
            raise ConfigError(f"the bridge reads its label set from the bundle: {exc}") from None


@dataclass(frozen=True, slots=True)
class Prompt:
    """Chat messages for one escalation and the labels its answer may use."""

    messages: list[dict[str, str]]
    labels: tuple[str, ...]
    priorities: tuple[str, ...]
    version: str


def render(template: PromptTemplate, escalation: Mapping[str, Any], labels: LabelSet) -> Prompt:
    """Fill the template for one (schema-valid) escalation record.

    The label set is the bundle's labels for the escalation's kind plus any candidate the small model
    proposed that the bundle does not list (a newer worker may know more labels than this bridge).
    """
    kind = template.kinds.get(str(escalation.get("kind")), template.kinds.get("ticket"))
    if kind is None:
        raise ConfigError("the prompt template has no 'ticket' kind")
    candidates = [c for c in escalation.get("candidates", []) if isinstance(c, Mapping)]
    known = list(labels.heads.get(kind.head, ()))
    known += [str(c["label"]) for c in candidates if str(c["label"]) not in known]
    values = {
        "what": kind.what,
        "labels": ", ".join(known) if known else "(none given)",
        "priorities": ", ".join(labels.priorities),
        "candidates": "\n".join(f"- {c['label']}: {float(c['confidence']):.2f}" for c in candidates) or "(none)",
        "reasons": "\n".join(f"- {r['code']}: {r['detail']}" for r in escalation.get("reasons", [])) or "(none)",
        "subject": str(escalation.get("redacted_subject") or "").strip() or "(none)",
        "text": str(escalation.get("redacted_text", "")).strip(),
    }
    messages = [
        {"role": "system", "content": template.system.substitute(values)},
        {"role": "user", "content": template.user.substitute(values)},
    ]
    return Prompt(messages, tuple(known), tuple(labels.priorities), template.version)


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """Personal data found in what would leave: the record's field and the kinds found (never values)."""

    field: str
    kinds: tuple[str, ...]


_PROMPT_FIELDS = ("redacted_subject", "redacted_text")


def unredacted_pii(escalation: Mapping[str, Any], prompt: Prompt) -> list[PiiFinding]:
    """Fields of the record whose text would reach the endpoint and holds personal data.

    The fields are checked one by one to name them in the dead letter; the rendered messages are checked
    as well, so nothing that enters the prompt some other way slips past.
    """
    findings: list[PiiFinding] = []
    texts: list[tuple[str, str]] = [(f, str(escalation.get(f) or "")) for f in _PROMPT_FIELDS]
    texts += [(f"reasons[{i}].detail", str(r.get("detail", ""))) for i, r in enumerate(escalation.get("reasons", []))]
    texts += [
        (f"candidates[{i}].label", str(c.get("label", ""))) for i, c in enumerate(escalation.get("candidates", []))
    ]
    for field, text in texts:
        spans = find_pii(text)
        if spans:
            findings.append(PiiFinding(field, tuple(sorted({s.kind for s in spans}))))
    if not findings:
        for message in prompt.messages:
            spans = find_pii(message["content"])
            if spans:
                findings.append(PiiFinding(f"prompt.{message['role']}", tuple(sorted({s.kind for s in spans}))))
    return findings
