"""Dictionary folders to and from the Hub: the upload is faked into a Hub cache laid out as huggingface_hub lays one
out after a download, which `pull` and sae-lens then read with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from clear_sae.cli import main
from clear_sae.dictionary import Dictionaries

COMMIT = "feedfacefeedfacefeedfacefeedfacefeedface"


def _fake_hub(monkeypatch, hub: Path) -> list[str]:
    """Point huggingface_hub at `hub` and make uploads land there as a cached snapshot; returns the uploaded paths."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import filter_repo_objects

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    uploaded: list[str] = []

    def upload_folder(self, *, folder_path, repo_id, allow_patterns=None, **kwargs):
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        storage = hub / ("models--" + repo_id.replace("/", "--"))
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (storage / "snapshots" / COMMIT / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / name, storage / "snapshots" / COMMIT / name)
            uploaded.append(name)
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text(COMMIT)
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploaded


def test_pushed_dictionaries_load_in_sae_lens_and_pull_back_whole(minilm_dictionaries, tmp_path, monkeypatch):
    from sae_lens import SAE

    folder = tmp_path / "dicts"
    shutil.copytree(minilm_dictionaries, folder)
    (folder / "concepts.json").write_text(json.dumps({"format": "clear_sae.concept_library", "concepts": {}}))
    (folder / "details").mkdir(exist_ok=True)
    (folder / "details" / "cached.json").write_text("{}")
    uploaded = _fake_hub(monkeypatch, tmp_path / "hub")
    assert main(["push", "--dictionaries", str(folder), "--repo", "someone/minilm-saes"]) == 0
    assert "manifest.json" in uploaded and "concepts.json" in uploaded
    assert not any(name.startswith("details") for name in uploaded)  # the report's cache stays home

    local = Dictionaries(folder)
    hook = local.hook_points[2]
    sae = SAE.from_pretrained("someone/minilm-saes", hook)  # sae-lens reads the layout as it is
    assert torch.equal(sae.W_enc.float(), local.sae(hook).W_enc)

    assert main(["pull", "--repo", "someone/minilm-saes", "--out", str(tmp_path / "pulled")]) == 0
    pulled = Dictionaries(tmp_path / "pulled")
    assert pulled.hook_points == local.hook_points
    assert all(pulled.fingerprint(h) == local.fingerprint(h) for h in local.hook_points)
    assert (tmp_path / "pulled" / "concepts.json").is_file()
    # An existing folder is kept unless --force; a folder of something else is never replaced.
    assert main(["pull", "--repo", "someone/minilm-saes", "--out", str(tmp_path / "pulled")]) == 3
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main(["pull", "--repo", "someone/minilm-saes", "--out", str(tmp_path / "notes"), "--force"]) == 3
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert main(["pull", "--repo", "someone/absent", "--out", str(tmp_path / "absent")]) == 3
