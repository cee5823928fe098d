"""Every method of the comparison erases a toy concept on tiny models; the analysis script writes its table."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_setup(tiny_toy_generator, toy_library):
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.sampling import EvalConfig, load_toy_world

    cfg = EvalConfig(
        clips=3, heldout_clips=2, nontarget_clips=3, removed_clips=0, steps=2, batch_size=3, progress=False
    )
    return load_toy_world(tiny_toy_generator), ConceptLibrary.load(toy_library), cfg


def test_every_method_erases_through_the_same_evaluation(tiny_setup):
    from clear_sae.compare.joint import JointConfig
    from clear_sae.concepts import ConceptConfig
    from clear_sae.toyworld.comparison import METHODS, compare_concept

    world, library, cfg = tiny_setup
    joint = JointConfig(
        expansion=1,
        rounds=3,
        warmup_rounds=1,
        sae_steps=5,
        batch_tokens=64,
        sae_lr=3e-3,
        concept=ConceptConfig(max_nontarget_rate=0.2),
    )
    result = compare_concept(world, library, "red", METHODS, cfg, joint_cfg=joint, qualifying_rate=0.0)
    assert result["qualifies"] and set(result["methods"]) == set(METHODS)
    hook_points = list(library.get("red").layer_scores)
    rows = result["methods"]
    assert rows["clear"]["layer"] == library.get("red").hook_point
    assert rows["clear-joint"]["layer"] in hook_points
    assert rows["sae-first"]["layer"] == hook_points[0] and rows["sae-last"]["layer"] == hook_points[-1]
    assert rows["sae-all"]["layer"] == "all" and rows["safree"]["layer"] == hook_points[-1]
    assert rows["diff-means"]["layer"] == rows["clear"]["layer"] and rows["negative-prompt"]["layer"] is None
    for method, row in rows.items():
        if "note" in row:
            assert row["note"] == "no concept-specific latents at this layer"
            continue
        assert row["rate_target_after"]["clips"] == 3 and row["seconds_build"] >= 0, method
    # A new negative prompt changes every clip; the hooks change the target prompts' text states.
    assert rows["negative-prompt"]["clips_resampled"] == {"target": 3, "heldout": 2, "nontarget": 3}
    for method in ("clear", "clear-joint", "diff-means", "sae-all"):
        assert rows[method]["clips_resampled"]["target"] >= 1, method


def test_a_concept_below_the_qualifying_rate_is_listed_not_erased(tiny_setup):
    from clear_sae.toyworld.comparison import compare_concept

    world, library, cfg = tiny_setup
    result = compare_concept(world, library, "circle", ["clear"], cfg, qualifying_rate=1.01)
    assert not result["qualifies"] and result["methods"] == {}


def test_the_analysis_script_writes_json_markdown_and_a_plot(
    analysis_script, tiny_toy_generator, toy_library, tmp_path, capsys
):
    script = analysis_script("compare_methods")
    assert (
        script.main(
            [
                "--out",
                str(tmp_path),
                "--concepts",
                "red",
                "--methods",
                "clear,negative-prompt",
                "--library",
                str(toy_library),
                "--generator",
                str(tiny_toy_generator),
                "--clips",
                "2",
                "--heldout-clips",
                "1",
                "--nontarget-clips",
                "2",
                "--steps",
                "1",
                "--demo-concepts",
                "",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "comparison.json").read_text())
    red = report["concepts"]["red"]
    table = (tmp_path / "comparison.md").read_text()
    assert table.startswith("| concept | method |") and table in capsys.readouterr().out + "\n"
    if red["qualifies"]:  # the tiny generator's clips are noise, so red almost surely does not
        assert "| red | clear |" in table
    else:
        assert "Not qualifying" in table and "red (" in table
    assert "plotly" in (tmp_path / "comparison.html").read_text()[:200_000].lower()
    # A second part appends to the same report; a part with other figure-relevant options is refused.
    common = [
        "--out",
        str(tmp_path),
        "--methods",
        "clear,negative-prompt",
        "--library",
        str(toy_library),
        "--generator",
        str(tiny_toy_generator),
        "--heldout-clips",
        "1",
        "--nontarget-clips",
        "2",
        "--steps",
        "1",
        "--demo-concepts",
        "",
        "--quiet",
        "--append",
    ]
    assert script.main(common + ["--concepts", "blue", "--clips", "2"]) == 0
    merged = json.loads((tmp_path / "comparison.json").read_text())
    assert list(merged["concepts"]) == ["red", "blue"] and merged["concepts"]["red"] == red
    assert [i["concepts"] for i in merged["invocations"]] == ["red", "blue"]
    assert merged["seconds"] > report["seconds"]
    with pytest.raises(SystemExit, match="different clips"):
        script.main(common + ["--concepts", "green", "--clips", "3"])
    assert json.loads((tmp_path / "comparison.json").read_text()) == merged
    # Another method on a concept already there joins it; the clips before erasure must be the same.
    methods_at = common.index("--methods") + 1
    again = common[:methods_at] + ["safree"] + common[methods_at + 1 :]
    assert script.main(again + ["--concepts", "red", "--clips", "2"]) == 0
    merged = json.loads((tmp_path / "comparison.json").read_text())
    assert [i["methods"] for i in merged["invocations"]] == ["clear,negative-prompt"] * 2 + ["safree"]
    assert merged["concepts"]["red"]["rate_target_before"] == red["rate_target_before"]
    assert len({i["library_sha256"] for i in merged["invocations"]}) == 1
    section = {"c": {"rate_target_before": 0.9, "methods": {"clear": 1, "safree": 2}}}
    script.add_result(section, "c", {"rate_target_before": 0.9, "methods": {"safree": 3, "sae-all": 4}})
    assert section["c"]["methods"] == {"clear": 1, "safree": 3, "sae-all": 4}
    with pytest.raises(SystemExit, match="c's clips before erasure differ"):
        script.add_result(section, "c", {"rate_target_before": 0.8, "methods": {}})
    # The table also renders rows of erased concepts.
    red.update(qualifies=True, methods={"clear": {"layer": "x", "seconds_build": 0.1, "note": "no latents"}})
    assert "| red | clear | x |" in script.markdown_table(report)
    assert "| clear | no latents | 0 of 1 | 0.1 |" in script.summary_table(report)

    # The summary counts a concept as met only at <= 10% with preservation down <= 3 points.
    def row(rate: float, drop: float) -> dict:
        return {
            "layer": "x",
            "seconds_build": 1.0,
            "rate_target_before": {"mean": 1.0},
            "rate_target_after": {"mean": rate},
            "preservation_drop": {"mean": drop},
        }

    red["methods"] = {"clear": row(0.05, 0.01), "safree": row(0.05, 0.05), "sae-all": row(0.5, 0.0)}
    summary = script.summary_table(report)
    assert "| clear | **5.0** | 1 of 1 |" in summary and "| safree | 5.0 (−5.0) | 0 of 1 |" in summary
    assert "| sae-all | 50.0 | 0 of 1 |" in summary


def test_text_side_comparison_of_a_minilm_concept(minilm, minilm_library):
    """No generator reads french_horn back: a probe on the text encoder's output does, for every method."""
    from clear_sae.compare.joint import JointConfig
    from clear_sae.compare.methods import METHODS
    from clear_sae.compare.text import compare_text_concept
    from clear_sae.corpus import CONCEPTS, concept_prompts
    from clear_sae.library import ConceptLibrary

    library = ConceptLibrary.load(minilm_library)
    entry = library.get("french_horn")
    fresh_target, fresh_nontarget = concept_prompts("french_horn", n=8, seed=1000)
    joint = JointConfig(expansion=1, rounds=3, warmup_rounds=1, sae_steps=5, batch_tokens=64, sae_lr=3e-3)
    result = compare_text_concept(
        minilm,
        library,
        "french_horn",
        list(METHODS),
        entry.target_prompts,
        entry.nontarget_prompts,
        fresh_target,
        fresh_nontarget,
        CONCEPTS["french_horn"].phrases,
        joint_cfg=joint,
    )
    rows = result["methods"]
    assert rows["negative-prompt"]["note"] == "needs a generator"
    assert rows["clear"]["layer"] == entry.hook_point
    assert rows["clear"]["probe_rate_before"] >= 0.75  # the probe knows the concept on fresh prompts
    for method, row in rows.items():
        if "note" in row:
            continue
        assert 0 <= row["probe_rate_after"] <= 1 and row["prompts"] == {"target": 8, "nontarget": 8}, method
        assert row["nontarget_cosine"] > 0.5 and 0 <= row["nontarget_unchanged"] <= 8, method
    # Clamping the concept at every layer moves the targets' states: the text side must see a change.
    assert rows["sae-all"]["probe_rate_after"] <= rows["sae-all"]["probe_rate_before"]


def test_the_levers_script_erases_every_variant_and_counts_them(
    analysis_script, tiny_toy_generator, toy_library, tmp_path, capsys
):
    script = analysis_script("toy_erasure_levers")
    out = tmp_path / "levers.json"
    assert (
        script.main(
            [
                "--out",
                str(out),
                "--concepts",
                "circle",
                "--library",
                str(toy_library),
                "--generator",
                str(tiny_toy_generator),
                "--clips",
                "2",
                "--steps",
                "1",
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["concepts"]["circle"]
    assert set(row) == set(script.VARIANTS)
    for variant, (rate, gamma) in script.VARIANTS.items():
        assert row[variant]["latents"] > 0 and 0.0 <= row[variant]["rate_after"] <= 1.0, variant
    # gamma changes the clamp, not the latents; the tolerance may change both.
    assert row["base"]["latents"] == row["gamma2"]["latents"] == row["gamma4"]["latents"]
    assert row["nt0.4_g2"]["latents"] == row["nt0.4_g4"]["latents"] >= 1
    table = capsys.readouterr().out
    assert "| circle |" in table and "**at most 10%, preservation kept**" in table


@pytest.mark.artifacts
def test_the_rung_trial_judges_each_rung_on_the_shipped_world(analysis_script, tmp_path, capsys):
    script = analysis_script("toy_rung_trial")
    out = tmp_path / "rungs.json"
    assert (
        script.main(
            [
                "--out",
                str(out),
                "--concepts",
                "fall",
                "--tolerances",
                "0.2",
                "--strengths",
                "0.5,4",
                "--layers",
                "blocks.4",
                "--clips",
                "3",
                "--nontarget-clips",
                "2",
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["concepts"]["fall"]
    assert [(r["layer"], r["gamma"]) for r in rows] == [("text_encoder.blocks.4", 0.5), ("text_encoder.blocks.4", 4.0)]
    assert rows[0]["latents"] == rows[1]["latents"] > 0
    # The shipped entry's rung (blocks.4, gamma 4) takes the motion out of more clips than half a decoder step.
    assert rows[1]["found"] < rows[0]["found"]
    assert capsys.readouterr().out.count("found") == 2
