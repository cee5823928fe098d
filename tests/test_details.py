"""What the report shows of a concept per layer: computed from learning's codes, stored beside the dictionaries
under a key of everything it depends on, and read back instead of recomputed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from clear_sae.concepts import ConceptConfig, encode_concept, learn_concept
from clear_sae.details import (
    DETAILS,
    DetailConfig,
    concept_detail,
    detail_key,
    detail_path,
    stored_concept_detail,
)
from clear_sae.dictionary import WEIGHTS, Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.library import ConceptLibrary

CFG = DetailConfig(top_latents=3)


class NoBackbone:
    """Stands in for the backbone where none may be used: any use fails the test."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the backbone was used ({name}) although the detail was stored")


@pytest.fixture
def dictionaries(tmp_path, minilm_dictionaries) -> Dictionaries:
    """A private copy of the test dictionaries, so details stored here do not leak into other tests."""
    folder = tmp_path / "dicts"
    shutil.copytree(minilm_dictionaries, folder, ignore=shutil.ignore_patterns(DETAILS))
    return Dictionaries(folder)


@pytest.fixture
def entry(minilm_library):
    return ConceptLibrary.load(minilm_library).get("umbrella")


def test_learning_codes_give_the_same_entry_and_detail_as_encoding_again(minilm, dictionaries, entry):
    target, nontarget = entry.target_prompts, entry.nontarget_prompts
    codes = encode_concept(minilm, dictionaries, target, nontarget)
    learned, _ = learn_concept(minilm, dictionaries, "umbrella", target, nontarget, codes=codes)
    fresh, _ = learn_concept(minilm, dictionaries, "umbrella", target, nontarget)
    assert (learned.hook_point, learned.latents, learned.layer_scores) == (
        fresh.hook_point,
        fresh.latents,
        fresh.layer_scores,
    )
    detail = concept_detail(minilm, dictionaries, learned, CFG, codes)
    assert detail == concept_detail(minilm, dictionaries, learned, CFG)
    assert set(detail) == set(dictionaries.hook_points)
    assert detail[learned.hook_point]["latents"] == learned.latents


def test_a_stored_detail_is_read_back_without_running_the_backbone(minilm, dictionaries, entry):
    detail = stored_concept_detail(minilm, dictionaries, entry, CFG)
    stored = list((dictionaries.root / DETAILS).iterdir())
    assert [p.name for p in stored] == [f"{detail_key(dictionaries, entry, CFG)}.json"]
    assert stored_concept_detail(NoBackbone(), Dictionaries(dictionaries.root), entry, CFG) == detail  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    ["latents", "prompts", "selection", "shown", "retrained layer"],
)
def test_the_key_changes_with_everything_the_detail_depends_on(dictionaries, entry, change):
    before = detail_key(dictionaries, entry, CFG)
    assert detail_key(Dictionaries(dictionaries.root), replace(entry), CFG) == before  # same inputs, same key
    cfg = CFG
    if change == "latents":
        entry = replace(entry, latents=entry.latents[1:])
    elif change == "prompts":
        entry = replace(entry, target_prompts=entry.target_prompts[:-1])
    elif change == "selection":
        entry = replace(entry, selection=replace(entry.selection, max_nontarget_rate=0.2))
    elif change == "shown":
        cfg = replace(CFG, bins=8)
    else:  # one layer's weights rewritten, as `train --force --layers` does
        weights = dictionaries.folder(dictionaries.hook_points[-1]) / WEIGHTS
        weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
        dictionaries = Dictionaries(dictionaries.root)
    assert detail_key(dictionaries, entry, cfg) != before


def test_an_unreadable_stored_detail_is_recomputed_and_an_unwritable_folder_only_read(minilm, dictionaries, entry):
    path = detail_path(dictionaries, entry, CFG)
    path.parent.mkdir()
    path.write_text('{"cut')
    detail = stored_concept_detail(minilm, dictionaries, entry, CFG)
    assert json.loads(path.read_text()) == detail  # rewritten whole
    shutil.rmtree(path.parent)
    path.parent.write_text("a file where the folder would go")  # the folder cannot be made
    assert stored_concept_detail(minilm, dictionaries, entry, CFG) == detail
    assert path.parent.read_text() == "a file where the folder would go"


@pytest.mark.parametrize("mismatch", ["fewer prompts", "missing layer"])
def test_codes_of_other_prompts_or_layers_are_refused(minilm, dictionaries, entry, mismatch):
    target, nontarget = entry.target_prompts, entry.nontarget_prompts
    hooks = dictionaries.hook_points[:2]
    codes = encode_concept(minilm, dictionaries, target[:4], nontarget[:4], hooks)
    if mismatch == "fewer prompts":
        with pytest.raises(ClearSaeError, match="encode these prompts with encode_concept"):
            learn_concept(minilm, dictionaries, "umbrella", target, nontarget, hook_points=hooks, codes=codes)
    else:
        with pytest.raises(ClearSaeError, match="hold no layer"):
            learn_concept(minilm, dictionaries, "umbrella", target[:4], nontarget[:4], ConceptConfig(), codes=codes)


@pytest.mark.artifacts
def test_the_shipped_library_has_its_details_stored():
    """`clear-sae inspect` on the shipped library reads what the report shows instead of recomputing it."""
    from clear_sae.details import read_stored_detail
    from clear_sae.library import shipped_library

    library = ConceptLibrary.load(shipped_library())
    for entry in library.concepts.values():
        dictionaries = Dictionaries(library.dictionary_path(entry))
        detail = read_stored_detail(dictionaries, entry, DetailConfig())
        assert detail is not None and detail[entry.hook_point]["latents"] == entry.latents, entry.name


@pytest.mark.artifacts
def test_the_report_on_the_shipped_library_reads_its_details_without_loading_the_model(monkeypatch):
    """Every detail stored: the report needs no encoder, so it neither loads one nor runs one."""
    import clear_sae.cli.report as report
    from clear_sae.library import shipped_library

    def no_model(*_: object) -> None:
        raise AssertionError("the model was loaded although every detail is stored")

    monkeypatch.setattr(report, "load_backbone_for", no_model)
    library = ConceptLibrary.load(shipped_library())
    dictionaries = Dictionaries(library.dictionary_path(next(iter(library.concepts.values()))))
    data = report.collect_report(dictionaries, library, progress=False)
    assert set(data["concepts"]) == set(library.concepts)
    assert all("layers" in c for c in data["concepts"].values() if c["has_prompts"])
