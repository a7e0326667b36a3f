"""The default bundle, built from the labelled examples the package ships, so a fresh machine can run.

Its version is a fingerprint of the shipped data and of :data:`RECIPE`: when either changes, the bundle is
rebuilt.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from streamer.models.build import HeadSpec, build_bundle
from streamer.models.bundle import read_manifest, verify_files
from streamer.models.errors import BundleError
from streamer.settings import Settings

DEFAULT_BUNDLE_NAME = "default"
RECIPE = 3
"""Bumped when the way heads are built changes (2: the nearest-neighbour vote, 3: the escalation score),
so old bundles are rebuilt."""
#: head name -> shipped training file
DEFAULT_HEADS = {
    "intent": "intents.jsonl",
    "priority": "priority.jsonl",
    "sentiment": "sentiment.jsonl",
    "incident": "log_incidents.jsonl",
}


def data_dir() -> Path:
    return Path(str(resources.files("streamer") / "resources" / "data"))


def data_fingerprint() -> str:
    digest = hashlib.sha256(f"recipe {RECIPE}".encode())
    for head, file in sorted(DEFAULT_HEADS.items()):
        digest.update(head.encode())
        digest.update((data_dir() / file).read_bytes())
    return digest.hexdigest()[:12]


def is_current(bundle_dir: Path) -> bool:
    """True when ``bundle_dir`` holds an intact default bundle built from the data shipped now."""
    try:
        manifest = read_manifest(bundle_dir)
        verify_files(bundle_dir, manifest)
    except (BundleError, OSError, ValueError):
        return False
    return manifest.get("name") == DEFAULT_BUNDLE_NAME and manifest.get("version") == data_fingerprint()


def build_default_bundle(out_dir: Path, *, progress: bool = True) -> Path:
    heads = [HeadSpec(name, (data_dir() / file,)) for name, file in DEFAULT_HEADS.items()]
    return build_bundle(out_dir, DEFAULT_BUNDLE_NAME, data_fingerprint(), heads, force=True, progress=progress)


def ensure_default_bundle(settings: Settings, *, progress: bool = True) -> Path:
    """``settings.bundle_dir`` if it is a current default bundle or any other bundle; else build it there."""
    bundle_dir = settings.bundle_dir
    if (bundle_dir / "manifest.json").is_file():
        name = read_manifest(bundle_dir).get("name")
        if name != DEFAULT_BUNDLE_NAME or is_current(bundle_dir):
            return bundle_dir
    return build_default_bundle(bundle_dir, progress=progress)
