"""Dictionary folders on the Hugging Face Hub: `clear-sae push` and `clear-sae pull`.

A pushed repository holds the folder as it is: `manifest.json`, the concept library `concepts.json` when the
folder has one, and one sub-folder per hook point with `cfg.json` and `sae_weights.safetensors`, which is the
layout `sae_lens.SAE.from_pretrained("owner/name", "<hook point>")` reads. The `details/` cache of the report
is left out. Pulling downloads the same files into a local folder and checks that they load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clear_sae.backbones.hub import hub_snapshot
from clear_sae.dictionary import CONFIG, MANIFEST, WEIGHTS, Dictionaries, holds_dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.io import output_folder

LIBRARY_FILE = "concepts.json"
DICTIONARY_PATTERNS = [MANIFEST, LIBRARY_FILE, f"*/{CONFIG}", f"*/{WEIGHTS}", "*/sae.safetensors"]
"""The files of a dictionary folder that travel to and from the Hub."""


def push_dictionaries(folder: str | Path, repo: str, private: bool = False, message: str | None = None) -> str:
    """Upload dictionary folder `folder` to Hub model repository `repo` (created if missing); returns the commit's
    URL. The folder must load (a complete manifest, every layer's SAE)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    dictionaries = Dictionaries(folder)
    for hook in dictionaries.hook_points:
        dictionaries.sae(hook)  # every layer loads before anything leaves the machine
    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo,
        allow_patterns=DICTIONARY_PATTERNS,
        commit_message=message or f"clear_sae dictionaries ({len(dictionaries.hook_points)} hook points)",
    )
    return str(getattr(commit, "commit_url", commit))


def pull_dictionaries(repo: str, out: str | Path, revision: str | None = None, force: bool = False) -> Path:
    """Download the dictionary folder in Hub repository `repo` into `out` (refused if `out` exists, unless `force`
    and it holds dictionaries), check that it loads, and return `out`."""
    out = output_folder(out, "--out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ClearSaeError(f"{out} already exists; pass --force to replace it with the pulled dictionaries")
        if not holds_dictionaries(out):
            raise ClearSaeError(f"{out} holds no dictionaries, and --force replaces only those; pass another --out")
    snapshot = hub_snapshot(repo, revision, DICTIONARY_PATTERNS, what="dictionaries")
    Dictionaries(snapshot)  # a repository without a loadable manifest or SAE folders is refused here
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(snapshot, partial, ignore=shutil.ignore_patterns(".*"))
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return out
