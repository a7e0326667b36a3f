"""Log template mining with content-derived, stable template ids.

How lines become templates
--------------------------
1. *Masking*: tokens that are variables by shape become ``<*>``: anything with two digits in a row or a
   digit not glued to a letter (ids, counters, IPs, ports, hex), ISO and syslog dates, sizes with a unit
   (``5.4 KB``), URL bodies, absolute file paths (``/var/www/html/``, ``C:\\Windows\\x.dll``),
   ``true``/``false``/``null``, phrases of two or more words in double quotes (``"Daily Backup"``, so a
   name's word count does not change the line's length), and a redaction kind mask glued to other
   characters (``blk_-<CARD>``); a kind mask on its own (``<IP>``) stays as written. ``ssh2``, ``tty2``,
   ``log4j`` stay words. Dotted runs of variables collapse (an IP is one ``<*>``), and so do adjacent
   masked tokens (``<*> <*>``), so a value spanning a varying number of tokens (``4 000``, ``1 2 s``)
   keeps the line's length. The masked line is the *skeleton*; a dict from skeleton to template answers
   almost every line with one lookup. Masking decides by where digits are, not by their values, so the
   skeleton is also remembered by the line with its digits as ``0`` (when no digit survives masking): the
   next line of a template is masked by one ``str.translate`` and a lookup.
2. *Grouping*: a new skeleton joins the most specific template of its length that accepts it
   (equal tokens, or a generalised position whose prefix/suffix fit).
3. *Generalising on evidence*: otherwise it becomes a template of its own, and each position is
   checked for evidence that it holds a parameter: among templates equal everywhere else (compared by
   shape, so ``rhost=<*>`` and ``rhost=<generalised>`` agree, and ``key=`` tokens only with the same key),
   the position has taken ``min_values`` distinct words (3 by default), or two words that share a head
   ending in punctuation (``user=root``/``user=bob``, ``android.intent.action.A``/``...B``), or one value
   is a masked form of the other (``(<*>)`` vs ``()``). Then they merge into one template whose position
   keeps the common prefix/suffix (``user=<*>``), never half of a mask. The first token never
   generalises (log lines lead with constants).

Every rule is one global setting of ``MinerConfig``; ``bench/loso_log_miner.py`` checks each one
leave-one-system-out on the Loghub samples (tuned on eight systems, scored on the ninth).
Drain generalises a token as soon as two lines differ there, which merges ``Failed password`` with
``Failed none``, and it splits one template across lengths and leading variables; waiting for three
values (two under a shared head), and comparing masked shapes, is what lifts grouping accuracy.
Known limit: two word-valued parameters that always change together (``class A for class B``) give no
one-position evidence and stay separate templates until each varies on its own.

Stable ids
----------
A template id is ``T`` + 16 hex digits of BLAKE2b over the template's tokens: a pure function of the
template, so every worker and every restart gives the same id to the same template, with no
coordination. Evidence is collected per position whatever the arrival order, so the final templates
(and their ids) do not depend on it either: on the Loghub samples, mining each file shuffled gives
every line the same final id. When evidence generalises a template, the result is a *new* template
with a new id that supersedes the old ones; ``changes()`` reports it (old -> new template) so the
caller can move counters along and publish ``superseded_by`` for the old ids, and ``resolve(id)``
follows that chain. Generalisation happens early in a template's life (by its third distinct value),
so ids settle fast: on Loghub, 2.5% of lines were first reported under an id later superseded.

Persistence and several workers
-------------------------------
``snapshot()``/``restore()`` carry the live templates (tokens, first-seen time) as JSON; the same
records, one per template (``template_record``), are what the adapter publishes to the compacted topic
``ops.log_templates.v1`` keyed by template id. Logs are keyed by service, so a service's lines are
mined by the one worker that owns its partition; every worker ``load()``s the compacted topic at
start (and may keep applying it), so after a rebalance the new owner knows every template. Two
workers that meet the same template on their own publish the same key with the same id, and
compaction keeps one record: there is nothing to reconcile.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = [
    "MinerConfig",
    "Template",
    "TemplateChanges",
    "TemplateMiner",
    "mask",
    "template_id",
    "template_record",
]

WILD: Final = "<*>"
_GEN: Final = "\x00"  # marks a generalised position inside a token: prefix + _GEN + suffix
_SHAPE: Final = "\x01"
_SNAPSHOT_VERSION: Final = 1
_SKELETONS_KEPT: Final = 4096  # recent lines whose skeleton is remembered (cleared when full)
_DIGITS_AS_ZERO: Final = str.maketrans("123456789", "000000000")
_ASCII_DIGIT: Final = re.compile(r"[0-9]")

# Masking: cheap substring gates decide which passes run, then one pass for variable-shaped tokens.
_URL_BODY: Final = re.compile(r"(?<=://)(?:<[A-Z]{2,16}(?:_[A-Z]{2,16})?>|[^\s\]\)'\"<>])+")
_HAS_TIME: Final = re.compile(r"\d:\d\d:\d\d")
_DATE: Final = re.compile(
    r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}"
    r"\s+\d{2}:\d{2}:\d{2}(?:\s+\d{4})?\b"
    r"|\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_SIZE: Final = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?\s(?:[KMGTP]i?B|B)(?!\w)")
_LITERAL: Final = re.compile(r"(?<![\w\-])(?:true|false|null|TRUE|FALSE|NULL|True|False)(?![\w\-])")
# A kind mask (``<IP>``, ``<CARD>``, from redaction) glued to other characters of a token: one value.
_GLUED_KIND: Final = re.compile(
    r"[\w\-@/]+<[A-Z]{2,16}(?:_[A-Z]{2,16})?>[\w\-@/]*|<[A-Z]{2,16}(?:_[A-Z]{2,16})?>[\w\-@/]+"
)
_KEY: Final = re.compile(r"[A-Za-z_][\w.\-]{0,63}[=:]")
_VARIABLE: Final = re.compile(r"(?<![\w\-/@])(?!//)(?=[\w\-/@]*(?:\d\d|(?<![A-Za-z])\d))[\w\-/@]+")


# Absolute paths of two or more segments (a URL's body is masked before: ``://`` never starts one here), and
# Windows drive and device paths. ``_PATH_HINT`` opens on a literal, so the usual line (no path) costs one scan.
_PATH_HINT: Final = re.compile(r"/[\w.\-@%+~<>*]+/")
_PATH: Final = re.compile(r"(?<![\w<>*.:/\\-])/(?:[\w.\-@%+~<>*]+/)+[\w.\-@%+~<>*]*")
# A host name with a port (``proxy.example.org:5070``, after masking ``...:<*>``): the name is as variable as an
# address in that place. Three labels or more, or two in lower case, so ``Bar.java:<*>`` (a source line) stays;
# a code location with its line (``com.example.Window.destroy:2014``, stack lists) is a value as well.
_HOST_PORT: Final = re.compile(
    r"(?<![\w.\-/@<>*(])(?:(?:[A-Za-z0-9][\w\-]*|<\*>)(?:\.(?:[\w\-]+|<\*>)){2,}|[a-z0-9][a-z0-9\-]*\.[a-z][a-z0-9\-]*)"
    r":<\*>(?![\w.])"
)
_WINDOWS_PATH: Final = re.compile(r"(?<![\w\\])(?:[A-Za-z]:|\\\\[?.])\\[^\s'\"]*")
# A quoted phrase: two or more words in double quotes (``"Daily Backup"``, ``tag="View Lock"``). A name of a
# varying number of words would otherwise give its template a varying length; one word in quotes stays a token.
_QUOTED_PHRASE: Final = re.compile(r'"(?:[\w.,\'\-]+ )+[\w.,\'\-]+"')


def mask(text: str) -> str:
    """The skeleton of a line: variable-shaped parts replaced by ``<*>`` (see the module docstring)."""
    if "://" in text:
        text = _URL_BODY.sub(WILD, text)
    if _HAS_TIME.search(text):
        text = _DATE.sub(WILD, text)
    if "B" in text and (" B" in text or "KB" in text or "MB" in text or "GB" in text or "iB" in text or "TB" in text):
        text = _SIZE.sub(WILD, text)
    if ">" in text:
        text = _GLUED_KIND.sub(WILD, text)
    text = _VARIABLE.sub(WILD, text)
    while "<*>.<*>" in text:
        text = text.replace("<*>.<*>", WILD)
    return text


def template_id(tokens: Iterable[str]) -> str:
    """The id of a template: a hash of its tokens, identical in every process and after restarts."""
    digest = hashlib.blake2b("\x1f".join(tokens).encode("utf-8", "surrogatepass"), digest_size=8)
    return "T" + digest.hexdigest()


def _render(tokens: Iterable[str]) -> str:
    return " ".join(tokens).replace(_GEN, WILD)


@dataclass(frozen=True, slots=True)
class Template:
    """A mined template: its stable id, its text with ``<*>`` for parameters, and its tokens."""

    id: str
    text: str
    tokens: tuple[str, ...]
    first_seen_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TemplateChanges:
    """What changed since the last ``changes()`` call: new templates and superseded ids."""

    new: list[Template]
    superseded: list[tuple[Template, Template]]  # (old, the template that replaced it)

    def __bool__(self) -> bool:
        return bool(self.new or self.superseded)


@dataclass(frozen=True, slots=True)
class MinerConfig:
    """Settings of the miner; the defaults are the single global configuration measured on Loghub.

    ``min_values``: distinct words a position must take before it becomes a parameter (3).
    ``constant_prefix``: leading tokens that never generalise (1).
    ``max_tokens``: tokens considered per line; the rest is cut (128).
    ``max_templates``: live templates kept; past it, unseen shapes fall into one catch-all template per
    length instead of growing state without bound (20,000).
    ``cache_size``: skeletons remembered for the one-lookup fast path (200,000; cleared when full).
    ``prefix_min_values``: distinct words enough when they share a constant head ending in punctuation
    with a letter or digit in it (``user=root``/``user=guest``, ``android.intent.action.A``/``...B``) (2).
    ``key_holes``: a ``key=value`` token only collects evidence with tokens of the same key, so a
    position never generalises across keys (``num=1,...`` vs ``topActivity=...``) (on).
    ``mask_literals``: ``true``/``false``/``null`` are values, masked like numbers (on).
    ``collapse_wildcards``: adjacent masked tokens (``<*> <*>``) count as one, so a value that spans a
    varying number of tokens keeps the line's length (on).
    ``mask_paths``: absolute file paths of two or more segments (``/var/www/html/``, ``/udev/sda1``,
    ``C:\\Windows\\x.dll``) are values, masked whole, as the Loghub templates and most parsers treat them (on).
    ``mask_host_ports``: a host name with a port (``proxy.example.org:5070``) is ``<*>:<*>``, as an address
    with a port is, so lines led by one share a template and lists of them collapse (on).
    ``mask_quoted_phrases``: two or more words in double quotes (``"Daily Backup"``) are one value, ``"<*>"``,
    so a name of one, two or three words keeps the template's length; one quoted word stays a token and
    generalises on evidence as any other (on).
    """

    min_values: int = 3
    constant_prefix: int = 1
    max_tokens: int = 128
    max_templates: int = 20_000
    cache_size: int = 200_000
    prefix_min_values: int = 2
    key_holes: bool = True
    mask_literals: bool = True
    collapse_wildcards: bool = True
    mask_paths: bool = True
    mask_host_ports: bool = True
    mask_quoted_phrases: bool = True


class _Cluster:
    __slots__ = ("first_seen_ms", "head", "live", "parent", "size", "template", "tokens")

    def __init__(self, tokens: tuple[str, ...], first_seen_ms: int | None) -> None:
        self.tokens = tokens
        self.head = tokens[0] if tokens and _GEN not in tokens[0] else None
        self.size = 0
        self.parent: _Cluster | None = None
        self.live = True
        self.first_seen_ms = first_seen_ms
        self.template = Template(template_id(tokens), _render(tokens), tokens, first_seen_ms)

    def root(self) -> _Cluster:
        c = self
        while c.parent is not None:
            c = c.parent
        return c


def _accepts(pattern: str, token: str) -> bool:
    if pattern == token:
        return True
    if _GEN not in pattern:
        return False
    pre, _, suf = pattern.partition(_GEN)
    return len(token) >= len(pre) + len(suf) and token.startswith(pre) and token.endswith(suf)


def _covers(pattern: tuple[str, ...], tokens: tuple[str, ...]) -> bool:
    return all(_accepts(a, b) for a, b in zip(pattern, tokens, strict=True))


def _shape(token: str) -> str:
    """A token with everything from its first parameter on replaced by one marker."""
    cut = len(token)
    for mark in (WILD, _GEN):
        i = token.find(mark)
        if 0 <= i < cut:
            cut = i
    return token if cut == len(token) else token[:cut] + _SHAPE


def _instance(value: str, pattern: str) -> bool:
    """Whether ``value`` could be ``pattern`` with its ``<*>`` filled in (and is not the pattern itself)."""
    if value == pattern or WILD not in pattern:
        return False
    parts = pattern.split(WILD)
    if not (value.startswith(parts[0]) and value.endswith(parts[-1])):
        return False
    pos, end = len(parts[0]), len(value) - len(parts[-1])
    if pos > end:
        return False
    for part in parts[1:-1]:
        i = value.find(part, pos, end)
        if i < 0:
            return False
        pos = i + len(part)
    return True


def _has_head(values: set[str]) -> bool:
    """Whether the values share a constant head that ends in punctuation and holds a letter or digit."""
    head = _trim_prefix(_common_prefix([v.replace(_GEN, WILD) for v in values]))
    return any(ch.isalnum() for ch in head)


def _key(token: str) -> str:
    """The ``key=`` (or ``key:``) a token opens with, else the empty string."""
    m = _KEY.match(token)
    return m.group() if m is not None else ""


def _evidence(values: set[str], min_values: int, prefix_min_values: int = 0) -> bool:
    if len(values) >= min_values:
        return True
    if len(values) < 2:
        return False
    if prefix_min_values and len(values) >= prefix_min_values and _has_head(values):
        return True
    if any(_GEN in v for v in values):
        return True
    shown = [v.replace(_GEN, WILD) for v in values]
    return any(_instance(a, b) for a in shown for b in shown if a != b)


def _trim_prefix(text: str) -> str:
    for mark in (WILD, _GEN):
        if mark in text:
            text = text[: text.index(mark)]
    i = len(text)
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return text[:i]


def _common_prefix(values: list[str]) -> str:
    first, last = min(values), max(values)
    i = 0
    while i < len(first) and i < len(last) and first[i] == last[i]:
        i += 1
    return first[:i]


def _generalise(values: Iterable[str]) -> str:
    """One pattern token for several values: their common prefix and suffix cut at punctuation."""
    vals = list(values)
    pre = _trim_prefix(_common_prefix(vals))
    suf = _trim_prefix(_common_prefix([v[::-1] for v in vals]).replace(">*<", WILD))[::-1]
    shortest = min(len(v) for v in vals)
    if len(pre) + len(suf) > shortest:
        suf = ""
    # Never keep half of a mask (``rhost=<`` from ``rhost=<IP>`` and ``rhost=<*>``).
    pre = pre[: pre.rfind("<")] if "<" in pre and ">" not in pre[pre.rfind("<") :] else pre
    suf = suf[suf.find(">") + 1 :] if ">" in suf and "<" not in suf[: suf.find(">")] else suf
    return pre + _GEN + suf


@dataclass
class _Hole:
    values: set[str] = field(default_factory=set)
    members: list[_Cluster] = field(default_factory=list)


class TemplateMiner:
    """Online template miner: ``add`` each line, read ids from the returned ``Template``.

    Not thread-safe; one miner per worker thread. Deterministic: the same lines give the same
    templates, and the final templates do not depend on the order lines arrive in.
    """

    def __init__(self, config: MinerConfig | None = None) -> None:
        self.config = config or MinerConfig()
        self._cache: dict[str, _Cluster] = {}
        self._skeletons: dict[str, str] = {}  # recent lines -> skeleton: logs repeat lines verbatim
        self._shapes: dict[str, str] = {}  # digits as 0 -> skeleton, for skeletons that kept no digit
        self._by_len: dict[int, list[_Cluster]] = {}
        self._by_head: dict[tuple[int, str], list[_Cluster]] = {}
        self._holes: dict[tuple[int, int, int, int, str], _Hole] = {}
        self._by_id: dict[str, _Cluster] = {}
        self._live = 0
        self._announced: set[str] = set()
        self._created: list[_Cluster] = []
        self._retired: list[_Cluster] = []
        self.overflow = 0

    # -- hot path ---------------------------------------------------------------------------------

    def add(self, text: str, time_ms: int | None = None) -> Template:
        """The template of one line (as of now; ``resolve`` gives the latest after later merges)."""
        skeleton = self._skeletons.get(text)
        if skeleton is None:
            # Masking decides by where digits are, never by their values: lines that differ only in digit
            # values mask alike, and when no digit survives masking the skeletons are equal.
            shape = text.translate(_DIGITS_AS_ZERO)
            skeleton = self._shapes.get(shape)
            if skeleton is None:
                skeleton = self._skeleton(text)
                if _ASCII_DIGIT.search(skeleton) is None:
                    if len(self._shapes) >= _SKELETONS_KEPT:
                        self._shapes.clear()
                    self._shapes[shape] = skeleton
            if len(self._skeletons) >= _SKELETONS_KEPT:
                self._skeletons.clear()
            self._skeletons[text] = skeleton
        c = self._cache.get(skeleton)
        if c is None:
            tokens = tuple(skeleton.split()[: self.config.max_tokens])
            c = self._match(tokens) or self._create(tokens, time_ms)
            if len(self._cache) >= self.config.cache_size:
                self._cache.clear()
            self._cache[skeleton] = c
        elif c.parent is not None:
            c = c.root()
            self._cache[skeleton] = c
        c.size += 1
        return c.template

    def _skeleton(self, text: str) -> str:
        """What ``text`` is grouped by: masked, literals and runs of wildcards as configured."""
        if _GEN in text:
            text = text.replace(_GEN, " ")
        cfg = self.config
        if cfg.mask_quoted_phrases and '"' in text:
            text = _QUOTED_PHRASE.sub('"<*>"', text)
        skeleton = mask(text)
        if cfg.mask_literals and (
            "true" in skeleton or "false" in skeleton or "null" in skeleton or "TRUE" in skeleton
            or "FALSE" in skeleton or "NULL" in skeleton or "True" in skeleton or "False" in skeleton
        ):  # fmt: skip
            skeleton = _LITERAL.sub(WILD, skeleton)
        if cfg.mask_paths:
            if "/" in skeleton and _PATH_HINT.search(skeleton) is not None:
                skeleton = _PATH.sub(WILD, skeleton)
            if "\\" in skeleton:
                skeleton = _WINDOWS_PATH.sub(WILD, skeleton)
        if cfg.mask_host_ports and ":<*>" in skeleton:
            skeleton = _HOST_PORT.sub("<*>:<*>", skeleton)
            while "<*>:<*> <*>:<*>" in skeleton:  # a list of endpoints, whatever its length
                skeleton = skeleton.replace("<*>:<*> <*>:<*>", "<*>:<*>")
        if cfg.collapse_wildcards:
            while "<*> <*>" in skeleton:
                skeleton = skeleton.replace("<*> <*>", WILD)
        return skeleton

    def resolve(self, template_id: str) -> Template | None:
        """The current template for an id, following generalisations; ``None`` for an unknown id."""
        c = self._by_id.get(template_id)
        return c.root().template if c is not None else None

    # -- grouping and generalisation --------------------------------------------------------------

    def _candidates(self, tokens: tuple[str, ...]) -> Iterable[_Cluster]:
        n = len(tokens)
        if n and _GEN not in tokens[0]:
            yield from self._by_head.get((n, tokens[0]), ())
            yield from (c for c in self._by_len.get(n, ()) if c.head is None)
        else:
            yield from self._by_len.get(n, ())

    def _match(self, tokens: tuple[str, ...]) -> _Cluster | None:
        best: _Cluster | None = None
        best_exact = -1
        for cand in self._candidates(tokens):
            exact = 0
            for a, b in zip(cand.tokens, tokens, strict=True):
                if a == b:
                    exact += 1
                elif not _accepts(a, b):
                    break
            else:
                if exact > best_exact:
                    best, best_exact = cand, exact
        return best

    def _link(self, c: _Cluster) -> None:
        n = len(c.tokens)
        self._by_len.setdefault(n, []).append(c)
        if c.head is not None:
            self._by_head.setdefault((n, c.head), []).append(c)
        self._by_id.setdefault(c.template.id, c)
        self._live += 1
        self._created.append(c)

    def _unlink(self, c: _Cluster, into: _Cluster) -> None:
        n = len(c.tokens)
        self._by_len[n].remove(c)
        if c.head is not None:
            self._by_head[(n, c.head)].remove(c)
        c.live = False
        c.parent = into
        into.size += c.size
        if c.first_seen_ms is not None and (into.first_seen_ms is None or c.first_seen_ms < into.first_seen_ms):
            into.first_seen_ms = c.first_seen_ms
            into.template = Template(into.template.id, into.template.text, into.tokens, c.first_seen_ms)
        self._live -= 1
        self._retired.append(c)

    def _create(self, tokens: tuple[str, ...], time_ms: int | None) -> _Cluster:
        if self._live >= self.config.max_templates:
            return self._overflow(len(tokens), time_ms)
        c = _Cluster(tokens, time_ms)
        self._link(c)
        while True:
            merged = self._gather_evidence(c)
            if merged is None:
                return c
            c = merged

    def _overflow(self, n: int, time_ms: int | None) -> _Cluster:
        self.overflow += 1
        tokens = tuple([_GEN] * n)
        existing = self._by_id.get(template_id(tokens))
        if existing is not None:
            return existing.root()
        c = _Cluster(tokens, time_ms)
        self._link(c)
        return c

    def _gather_evidence(self, c: _Cluster) -> _Cluster | None:
        """Record ``c``'s tokens as values of its positions; merge where a position proved variable."""
        tokens = c.tokens
        n = len(tokens)
        shapes = tuple(_shape(t) for t in tokens)
        key_holes = self.config.key_holes
        prefix_min = self.config.prefix_min_values
        hit: tuple[int, _Hole] | None = None
        for p in range(self.config.constant_prefix, n):
            token = tokens[p]
            if token == _GEN:
                continue
            key = (n, p, hash(shapes[:p]), hash(shapes[p + 1 :]), _key(token) if key_holes else "")
            hole = self._holes.get(key)
            if hole is None:
                hole = self._holes[key] = _Hole()
            if len(hole.values) < 64:
                hole.values.add(token)
            hole.members.append(c)
            if hit is None and len(hole.values) >= 2 and _evidence(hole.values, self.config.min_values, prefix_min):
                hit = (p, hole)
        if hit is None:
            return None
        p, hole = hit
        roots: list[_Cluster] = []
        for member in hole.members:
            r = member.root()
            if r.live and r not in roots:
                roots.append(r)
        hole.members = roots[:]
        if len(roots) < 2 and not any(_GEN in v for v in hole.values):
            return None
        merged_tokens: list[str] = []
        for q in range(n):
            values = {r.tokens[q] for r in roots}
            if q == p:
                values |= hole.values
            merged_tokens.append(next(iter(values)) if len(values) == 1 else _generalise(values))
        new = tuple(merged_tokens)
        if any(r.tokens == new for r in roots):
            return None
        absorbed = [x for x in list(self._candidates(new)) if _covers(new, x.tokens)]
        if not absorbed:
            return None
        existing = self._by_id.get(template_id(new))
        m = existing.root() if existing is not None else None
        if m is None or not m.live:
            m = _Cluster(new, min((x.first_seen_ms for x in absorbed if x.first_seen_ms is not None), default=None))
            self._link(m)
        for x in absorbed:
            if x is not m:
                self._unlink(x, m)
        hole.members.append(m)
        return m

    # -- reporting and persistence ----------------------------------------------------------------

    def changes(self, consume: bool = True) -> TemplateChanges:
        """New templates and superseded ids since the last consuming call (each reported once).

        ``consume=False`` only looks, so a caller whose later steps may fail can report them again.
        """
        announced = self._announced if consume else set(self._announced)
        new: list[Template] = []
        for c in self._created:
            if c.live and c.template.id not in announced:
                announced.add(c.template.id)
                new.append(c.template)
        superseded: list[tuple[Template, Template]] = []
        for c in self._retired:
            if c.template.id in announced:
                root = c.root()
                if root.template.id not in announced:
                    announced.add(root.template.id)
                    new.append(root.template)
                superseded.append((c.template, root.template))
        if consume:
            self._created.clear()
            self._retired.clear()
        return TemplateChanges(new, superseded)

    def templates(self) -> list[Template]:
        """Every live template, oldest first."""
        return [c.template for cs in self._by_len.values() for c in cs]

    def __len__(self) -> int:
        return self._live

    def count(self, template_id: str) -> int:
        """Lines counted for a template since this miner started (restored templates start at 0)."""
        c = self._by_id.get(template_id)
        return c.root().size if c is not None else 0

    def snapshot(self) -> bytes:
        """Every live template as JSON: what ``restore`` needs to continue where this miner stopped."""
        return orjson.dumps(
            {
                "version": _SNAPSHOT_VERSION,
                "templates": [template_record(t) for t in self.templates()],
            }
        )

    @classmethod
    def restore(cls, data: bytes, config: MinerConfig | None = None) -> TemplateMiner:
        """A miner from ``snapshot()`` bytes; templates keep their ids and count as announced."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != _SNAPSHOT_VERSION:
            raise ValueError("not a template miner snapshot of a known version")
        miner = cls(config)
        miner.load(doc.get("templates") or ())
        return miner

    def load(self, records: Iterable[Mapping[str, Any]]) -> list[Template]:
        """Add templates published by this or another worker (``template_record`` form); idempotent.

        A record whose template an existing one already covers becomes an alias of it; a record that
        covers existing templates supersedes them (reported by the next ``changes()``). Records with
        ``superseded_by`` only register the alias. Returns the templates that were new here.
        """
        loaded: list[_Cluster] = []
        aliases: list[tuple[str, str]] = []
        for rec in sorted(records, key=lambda r: str(r.get("template_id", ""))):
            if rec.get("superseded_by"):
                aliases.append((str(rec.get("template_id", "")), str(rec["superseded_by"])))
                continue
            tokens = _tokens_from_record(rec)
            if tokens is None:
                continue
            tid = template_id(tokens)
            if tid in self._by_id:
                continue
            cover = self._match(tokens)
            if cover is not None:
                self._by_id[tid] = cover
                continue
            first = rec.get("first_seen_ms")
            c = _Cluster(tokens, first if isinstance(first, int) and not isinstance(first, bool) else None)
            self._link(c)
            self._announced.add(tid)
            for x in list(self._candidates(tokens)):
                if x is not c and _covers(tokens, x.tokens):
                    self._unlink(x, c)
            loaded.append(c)
        for c in loaded:
            if c.live:
                self._settle(c)
        for old, new in aliases:
            target = self._by_id.get(new)
            if target is not None and old and old not in self._by_id:
                self._by_id[old] = target
        return [c.template for c in loaded]

    def _settle(self, c: _Cluster) -> None:
        while True:
            merged = self._gather_evidence(c)
            if merged is None:
                return
            c = merged


def _tokens_from_record(rec: Mapping[str, Any]) -> tuple[str, ...] | None:
    raw = rec.get("tokens")
    if not isinstance(raw, list):
        return None
    out: list[str] = []
    for t in raw:
        if isinstance(t, str):
            out.append(t.replace(_GEN, " "))
        elif isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t):
            out.append(t[0] + _GEN + t[1])
        else:
            return None
    return tuple(out)


def template_record(template: Template) -> dict[str, Any]:
    """The ``log_template.v1.json`` record of a template, with the tokens needed to restore it.

    A generalised token is written as ``[prefix, suffix]``; plain tokens (``<*>`` for masked
    values) as strings.
    """
    record: dict[str, Any] = {
        "template_id": template.id,
        "template": template.text,
        "tokens": [list(t.split(_GEN, 1)) if _GEN in t else t for t in template.tokens],
    }
    if template.first_seen_ms is not None:
        record["first_seen_ms"] = template.first_seen_ms
    return record
