"""The concept library: one JSON file mapping concept names to where and how to erase them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clear_sae import __version__
from clear_sae.dictionary import holds_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text

FORMAT = "clear_sae.concept_library"


@dataclass
class ConceptEntry:
    """Everything needed to erase one concept: the hook point, its latents and the dictionary they index."""

    name: str
    hook_point: str
    latents: list[int]
    strength: float
    dictionary: str
    """Path of the dictionary folder, relative to the library file."""
    backbone_id: str
    model_source: str
    """What `--model` loads the backbone from (a built-in name or a folder)."""
    score: str
    """The separability score the layer was chosen by."""
    layer_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per hook point: energy, loss, auroc, and counts of specific and shared latents."""
    target_hash: str = ""
    nontarget_hash: str = ""
    n_target: int = 0
    n_nontarget: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    target_prompts: list[str] = field(default_factory=list)
    """The prompts the concept was learned from, kept so that `clear-sae inspect` can show its latents at work."""
    nontarget_prompts: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptEntry":
        """Build an entry from its JSON form, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        entry = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(entry.latents, list) or not all(isinstance(i, int) for i in entry.latents):
            raise TypeError("latents must be a list of integers")
        return entry


class ConceptLibrary:
    """A concept-library JSON file, read and written whole."""

    def __init__(self, path: str | Path, concepts: dict[str, ConceptEntry] | None = None) -> None:
        self.path = Path(path)
        self.concepts: dict[str, ConceptEntry] = concepts or {}

    @classmethod
    def load(cls, path: str | Path, missing_ok: bool = False) -> "ConceptLibrary":
        """Read a library; with `missing_ok`, a missing file gives an empty library to add to."""
        path = Path(path)
        if path.is_dir():
            raise ClearSaeError(f"concept library {path} is a directory; pass a .json file path")
        if not path.is_file():
            if missing_ok:
                return cls(path)
            raise ClearSaeError(f"concept library {path} does not exist; build one with `clear-sae concept`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ClearSaeError(
                f"{path} is not a valid concept library ({err}); rebuild it with `clear-sae concept`"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ClearSaeError(
                f"{path} is JSON but not a clear_sae concept library; build one with `clear-sae concept`"
            )
        concepts = data.get("concepts", {})
        try:
            if not isinstance(concepts, dict):
                raise TypeError("'concepts' must map names to entries")
            entries = {name: ConceptEntry.from_dict(entry) for name, entry in concepts.items()}
        except (TypeError, AttributeError) as err:
            raise ClearSaeError(
                f"{path} holds a malformed concept entry ({err}); rebuild it with `clear-sae concept`"
            ) from None
        return cls(path, entries)

    def save(self) -> None:
        """Write the library atomically."""
        data = {
            "format": FORMAT,
            "package_version": __version__,
            "concepts": {name: asdict(entry) for name, entry in sorted(self.concepts.items())},
        }
        atomic_write_text(self.path, json.dumps(data, indent=2))

    def add(self, entry: ConceptEntry) -> None:
        """Add or replace a concept."""
        self.concepts[entry.name] = entry

    def get(self, name: str) -> ConceptEntry:
        """The entry for `name`, or a one-line error listing the concepts there are."""
        if name not in self.concepts:
            have = ", ".join(sorted(self.concepts)) or "none"
            raise ClearSaeError(
                f"concept {name!r} is not in {self.path} (it has: {have}); add it with `clear-sae concept --name ...`"
            )
        return self.concepts[name]

    def dictionary_path(self, entry: ConceptEntry) -> Path:
        """The dictionary folder an entry points to, checked to exist."""
        folder = (self.path.parent / entry.dictionary).resolve()
        if not folder.is_dir():
            raise ClearSaeError(
                f"concept {entry.name!r} points to dictionary {folder}, which does not exist; "
                "restore that folder or rebuild the concept with `clear-sae concept`"
            )

        if not holds_dictionaries(folder):
            # Most often a library copied away from the folder its relative "dictionary" field points into.
            raise ClearSaeError(
                f'concept {entry.name!r} points to {folder} (its "dictionary" field '
                f"{entry.dictionary!r}, read from {self.path.parent}), which holds no dictionaries; "
                "keep the library beside its dictionaries or correct that field"
            )
        return folder

    def relative_dictionary(self, folder: str | Path) -> str:
        """How an entry refers to `folder`: relative to this library's folder."""
        return os.path.relpath(Path(folder).resolve(), self.path.parent.resolve())
