"""Models named by a Hugging Face Hub id: only the text encoders and tokenizers are downloaded.

`--model owner/name` (or `hf://owner/name`, `hf://owner/name@revision`) resolves to a snapshot folder in the Hub
cache. For a diffusers pipeline only `model_index.json`, `text_encoder*/` and `tokenizer*/` are fetched, never
the transformer or the VAE; for a bare text encoder, its top-level files. With `HF_HUB_OFFLINE=1` the cache
alone is read. A model loaded this way records itself as `hf://owner/name@<commit>`, so caches, dictionaries and
libraries name the exact snapshot they were made from.
"""

from __future__ import annotations

import re
from pathlib import Path

from clear_sae.errors import ClearSaeError

PREFIX = "hf://"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
PIPELINE_PATTERNS = ["model_index.json", "text_encoder*/*", "tokenizer*/*"]
"""What a pipeline's text side needs (fnmatch patterns over repository paths)."""
ENCODER_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
"""What a bare text encoder needs: its config, weights and tokenizer files, at the top level only."""


def parse_hub_name(name: str) -> tuple[str, str | None] | None:
    """`(repo id, revision or None)` when `name` names a Hub model (`hf://owner/name[@revision]`, or `owner/name`
    where no such local folder exists), else None."""
    explicit = name.startswith(PREFIX)
    body = name[len(PREFIX) :] if explicit else name
    repo, _, revision = body.partition("@")
    if not _REPO_ID.match(repo):
        if explicit:
            raise ClearSaeError(f"{name!r} is not a Hub model id; write it as hf://owner/name or hf://owner/name@rev")
        return None
    if not explicit and (Path(name).exists() or "@" in name):
        return None
    return repo, revision or None


def text_side_patterns(pipeline: bool) -> tuple[list[str], list[str]]:
    """`allow_patterns` and `ignore_patterns` for the text side of a pipeline or of a bare text encoder (fnmatch's
    `*` crosses folders, so a bare encoder's sub-folders are ignored explicitly)."""
    return (PIPELINE_PATTERNS, []) if pipeline else (ENCODER_PATTERNS, ["*/*"])


def wanted_files(repo_files: list[str]) -> list[str]:
    """Which files of a repository `download_text_side` fetches."""
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = text_side_patterns("model_index.json" in repo_files)
    return list(filter_repo_objects(repo_files, allow_patterns=allow, ignore_patterns=ignore))


def hub_snapshot(
    repo: str, revision: str | None, allow: list[str], ignore: list[str] | None = None, what: str = "Hub model"
) -> Path:
    """The snapshot folder of `repo` holding the files `allow` (less `ignore`) names, downloading what is missing
    (nothing with `HF_HUB_OFFLINE=1`, which reads the cache only); a one-line error where it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=allow, ignore_patterns=ignore))
    except (IncompleteSnapshotError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ClearSaeError(
            f"cannot get {what} {repo}{'@' + revision if revision else ''} ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); check the id, or download it once with network access (HF_HUB_OFFLINE "
            "unset)"
        ) from None


def download_text_side(repo: str, revision: str | None = None) -> tuple[Path, str]:
    """The snapshot folder holding the text side of Hub model `repo`, and its commit."""
    index = hub_snapshot(repo, revision, ["model_index.json", "config.json"])
    allow, ignore = text_side_patterns((index / "model_index.json").is_file())
    folder = hub_snapshot(repo, revision, allow, ignore)
    return folder, folder.name


def hub_source(repo: str, commit: str) -> str:
    """How a model loaded from the Hub records itself: `hf://owner/name@commit`."""
    return f"{PREFIX}{repo}@{commit}"
