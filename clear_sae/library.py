"""The concept library: one JSON file mapping concept names to where and how to erase them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clear_sae import __version__
from clear_sae.config import check_value
from clear_sae.dictionary import Dictionaries, holds_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import atomic_write_text, file_lock

FORMAT = "clear_sae.concept_library"
FORMAT_VERSION = 3
"""The library file's layout. 1: no `format_version` field; each entry's selection settings, calibration record,
toy attribute and joint training settings in one free `settings` dict. 2: each of those in a typed field.
3: the selection settings record the background check (`background`, `max_background_rate`); entries of
earlier versions read as learned without one."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,99}")
"""A concept name: letters, digits, spaces and `_ . + -`, starting with a letter or digit, at most 100
characters. Names become folder names (the joint method's SAE), so no separator, `..` or hidden name."""
PART_SEPARATOR = "@"
"""Joins a concept's name and a text encoder's in the entry of one encoder (`french_horn@text_encoder_2`): a
concept learned on a pipeline with several text encoders has one entry per encoder that carries it."""
_ENCODER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
METHOD = "clear"
"""The `method` of an entry learned from reused per-layer dictionaries (`clear_sae.concepts.learn_concept`)."""


def check_learned_on(entry: "ConceptEntry", dictionaries: Dictionaries) -> None:
    """Raise a one-line error if `entry` was learned on another SAE than the one `dictionaries` now hold at its
    layer (the layer was retrained since, so its latent ids mean other things)."""
    if entry.dictionary_fingerprint and dictionaries.fingerprint(entry.hook_point) != entry.dictionary_fingerprint:
        raise ClearSaeError(
            f"entry {entry.name!r} was learned on a different {entry.hook_point} dictionary than the one now in "
            f"{dictionaries.root} (retrained since?): its latent ids no longer mean the concept; relearn it with "
            f"`clear-sae concept --name {entry.name}` on these dictionaries"
        )


def part_name(name: str, encoder: str) -> str:
    """The entry name of concept `name`'s part in text encoder `encoder`."""
    return f"{name}{PART_SEPARATOR}{encoder}"


def check_concept_name(name: str, part: bool = False) -> str:
    """Return `name` if it is a valid concept name (`NAME_PATTERN`; with `part`, optionally followed by `@encoder`,
    the entry of a concept's part in one text encoder), else raise a one-line error."""
    base, separator, encoder = name.partition(PART_SEPARATOR) if part else (name, "", "")
    if not NAME_PATTERN.fullmatch(base) or (separator and not _ENCODER_NAME.fullmatch(encoder)):
        raise ClearSaeError(
            f"concept name {name!r} is not allowed: use letters, digits, spaces and _ . + - (starting with a "
            "letter or digit, at most 100 characters), e.g. --name french_horn"
        )
    return name


@dataclass
class SelectionSettings:
    """How an entry's latents and layer were selected: the `clear_sae.concepts.ConceptConfig` it was learned
    with, less the strength (the entry's own field) and the batch size (which changes no result)."""

    min_target_rate: float
    """A specific latent fires on at least this share of target prompts."""
    max_nontarget_rate: float
    """A latent firing on more than this share of non-target prompts is shared, never specific."""
    max_latents: int
    """At most this many specific latents were kept."""
    score: str
    """The separability score the layer was chosen by (energy or auroc)."""
    holdout: float
    """Share of prompt pairs held out for the AUROC score."""
    seed: int
    """Seed of the fit/held-out split."""
    background: int = 0
    """Background captions the latents were checked against (0 in entries learned before the check, or without
    a corpus sample)."""
    max_background_rate: float = 1.0
    """A latent firing on more than this share of the background captions was not specific (1: none vetoed)."""


@dataclass
class CalibrationRung:
    """One rung of a recorded calibration ladder (`clear_sae.calibration.ladder.CalibrationStep` without its
    per-layer profiles)."""

    max_nontarget_rate: float
    """The tolerance the rung selected latents at."""
    strength: float
    """The rung's gamma."""
    hook_point: str
    """The layer the rung erased at."""
    n_latents: int
    """How many latents the rung clamped."""
    probe_rate: float
    """The share of targets in which the judge still found the concept after the rung's erasure."""
    preservation_drop: float | None = None
    """How far the rung lowered non-target attribute agreement (None where the judge does not measure it)."""
    others_drop: float | None = None
    """How far the rung lowered the targets' other attributes (None where the judge does not measure it)."""
    complete: bool = True
    """False where the judge stopped early, the rung already unable to pass or to be chosen: `probe_rate` is then a
    lower bound and nothing else was measured."""


@dataclass
class CalibrationRecord:
    """The calibration ladder an entry's tolerance, layer and strength were chosen by."""

    config: dict[str, Any]
    """The `clear_sae.calibration.ladder.CalibrationConfig` fields, as JSON (tuples as lists)."""
    steps: list[CalibrationRung]
    """Every rung tried, in order; the entry is the chosen one's."""
    judge: dict[str, Any] | None = None
    """The settings of the judge passed to the ladder (its `settings()`), enough to build it again; None when
    the ladder built its own probe."""


@dataclass
class ConceptEntry:
    """Everything needed to erase one concept: the hook point, its latents and the dictionary they index."""

    name: str
    hook_point: str
    latents: list[int]
    strength: float
    dictionary: str
    """Path of the dictionary folder: relative to the library file once the entry is in a library; absolute in
    an entry a learning function returns (`ConceptLibrary.add` makes it relative)."""
    backbone_id: str
    model_source: str
    """What `--model` loads the backbone from (a built-in name or a folder)."""
    score: str
    """The separability score the layer was chosen by."""
    selection: SelectionSettings
    """The rule the latents were selected by."""
    layer_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per hook point: energy, loss, auroc, and counts of specific and shared latents."""
    target_hash: str = ""
    nontarget_hash: str = ""
    n_target: int = 0
    n_nontarget: int = 0
    method: str = METHOD
    """How the entry was learned: `clear` (reused per-layer dictionaries) or `clear-joint` (its own SAE and
    layer preferences, trained the published way)."""
    calibration: CalibrationRecord | None = None
    """The calibration ladder, for an entry whose tolerance, layer and strength it chose."""
    toy_attribute: str | None = None
    """The toy-world attribute (`AXIS=VALUE`, e.g. `colour=red`) of a toy concept learned under another name."""
    joint: dict[str, Any] | None = None
    """For a `clear-joint` entry: the `clear_sae.compare.joint.JointConfig` fields it was trained with."""
    dictionary_fingerprint: str | None = None
    """`Dictionaries.fingerprint` of the layer's SAE the entry was learned on; using the entry on a retrained
    layer is refused. None in entries learned before fingerprints were recorded (not checked)."""
    target_prompts: list[str] = field(default_factory=list)
    """The prompts the concept was learned from, kept so that `clear-sae inspect` can show its latents at work."""
    nontarget_prompts: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptEntry":
        """Build an entry from its current JSON form (`migrate` first for an older one), ignoring top-level keys
        this version does not know."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if not isinstance(values.get("selection"), dict):
            raise TypeError("selection must map the selection settings to their values")
        values["selection"] = SelectionSettings(**values["selection"])
        if values.get("calibration") is not None:
            recorded = dict(values["calibration"])
            recorded["steps"] = [CalibrationRung(**step) for step in recorded.get("steps", [])]
            values["calibration"] = CalibrationRecord(**recorded)
        entry = cls(**values)
        if not isinstance(entry.latents, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in entry.latents
        ):
            raise TypeError("latents must be a list of latent ids (integers of at least 0)")
        try:
            check_value(entry.strength, "strength")
        except ClearSaeError as err:
            raise TypeError(f"strength {err}") from None
        if not isinstance(entry.hook_point, str) or not isinstance(entry.dictionary, str):
            raise TypeError("hook_point and dictionary must be strings")
        if Path(entry.dictionary).is_absolute():
            raise TypeError(
                f"dictionary {entry.dictionary!r} is an absolute path; a library names its dictionaries relative to "
                "its own folder"
            )
        return entry

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON form (a rung's `complete` written only where it is False, so that a library without
        early-stopped rungs reads in releases that predate the field)."""
        data = asdict(self)
        for step in (data.get("calibration") or {}).get("steps", []):
            if step.get("complete", True):
                step.pop("complete", None)
        return data


_SELECTION_FIELDS = tuple(f.name for f in fields(SelectionSettings))


def _migrate_entry_v1(entry: dict[str, Any]) -> dict[str, Any]:
    """A version-1 entry (a free `settings` dict) in the version-2 form."""
    entry = dict(entry)
    settings = dict(entry.pop("settings", None) or {})
    method = settings.pop("method", METHOD)
    entry["method"] = method
    if method == METHOD:
        selection = {k: settings[k] for k in _SELECTION_FIELDS if k in settings}
        entry["selection"] = selection or None
        calibration = settings.get("calibration")
        entry["calibration"] = (
            {"config": calibration["config"], "steps": calibration["steps"], "judge": calibration.get("judge")}
            if calibration
            else None
        )
        entry["toy_attribute"] = settings.get("toy_attribute")
        entry["joint"] = None
    else:  # a clear-joint entry recorded its JointConfig, whose `concept` holds its selection rule
        concept = settings.get("concept") or {}
        entry["selection"] = {k: concept[k] for k in _SELECTION_FIELDS if k in concept} or None
        entry["calibration"] = None
        entry["toy_attribute"] = None
        entry["joint"] = settings
    return entry


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A concept library's JSON, of any version this package has written, in the current form
    (`FORMAT_VERSION`); `data` itself is left as it is. A version newer than this package's is refused."""
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ClearSaeError(f"format_version {version!r} is not a concept-library version")
    if version > FORMAT_VERSION:
        raise ClearSaeError(
            f"this concept library is format_version {version}, newer than this clear_sae reads "
            f"({FORMAT_VERSION}); upgrade clear_sae"
        )
    data = dict(data)
    if version == 1:
        concepts = data.get("concepts", {})
        if isinstance(concepts, dict):
            data["concepts"] = {
                name: _migrate_entry_v1(entry) if isinstance(entry, dict) else entry for name, entry in concepts.items()
            }
    data["format_version"] = FORMAT_VERSION
    return data


class ConceptLibrary:
    """A concept-library JSON file, read and written whole."""

    def __init__(self, path: str | Path, concepts: dict[str, ConceptEntry] | None = None) -> None:
        self.path = Path(path)
        self.concepts: dict[str, ConceptEntry] = concepts or {}
        self._changed: set[str] = set()
        """Names added or replaced since loading: the entries a save writes over what is on disk."""

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
        try:
            data = migrate(data)
        except ClearSaeError as err:
            raise ClearSaeError(f"{path}: {err}") from None
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
        """Write the library atomically, holding its lock: entries that another process saved since this one was
        loaded are kept, and for any name this one added or replaced, this one's entry is written."""
        with file_lock(self.path):
            if self.path.is_file():
                try:
                    on_disk = ConceptLibrary.load(self.path).concepts
                except ClearSaeError:  # not a library (an earlier check refused to overwrite what must be kept)
                    on_disk = {}
                self.concepts.update({name: e for name, e in on_disk.items() if name not in self._changed})
            self._write()

    def _write(self) -> None:
        """Write the entries held here as the whole file."""
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "concepts": {name: entry.to_dict() for name, entry in sorted(self.concepts.items())},
        }
        atomic_write_text(self.path, json.dumps(data, indent=2))

    def add(self, entry: ConceptEntry) -> ConceptEntry:
        """Add or replace a concept (not saved) and return it. An entry whose `dictionary` is an absolute folder,
        as learning functions return it, is changed in place to refer to that folder relative to this library."""
        check_concept_name(entry.name, part=True)
        if Path(entry.dictionary).is_absolute():
            entry.dictionary = self.relative_dictionary(entry.dictionary)
        self.concepts[entry.name] = entry
        self._changed.add(entry.name)
        return entry

    def get(self, name: str) -> ConceptEntry:
        """The entry for `name`, or a one-line error listing the concepts there are."""
        if name not in self.concepts:
            have = ", ".join(sorted(self.concepts)) or "none"
            raise ClearSaeError(
                f"concept {name!r} is not in {self.path} (it has: {have}); add it with `clear-sae concept --name ...`"
            )
        return self.concepts[name]

    def parts(self, name: str) -> list[ConceptEntry]:
        """The entries that erase concept `name`: its own, or one per text encoder (`name@encoder`) for a concept
        learned on several; a one-line error where there is none."""
        found = [e for key, e in sorted(self.concepts.items()) if key.partition(PART_SEPARATOR)[0] == name]
        return found if found else [self.get(name)]

    def replace_parts(self, name: str, entries: list[ConceptEntry]) -> None:
        """Put `entries` in place of every entry of concept `name` (its own and its per-encoder parts), so that a
        concept relearned on fewer encoders leaves no stale part behind (not saved)."""
        for key in [k for k in self.concepts if k.partition(PART_SEPARATOR)[0] == name]:
            del self.concepts[key]
            self._changed.add(key)  # removed: `save` must not bring it back from the file
        for entry in entries:
            self.add(entry)

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


def shipped_library() -> Path | None:
    """The MiniLM concept library that ships beside the package in a source checkout (None where it is absent)."""
    path = Path(__file__).resolve().parents[1] / "dictionaries" / "minilm" / "concepts.json"
    return path if path.is_file() else None
