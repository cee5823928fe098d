"""The demo on a slice of the corpus, and the dictionaries and library shipped in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sae_lens import SAE

from clear_sae.calibration.ladder import CalibrationConfig, CalibrationStep, chosen_step
from clear_sae.cli import main
from clear_sae.cli.demo import DemoConfig, run_demo, shipped_concepts
from clear_sae.toyworld.concepts import toy_concepts

SHIPPED = Path(__file__).resolve().parents[2] / "dictionaries" / "minilm"


SLICE = dict(tokens=8192, expansion=2, k=16, corpus_size=600, heldout_prompts=6, toy_clips=2, judge_clips=2)
"""A small demo: a slice of the corpus, small dictionaries, two clips per toy showcase and per judged rung."""
FEW = ("dog", "umbrella", "red", "blue", "cross", "rise")
"""Text and toy concepts, the toy showcase among them, for the demo run of the default tier."""


def check_demo_run(summary: dict, folder: Path, out: str) -> dict:
    """Assert what every demo run must show: each stage announced, the library it wrote, chosen layers that are
    the argmax (text) or the calibration's kept rung (toy, judged on 2 generated clips), erasure that clears
    what fired, the toy showcase's strips and GIFs, and the report with the clips in it. Returns the library."""
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "demo finished"):
        assert stage in out
    import torch

    assert f"on {torch.get_num_threads()} CPU threads" in out  # the header says what the run uses
    text = [n for n in summary["chosen_layers"] if n not in toy_concepts()]
    toys = [n for n in summary["chosen_layers"] if n in toy_concepts()]
    # Stage 3 announces what it builds: every text concept and every toy concept asked for.
    assert f"3/6 learning {len(text) + len(toys)} concepts ({len(text)} text, {len(toys)} toy)" in out
    library = json.loads((folder / "dictionaries" / "concepts.json").read_text())
    assert set(summary["chosen_layers"]) == set(library["concepts"])
    for name, entry in library["concepts"].items():
        scores = {h: s["energy"] for h, s in entry["layer_scores"].items() if s["n_specific"] > 0}
        calibration = entry["calibration"]
        if calibration is None:
            assert entry["hook_point"] == max(scores, key=scores.get)
            continue
        # Calibrated (the toy concepts), here judged by clips of the tiny generator: every better-scoring layer
        # at the kept tolerance and strength was tried and failed the judge, or the kept rung is the best the
        # ladder found.
        cal = CalibrationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in calibration["config"].items()})
        assert cal.judge == "generation" and calibration["judge"]["clips"] == 2
        steps = [CalibrationStep(**s) for s in calibration["steps"]]
        kept = [
            s
            for s in steps
            if (s.hook_point, s.max_nontarget_rate, s.strength)
            == (entry["hook_point"], entry["selection"]["max_nontarget_rate"], entry["strength"])
        ]
        assert kept and kept[-1] is chosen_step(steps, cal)
        if cal.passes(kept[-1]):
            better = [h for h, v in scores.items() if v > scores[entry["hook_point"]]]
            failed = {
                s.hook_point
                for s in steps
                if (s.max_nontarget_rate, s.strength) == (kept[-1].max_nontarget_rate, kept[-1].strength)
                and not cal.passes(s)
            }
            assert set(better) <= failed, name
    for name, erasure in summary["erasure"].items():
        assert erasure["target_cleared"] == erasure["target_fired"]
    toy = set(library["concepts"]) & set(toy_concepts())
    for name, shown in summary["toy_world"].items():
        assert name in toy and shown["clips"] == 2
        assert Path(shown["strip"]).stat().st_size > 0 and Path(shown["gif"]).read_bytes()[:3] == b"GIF"
    evaluation = json.loads((folder / "toy" / "evaluation.json").read_text())
    assert set(evaluation["concepts"]) == set(summary["toy_world"])
    html = (folder / "report.html").read_text()
    assert "clear_sae.inspect_report" in html and len(html) > 1_000_000  # plotly.js inlined: opens offline
    assert "inspection report ->" in out and "data:image/png;base64," in html  # the toy clips are in the page
    return library


def test_demo_runs_every_stage_on_a_few_concepts(tmp_path, capsys, tiny_toy_generator):
    folder = tmp_path / "demo"
    cfg = DemoConfig(out=folder, toy_captions=300, generator=tiny_toy_generator, concepts=FEW, **SLICE)
    summary = run_demo(cfg)
    library = check_demo_run(summary, folder, capsys.readouterr().out)
    assert set(library["concepts"]) <= set(FEW) and {"dog", "umbrella"} <= set(library["concepts"])
    assert set(summary["toy_world"]) == {"blue", "cross", "red"} & set(library["concepts"])
    # The report reads the detail that learning stored beside the dictionaries: one file per concept.
    assert len(list((folder / "dictionaries" / "details").glob("*.json"))) == len(library["concepts"])


@pytest.mark.slow  # every concept the demo learns, on a slice of the corpus: most of the demo's work
def test_demo_runs_end_to_end_on_a_slice(tmp_path, capsys, tiny_toy_generator):
    folder = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=folder, toy_captions=300, generator=tiny_toy_generator, **SLICE))
    library = check_demo_run(summary, folder, capsys.readouterr().out)
    toy = set(library["concepts"]) & set(toy_concepts())
    assert len(toy) >= 8  # most toy concepts have specific latents even on these small dictionaries


@pytest.mark.parametrize("concepts", [("guitar",), ("dog", "magenta"), ()])
def test_demo_refuses_unknown_concepts_before_writing(tmp_path, concepts):
    from clear_sae.errors import ClearSaeError

    with pytest.raises(ClearSaeError, match="choose from the shipped text concepts"):
        run_demo(DemoConfig(out=tmp_path / "demo", concepts=concepts))
    assert not (tmp_path / "demo").exists()


@pytest.mark.artifacts
def test_shipped_dictionaries_load_and_are_small():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["backbone_id"] == "minilm" and len(manifest["hook_points"]) == 7
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 40 * 2**20
    for hook in manifest["hook_points"]:
        sae = SAE.load_from_disk(SHIPPED / manifest["layers"][hook]["folder"])
        assert sae.cfg.d_in == 384 and sae.W_dec.dtype == torch.float16
        assert manifest["layers"][hook]["explained_variance"] > 0.8
    library = json.loads((SHIPPED / "concepts.json").read_text())
    assert len(library["concepts"]) >= 8
    assert set(library["concepts"]) <= set(shipped_concepts()) | set(toy_concepts())


@pytest.mark.artifacts
def test_erase_works_with_the_shipped_library_by_default(tmp_path, capsys):
    from clear_sae.corpus import concept_prompts

    target, nontarget = concept_prompts("van_gogh", n=8, seed=31337)
    (tmp_path / "p.txt").write_text("\n".join(target + nontarget), encoding="utf-8")
    code = main(
        [
            "erase",
            "--concept",
            "van_gogh",
            "--concept",
            "french_horn",
            "--prompts",
            str(tmp_path / "p.txt"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["prompts"]
    assert sum(r["concepts"]["van_gogh"]["fired"] for r in rows[:8]) >= 6
    for r in rows:
        assert all(c["activation_after"] == 0.0 for c in r["concepts"].values())
        if not r["fired"]:
            assert r["cosine_final"] == 1.0


@pytest.mark.slow
def test_full_demo_under_eight_minutes(tmp_path):
    import time

    start = time.perf_counter()
    run_demo(DemoConfig(out=tmp_path / "demo"))
    assert time.perf_counter() - start < 480


def test_demo_claims_only_its_own_folder(tmp_path):
    from clear_sae.cli.demo import MARKER, claim_folder
    from clear_sae.errors import ClearSaeError

    fresh = tmp_path / "fresh"
    claim_folder(fresh)  # a new folder is made and marked
    assert (fresh / MARKER).is_file()
    (fresh / "cache.h5").write_bytes(b"left by an interrupted run")
    claim_folder(fresh)  # the marker is written first, so a rerun after an interruption is accepted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ClearSaeError, match="no earlier demo wrote"):
        claim_folder(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # not even marked
    claim_folder(foreign, force=True)
    assert (foreign / MARKER).is_file() and (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ClearSaeError, match="is a file"):
        claim_folder(foreign / "notes.txt")


def test_stage_headers_announce_what_each_stage_builds():
    from clear_sae.cli.demo import TOY_SHOWCASE, stage_titles

    text, toys = shipped_concepts(), toy_concepts()
    cfg = DemoConfig(toy_clips=8, judge_clips=0)
    titles = stage_titles(cfg, 7, 1234, text, toys)
    assert len(titles) == 6
    assert titles[0] == "caching MiniLM's 7 hook points on 1234 captions"
    # Stage 3 learns the shipped text concepts and the toy concepts, and says both counts.
    assert titles[2].startswith(f"learning {len(text) + len(toys)} concepts ({len(text)} text, {len(toys)} toy)")
    assert f"{len(text)} text concepts on {cfg.heldout_prompts} fresh" in titles[3]  # only text ones are erased
    assert all(name in titles[4] for name in TOY_SHOWCASE) and "8 target clips" in titles[4]
    assert f"latents of {len(text) + len(toys)} concepts" in titles[5]
    assert "judged on 4 generated clips" in stage_titles(DemoConfig(judge_clips=4), 7, 1, text, toys)[2]
    assert stage_titles(DemoConfig(toy_clips=0), 7, 1, text, toys)[4] == "toy video world: skipped (--toy-clips 0)"
    assert stage_titles(cfg, 7, 1, text, [])[4] == "toy video world: skipped (no toy concept learned)"
