"""The privacy policy: per output topic, which kinds of personal data leave masked, pseudonymised or in clear.

The cores emit every record fully redacted (``[EMAIL_1]`` placeholders) and, beside it, what each
placeholder stands for. Just before records leave, ``Privacy`` renders each one for the topic it goes to:

* ``mask`` (the default of every kind on every topic): the placeholder stays;
* ``pseudonymise``: a keyed hash token, ``[EMAIL_k1_3f9a0c2b1d4e5f60]``, HMAC-SHA256 of the value's normal
  form (``streamer.triage.pii.normalise``: an address case-folded, a card's digits) under a secret of
  version ``k1``. The same value gives the same token in every record and on every topic, so consumers
  join and count without the value; without the secret nobody can recompute it, and a new secret (a new
  version) gives new tokens;
* ``keep``: the value as written.

Kept and pseudonymised values are also listed with the record (``triage.pii.values`` on tickets,
``entities.pii_values`` on logs). The policy is data (the ``privacy`` section of ``topics/topics.yaml``),
checked at start-up against rules that no file can lift (``RULES``); a broken rule is one line naming it.

The large model's side (escalations, its answers) is always fully masked. A consumer that holds the
original ticket fills placeholders of a reply back with ``fill_placeholders``: redaction is deterministic,
so redacting the original again yields the same ``[KIND_N]`` for the same value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from streamer.errors import ConfigError
from streamer.events import DecodeFailure, Output, dead_letter
from streamer.topics import (
    ALERTS,
    DEADLETTER,
    ESCALATIONS,
    LLM_RESPONSES,
    LOG_TEMPLATES,
    LOGS,
    LOGS_ENRICHED,
    TICKETS,
    TICKETS_ENRICHED,
)
from streamer.triage.pii import KINDS, normalise, redact_all

__all__ = [
    "ACTIONS",
    "NEVER_CLEAR",
    "RULES",
    "Privacy",
    "PrivacyPolicy",
    "Pseudonymiser",
    "TopicPolicy",
    "build_privacy",
    "fill_placeholders",
    "load_policy",
    "parse_policy",
    "redact_fields",
    "unkeyed_pseudonyms",
]

KEEP, PSEUDONYMISE, MASK = "keep", "pseudonymise", "mask"
ACTIONS: Final = (KEEP, PSEUDONYMISE, MASK)
#: Kinds that never leave in clear, whatever a policy file says.
NEVER_CLEAR: Final = ("CARD", "IBAN", "NATIONAL_ID", "CREDENTIAL")
#: What the large model reads or writes: fully masked, always.
LLM_TOPICS: Final = (ESCALATIONS, LLM_RESPONSES)
#: Records built from many input records (burst samples, template texts): placeholders of different
#: records share numbers there, so nothing can be put back.
AGGREGATE_TOPICS: Final = (ALERTS, LOG_TEMPLATES)
INPUT_TOPICS: Final = (TICKETS, LOGS)
DEADLETTER_RAW: Final = ("keep", "digest")

#: The rules a policy file is checked against; errors name them.
RULES: Final = {
    "known-topic": "every topic named is declared in topics.yaml",
    "output-topic": "only output topics have a policy (inputs are what they are)",
    "known-kind": f"kinds are {', '.join(KINDS)}",
    "known-action": "a topic lists kinds under keep or pseudonymise; the others are masked",
    "one-action": "a kind appears once per topic",
    "never-clear": f"{', '.join(NEVER_CLEAR)} are never kept in clear",
    "llm-masked": f"{', '.join(LLM_TOPICS)} (what the large model reads and writes) are fully masked",
    "per-record": f"{', '.join(AGGREGATE_TOPICS)} merge many records: fully masked",
    "deadletter-raw": f"deadletter.raw is one of {', '.join(DEADLETTER_RAW)}",
}

_PLACEHOLDER_RE: Final = re.compile(r"\[(?:" + "|".join(KINDS) + r")_[1-9][0-9]{0,8}\]")
_REPLAY_RE: Final = re.compile(r"^(?P<source>.+)\.replay\.[^.]+$")


def _refuse(rule: str, message: str) -> ConfigError:
    return ConfigError(f"privacy policy, rule {rule!r}: {message} ({RULES[rule]})")


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """What one topic carries: kind -> action for the kinds not masked."""

    topic: str
    actions: Mapping[str, str] = field(default_factory=dict)

    def action(self, kind: str) -> str:
        return self.actions.get(kind, MASK)


@dataclass(frozen=True)
class PrivacyPolicy:
    """Every output topic's policy; topics not named mask everything. ``deadletter_raw``: keep or digest."""

    topics: Mapping[str, TopicPolicy] = field(default_factory=dict)
    deadletter_raw: str = "keep"

    def for_topic(self, topic: str) -> TopicPolicy:
        """A topic's policy. A replay topic (``<topic>.replay.<run>``) carries the enriched records of
        the tickets or log lines it replays, so it follows ``support.tickets.enriched.v1`` or
        ``ops.logs.enriched.v1``."""
        found = self.topics.get(topic)
        if found is not None:
            return found
        replay = _REPLAY_RE.match(topic)
        if replay is not None:
            source = replay.group("source")
            return self.for_topic({TICKETS: TICKETS_ENRICHED, LOGS: LOGS_ENRICHED}.get(source, source))
        return TopicPolicy(topic)

    def table(self, topics: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
        """``(topic, {kind: action})`` for every topic given, every kind: the README's table."""
        return [(t, {k: self.for_topic(t).action(k) for k in KINDS}) for t in topics]


def parse_policy(doc: Any, known_topics: Collection[str]) -> PrivacyPolicy:
    """The ``privacy`` section of topics.yaml as a checked policy; ``ConfigError`` names the broken rule.

    Shape::

        privacy:
          topics:
            support.queue.billing.v1: {keep: [EMAIL, PHONE], pseudonymise: [CARD]}
          deadletter: {raw: keep}
    """
    if doc is None:
        return PrivacyPolicy()
    if not isinstance(doc, Mapping):
        raise _refuse("known-action", "the privacy section must be a mapping with 'topics' and 'deadletter'")
    topics: dict[str, TopicPolicy] = {}
    for topic, raw in (doc.get("topics") or {}).items():
        topic = str(topic)
        if topic not in known_topics:
            raise _refuse("known-topic", f"topic {topic!r} is not declared in topics.yaml")
        if topic in INPUT_TOPICS or topic == DEADLETTER:
            raise _refuse("output-topic", f"topic {topic!r} is not an output with a redaction policy")
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise _refuse("known-action", f"topic {topic!r}: expected a mapping such as {{keep: [EMAIL]}}")
        actions: dict[str, str] = {}
        for action, kinds in raw.items():
            if action not in (KEEP, PSEUDONYMISE, MASK):
                raise _refuse("known-action", f"topic {topic!r}: unknown action {action!r}")
            if isinstance(kinds, str):
                kinds = [kinds]
            if not isinstance(kinds, list):
                raise _refuse("known-action", f"topic {topic!r}: {action} must list PII kinds")
            for kind in kinds:
                kind = str(kind)
                if kind not in KINDS:
                    raise _refuse("known-kind", f"topic {topic!r}: unknown PII kind {kind!r}")
                if kind in actions:
                    raise _refuse("one-action", f"topic {topic!r}: {kind} is listed more than once")
                actions[kind] = action
        clear = [k for k, a in actions.items() if a == KEEP]
        if topic in LLM_TOPICS and any(a != MASK for a in actions.values()):
            shown = ", ".join(f"{k} ({a})" for k, a in actions.items() if a != MASK)
            raise _refuse("llm-masked", f"topic {topic!r} would receive {shown} unmasked")
        if topic in AGGREGATE_TOPICS and any(a != MASK for a in actions.values()):
            raise _refuse("per-record", f"topic {topic!r} cannot carry kept or pseudonymised values")
        never = [k for k in clear if k in NEVER_CLEAR]
        if never:
            raise _refuse("never-clear", f"topic {topic!r} would keep {', '.join(never)} in clear")
        topics[topic] = TopicPolicy(topic, {k: a for k, a in actions.items() if a != MASK})
    dead = doc.get("deadletter") or {}
    raw_mode = str(dead.get("raw", "keep")) if isinstance(dead, Mapping) else ""
    if raw_mode not in DEADLETTER_RAW:
        raise _refuse("deadletter-raw", f"deadletter.raw is {raw_mode or dead!r}")
    return PrivacyPolicy(topics=topics, deadletter_raw=raw_mode)


def load_policy(path: Path, known_topics: Collection[str]) -> PrivacyPolicy:
    """The checked policy of a topics.yaml file (its ``privacy`` section)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"topic definitions not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_policy(doc.get("privacy") if isinstance(doc, Mapping) else None, known_topics)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class Pseudonymiser:
    """Keyed tokens: ``[KIND_k<version>_<16 hex>]`` from HMAC-SHA256 over the kind and the normal form."""

    def __init__(self, key: bytes, version: int = 1) -> None:
        if not key:
            raise ConfigError("the pseudonym key is empty")
        self._key = key
        self.version = version
        self._cache: dict[tuple[str, str], str] = {}

    def token(self, kind: str, value: str) -> str:
        norm = normalise(kind, value)
        found = self._cache.get((kind, norm))
        if found is None:
            digest = hmac.new(self._key, f"{kind}\0{norm}".encode(), hashlib.sha256).hexdigest()[:16]
            found = f"[{kind}_k{self.version}_{digest}]"
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[(kind, norm)] = found
        return found


Values = Mapping[str, tuple[str, str]]


class Privacy:
    """The policy applied to records just before they leave.

    Without a ``pseudonymiser`` (no secret configured), kinds to pseudonymise are masked instead.
    """

    def __init__(self, policy: PrivacyPolicy | None = None, pseudonymiser: Pseudonymiser | None = None) -> None:
        self.policy = policy or PrivacyPolicy()
        self.pseudonymiser = pseudonymiser
        self._actions: dict[str, dict[str, str]] = {}

    @property
    def deadletter_digest(self) -> bool:
        return self.policy.deadletter_raw == "digest"

    def actions(self, topic: str) -> dict[str, str]:
        """The kinds ``topic`` does not mask, as they will be applied (pseudonyms need a key)."""
        found = self._actions.get(topic)
        if found is None:
            found = {
                k: a
                for k, a in self.policy.for_topic(topic).actions.items()
                if a == KEEP or (a == PSEUDONYMISE and self.pseudonymiser is not None)
            }
            self._actions[topic] = found
        return found

    def render(
        self, topic: str, record: Mapping[str, Any], values: Values
    ) -> tuple[Mapping[str, Any], list[dict[str, str]]]:
        """``record`` as ``topic`` may carry it, and the values it lists (kind plus value or pseudonym).

        Returns ``record`` itself when nothing is to be put back (it is never modified).
        """
        actions = self.actions(topic)
        if not actions or not values:
            return record, []
        subst: dict[str, str] = {}
        listed: list[dict[str, str]] = []
        for token, (kind, value) in values.items():
            action = actions.get(kind)
            if action == KEEP:
                subst[token] = value
                listed.append({"kind": kind, "value": value})
            elif action == PSEUDONYMISE and self.pseudonymiser is not None:
                pseudonym = self.pseudonymiser.token(kind, value)
                subst[token] = pseudonym
                if not any(e.get("pseudonym") == pseudonym for e in listed):
                    listed.append({"kind": kind, "pseudonym": pseudonym})
        if not subst:
            return record, []
        rendered: Mapping[str, Any] = _substitute(record, subst)
        return rendered, listed

    def ticket_outputs(self, outputs: Sequence[Output], values: Values) -> list[Output]:
        """A ticket's outputs, each rendered for its topic; kept/pseudonymised values in ``triage.pii.values``."""
        out: list[Output] = []
        for o in outputs:
            value, listed = self.render(o.topic, o.value, values)
            if listed:
                triage = value["triage"]
                triage["pii"] = {**triage["pii"], "values": listed}
            out.append(o if value is o.value else Output(o.topic, o.key, value, o.headers))
        return out

    def dead_letter(self, failure: DecodeFailure, failed_at: str) -> dict[str, Any]:
        """The dead-letter record under the policy: raw bytes kept (replay needs them), or a digest only."""
        if not self.deadletter_digest:
            return dead_letter(failure, failed_at)
        masked = replace(failure, message=redact_all([failure.message])[0].text)
        return dead_letter(masked, failed_at, digest_only=True)

    def log_record(self, record: Mapping[str, Any], values: Values, topic: str = LOGS_ENRICHED) -> Mapping[str, Any]:
        """An enriched log record rendered for ``topic``; kept/pseudonymised values in ``entities.pii_values``."""
        value, listed = self.render(topic, record, values)
        if listed:
            value["entities"]["pii_values"] = listed
        return value


def _substitute(value: Any, subst: Mapping[str, str]) -> Any:
    """A copy of a JSON value with placeholders in ``subst`` replaced in every string."""
    if isinstance(value, str):
        if "[" not in value:
            return value
        return _PLACEHOLDER_RE.sub(lambda m: subst.get(m.group(), m.group()), value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, subst) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    return value


def redact_fields(texts: Sequence[str], context: Sequence[str] = ()) -> list[str]:
    """``texts`` fully masked, numbered after every placeholder of ``context`` (which is not returned).

    For free text written from redacted input (the large model's answer): a value it invents gets a
    number no placeholder of the escalation uses, so filling back can never put a wrong value there.
    """
    done = redact_all([*context, *texts])
    return [r.text for r in done[len(context) :]]


def fill_placeholders(text: str, original: Sequence[str]) -> str:
    """Put the values of ``original`` (a ticket's subject and body, in that order) back into ``text``.

    For a consumer that holds the ticket as sent, e.g. to send the large model's suggested reply:
    redacting the original again gives each value the placeholder it had in the escalation.
    Placeholders the original does not hold are left as they are.
    """
    values: dict[str, str] = {}
    for red in redact_all(list(original)):
        for span, token in zip(red.spans, red.placeholders, strict=True):
            values.setdefault(token, span.value)
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(), m.group()), text)


def build_privacy(
    topics_file: Path, known_topics: Collection[str], *, key: str | None, key_version: int = 1
) -> Privacy:
    """The checked policy of ``topics_file`` with a pseudonymiser when a secret is configured."""
    policy = load_policy(topics_file, known_topics)
    return Privacy(policy, Pseudonymiser(key.encode("utf-8"), key_version) if key else None)


def unkeyed_pseudonyms(privacy: Privacy) -> list[str]:
    """Topics whose policy pseudonymises but that mask instead, for want of a secret."""
    if privacy.pseudonymiser is not None:
        return []
    return sorted(t for t, p in privacy.policy.topics.items() if any(a == PSEUDONYMISE for a in p.actions.values()))
