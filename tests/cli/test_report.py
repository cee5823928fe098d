"""`clear-sae inspect`: the report's data, its self-contained HTML, the CLI, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import CHROMIUM, run_chromium

from clear_sae.cli import main
from clear_sae.errors import ClearSaeError


@pytest.fixture(scope="module")
def report_data(minilm, minilm_dictionaries, minilm_library, minilm_cache):
    from clear_sae.cli.report import InspectConfig, collect_report
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary

    return collect_report(
        Dictionaries(minilm_dictionaries),
        ConceptLibrary.load(minilm_library),
        cache=minilm_cache,
        backbone=minilm,
        cfg=InspectConfig(top_latents=4, cache_tokens=5000),
        progress=False,
    )


def test_report_data_matches_the_library_and_dictionaries(report_data, minilm_dictionaries, minilm_library):
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary

    library, dictionaries = ConceptLibrary.load(minilm_library), Dictionaries(minilm_dictionaries)
    assert [r["hook_point"] for r in report_data["health"]] == dictionaries.hook_points
    for row in report_data["health"]:
        layer = dictionaries.layers[row["hook_point"]]
        assert row["explained_variance"] == layer["explained_variance"] and row["l0"] == layer["l0"]
    assert set(report_data["concepts"]) == {"french_horn", "umbrella"}
    for name, concept in report_data["concepts"].items():
        entry = library.get(name)
        assert concept["hook_point"] == entry.hook_point and concept["scores"] == entry.layer_scores
        chosen = concept["layers"][entry.hook_point]
        assert chosen["latents"] == entry.latents  # the erased latents, exactly
        assert len(chosen["shown"]) == min(4, len(entry.latents))
        shares = [r["energy_share"] for r in chosen["shown"]]
        assert shares == sorted(shares, reverse=True) and shares[0] > 0
        for hook, layer in concept["layers"].items():
            assert set(r["id"] for r in layer["shown"]) <= set(layer["latents"])
            for r in layer["shown"]:
                # Histogram counts are the prompts on which the latent fired.
                assert sum(r["histogram"]["target"]) == round(r["target_rate"] * entry.n_target)
                assert sum(r["histogram"]["nontarget"]) == round(r["nontarget_rate"] * entry.n_nontarget)
                for k, source, peak in r["top"]:
                    prompt = layer["prompts"][k]
                    acts = prompt["acts"][str(r["id"])]
                    # Two code paths agree: the peak from the batched encoding equals the per-token maximum.
                    assert len(acts) == len(prompt["tokens"]) and max(acts) == pytest.approx(peak, abs=0.02)


def test_corpus_examples_and_overlap(report_data):
    corpus = report_data["corpus"]
    assert corpus and all(layer["tokens_scanned"] == 5000 for layer in corpus.values())
    for hook, layer in corpus.items():
        for latent, top in layer["top"].items():
            peaks = [value for _, value in top]
            assert peaks == sorted(peaks, reverse=True)
            for k, value in top:
                assert max(layer["prompts"][k]["acts"][latent]) == pytest.approx(value, abs=0.02)
    for hook, o in report_data["overlap"].items():
        n = len(o["concepts"])
        assert [o["shared"][i][i] for i in range(n)] == o["sizes"]
        assert all(
            o["shared"][i][j] == o["shared"][j][i] <= min(o["sizes"][i], o["sizes"][j])
            for i in range(n)
            for j in range(n)
        )


def test_html_is_self_contained_and_survives_hostile_text(report_data):
    from clear_sae.cli.report import render_html

    data = json.loads(json.dumps(report_data))
    layer = next(iter(data["concepts"]["umbrella"]["layers"].values()))
    layer["prompts"].append(
        {"tokens": ["</script><script>alert(1)</script>", "<!--<script>", "<!--TITLE-->"], "acts": {}}
    )
    html = render_html(data)
    assert not re.search(r"<script[^>]+src=", html) and "<link" not in html  # nothing to fetch
    payload = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(payload) == data  # the hostile token stayed inside the JSON


def test_inspect_cli_writes_json_and_refuses_bad_input(
    minilm_dictionaries, minilm_library, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "report.json"
    base = ["inspect", "--library", str(minilm_library), "--dictionaries", str(minilm_dictionaries)]
    assert main(base + ["--out", str(out), "--format", "json", "--top-latents", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["format"] == "clear_sae.inspect_report" and set(data["concepts"]) == {"french_horn", "umbrella"}
    assert main(base + ["--out", str(out), "--format", "json", "--top-latents", "2"]) == 0  # its own report: fine

    capsys.readouterr()
    kept = tmp_path / "notes.html"
    kept.write_text("keep me")
    not_eval = tmp_path / "other.json"
    not_eval.write_text('{"format": "something else"}')
    cut_cache = tmp_path / "cut.h5"
    cut_cache.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))  # an HDF5 signature and nothing after it

    def slow_part(*_: object) -> None:
        raise AssertionError("a bad --cache or --evaluation must fail before the concepts' latents are read")

    import clear_sae.cli.report

    monkeypatch.setattr(clear_sae.cli.report, "stored_concept_detail", slow_part)
    bad_runs = [
        (base + ["--out", str(tmp_path / "a.html"), "--cache", str(cut_cache)], "not a readable HDF5 file"),
        (
            base + ["--out", str(tmp_path / "a.html"), "--cache", str(tmp_path)],
            "is a directory but not a sharded cache",
        ),
        (base + ["--out", str(kept)], "not an earlier inspection report"),
        (base + ["--out", str(tmp_path / "a.html"), "--cache", str(tmp_path / "missing.h5")], "--cache"),
        (base + ["--out", str(tmp_path / "a.html"), "--evaluation", str(not_eval)], "not an evaluation report"),
        (["inspect", "--library", str(tmp_path / "none.json"), "--out", str(tmp_path / "a.html")], "does not exist"),
        (base[:3] + ["--dictionaries", str(tmp_path), "--out", str(tmp_path / "a.html")], "holds no"),
    ]
    for argv, message in bad_runs:
        assert main(argv) == 3
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error")]
        assert len(errors) == 1 and message in errors[0], (message, errors)
    assert kept.read_text() == "keep me" and not (tmp_path / "a.html").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_report_opens_in_headless_chromium(
    tiny_toy_generator, toy_library, minilm_dictionaries, minilm_cache, tmp_path
):
    """The page as a user opens it: every plot drawn and non-empty, no script or console error, and a screenshot
    kept in test-artifacts/ (or $CLEAR_SAE_ARTIFACTS)."""
    evaluation = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--library",
                str(toy_library),
                "--generator",
                str(tiny_toy_generator),
                "--out",
                str(evaluation),
                "--clips",
                "2",
                "--heldout-clips",
                "1",
                "--nontarget-clips",
                "2",
                "--steps",
                "1",
                "--concept",
                "red",
                "--sweep",
            ]
        )
        == 0
    )
    report = tmp_path / "report.html"
    assert (
        main(
            [
                "inspect",
                "--library",
                str(toy_library),
                "--dictionaries",
                str(minilm_dictionaries),
                "--cache",
                str(minilm_cache),
                "--cache-tokens",
                "3000",
                "--evaluation",
                str(evaluation),
                "--out",
                str(report),
            ]
        )
        == 0
    )
    dom = run_chromium("--dump-dom", report.as_uri()).stdout
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    assert re.search(r'<div id="errors">\s*</div>', dom), re.search(r'<div id="errors">(.*?)</div>', dom, re.S)
    plots = re.findall(r'<div id="([^"]+)" class="plot[^"]*"[^>]*data-traces="(\d+)"', dom)
    ids = {p for p, _ in plots}
    assert {"plot-scores-all", "plot-curve", "plot-overlap", "plot-health", "plot-rates"} <= ids
    assert any(p.startswith("hist-") for p in ids)  # the latent histograms of the first concept
    assert all(int(traces) > 0 for _, traces in plots), plots
    assert dom.count("main-svg") >= len(plots)  # plotly drew an SVG for each
    assert 'class="strip"' in dom and "data:image/png;base64," in dom
    artifacts = Path(os.environ.get("CLEAR_SAE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "inspect_report.png"
    run_chromium(f"--screenshot={shot}", "--window-size=1300,3000", report.as_uri())
    assert shot.stat().st_size > 50_000


def test_heatmap_colours_each_concept_by_its_own_best_layer_and_keeps_raw_values():
    from clear_sae.cli.report import relative_scores

    concepts = {
        "text": {"scores": {"a": {"energy": 0.0001, "n_specific": 3}, "b": {"energy": 0.03}}},
        "toy": {"scores": {"a": {"energy": 0.14}, "b": {"energy": 0.07}}},
        "none": {"scores": {"a": {"energy": 0.0}}},
    }
    relative = relative_scores(concepts, ["a", "b"])
    assert set(relative) == {"energy"}  # counts (n_*) are not scores
    assert relative["energy"]["text"] == [pytest.approx(0.0001 / 0.03, abs=1e-4), 1.0]
    assert relative["energy"]["toy"] == [1.0, 0.5]
    assert relative["energy"]["none"] == [0.0, None]  # no score at a layer stays empty
    assert concepts["text"]["scores"]["a"]["energy"] == 0.0001  # the raw values are left as they are


def test_an_html_report_is_recognised_as_one_and_a_page_that_only_names_the_format_is_not(report_data, tmp_path):
    """A rerun of `inspect` may replace its own page; a page or note that merely mentions the format string (a user's
    notes on clear_sae, say) is not overwritten without --force."""
    from clear_sae.cli.report import FORMAT, write_report
    from clear_sae.io import check_overwrite, is_earlier_output

    page = write_report(report_data, tmp_path / "report.html")
    assert is_earlier_output(page, FORMAT)
    check_overwrite(page, FORMAT, force=False)
    notes = tmp_path / "notes.html"
    notes.write_text(f"<!DOCTYPE html><html><head><title>my notes</title></head><body>{FORMAT}</body></html>")
    with pytest.raises(ClearSaeError, match="not an earlier inspection report"):
        check_overwrite(notes, FORMAT, force=False, what="an earlier inspection report")


def test_html_states_its_colour_scale_and_holds_no_debug_text(report_data):
    from clear_sae.cli.report import render_html

    assert set(report_data["relative_scores"]) >= {"energy"}
    for name, row in report_data["relative_scores"]["energy"].items():
        assert max(v for v in row if v is not None) == 1.0, name
    html = render_html(report_data)
    assert 'const SCALE = "per-concept"' in html and "colour scaled per concept (row / its max)" in html
    assert "plots drawn" not in html and 'id="status"' not in html
    assert 'displayModeBar: "hover"' in html and "automargin: true" in html and "standoff" in html


HOSTILE = '<img id="pwned" src=x onerror="document.title=1">'


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_hostile_strings_in_every_shown_field_stay_text(report_data, tmp_path):
    """Every field the page shows, forged: hook names, counts, latent ids, tokens, an evaluation's method, axis,
    clip count, strip rows and a strip that is not a PNG. The page draws, and none of it becomes an element."""
    from clear_sae.cli.report import render_html

    data = json.loads(json.dumps(report_data))
    for row in data["health"]:
        row.update(hook_point=HOSTILE, training_tokens=HOSTILE, d_sae=HOSTILE)
    concept = data["concepts"]["umbrella"]
    layer = concept["layers"][concept["hook_point"]]
    layer["shown"][0]["id"] = HOSTILE
    layer["prompts"][0]["tokens"] = [HOSTILE]
    method = {"method": HOSTILE, "layer": concept["hook_point"], "selected": True, "clips": HOSTILE}
    data["evaluation"] = {
        "source": HOSTILE,
        "config": {},
        "concepts": {
            "umbrella": {
                "axis": HOSTILE,
                "layer": concept["hook_point"],
                "methods": [method | {"rate_target_before": 0.5, "rate_target_after": 0.1}],
                "qualification": {},
                "strip": 'javascript:alert(1)" onerror="document.title=1',
                "strip_rows": [HOSTILE],
            }
        },
    }
    page = tmp_path / "hostile.html"
    page.write_text(render_html(data), encoding="utf-8")
    dom = run_chromium("--dump-dom", page.as_uri() + "#concept=umbrella").stdout
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    shown = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # the page, less the data and code it carries
    # A text node escapes "<" (an attribute value keeps it, but escapes the quote): only an element made of the
    # hostile string would serialize as `<img id="pwned"`, and only its handler running would retitle the page.
    assert '<img id="pwned"' not in shown and "<title>1</title>" not in shown
    assert shown.count('&lt;img id="pwned"') >= 5  # it is shown, as text
    assert "javascript:" not in shown and 'class="strip"' not in shown  # a strip that is not a PNG is not shown


@pytest.mark.parametrize(
    "strip, message",
    [
        ("../outside.png", "outside its own folder"),
        ("/etc/passwd", "outside its own folder"),
        ("evaluation_strips/notes.png", "not a PNG"),
    ],
)
def test_an_evaluation_strip_outside_its_folder_or_not_a_png_is_refused(tmp_path, strip, message):
    from clear_sae.cli.report import evaluation_summary
    from clear_sae.errors import ClearSaeError

    folder = tmp_path / "eval"
    (folder / "evaluation_strips").mkdir(parents=True)
    (folder / "evaluation_strips" / "notes.png").write_text("not an image")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"secret")
    report = folder / "evaluation.json"
    concept = {"layer": "text_encoder.blocks.1", "rate_target_before": {"mean": 0.5, "clips": 2}, "strip": strip}
    report.write_text(json.dumps({"format": "clear_sae.toy_evaluation", "concepts": {"red": concept}}))
    with pytest.raises(ClearSaeError, match=message):
        evaluation_summary(report)
    concept["strip"] = "evaluation_strips/red.png"
    (folder / "evaluation_strips" / "red.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels")
    report.write_text(json.dumps({"format": "clear_sae.toy_evaluation", "concepts": {"red": concept}}))
    assert evaluation_summary(report)["concepts"]["red"]["strip"].startswith("data:image/png;base64,")
