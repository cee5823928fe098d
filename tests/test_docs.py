"""The docs pages are generated from the repository's JSON, and the README is a newcomer's page."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from conftest import PROMPTS, read_lines

REPO = Path(__file__).resolve().parents[1]


def load_build():
    spec = importlib.util.spec_from_file_location("docs_build", REPO / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_pages_match_what_the_json_gives(tmp_path):
    build = load_build()
    written = build.build(tmp_path)
    assert written, "docs/build.py wrote no page"
    for path in written:
        committed = REPO / "docs" / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"docs/{path.name} is stale: run `python docs/build.py`"
        )


def test_a_generated_page_changes_when_its_json_does(tmp_path, monkeypatch):
    """The pages are read from the JSON, not typed: a changed figure in the JSON shows on the page."""
    build = load_build()
    original = build.load

    def altered(rel: str):
        data = original(rel)
        if rel.endswith("manifest.json"):
            first = sorted(data["layers"])[0]
            data["layers"][first]["explained_variance"] = 0.123456
        return data

    monkeypatch.setattr(build, "load", altered)
    page = build.page_dictionaries()
    assert "| 0.123 |" in page


def test_the_readme_is_a_newcomers_page():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 16_000
    assert not re.search(r"\b[0-9a-f]{7,40}\b(?<![0-9]{7})", text), "a commit hash in the README"
    assert "this machine" not in text.lower() and "my machine" not in text.lower()
    for link in re.findall(r"\]\(([^)#]+)", text):
        if not link.startswith("http"):
            assert (REPO / link).exists(), f"the README links {link}, which is not in the repository"


def test_the_stability_script_writes_the_json_its_page_reads(analysis_script, tmp_path, monkeypatch):
    """Two seeds on a small slice of the demo's corpus: every text and toy concept asked for gets a layer per seed,
    each choice its runner-up, margin and tie (a margin under the seeds' spread of the two scores), and the
    generated page shows each concept's row under its kind."""
    out = tmp_path / "stability.json"
    script = analysis_script("layer_stability")
    slice_ = ["--seeds", "0", "1", "--tokens", "512", "--corpus-size", "40", "--toy-captions", "40"]
    script.main(["--out", str(out), *slice_, "--concepts", "dog", "umbrella", "van_gogh", "--toy-concepts", "red"])
    data = json.loads(out.read_text())
    assert data["settings"]["seeds"] == [0, 1] and sorted(data["concepts"]) == ["dog", "red", "umbrella", "van_gogh"]
    assert data["settings"]["toy_concepts"] == ["red"]
    for name, concept in data["concepts"].items():
        layers = {run["layer"] for run in concept["seeds"].values()}
        assert set(concept["seeds"]) == {"0", "1"} and concept["same_layer"] == (len(layers) == 1)
        for run in concept["seeds"].values():
            if run["layer"] is None or run["runner_up"] is None:
                assert run["tie"] is False
                continue
            assert run["scores"][run["layer"]] >= run["scores"][run["runner_up"]] and run["margin"] >= 0
            spread = max(
                float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                for h in (run["layer"], run["runner_up"])
                for values in [[r["scores"][h] for r in concept["seeds"].values() if h in r["scores"]]]
            )
            assert run["tie"] == (run["margin"] == 0 or run["margin"] < spread)
        assert concept["ties"] == sum(run["tie"] for run in concept["seeds"].values())
    assert data["stable"] == sorted(n for n, c in data["concepts"].items() if c["same_layer"])
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("layer_stability.json") else None)
    page = build.page_stability()
    for name in data["concepts"]:
        assert f"| {name} |" in page
    assert (
        page.index("## Text concepts") < page.index("| dog |") < page.index("## Toy concepts") < page.index("| red |")
    )
    text_stable = sum(data["concepts"][n]["same_layer"] for n in ("dog", "umbrella", "van_gogh"))
    assert f"**{text_stable} of 3** chose the same layer" in page
    assert f"**{int(data['concepts']['red']['same_layer'])} of 1** chose the same layer" in page
    with pytest.raises(SystemExit):  # an unknown concept is refused before any work
        script.main(["--out", str(tmp_path / "other.json"), *slice_, "--concepts", "guitar"])
    assert not (tmp_path / "other.json").exists()


@pytest.mark.artifacts
def test_the_track_a_grid_erases_at_every_layer_under_every_strength_from_one_sample_and_the_page_shows_it(
    analysis_script, tmp_path, monkeypatch
):
    """`--grid`: one concept, two strengths, a few clips. The clips before erasure are sampled once for the whole
    grid; each cell holds its erasure's rates and preservation drops by both judges, layers without latents have
    none, and a resumed run measures nothing again. The page merges the final run's strength into the grid."""
    from clear_sae.errors import ClearSaeError
    from clear_sae.toyworld.evaluation import sweep_latents

    script = analysis_script("toy_track_a")
    out = tmp_path / "grid.json"
    args = ["--grid", "--out", str(out), "--concepts", "red", "--strengths", "1", "8", "--clips", "3",
            "--heldout-clips", "1", "--nontarget-clips", "2"]  # fmt: skip
    calls, compare_erasures = [], script.compare_erasures
    monkeypatch.setattr(
        script, "compare_erasures", lambda *a, **k: calls.append(compare_erasures(*a, **k)) or calls[-1]
    )
    script.main(args)
    data = json.loads(out.read_text())
    assert data["format"] == "clear_sae.toy_track_a_grid" and data["complete"] and len(calls) == 1
    red, figures = data["concepts"]["red"], calls[0]
    library = script.paper_library(["red"], script.ROOT / "dictionaries" / "minilm", tmp_path / "paper.json")
    erasing = [hook for hook, latents in sweep_latents(library, "red", "colour", "red").items() if latents]
    assert set(red["grid"]) == {"1", "8"} and len(red["latents"]) == 7
    assert [h for h, n in red["latents"].items() if n] == erasing and set(figures) == {
        f"{s}@{h}" for s in ("1", "8") for h in erasing
    }
    for strength, cells in red["grid"].items():
        assert list(cells) == erasing
        for hook, cell in cells.items():
            own = figures[f"{strength}@{hook}"]
            assert cell["met_by_both"] == own["qualification"]["met"]
            assert cell["geometry"]["rate_after"] == own["geometry"]["rate_target_after"]["mean"]
            assert cell["detector"]["preservation_drop"] == own["preservation_drop"]["mean"]
    assert red["rate_before"]["detector"] == figures[f"1@{erasing[0]}"]["rate_target_before"]["mean"]
    with monkeypatch.context() as patch:
        patch.setattr(script, "compare_erasures", lambda *a, **k: pytest.fail("a concept already measured ran again"))
        script.main(args + ["--resume"])
    assert json.loads(out.read_text())["concepts"] == data["concepts"]
    with pytest.raises(ClearSaeError, match="no reserved paraphrases"):
        script.main([*args, "--reserved-clips", "2"])
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main([*args[:2], str(tmp_path / "other.json"), *args[3:], "--seed", "90000"])
    assert not (tmp_path / "other.json").exists()

    build = load_build()
    final = build.load("analysis/toy_track_a_final.json")
    lines = build.grid_section(data, final)
    summary = [line for line in lines if line.startswith(("| 1 |", "| **4** (the final run's) |", "| 8 |"))]
    assert len(summary) == 3, "one row per strength, the final run's among them, in increasing order"
    assert summary[0].startswith("| 1 |") and summary[2].startswith("| 8 |")
    met = sum(c["met_by_both"] for c in red["grid"]["8"].values())
    assert summary[2].split(" | ")[2] == f"{int(met > 0)} of 1"
    chosen = [line for line in lines if line.startswith(f"| **{build.short(red['layer'])}** |")]
    assert len(chosen) == 1 and chosen[0].count(" | ") == 3
    assert "<rect" in build.grid_svg(data, final) and build.grid_svg(None, final) is None


@pytest.mark.artifacts
def test_the_heldout_script_measures_unseen_concepts_and_its_page_reads_the_json(
    analysis_script, tmp_path, monkeypatch
):
    """Two concepts on the shipped dictionaries, each learned with the background check and without it: each
    selection gets its layer, scores, firing shares and the warnings a user would see, and the page shows every
    concept's row and a count of those meeting the target computed from the JSON. A word the project's files name
    is refused as a held-out concept."""
    script = analysis_script("heldout_concepts")
    out = tmp_path / "heldout.json"
    script.main(["--out", str(out), "--concepts", "mandolin", "snowman", "dog"])  # dog: a control the corpus holds
    data = json.loads(out.read_text())
    assert list(data["concepts"]) == ["mandolin", "snowman", "dog"] and data["dictionaries"] == "dictionaries/minilm"
    assert [c["kind"] for c in data["concepts"].values()] == ["fine", "coarse", "seen"]
    assert [c["group"] for c in data["concepts"].values()] == ["heldout", "heldout", "seen"]
    for concept in data["concepts"].values():
        for label in ("with_check", "without_check"):
            learned = concept[label]
            assert learned["layer"].startswith("text_encoder.") and 1 <= learned["latents"] <= 32
            assert (learned["background_captions"] > 0) == (label == "with_check")
            for share in ("coverage", "fires_on_fresh_targets", "fires_on_fresh_nontargets"):
                assert 0 <= learned[share] <= 1
            assert learned["meets_target"] == (
                learned["heldout_auroc"] is not None
                and learned["heldout_auroc"] >= 0.9
                and learned["fires_on_fresh_targets"] >= 0.9
                and learned["fires_on_fresh_nontargets"] <= 0.1
            )
            unseen_word = any("are in fewer than 5 of the 9000 captions" in w for w in learned["warnings"])
            assert unseen_word == (concept["kind"] != "seen")
            poor_coverage = any("of the target prompts (below 90%)" in w for w in learned["warnings"])
            assert poor_coverage == (learned["coverage"] < 0.9)
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("heldout_concepts.json") else None)
    page = build.page_heldout()
    for name in data["concepts"]:
        assert f"| {name} |" in page
    heldout = [c for c in data["concepts"].values() if c["group"] == "heldout"]
    met = sum(c["with_check"]["meets_target"] for c in heldout)
    met_before = sum(c["without_check"]["meets_target"] for c in heldout)
    assert f"| Held-out concepts | 2 | **{met}** |" in page and "| Controls | 1 | " in page
    assert re.search(rf"\| Held-out concepts \| 2 \| \*\*{met}\*\* \| \d \| \d \| {met_before} \|", page)
    assert script.named_by_the_project("dog", {}) and script.named_by_the_project("mandolin", {"mandolin": 3})
    assert not script.named_by_the_project("mandolin", {})
    with pytest.raises(SystemExit):  # not a concept the script knows
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "ukulele"])
    monkeypatch.setitem(script.CONCEPTS, "horse", ("fine", ["donkey"]))
    with pytest.raises(SystemExit):  # listed as held out, but the corpus names it
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "horse"])
    assert not (tmp_path / "other.json").exists()


def test_the_breadth_script_compares_settings_chooses_within_budget_and_its_page_reads_the_json(
    analysis_script, tmp_path, monkeypatch
):
    """Two settings on a slice of each corpus, one of them over a (small) training budget: every setting gets its
    development concepts measured, the one chosen for the held-out read is within budget, and the page shows every
    setting and concept. A malformed setting is refused before any work."""
    monkeypatch.syspath_prepend(str(REPO / "analysis"))
    script = analysis_script("corpus_breadth")
    monkeypatch.setattr(script, "work_budget", lambda: {"captions": 6000, "expansion_x_tokens": 1024})
    out = tmp_path / "breadth.json"
    slice_ = ["--corpus-size", "60", "--toy-captions", "40", "--concepts", "ostrich", "toucan"]
    script.main(["--out", str(out), "--settings", "demo:1:512", "broad:4:512", *slice_])
    data = json.loads(out.read_text())
    assert [(r["corpus"], r["expansion"], r["tokens"]) for r in data["runs"]] == [
        ("demo", 1, 512),
        ("broad", 4, 512),
    ]
    assert [r["within_budget"] for r in data["runs"]] == [True, False]
    for run in data["runs"]:
        assert list(run["concepts"]) == ["ostrich"] and run["captions"] == 60
        met = sum(c["meets_target"] for c in run["concepts"].values())
        assert run["summary"]["meet_target"] == met and run["summary"]["concepts"] == 1
    assert all(run["distinct_words"] > 100 and run["train_seconds"] > 0 for run in data["runs"])
    chosen = data["chosen"]
    assert chosen["setting"] == "demo:1:512" and list(chosen["concepts"]) == ["toucan"]
    assert chosen["heldout"]["concepts"] == 1 and chosen["seen"]["concepts"] == 0
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("corpus_breadth.json") else None)
    page = build.page_breadth()
    assert "| `demo:1:512` (chosen) |" in page and "| `broad:4:512` |" in page
    for name in ("ostrich", "toucan"):
        assert f"| {name} |" in page
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "other.json"), "--settings", "wide:8"])
    assert not (tmp_path / "other.json").exists()


def test_the_padding_script_writes_the_json_its_page_reads(analysis_script, tmp_path, monkeypatch, minilm_tokenizer):
    """MiniLM read as CogVideoX reads T5, on a small slice of the demo's corpus: its padding is found to be read,
    each concept's padding positions are those past its prompts' tokens, and the page shows each concept's row
    and a count computed from the JSON."""
    out = tmp_path / "padding.json"
    script = analysis_script("padding_firing")
    slice_ = ["--tokens", "4096", "--corpus-size", "300", "--toy-captions", "0", "--max-sequence-length", "48"]
    script.main(["--out", str(out), *slice_, "--concepts", "french_horn", "dog"])
    data = json.loads(out.read_text())
    assert data["settings"]["padding_read"] == {"text_encoder": True} and sorted(data["concepts"]) == [
        "dog",
        "french_horn",
    ]
    measured = {name: c for name, c in data["concepts"].items() if c["layer"]}
    assert measured, "a concept as plain as a dog should find latents on these dictionaries"
    for name, concept in measured.items():
        target = read_lines(PROMPTS / "concepts" / f"{name}.target.txt")
        padding = sum(48 - min(48, len(minilm_tokenizer(p)["input_ids"])) for p in target)
        assert concept["target"]["padding_positions"] == padding and concept["target"]["prompts"] == len(target)
        for side in ("target", "nontarget"):
            shares = concept[side]
            assert all(0 <= shares[k] <= 1 for k in ("fires_on_real", "fires_on_padding", "padding_positions_firing"))
            assert (shares["fires_on_padding"] > 0) == (shares["padding_positions_firing"] > 0)
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("padding_firing.json") else None)
    page = build.page_padding()
    for name in data["concepts"]:
        assert f"| {name} |" in page
    firing = sum(c["target"]["fires_on_padding"] > 0 for c in measured.values())
    assert f"**{firing} of {len(measured)}**" in page


@pytest.mark.artifacts
def test_the_two_judges_script_keeps_each_judges_reading_and_its_section_counts_them(
    analysis_script, tmp_path, monkeypatch
):
    """Two shipped toy concepts on the shipped world, a few clips each: every concept carries each judge's rates
    and verdict, met by both only where both met, on a development seed; the page's section counts from the JSON.
    A test seed of the sealed protocol is refused."""
    from clear_sae.errors import ClearSaeError

    script = analysis_script("toy_two_judges")
    out = tmp_path / "judges.json"
    script.main(["--out", str(out), "--concepts", "red", "rise", "--clips", "4", "--heldout-clips", "2",
                 "--nontarget-clips", "4"])  # fmt: skip
    data = json.loads(out.read_text())
    assert list(data["concepts"]) == ["red", "rise"] and data["protocol"]["split"] == "development"
    for concept in data["concepts"].values():
        for judge in ("detector", "geometry"):
            assert 0 <= concept[judge]["rate_target_after"] <= 1 and isinstance(concept[judge]["met"], bool)
        assert concept["met_by_both"] == (concept["detector"]["met"] and concept["geometry"]["met"])
    assert 0.5 < data["geometry_accuracy"]["colour_frames"] <= 1
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_two_judges.json") else None)
    page = build.page_toyworld()
    both = sum(c["met_by_both"] for c in data["concepts"].values())
    assert f"By both: {both}.**" in page and "| red | colour |" in page and "| rise | motion |" in page
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000"])
    assert not (tmp_path / "other.json").exists()


@pytest.mark.artifacts
def test_the_track_a_script_tunes_one_strength_erases_at_every_layer_and_reports_the_chosen_layers_regret(
    analysis_script, tmp_path, monkeypatch
):
    """One toy concept learned the paper's way, a few clips: the strength tuned on a development seed over the
    given grid, its rate after erasure at every layer by each judge, a chosen layer never better than the best
    one, the interval verdict beside the point one, and the section's counts read from the JSON. A test seed needs
    --final, and a final run takes its strength from a development run's JSON."""
    from clear_sae.errors import ClearSaeError

    script = analysis_script("toy_track_a")
    out = tmp_path / "track_a.json"
    args = ["--out", str(out), "--concepts", "red", "--clips", "3", "--heldout-clips", "1", "--nontarget-clips", "2",
            "--strengths", "1", "4", "--tune-clips", "3", "--tune-nontarget-clips", "2", "--joint-rounds", "2",
            "--work", str(tmp_path / "work")]  # fmt: skip
    evaluated, evaluate = [], script.evaluate
    monkeypatch.setattr(script, "evaluate", lambda *a, **k: evaluated.append(evaluate(*a, **k)) or evaluated[-1])
    script.main(args)
    data = json.loads(out.read_text())
    assert data["complete"] and data["protocol"]["weights"]["generator"]
    result_of_red = evaluated[0]["concepts"]["red"]["sweep"]
    with monkeypatch.context() as patch:  # a resumed run keeps the tuning and the concepts it finds
        patch.setattr(script, "evaluate", lambda *a, **k: pytest.fail("a concept already measured ran again"))
        patch.setattr(script, "tune_strength", lambda *a, **k: pytest.fail("tuned again"))
        script.main(args + ["--resume"])
        assert json.loads(out.read_text())["concepts"] == data["concepts"]
        with pytest.raises(ClearSaeError, match="not a Track A run with these settings"):
            script.main([*args[:-2], "--clips", "4", "--resume"])
    red, tuning = data["concepts"]["red"], data["tuning"]
    assert "--work" not in data["command"] and data["config"]["joint_rounds"] == 2
    joint = json.loads((tmp_path / "work" / "joint_2_rounds" / "concepts.json").read_text())
    assert red["joint_layer"] == joint["concepts"]["red"]["hook_point"]
    for judge in ("detector", "geometry"):  # clear-joint's layer read from the same sweep
        per_layer = red[judge]["per_layer"]
        assert red[judge]["regret_joint_vs_best"] == per_layer[red["joint_layer"]] - min(per_layer.values())
    assert data["summary"]["joint_same_layer"] == int(red["joint_layer"] == red["layer"])
    assert tuning["protocol"]["split"] == "development" and tuning["seed"] != data["protocol"]["seed"]
    assert set(tuning["strengths"]) == {"1", "4"} and data["config"]["strength"] == tuning["chosen"]
    best = max(row["met_by_both"] for row in tuning["strengths"].values())
    assert tuning["strengths"][f"{tuning['chosen']:g}"]["met_by_both"] == best
    assert data["protocol"]["split"] == "development"
    for judge in ("detector", "geometry"):
        per_layer = red[judge]["per_layer"]
        assert len(per_layer) == 7 and per_layer[red["layer"]] == red[judge]["rate_after"]
        kept = red[judge]["per_layer_preservation_drop"]
        assert list(kept) == list(per_layer) and all(-1 <= v <= 1 for v in kept.values())
        sweep = result_of_red[red["layer"]]
        assert kept[red["layer"]] == (sweep if judge == "detector" else sweep["geometry"])["preservation_drop"]["mean"]
        assert red[judge]["regret_vs_best"] >= 0 and per_layer[red[judge]["best_layer"]] == min(per_layer.values())
        assert red[judge]["met_with_intervals"] is False  # 3 clips cannot bound a rate under 10%
        assert red[judge]["clip_rate_after_ci95"][1] > 0.10
        test = red[judge]["chosen_vs_best"]
        assert 0 <= test["only_first"] + test["only_second"] <= 3 and 0 < test["p_value"] <= 1
    assert red["met_by_both"] == (red["detector"]["met"] and red["geometry"]["met"])
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_track_a.json") else None)
    page = build.page_toyworld()
    assert f"{data['summary']['met_by_both']} by both.**" in page and f"| red | {build.short(red['layer'])} |" in page
    assert f"**γ = {tuning['chosen']:g}.**" in page and "0 of 1 by both" in page
    assert "clear-joint's layer" in page and "On the reserved paraphrases" not in page
    reading = {"rate_before": 0.7, "clip_rate_before": 0.75, "clip_rate_after": 0.25,
               "clip_rate_after_ci95": [0.01, 0.81], "clips": 4}  # fmt: skip
    for judge in ("detector", "geometry"):  # what a final run with --reserved-clips 4 records
        red[judge]["reserved"] = reading
    page = build.page_toyworld()
    assert (
        "On the reserved paraphrases (4 target clips" in page
        and "| red | 75 → 25 [1.0, 81.0] | 75 → 25 [1.0, 81.0] |" in page
    )
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000"])
    with pytest.raises(ClearSaeError, match="reserved paraphrases"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--reserved-clips", "5"])
    with pytest.raises(ClearSaeError, match="tunes nothing"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000", "--final"])
    assert data["config"]["concepts"] == ["red"] and data["config"]["dictionaries"] == "dictionaries/minilm"
    other_concepts = tmp_path / "other_concepts.json"
    other_concepts.write_text(json.dumps(data | {"config": data["config"] | {"concepts": ["red", "blue"]}}))
    with pytest.raises(ClearSaeError, match="other concepts or dictionaries"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000", "--final",
                     "--strength-from", str(other_concepts)])  # fmt: skip
    tuned_on_test = tmp_path / "tuned_on_test.json"
    tuned_on_test.write_text(json.dumps(data | {"tuning": tuning | {"seed": 90001}}))
    with pytest.raises(ClearSaeError, match="not tuned on a development seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000", "--final",
                     "--strength-from", str(tuned_on_test)])  # fmt: skip
    assert not (tmp_path / "other.json").exists()


@pytest.mark.artifacts
def test_the_ablations_script_erases_each_shipped_entry_four_ways_on_the_same_clips(
    analysis_script, tmp_path, monkeypatch
):
    """One shipped toy concept, a few clips: the four erasures read by both judges from the same clips before
    erasure, the shipped variant paired with itself agreeing on every clip, and the section built from the JSON. A
    test seed is refused."""
    from clear_sae.errors import ClearSaeError

    script = analysis_script("toy_ablations")
    out = tmp_path / "ablations.json"
    script.main(["--out", str(out), "--concepts", "purple", "--clips", "3", "--nontarget-clips", "2"])
    data = json.loads(out.read_text())
    purple = data["concepts"]["purple"]
    assert set(data["summary"]) == {"shipped", "single_step", "gamma_1", "single_step_gamma_1"}
    assert purple["strength"] > 1 and data["protocol"]["split"] == "development"
    for judge in ("detector", "geometry"):
        befores = {purple[v][judge]["rate_before"] for v in data["summary"]}
        assert len(befores) == 1  # every variant is read against the same clips before erasure
        same = purple["shipped"][judge]["against_shipped"]
        assert same["only_first"] == same["only_second"] == 0 and same["p_value"] == 1.0
        for variant in data["summary"]:
            test = purple[variant][judge]["against_shipped"]
            assert test["only_first"] + test["only_second"] <= 3
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_ablations.json") else None)
    page = build.page_toyworld()
    assert "## Ablations" in page and f"| purple | {build.short(purple['layer'])} | {purple['strength']:g} |" in page
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "purple", "--seed", "90000"])
    assert not (tmp_path / "other.json").exists()


def test_misspellings_swap_two_letters_of_the_concepts_own_naming_word(analysis_script):
    script = analysis_script("toy_hard_prompts")
    assert script.misspelled("red") == "rde" and script.misspelled("circle") == "cricle"
    assert script.misspelled("bar") == "bra" and script.misspelled("x") == "x"
    assert (
        script.misspelling("motion", "left") == "moves to the lfet" and script.misspelling("motion", "rise") == "rsies"
    )
    assert script.misspelling("shape", "cross") == "corss"


@pytest.mark.artifacts
def test_the_hard_prompts_script_reads_the_target_beside_its_neighbour_and_misspelled(
    analysis_script, tmp_path, monkeypatch
):
    """One shipped toy concept, two clips per set: two-object captions naming the target and its neighbour, target
    captions whose concept word is misspelled, both judges' clip rates before and after, and the section built from
    the JSON. A test seed is refused."""
    from clear_sae.errors import ClearSaeError
    from clear_sae.toyworld.captions import MOTION_WORDS

    script = analysis_script("toy_hard_prompts")
    out = tmp_path / "hard.json"
    script.main(["--out", str(out), "--concepts", "left", "--clips", "2"])
    data = json.loads(out.read_text())
    left = data["concepts"]["left"]
    assert data["neighbours"]["left"] != "left" and left["neighbour"] == data["neighbours"]["left"]
    neighbour_words = MOTION_WORDS[left["neighbour"]]
    for prompt in left["beside_neighbour"]["examples"]:
        assert any(w in prompt for w in MOTION_WORDS["left"]) and any(w in prompt for w in neighbour_words)
    for prompt in left["misspelled"]["examples"]:  # no correctly spelled synonym of left is left
        assert "moves to the lfet" in prompt and not any(w in prompt for w in MOTION_WORDS["left"])
    for prompt in left["in_both_objects"]["examples"]:  # the concept named on each of the two objects
        assert sum(prompt.count(w) for w in MOTION_WORDS["left"]) == 2
    for prompt in left["second_in_caption"]["examples"]:  # named once, on the second object
        assert sum(prompt.count(w) for w in MOTION_WORDS["left"]) == 1
    assert script.second_in_caption("motion", "left", 2, script.SEED).prompts == left["second_in_caption"]["examples"]
    later = script.second_in_caption("motion", "left", 20, script.SEED)
    assert all(s.main.motion != "left" and s.second.motion == "left" for s in later.specs)
    assert all(s.main.shape != s.second.shape or s.main.colour != s.second.colour for s in later.specs)
    for part in (
        left["beside_neighbour"]["target"],
        left["beside_neighbour"]["neighbour"],
        left["in_both_objects"]["target"],
        left["second_in_caption"]["target"],
        left["misspelled"]["target"],
    ):
        for when in ("before", "after"):
            for judge in ("detector", "geometry"):
                reading = part[when][judge]
                assert reading["clips"] == 2 and reading["rate"] == reading["rendered"] / 2
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_hard_prompts.json") else None)
    page = build.page_toyworld()
    assert "## Harder prompts" in page and f"| left | {left['neighbour']} |" in page and "*In both objects*" in page
    assert "Four sets per shipped toy concept" in page and "*Second in the caption*" in page
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "left", "--seed", "90000"])
    assert not (tmp_path / "other.json").exists()


def test_the_soft_attacks_embedding_stands_in_for_the_mask_token_and_carries_gradients(analysis_script):
    """Embedded as a word's own row, the `[MASK]` in a caption encodes exactly as the word does; the hook is gone on
    exit, and a loss on the output reaches the embedding."""
    import torch

    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.evaluation import clamps_at
    from clear_sae.toyworld.sampling import encode, load_toy_world

    script = analysis_script("toy_attack")
    world = load_toy_world()
    tokenizer, table = world.pipe.tokenizer, world.pipe.text_encoder.get_input_embeddings().weight
    left = table[tokenizer.convert_tokens_to_ids("left")].detach().clone()
    with script.soft_token(world, left):
        masked = encode(world.pipe, ["a disc moves to the [MASK]"])
    assert torch.equal(masked, encode(world.pipe, ["a disc moves to the left"]))
    assert not torch.equal(encode(world.pipe, ["a disc moves to the [MASK]"]), masked)  # the hook is gone
    # The entry's latents fire on "left", and their codes pass gradients back to the embedding.
    clamps = clamps_at(ConceptLibrary.load(REPO / "dictionaries" / "minilm" / "concepts.json"), "left")
    vector = left.clone().requires_grad_(True)
    with torch.enable_grad(), script.soft_token(world, vector):
        _, states = script.layer_states(world, list(clamps), ["a disc moves to the [MASK]"])
        codes = script.concept_code_sum(clamps, states)
        codes.sum().backward()
    assert codes.shape == (1,) and float(codes.detach()[0]) > 0
    assert vector.grad is not None and bool(vector.grad.abs().sum() > 0)


@pytest.mark.artifacts
def test_the_attack_script_searches_a_word_off_the_axis_and_reads_it_with_and_without_erasure(
    analysis_script, tmp_path, monkeypatch
):
    """One shipped toy concept, a small search and two clips: the word found is no synonym of any value on the
    axis, it stands where the concept's word stood, the three runs are read by both judges, and the section is built
    from the JSON. A test seed is refused."""
    from clear_sae.errors import ClearSaeError

    script = analysis_script("toy_attack")
    out = tmp_path / "attack.json"
    args = ["--concepts", "left", "--clips", "2", "--candidates", "20", "--words", "2", "--soft-steps", "3"]
    script.main(["--out", str(out), *args])
    data = json.loads(out.read_text())
    left = data["concepts"]["left"]
    soft = left["soft"]
    # The soft embedding starts as the naming word, on which the entry's latents fire, and Adam moves it.
    assert soft["steps"] == 3 and soft["concept_codes_start"] > 0 and soft["moved"] > 0
    for run in ("attack_before", "attack_after"):
        assert all(soft[run][judge]["clips"] == 2 for judge in ("detector", "geometry"))
    word = left["attack"]["word"]
    assert len(word.split()) == 2 and data["config"]["words"] == 2 and left["attack"]["candidates"] == 20
    assert not set(word.lower().split()) & script.axis_words("motion") and "left" not in word
    for prompt in left["examples"]:
        assert re.search(rf"\b{word}\b", prompt) and not re.search(r"\bleft\b", prompt)
    for run in ("attack_before", "original_after", "attack_after"):
        for judge in ("detector", "geometry"):
            assert left[run][judge]["clips"] == 2 and 0 <= left[run][judge]["rate"] <= 1
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_attack.json") else None)
    page = build.page_toyworld()
    assert "## A one-word prompt attack" in page and f"| left | `{word}` |" in page and "here by 2 such tokens" in page
    assert "**A soft attack**" in page and f"| left | {soft['concept_codes_start']:.2f} → " in page
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "left", "--seed", "90000"])
    with pytest.raises(ClearSaeError, match="at least one token"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "left", "--words", "0"])
    with pytest.raises(ClearSaeError, match="or 0 to skip the soft attack"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "left", "--soft-steps", "-1"])
    assert not (tmp_path / "other.json").exists()


def test_a_track_b_ladder_stops_at_the_first_rung_that_passes_and_never_judges_past_its_budget(analysis_script):
    """A judge that answers from a list: the climb stops where a rung meets every bar; with none passing, it keeps
    the rung that preserved and where the concept was found least; rungs past the budget are never built."""
    from clear_sae.calibration.judge import Verdict
    from clear_sae.calibration.ladder import CalibrationConfig
    from clear_sae.toyworld.sampling import Intervention

    script = analysis_script("toy_track_b")
    built = []

    def rungs(n):
        def build(i):
            built.append(i)
            return Intervention(negative_prompt=str(i))

        return [script.Rung("somewhere", float(i + 1), lambda i=i: build(i)) for i in range(n)]

    def judge_from(verdicts):
        answers = iter(verdicts)
        return lambda how: next(answers)

    cal = CalibrationConfig()
    passing = [Verdict(0.5, None, 0.0), Verdict(0.05, 0.0, 0.0), Verdict(0.0, 0.0, 0.0)]
    steps, chosen, _ = script.climb(judge_from(passing), rungs(3), 4, cal)
    assert [s["passed"] for s in steps] == [False, True] and chosen == 1 and built == [0, 1]
    built.clear()
    failing = [Verdict(0.3, None, 0.0), Verdict(0.2, 0.2, 0.0), Verdict(0.25, 0.0, 0.0), Verdict(0.0, 0.0, 0.0)]
    steps, chosen, kept = script.climb(judge_from(failing), rungs(4), 3, cal)
    # The second found less but broke the non-targets; of those that kept them, the third found least.
    assert len(steps) == 3 and not any(s["passed"] for s in steps) and chosen == 2 and built == [0, 1, 2]
    assert kept.negative_prompt == "2"  # the rung kept is the one built and judged, not built again


def test_track_b_refuses_a_tuning_seed_outside_development_and_an_empty_budget_before_any_work(
    analysis_script, tmp_path
):
    from clear_sae.errors import ClearSaeError

    script = analysis_script("toy_track_b")
    out = tmp_path / "track_b.json"
    with pytest.raises(ClearSaeError, match="not a development seed"):
        script.main(["--out", str(out), "--tune-seed", "90000"])
    with pytest.raises(ClearSaeError, match="at least one judged rung"):
        script.main(["--out", str(out), "--budget", "0"])
    with pytest.raises(ClearSaeError, match="other than --seed"):
        script.main(["--out", str(out), "--tune-seed", "1000", "--seed", "1000"])
    with pytest.raises(ClearSaeError, match="increasing order"):
        script.main(["--out", str(out), "--esd-steps", "50", "25"])
    with pytest.raises(ClearSaeError, match="reserved paraphrases"):
        script.main(["--out", str(out), "--reserved-clips", "5"])
    # The costliest ladder, and the method added after the others were measured, run only when asked.
    assert "esd" not in script.DEFAULT_METHODS and "safree-layer" not in script.DEFAULT_METHODS
    assert not out.exists()


@pytest.mark.artifacts
def test_the_track_b_script_gives_every_method_the_same_judged_budget_and_pairs_it_with_clear(
    analysis_script, tmp_path, monkeypatch
):
    """One toy concept on the shipped world, a budget of 2 and a few clips: every method's ladder is judged within
    the budget from the same tuning clips, each method acts where its own rule puts it, all read the same clips
    before erasure, CLEAR paired with itself agrees on every clip, and the section is built from the JSON."""
    from clear_sae.backbones import load_backbone
    from clear_sae.compare.safree import safree_separations
    from clear_sae.errors import ClearSaeError
    from clear_sae.toyworld.captions import training_words
    from clear_sae.toyworld.learn import learning_prompts
    from clear_sae.toyworld.protocol import weights_record
    from clear_sae.toyworld.sampling import load_toy_world

    script = analysis_script("toy_track_b")
    out = tmp_path / "track_b.json"
    args = ["--out", str(out), "--concepts", "red", "--budget", "2", "--judge-clips", "3", "--clips", "3",
            "--heldout-clips", "1", "--nontarget-clips", "2", "--joint-rounds", "2", "--esd-steps", "2", "4",
            "--methods", *script.METHODS, "--work", str(tmp_path / "work")]  # fmt: skip
    script.main(args)
    data = json.loads(out.read_text())
    assert data["protocol"]["weights"] == weights_record(*load_toy_world().folders)
    rows = data["concepts"]["red"]["methods"]
    assert data["complete"] and set(rows) == set(script.METHODS) and "--work" not in data["command"]
    assert (tmp_path / "work" / "joint_2_rounds" / "concepts.json").exists()  # the clear-joint SAE is kept
    for method, row in rows.items():
        rungs, chosen = row["ladder"]["rungs"], row["ladder"]["chosen"]
        assert 1 <= len(rungs) <= 2 and not any(r["passed"] for r in rungs[:-1]), method
        assert chosen == len(rungs) - 1 if rungs[-1]["passed"] else 0 <= chosen < len(rungs)
        for judge in ("detector", "geometry"):
            assert row[judge]["rate_before"] == rows["clear"][judge]["rate_before"]
            assert row[judge]["against_clear"]["only_first"] + row[judge]["against_clear"]["only_second"] <= 3
    same = rows["clear"]["detector"]["against_clear"]
    assert same["only_first"] == same["only_second"] == 0
    where = {method: row["ladder"]["rungs"][0]["where"] for method, row in rows.items()}
    assert where["safree"] == "prompt embeddings" and where["negative-prompt"] == "negative prompt"
    assert where["sae-all"] == "all" and where["sae-middle"] == "text_encoder.blocks.2"
    # SAFREE at a layer acts where its own subspace separates the learning prompts best, all its rungs there.
    backbone = load_backbone("minilm")
    words = training_words("colour", "red")
    separations = safree_separations(backbone, backbone.hook_points, words, *learning_prompts("red"))
    assert {r["where"] for r in rows["safree-layer"]["ladder"]["rungs"]} == {max(separations, key=separations.get)}
    assert [r["strength"] for r in rows["negative-prompt"]["ladder"]["rungs"]] == list(
        script.GUIDANCES[: len(rows["negative-prompt"]["ladder"]["rungs"])]
    )
    assert rows["safree"]["ladder"]["rungs"][0]["alpha"] == 0.01
    build = load_build()
    monkeypatch.setattr(build, "load", lambda rel: data if rel.endswith("toy_track_b.json") else None)
    page = build.page_toyworld()
    assert (
        "## Track B" in page
        and f"| clear | {build.TRACK_B_LADDERS['clear']} | {rows['clear']['met_by_both']:d}" in page
    )
    assert (
        "On the reserved paraphrases" not in page
        and data["summary"]["clear"]["detector"]["mean_reserved_rate_after"] is None
    )
    with pytest.raises(ClearSaeError, match="test seed"):
        script.main(["--out", str(tmp_path / "other.json"), "--concepts", "red", "--seed", "90000"])
    assert not (tmp_path / "other.json").exists()
    monkeypatch.setattr(script, "concept_result", lambda *a: pytest.fail("a concept already measured ran again"))
    script.main(args + ["--resume"])  # nothing left to measure
    assert json.loads(out.read_text())["concepts"] == data["concepts"]
    with pytest.raises(ClearSaeError, match="not a Track B run with these settings"):
        script.main([*args[:-2], "--budget", "1", "--resume"])
    reading = {"rate_before": 0.5, "rate_after": 0.25, "clip_rate_before": 0.5, "clip_rate_after": 0.25,
               "clip_rate_after_ci95": [0.01, 0.81], "clips": 4}  # fmt: skip
    for row in [r for r in rows.values() if "note" not in r]:  # what a final run with --reserved-clips 4 records
        for judge in ("detector", "geometry"):
            row[judge]["reserved"] = reading
    data["summary"] = script.summarise(data["concepts"], list(rows), 0)
    page = build.page_toyworld()
    assert "On the reserved paraphrases (4 target clips" in page and "erased by CLEAR's kept rung" in page
    assert "mean rate after erasure on the reserved paraphrases, detector / rules (%): clear 25.0 / 25.0;" in page


def test_a_second_track_b_run_joins_the_first_only_with_the_same_settings():
    """The fine-tuning baseline runs on its own, on some concepts: its rows join the first run's, CLEAR's readings of
    both runs are compared, and a run made with other clips is refused."""
    build = load_build()

    def run(methods, concepts, clear_rate, clips=40):
        rows = {m: {"detector": {"rate_after": clear_rate}, "geometry": {"rate_after": clear_rate}} for m in methods}
        return {
            "config": {"clips": clips, "methods": methods, "concepts": concepts, "esd_steps": [25]},
            "protocol": {"seed": 1000, "split": "development"},
            "concepts": {c: {"axis": "colour", "methods": rows} for c in concepts},
            "summary": {m: {"concepts": len(concepts)} for m in methods},
            "complete": True,
        }

    main = run(["clear", "safree"], ["red", "green"], 0.0)
    merged = build.merge_track_b(main, run(["clear", "esd"], ["green"], 0.0))
    assert merged["config"]["methods"] == ["clear", "safree", "esd"]
    assert merged["separate_runs"] == [
        {
            "file": "analysis/toy_track_b_esd.json",
            "methods": ["esd"],
            "concepts": ["green"],
            "of": 1,
            "complete": True,
            "clear_agrees": True,
        }
    ]
    assert "esd" in merged["concepts"]["green"]["methods"] and "esd" not in merged["concepts"]["red"]["methods"]
    assert merged["summary"]["esd"] == {"concepts": 1} and "esd" not in main["summary"]
    assert not build.merge_track_b(main, run(["clear", "esd"], ["green"], 0.5))["separate_runs"][0]["clear_agrees"]
    with pytest.raises(SystemExit, match=r"not made with the settings .*\(they differ in clips\)"):
        build.merge_track_b(main, run(["clear", "esd"], ["green"], 0.0, clips=100))
    with pytest.raises(SystemExit, match="not made with the settings"):
        build.merge_track_b(main, run(["clear", "esd"], ["blue"], 0.0))
    # Every separate run joins, each listed with its own file; one that measures a method again is refused.
    layer = run(["clear", "safree-layer"], ["red"], 0.5) | {"complete": False}  # a run still going
    layer["config"]["concepts"] = ["red", "green"]
    runs = {"analysis/toy_track_b.json": main, "analysis/toy_track_b_esd.json": run(["clear", "esd"], ["green"], 0.0)}
    both = build.merged_track_b(runs | {"analysis/toy_track_b_safree.json": layer})
    assert both["config"]["methods"] == ["clear", "safree", "esd", "safree-layer"]
    assert [(r["file"], r["clear_agrees"]) for r in both["separate_runs"]] == [
        ("analysis/toy_track_b_esd.json", True),
        ("analysis/toy_track_b_safree.json", False),
    ]
    assert both["complete"] and not both["separate_runs"][1]["complete"]  # the first run's, and each its own
    assert both["separate_runs"][1]["concepts"] == ["red"] and both["separate_runs"][1]["of"] == 2
    alone = build.merged_track_b(runs)
    assert alone["missing_runs"] == ["analysis/toy_track_b_safree.json"] and "missing_runs" not in merged
    assert {k: v for k, v in alone.items() if k != "missing_runs"} == merged
    with pytest.raises(SystemExit, match="toy_track_b_safree.json measures safree again"):
        build.merged_track_b(runs | {"analysis/toy_track_b_safree.json": run(["clear", "safree"], ["red"], 0.0)})
    # A first run that stopped early joins the concepts both have.
    partial = run(["clear", "safree"], ["red"], 0.0) | {"config": main["config"]}
    joined = build.merge_track_b(partial, run(["clear", "esd"], ["red", "green"], 0.0))
    assert list(joined["concepts"]) == ["red"] and "esd" in joined["concepts"]["red"]["methods"]


def test_track_b_counts_clear_ahead_only_where_both_judges_intervals_lie_above_zero():
    build = load_build()

    def gaps(low_detector, low_rules):
        return {"detector": {"gap_to_clear": {"ci95": [low_detector, 0.5]}},
                "geometry": {"gap_to_clear": {"ci95": [low_rules, 0.5]}}}  # fmt: skip

    line = build.track_b_claim({"clear": {}, "a": gaps(0.01, 0.02), "b": gaps(0.01, -0.01), "c": gaps(0.0, 0.3)})
    assert "**Not reached: ahead of a; not ahead of b, c.**" in line
    assert "**Reached: ahead of a; not ahead of none.**" in build.track_b_claim({"clear": {}, "a": gaps(0.1, 0.1)})
    # A method whose own run is still going is named with how far it has got.
    going = {"separate_runs": [{"methods": ["a"], "concepts": ["red"], "of": 16, "complete": False}]}
    assert "ahead of a (1 of 16 concepts so far);" in build.track_b_claim({"clear": {}, "a": gaps(0.1, 0.1)}, going)


def test_a_toy_section_measured_on_other_weights_than_the_shipped_ones_says_it_is_stale():
    """The page compares the weights a run records with the shipped ones: equal, no warning; another generator, or
    none recorded, a warning under the section's title naming what differs."""
    from clear_sae.toyworld.protocol import weights_record

    build = load_build()
    shipped = weights_record(build.SHIPPED_WEIGHTS / "generator", build.SHIPPED_WEIGHTS / "detector")
    section = ["## A section", "", "a figure", ""]

    def run(weights):
        return {"protocol": {"seed": 1000} | ({} if weights is None else {"weights": weights})}

    assert build.with_stale_note(section, run(shipped), None) == section
    retrained = build.with_stale_note(section, run(shipped | {"generator": "0" * 16}))
    assert retrained[:2] == section[:2] and retrained[3:] == ["", *section[2:]]
    assert "another generator than the one shipped" in retrained[2] and "detector" not in retrained[2]
    assert "name no toy-world weights" in build.with_stale_note(section, run(None))[2]


def test_track_b_counts_a_method_worse_or_better_than_clear_only_where_the_paired_test_says_so():
    """Worse: the method alone left the concept in significantly more clips; better: in fewer; a test at p >= 0.05,
    a concept without a pairing (CLEAR kept no rung) and CLEAR itself count for neither."""
    build = load_build()

    def concept(only_first, only_second, p_value):
        test = {"only_first": only_first, "only_second": only_second, "p_value": p_value}
        return {"methods": {"a": {"detector": {"against_clear": test}}, "clear": {"detector": {"against_clear": test}}}}

    concepts = {
        "worse": concept(9, 1, 0.02),
        "better": concept(0, 8, 0.01),
        "unclear": concept(6, 1, 0.13),
        "unpaired": {"methods": {"a": {"detector": {"against_clear": None}}}},
    }
    assert build.worse_and_better(concepts, "a", "detector") == (1, 1)
    assert build.worse_and_better(concepts, "clear", "detector") == (0, 0)
    assert build.worse_and_better(concepts, "a", "geometry") == (0, 0)


def test_the_readme_headline_is_written_between_its_markers_from_both_tracks():
    """The block between the markers is replaced by Track A's result next to Track B's, on the seeds they read;
    the rest of the README is left alone, and a README without the markers is refused."""
    build = load_build()
    text = f"intro\n{build.HEADLINE_START}\nold words\n{build.HEADLINE_END}\nrest\n"
    written = build.readme_with_headline(text)
    headline = build.readme_headline()
    assert written == f"intro\n{build.HEADLINE_START}\n{headline}\n{build.HEADLINE_END}\nrest\n"
    track_a = json.loads((REPO / "analysis" / "toy_track_a.json").read_text())
    assert f"meets {track_a['summary']['met_by_both']} of {len(track_a['concepts'])} concepts" in headline
    assert ("on the sealed test" in headline) == (track_a["protocol"]["split"] == "test")
    assert build.readme_with_headline(written) == written
    with pytest.raises(SystemExit, match="headline markers"):
        build.readme_with_headline("a README without markers\n")


def test_the_sealed_tests_runs_stand_above_the_development_runs_and_take_the_headline_once_finished(
    monkeypatch, analysis_script
):
    """A final run (test seeds) gets a section of its own above its development run's, whose seed sentence then
    points to it; the README headline reads the final runs only once both tracks have measured every concept, and
    says how far they have got before that."""
    build = load_build()
    monkeypatch.setattr(build, "TRACK_B_SEPARATE", {"_safree": build.TRACK_B_SEPARATE["_safree"]})
    development = {rel: build.load(rel) for rel in ("analysis/toy_track_a.json", *build.track_b_files())}
    sealed = {}
    for rel, run in development.items():
        stem = Path(rel).stem
        final = stem.replace("_safree", "") + "_final" + ("_safree" if stem.endswith("_safree") else "")
        run = json.loads(json.dumps(run))
        run["protocol"] |= {"split": "test", "seed": 90000}
        sealed[f"analysis/{final}.json"] = run
    monkeypatch.setattr(build, "load", lambda rel: sealed.get(rel, development.get(rel)))

    page = build.page_toyworld()
    order = [page.index(build.TRACK_A_TITLE + build.SEALED_TITLE), page.index(build.TRACK_A_TITLE + "\n"),
             page.index(build.TRACK_B_TITLE + build.SEALED_TITLE), page.index(build.TRACK_B_TITLE + "\n")]  # fmt: skip
    assert order == sorted(order)
    assert page.count("the sealed test's run is the section above") == 2
    assert page.count("The sealed protocol's final run, on test seeds") == 2
    headline = build.readme_headline()
    assert "On the toy world's sealed test (seed 90000), " in headline and "under way" not in headline
    track_a = development["analysis/toy_track_a.json"]
    n, met = len(track_a["concepts"]), track_a["summary"]["met_by_both"]
    strict = track_a["summary"]["met_by_both_with_intervals"]
    assert f"| the separability-chosen layer | {met} of {n} ({strict}) | {met} of {n} ({strict}) |" in page
    clear = development["analysis/toy_track_b.json"]["summary"]["clear"]
    counts = f"{clear['met_by_both']} of {clear['concepts']} ({clear['met_by_both_with_intervals']})"
    assert f"| clear | {counts} | {counts} |" in page
    first = next(iter(sealed["analysis/toy_track_a_final.json"]["concepts"].values()))
    first["met_by_both"] = not first["met_by_both"]
    moved = met + (1 if first["met_by_both"] else -1)
    assert f"| {met} of {n} ({strict}) | {moved} of {n} ({strict}) |" in build.page_toyworld()
    first["met_by_both"] = not first["met_by_both"]

    going = json.loads(json.dumps(sealed["analysis/toy_track_a_final.json"]))
    going["concepts"] = dict(list(going["concepts"].items())[:3])
    going["complete"] = False
    sealed["analysis/toy_track_a_final.json"] = going
    headline = build.readme_headline()
    n = len(development["analysis/toy_track_a.json"]["config"]["concepts"])
    assert f"; sealed test under way: A 3 of {n} concepts, B {n} of {n} concepts)" in headline
    assert "A: development seed" in headline
    assert not build.complete(None) and not build.complete(going)

    # The main final runs complete, a separate one partial, then missing: the headline reads the finals and says so.
    sealed["analysis/toy_track_a_final.json"] = json.loads(json.dumps(development["analysis/toy_track_a.json"]))
    sealed["analysis/toy_track_a_final.json"]["protocol"] |= {"split": "test", "seed": 90000}
    partial = sealed["analysis/toy_track_b_final_safree.json"]
    partial["concepts"] = dict(list(partial["concepts"].items())[:2])
    partial["complete"] = False
    partial["summary"] = analysis_script("toy_track_b").summarise(
        partial["concepts"], partial["config"]["methods"], partial["protocol"]["seed"]
    )
    headline = build.readme_headline()
    assert "On the toy world's sealed test (seed 90000), " in headline
    assert f"safree-layer (2 of {len(partial['config']['concepts'])} concepts so far)" in headline
    page = build.page_toyworld()
    safree = [line for line in page.splitlines() if line.startswith("| safree-layer |")]
    both = [c["methods"]["safree-layer"] for c in partial["concepts"].values()]
    counts = f"{sum(r['met_by_both'] for r in both)} of 2 ({sum(r['met_by_both_with_intervals'] for r in both)})"
    assert f"| safree-layer | {counts} | {counts} |" in safree
    del sealed["analysis/toy_track_b_final_safree.json"]
    headline = build.readme_headline()
    assert "sealed test (seed 90000)" in headline and "; safree-layer not yet run on it (" in headline
    assert "safree-layer" not in headline.split("CLEAR meets")[1].split("; safree-layer not yet run")[0]
    run = build.merged_track_b(
        {f: sealed.get(f) for f in build.track_b_files("toy_track_b_final")}, "toy_track_b_final"
    )
    assert build.progress("B", run).endswith(" concepts (safree-layer not started)")
    assert build.progress("A", None) == "A not started"

    # Separate final runs without Track B's first final run: the page says they wait for it.
    sealed["analysis/toy_track_b_final_safree.json"] = partial
    del sealed["analysis/toy_track_b_final.json"]
    page = build.page_toyworld()
    note = page.index("The sealed test's safree-layer run exists, but Track B's first final run")
    assert page.rindex("\n## ", 0, note) == page.index("\n" + build.TRACK_B_TITLE + build.SEALED_TITLE)


def test_the_headline_and_claim_name_the_baselines_that_erased_more_than_clear_and_by_which_judge():
    """A baseline whose gap to CLEAR has an interval below zero by a judge is named as ahead of CLEAR by that judge;
    one whose intervals straddle zero is level; CLEAR is ahead where both intervals lie above zero."""
    build = load_build()

    def gaps(detector, rules):
        return {"detector": {"gap_to_clear": {"ci95": detector}}, "geometry": {"gap_to_clear": {"ci95": rules}}}

    summary = {"clear": gaps(None, None), "neg": gaps([0.1, 0.5], [0.2, 0.4]), "mid": gaps([-0.1, 0.1], [-0.2, 0.3]),
               "dm": gaps([-0.2, -0.01], [-0.1, 0.1]), "all": gaps([-0.3, -0.1], [-0.2, -0.05])}  # fmt: skip
    assert build.clear_ahead(summary) == (["neg"], ["mid", "dm", "all"])
    assert build.ahead_of_clear(summary) == {"dm": ["detector"], "all": ["detector", "geometry"]}
    assert build.judges_named(["geometry"]) == "rules" and build.judges_named(list(build.JUDGE_KEYS)) == "both judges"
    claim = build.track_b_claim(summary)
    assert "Ahead of CLEAR (the gap's interval below zero): dm (detector), all (both judges)." in claim


def test_development_beside_counts_each_method_over_the_concepts_both_runs_measured_with_it():
    """The beside-table counts a method only over the concepts where both runs have its row, says nothing when the
    runs share no concept, and tells the tracks apart by their format."""
    build = load_build()

    def row(met, strict):
        return {"met_by_both": met, "met_by_both_with_intervals": strict}

    def track_b(seed, rows):
        concepts = {name: {"methods": methods} for name, methods in rows.items()}
        summary = {m: {} for methods in rows.values() for m in methods}
        return {"format": "clear_sae.toy_track_b", "protocol": {"seed": seed}, "config": {"clips": seed // 100},
                "concepts": concepts, "summary": summary}  # fmt: skip

    development = track_b(1000, {"red": {"clear": row(True, False), "esd": row(True, True)},
                                 "blue": {"clear": row(True, True), "esd": row(False, False)},
                                 "left": {"clear": row(False, False)}})  # fmt: skip
    sealed = track_b(90000, {"red": {"clear": row(True, True), "esd": row(False, False)},
                             "blue": {"clear": row(False, False)},
                             "grow": {"clear": row(True, True)}})  # fmt: skip
    lines = build.development_beside(sealed, development)
    assert lines[0] == "### Beside the development run"
    assert "| method | development seed 1000, 10 clips | sealed test (seed 90000), 900 clips |" in lines
    assert build.passing(30) == "never on 30 clips"
    assert build.passing(40) == "on 40 clips only while none renders the concept"
    assert build.passing(100) == "on 100 clips only while at most 4 render the concept"
    assert "| clear | 2 of 2 (1) | 1 of 2 (1) |" in lines and "| esd | 1 of 1 (1) | 0 of 1 (0) |" in lines
    assert build.development_beside(sealed, None) == []
    assert build.development_beside(track_b(90000, {"grow": {"clear": row(True, True)}}), development) == []
    track_a = {"format": "clear_sae.toy_track_a", "protocol": {"seed": 1000}, "summary": {"clear": {}},
               "config": {"clips": 40}, "concepts": {"red": row(True, False), "blue": row(False, False)}}  # fmt: skip
    sealed_a = track_a | {"protocol": {"seed": 90000}, "concepts": {"red": row(True, True)}}
    assert "| the separability-chosen layer | 1 of 1 (0) | 1 of 1 (1) |" in build.development_beside(sealed_a, track_a)
    empty = track_a | {"concepts": {}, "protocol": {"seed": 90000, "split": "test"}}
    assert build.development_beside(empty, track_a) == []
    assert "has measured no concept yet" in "\n".join(build.track_a_section(empty))


def test_the_reserved_paraphrases_count_the_concepts_erasure_brought_down_by_both_judges():
    """Below the reserved paraphrases' table, how many concepts erasure took to at most 10% and how many it at least
    halved, by both judges; and the same count as a clause of the headline."""
    build = load_build()

    def reading(before, after):
        return {"clips": 100, "clip_rate_before": before, "clip_rate_after": after, "clip_rate_after_ci95": [0, 1]}

    readings = {"red": {"detector": reading(1.0, 0.05), "geometry": reading(1.0, 0.10)},
                "blue": {"detector": reading(1.0, 0.05), "geometry": reading(1.0, 0.4)},
                "left": {"detector": reading(0.8, 0.5), "geometry": reading(0.8, 0.4)},
                "grow": {"detector": reading(0.6, 0.0), "geometry": reading(1.0, 0.0)}}  # fmt: skip
    text = "\n".join(build.reserved_section(readings, "at the chosen layer"))
    assert (
        "Of the 3 concepts these paraphrases render in at least 70% of clips by both judges, erasure brought 1 " in text
    )
    assert "and at least halved the rate by both for 2." in text
    del readings["grow"]
    assert build.reserved_section({}, "anywhere") == []
    concepts = {name: {j: {"reserved": r[j]} for j in build.JUDGE_KEYS} for name, r in readings.items()}
    assert (
        build.reserved_erased(concepts)
        == ", and brings 1 of 3 to 10% or below on reserved paraphrases its latents never saw"
    )
    assert build.reserved_erased({"red": {"detector": {}}}) == ""


def test_track_a_depth_profile_is_a_table_and_a_figure_of_every_layers_rate_per_axis(tmp_path, monkeypatch):
    """Every concept's rate after erasure at every layer by both judges, the chosen layer in bold, the axis means
    (with preservation where the run recorded it), and a figure with a line per concept and per axis and judge; the
    final run's figure is written only once that run exists."""
    build = load_build()

    def concept(axis, layer, detector, rules, drop=None):
        judges = {}
        for judge, rates in (("detector", detector), ("geometry", rules)):
            judges[judge] = {"per_layer": dict(zip(["text_encoder.embed", "text_encoder.blocks.0"], rates))}
            if drop is not None:
                judges[judge]["per_layer_preservation_drop"] = dict(zip(judges[judge]["per_layer"], drop))
        return {"axis": axis, "layer": layer, **judges}

    concepts = {"red": concept("colour", "text_encoder.embed", [0.25, 0.5], [0.0, 0.5]),
                "blue": concept("colour", "text_encoder.blocks.0", [0.75, 0.0], [0.5, 0.25]),
                "left": concept("motion", "text_encoder.embed", [0.0, 1.0], [0.0, 0.75])}  # fmt: skip
    assert build.depth_profile(concepts, "detector") == {"colour": [0.5, 0.25], "motion": [0.0, 1.0]}
    section = "\n".join(build.depth_section({"concepts": concepts}, "toy_depth.svg"))
    assert "(toy_depth.svg)" in section and "| red | **25 / 0** | 50 / 50 |" in section
    assert "| blue | 75 / 50 | **0 / 25** |" in section
    assert "| *colour: mean rate after* | 50.0 / 25.0 | 25.0 / 37.5 |" in section
    assert "preservation" not in section
    with_drop = {name: concept("colour", "text_encoder.embed", [0.0, 0.0], [0.0, 0.0], [0.0, 0.5]) for name in "ab"}
    section = "\n".join(build.depth_section({"concepts": with_drop}, "toy_depth.svg"))
    assert "| *colour: mean preservation drop* | 0.0 / 0.0 | 50.0 / 50.0 |" in section
    with_drop["b"] = concept("colour", "text_encoder.embed", [0.0, 0.0], [0.0, 0.0])
    assert "preservation" not in "\n".join(build.depth_section({"concepts": with_drop}, "toy_depth.svg"))
    svg = build.depth_svg({"concepts": concepts})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 * (3 + 2)
    assert ElementTree.fromstring(svg).tag.endswith("svg")
    one_layer = {"axis": "colour", "layer": "embed", **{j: {"per_layer": {"embed": 0.5}} for j in build.JUDGE_KEYS}}
    assert ElementTree.fromstring(build.depth_svg({"concepts": {"red": one_layer}})).tag.endswith("svg")
    assert build.depth_svg(None) is None and build.depth_svg({"concepts": {}}) is None

    final, load = "analysis/toy_track_a_final.json", build.load
    monkeypatch.setattr(build, "load", lambda rel: None if rel == final else load(rel))
    written = {path.name for path in build.build(tmp_path)}
    assert build.DEPTH_FIGURES["development"] in written and build.DEPTH_FIGURES["test"] not in written
    assert build.stale(tmp_path) == []
    monkeypatch.setattr(build, "load", lambda rel: load("analysis/toy_track_a.json" if rel == final else rel))
    assert build.DEPTH_FIGURES["test"] in build.stale(tmp_path)
