"""The concept library's file format: typed entries, `format_version`, and `migrate` from every earlier version."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from conftest import make_entry as entry

from clear_sae.compare.joint import JointConfig, joint_folder
from clear_sae.concepts import ConceptConfig, entry_config, selection_settings
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.library import (
    FORMAT_VERSION,
    CalibrationRecord,
    CalibrationRung,
    ConceptEntry,
    ConceptLibrary,
    SelectionSettings,
    check_concept_name,
    migrate,
)
from clear_sae.toyworld.concepts import is_toy_entry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "dictionaries" / "minilm" / "concepts.json"
V1 = Path(__file__).resolve().parent / "data" / "concepts_v1.json"
"""The shipped library as it was in format version 1 (no `format_version`, a `settings` dict per entry), every
entry kept, its prompts and per-layer scores left out (migration copies those as they are)."""
NOT_IN_V1_COPY = ("target_prompts", "nontarget_prompts", "layer_scores")


def test_the_v1_library_loads_with_every_entrys_erasure_and_settings_as_recorded():
    raw = json.loads(V1.read_text())
    assert "format_version" not in raw and len(raw["concepts"]) == 25
    library = ConceptLibrary.load(V1)
    assert set(library.concepts) == set(raw["concepts"])
    for name, old in raw["concepts"].items():
        new = library.get(name)
        settings = dict(old["settings"])
        calibration = settings.pop("calibration", None)
        assert (new.hook_point, new.latents, new.strength, new.dictionary) == (
            old["hook_point"],
            old["latents"],
            old["strength"],
            old["dictionary"],
        )
        assert (new.backbone_id, new.model_source, new.score) == (old["backbone_id"], old["model_source"], old["score"])
        assert (new.target_hash, new.nontarget_hash, new.n_target, new.n_nontarget) == (
            old["target_hash"],
            old["nontarget_hash"],
            old["n_target"],
            old["n_nontarget"],
        )
        # version 1 predates the background check: its entries read as learned without one
        unchecked = {"background": 0, "max_background_rate": 1.0}
        assert isinstance(new.selection, SelectionSettings) and asdict(new.selection) == {**settings, **unchecked}
        assert new.method == "clear" and new.joint is None
        assert new.toy_attribute == settings.get("toy_attribute") is None
        if calibration is None:
            assert new.calibration is None
            continue
        assert isinstance(new.calibration, CalibrationRecord)
        assert new.calibration.config == calibration["config"]
        assert all(isinstance(rung, CalibrationRung) for rung in new.calibration.steps)
        # every recorded rung predates early stopping: it was judged in full
        assert [asdict(rung) for rung in new.calibration.steps] == [
            {**s, "complete": True} for s in calibration["steps"]
        ]
        assert new.calibration.judge == calibration["judge"]
    assert sum(e.calibration is not None for e in library.concepts.values()) == 16


def test_the_shipped_library_is_the_current_version_and_holds_the_concepts_of_the_v1_copy():
    """The v1 copy is an earlier shipped library (its migration is checked above); the shipped one has been
    relearned since, on the current dictionaries, so only its concepts, format and records are compared."""
    raw = json.loads(SHIPPED.read_text())
    assert raw["format_version"] == FORMAT_VERSION
    assert not any("settings" in e for e in raw["concepts"].values())
    shipped = ConceptLibrary.load(SHIPPED)
    migrated = ConceptLibrary.load(V1)
    assert set(shipped.concepts) == set(migrated.concepts)
    for name, new in shipped.concepts.items():
        old = migrated.get(name)
        assert all(getattr(old, k) in ([], {}) for k in NOT_IN_V1_COPY)
        assert (new.target_hash, new.nontarget_hash) == (old.target_hash, old.nontarget_hash), name  # same prompts
        assert (new.calibration is None) == (old.calibration is None), name
        assert new.target_prompts and len(new.target_prompts) == new.n_target and new.layer_scores
        # Each entry names the SAE it was learned on: the shipped one at its layer.
        assert new.dictionary_fingerprint == Dictionaries(shipped.dictionary_path(new)).fingerprint(new.hook_point)


def test_save_writes_the_current_version_and_reads_back_the_same_entries(tmp_path):
    library = ConceptLibrary.load(V1)
    library.path = tmp_path / "concepts.json"
    library.save()
    raw = json.loads(library.path.read_text())
    assert raw["format_version"] == FORMAT_VERSION == 3
    bar = raw["concepts"]["bar"]
    assert "settings" not in bar and bar["method"] == "clear" and bar["selection"]["max_nontarget_rate"] == 0.1
    assert bar["calibration"]["steps"][0]["hook_point"] == "text_encoder.embed" and bar["toy_attribute"] is None
    assert ConceptLibrary.load(library.path).concepts == library.concepts
    assert migrate(raw) == raw  # the current version is read as it is


def test_migrate_reads_v1_toy_and_joint_entries_and_leaves_its_input_alone():
    selection = asdict(selection_settings(ConceptConfig(max_nontarget_rate=0.2)))
    step = {
        "max_nontarget_rate": 0.2,
        "strength": 4.0,
        "hook_point": "h",
        "n_latents": 1,
        "probe_rate": 0.0,
        "preservation_drop": None,
        "others_drop": None,
    }
    joint = {**asdict(JointConfig()), "concept": asdict(ConceptConfig(max_latents=7))}
    v1 = {
        "format": "clear_sae.concept_library",
        "concepts": {
            "scarlet": {
                **asdict(entry(name="scarlet")),
                "settings": {
                    **selection,
                    "calibration": {"config": {"strengths": [4.0]}, "steps": [step]},
                    "toy_attribute": "colour=red",
                },
            },
            "accordion": {**asdict(entry(name="accordion")), "settings": {"method": "clear-joint", **joint}},
        },
    }
    for name in ("scarlet", "accordion"):
        for field in ("method", "selection", "calibration", "toy_attribute", "joint"):
            del v1["concepts"][name][field]
    before = copy.deepcopy(v1)
    data = migrate(v1)
    assert v1 == before and data["format_version"] == FORMAT_VERSION
    toy = ConceptEntry.from_dict(data["concepts"]["scarlet"])
    assert toy.toy_attribute == "colour=red" and toy.method == "clear" and asdict(toy.selection) == selection
    assert toy.calibration == CalibrationRecord({"strengths": [4.0]}, [CalibrationRung(**step)], None)
    assert is_toy_entry(toy) and entry_config(toy) == ConceptConfig(max_nontarget_rate=0.2)
    accordion = ConceptEntry.from_dict(data["concepts"]["accordion"])
    assert (accordion.method, accordion.joint, accordion.calibration) == ("clear-joint", joint, None)
    assert entry_config(accordion) == ConceptConfig(max_latents=7)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": FORMAT_VERSION + 1}, "newer than this clear_sae reads"),
        ({"format_version": 0}, "is not a concept-library version"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "selection": {"seed": 1}}}}, "malformed"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "calibration": {"steps": []}}}}, "malformed"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "selection": None}}}, "malformed"),
        ({"concepts": {"x": {**asdict(entry()), "settings": {"seed": 1}}}}, "malformed"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "strength": float("nan")}}}, "strength must be"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "strength": float("inf")}}}, "strength must be"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "strength": 1e30}}}, "strength must be"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "strength": -1}}}, "strength must be"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "strength": "1"}}}, "is not a number"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "latents": [3, -1]}}}, "latent ids"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "latents": [True]}}}, "latent ids"),
        ({"format_version": 2, "concepts": {"x": {**asdict(entry()), "dictionary": "/etc"}}}, "absolute path"),
    ],
    ids=[
        "newer",
        "zero",
        "selection-missing-fields",
        "calibration-missing-config",
        "no-selection",
        "v1-no-selection",
        "strength-nan",
        "strength-inf",
        "strength-huge",
        "strength-negative",
        "strength-string",
        "latent-negative",
        "latent-bool",
        "dictionary-absolute",
    ],
)
def test_a_library_of_an_unknown_version_or_with_a_malformed_typed_field_is_refused(tmp_path, change, message):
    path = tmp_path / "lib.json"
    path.write_text(json.dumps({"format": "clear_sae.concept_library", "concepts": {}, **change}))
    with pytest.raises(ClearSaeError, match=message):
        ConceptLibrary.load(path)


def test_only_the_library_makes_a_learned_entrys_dictionary_relative(tmp_path):
    library = ConceptLibrary(tmp_path / "sub" / "lib.json")
    learned = entry(dictionary=str(tmp_path / "dicts"))
    assert library.add(learned) is learned and learned.dictionary == str(Path("..") / "dicts")
    kept = library.add(entry(name="y", dictionary="elsewhere"))
    assert kept.dictionary == "elsewhere" and set(library.concepts) == {"x", "y"}


def test_selection_settings_are_the_recorded_part_of_a_concept_config():
    names = {f.name for f in fields(SelectionSettings)}
    assert names == {f.name for f in fields(ConceptConfig)} - {"strength", "batch_size"}
    cfg = ConceptConfig(min_target_rate=0.2, max_nontarget_rate=0.1, max_latents=5, score="auroc", holdout=0.4, seed=3)
    assert entry_config(entry(selection=selection_settings(replace_strength(cfg)))) == cfg
    assert entry_config(entry()) == ConceptConfig()


def replace_strength(cfg: ConceptConfig) -> ConceptConfig:
    """`cfg` at another strength and batch size, neither of which an entry's selection records."""
    return ConceptConfig(**{**asdict(cfg), "strength": 8.0, "batch_size": 3})


def test_which_entries_are_toy_concepts_and_where_a_joint_sae_goes(tmp_path):
    assert is_toy_entry(entry(name="red")) and not is_toy_entry(entry(name="dog"))
    assert is_toy_entry(entry(name="dog"), {"dog": "colour=red"})
    assert is_toy_entry(entry(name="dog", toy_attribute="motion=fall"))
    assert joint_folder(tmp_path / "mine.json", "accordion") == tmp_path / "mine_joint" / "accordion"


@pytest.mark.parametrize("name", ["../dicts", "/abs/path", "a/b", "a\\b", "..", ".hidden", "", "x\x00y", "n" * 101])
def test_a_concept_name_that_could_be_a_path_is_refused(tmp_path, name):
    with pytest.raises(ClearSaeError, match="is not allowed"):
        check_concept_name(name)
    with pytest.raises(ClearSaeError, match="is not allowed"):
        joint_folder(tmp_path / "concepts.json", name)


@pytest.mark.parametrize("name", ["french_horn", "Van Gogh", "c++", "t-rex", "v2.1"])
def test_ordinary_concept_names_are_accepted(tmp_path, name):
    assert check_concept_name(name) == name
    assert joint_folder(tmp_path / "concepts.json", name).parent == tmp_path / "concepts_joint"


def test_a_per_encoder_part_name_is_an_entry_name_only(tmp_path):
    """`dog@text_encoder_2` names a part of concept `dog` in a library; a user's --name cannot take that form."""
    assert check_concept_name("dog@text_encoder_2", part=True) == "dog@text_encoder_2"
    for name in ("dog@text_encoder_2", "dog@"):
        with pytest.raises(ClearSaeError, match="is not allowed"):
            check_concept_name(name)
    with pytest.raises(ClearSaeError, match="is not allowed"):
        check_concept_name("dog@../x", part=True)
    library = ConceptLibrary(tmp_path / "concepts.json")
    library.add(entry(name="dog"))
    library.add(entry(name="cat"))
    library.save()
    library = ConceptLibrary.load(tmp_path / "concepts.json")
    library.replace_parts("dog", [entry(name="dog@text_encoder"), entry(name="dog@text_encoder_2")])
    library.save()
    library = ConceptLibrary.load(tmp_path / "concepts.json")
    assert sorted(library.concepts) == ["cat", "dog@text_encoder", "dog@text_encoder_2"]
    assert [e.name for e in library.parts("dog")] == ["dog@text_encoder", "dog@text_encoder_2"]
    assert [e.name for e in library.parts("dog@text_encoder_2")] == ["dog@text_encoder_2"]
    assert [e.name for e in library.parts("cat")] == ["cat"]
    with pytest.raises(ClearSaeError, match="'horse' is not in"):
        library.parts("horse")


def test_two_libraries_loaded_before_either_saves_keep_both_entries(tmp_path):
    path = tmp_path / "concepts.json"
    first, second = ConceptLibrary.load(path, missing_ok=True), ConceptLibrary.load(path, missing_ok=True)
    first.add(entry(name="dog"))
    second.add(entry(name="cat"))
    first.save()
    second.save()  # a plain rewrite would lose "dog"
    assert set(ConceptLibrary.load(path).concepts) == {"dog", "cat"}
    third = ConceptLibrary.load(path)
    first.add(entry(name="dog", strength=2.0))  # an entry replaced here wins over what is on disk
    first.save()
    third.save()  # third did not touch "dog": the newer one on disk stays
    assert ConceptLibrary.load(path).get("dog").strength == 2.0


def _save_entries(path: str, prefix: str, n: int) -> None:
    """Add and save `n` entries one at a time, each through a freshly loaded library (as `clear-sae concept` does)."""
    for i in range(n):
        library = ConceptLibrary.load(path, missing_ok=True)
        library.add(entry(name=f"{prefix}{i}"))
        library.save()


def test_concurrent_writers_on_one_library_lose_no_entry(tmp_path):
    import multiprocessing

    path = str(tmp_path / "concepts.json")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_save_entries, args=(path, prefix, 12)) for prefix in ("a", "b", "c")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    assert set(ConceptLibrary.load(path).concepts) == {f"{p}{i}" for p in "abc" for i in range(12)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concepts.json", "concepts.json.lock"]  # no temp left


def test_a_rung_records_complete_only_where_the_judge_stopped_early():
    rungs = [
        CalibrationRung(0.05, 1.0, "h", 3, 0.4, None, 0.0, complete=False),
        CalibrationRung(0.05, 2.0, "h", 3, 0.0),
    ]
    data = entry(calibration=CalibrationRecord({"strengths": [1.0, 2.0]}, rungs, None)).to_dict()
    assert [step.get("complete") for step in data["calibration"]["steps"]] == [False, None]
    assert "complete" not in data["calibration"]["steps"][1]
    assert ConceptEntry.from_dict(json.loads(json.dumps(data))).calibration.steps == rungs
