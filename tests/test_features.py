"""Latent statistics over the whole cache (`clear_sae.features`), checked against direct dense computations."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import CHROMIUM, run_chromium

from clear_sae.cache import ActivationCache
from clear_sae.cli import main
from clear_sae.dictionary import Dictionaries
from clear_sae.errors import ClearSaeError
from clear_sae.export import ACTIVATION_KEYS, BATCH_KEYS, FEATURE_KEYS
from clear_sae.features import (
    BestPerLatent,
    FeatureConfig,
    compute_features,
    encode_rows,
    feature_paths,
    input_embeddings,
    load_layer_features,
    sample_key,
)
from clear_sae.latent_pages import CHUNK, layer_chunks, words_of_token, write_latent_pages

HOOK = "text_encoder.blocks.3"


@pytest.fixture
def dictionaries(tmp_path, minilm_dictionaries):
    """A copy of the session's dictionaries, so the statistics written here stay here."""
    folder = tmp_path / "dicts"
    shutil.copytree(minilm_dictionaries, folder)
    return Dictionaries(folder)


def dense_codes(cache: ActivationCache, sae, chunk_rows: int) -> np.ndarray:
    """Every row's codes, encoded a chunk at a time as the statistics encode them."""
    parts = []
    for start in range(0, cache.n_rows(HOOK), chunk_rows):
        block = cache.rows(HOOK, start, start + chunk_rows)
        dense = np.zeros((len(block), int(sae.W_enc.shape[1])), np.float32)
        row, latent, value = encode_rows(sae, block)
        dense[row, latent] = value
        parts.append(dense)
    return np.concatenate(parts)


def test_best_per_latent_keeps_the_highest_scores_and_gives_ties_to_the_earlier_row():
    rng = np.random.default_rng(0)
    n_latents, n = 7, 4
    latents = rng.integers(0, n_latents, 500)
    scores = rng.integers(0, 20, 500).astype(np.float64)  # many ties
    rows = np.arange(500)
    keeper = BestPerLatent(n_latents, n, merge_at=16)  # many merges
    for start in range(0, 500, 37):
        part = slice(start, start + 37)
        keeper.offer(latents[part], scores[part], rows[part], scores[part].astype(np.float32))
    kept_rows, kept_values = keeper.result()
    for j in range(n_latents):
        mine = np.nonzero(latents == j)[0]
        expected = sorted(mine, key=lambda r: (-scores[r], r))[:n]
        assert kept_rows[j, : len(expected)].tolist() == expected
        assert kept_values[j, : len(expected)].tolist() == scores[expected].tolist()
        assert (kept_rows[j, len(expected) :] == -1).all()


def test_sample_key_is_fixed_by_row_and_latent_and_spread_over_the_unit_interval():
    rows, latents = np.arange(10_000), np.arange(10_000) % 13
    keys = sample_key(rows, latents)
    assert (keys == sample_key(rows, latents)).all()
    assert ((keys >= 0) & (keys < 1)).all()
    assert keys[rows % 2 == 0].mean() == pytest.approx(0.5, abs=0.02)
    assert (sample_key(rows, latents + 1) != keys).mean() > 0.99


@pytest.fixture(scope="module")
def sharded_cache(tmp_path_factory, minilm, small_corpus):
    """A cache of 300 prompts at HOOK in two shards, as two torchrun ranks write it."""
    from clear_sae.cache import CacheConfig, shard_name, shard_prompts, write_cache, write_shard_index

    folder = tmp_path_factory.mktemp("shards")
    prompts = small_corpus[:300]
    for rank in range(2):
        _, mine = shard_prompts(prompts, rank, 2)
        write_cache(minilm, mine, folder / shard_name(rank), [HOOK], CacheConfig(batch_size=64), progress=False)
    write_shard_index(folder, prompts, 2)
    return folder


@pytest.mark.parametrize(
    "reuse_codes_mb, sharded", [(1, False), (1024, False), (1024, True)], ids=["encoded-twice", "codes-kept", "shards"]
)
def test_statistics_equal_a_dense_computation_over_the_whole_cache(
    request, minilm, minilm_cache, dictionaries, reuse_codes_mb, sharded
):
    cfg = FeatureConfig(
        top=5, samples=6, bins=8, attribution=4, chunk_rows=777, merge_at=2000, reuse_codes_mb=reuse_codes_mb
    )
    with ActivationCache(request.getfixturevalue("sharded_cache") if sharded else minilm_cache) as cache:
        done = compute_features(cache, dictionaries, [HOOK], minilm, cfg, progress=False)
        sae = dictionaries.sae(HOOK)
        codes = dense_codes(cache, sae, cfg.chunk_rows)
        owner, position = cache.prompt_index(HOOK), cache.positions(HOOK)
        prompts = cache.prompts()
    assert done == {HOOK: "computed"}
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    a = stats.arrays
    fires = codes > 0
    assert a["fires"].tolist() == fires.sum(0).tolist()
    assert np.array_equal(a["max"], codes.max(0))
    assert stats.record["rows"] == len(codes)
    # the histogram: every firing counted once, in the bin of value / max
    assert a["hist"].sum(1).tolist() == a["fires"].tolist()
    for j in np.nonzero(a["fires"])[0][:50]:
        values = codes[fires[:, j], j]
        bins = np.minimum((values / a["max"][j] * cfg.bins).astype(np.int64), cfg.bins - 1)
        assert a["hist"][j].tolist() == np.bincount(bins, minlength=cfg.bins).tolist()
    checked = 0
    for j in range(codes.shape[1]):
        rows = np.nonzero(fires[:, j])[0]
        top = sorted(rows, key=lambda r: (-codes[r, j], r))[: cfg.top]
        assert a["top_rows"][j, : len(top)].tolist() == top
        keys = sample_key(rows, np.full(len(rows), j))
        sample = sorted(rows, key=lambda r: (keys[np.searchsorted(rows, r)], r))[: cfg.samples]
        assert sorted(a["sample_rows"][j, : len(sample)].tolist()) == sorted(sample)
        assert a["top_prompt"][j, : len(top)].tolist() == owner[top].tolist()
        if len(rows) and checked < 40:  # each shown context holds the latent's activation on every token of it
            checked += 1
            page = stats.latent(j)
            for example in page["top"] + page["samples"]:
                in_prompt = np.nonzero(owner == example["prompt"])[0]
                expected = np.zeros(len(example["tokens"]), np.float32)
                expected[position[in_prompt]] = codes[in_prompt, j]
                assert example["acts"] == expected.tolist()
                assert len(example["tokens"]) == len(in_prompt)
                assert example["tokens"] == minilm.token_strings(prompts[example["prompt"]], HOOK)
                assert example["acts"][example["position"]] == example["value"]
    assert checked == 40


def test_attribution_names_the_tokens_whose_embeddings_align_most(minilm, minilm_cache, dictionaries):
    cfg = FeatureConfig(top=2, samples=2, bins=4, attribution=5)
    with ActivationCache(minilm_cache) as cache:
        compute_features(cache, dictionaries, [HOOK], minilm, cfg, progress=False)
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    embeddings = input_embeddings(minilm, HOOK).numpy()
    sae = dictionaries.sae(HOOK)
    for name, weight in (("enc", sae.W_enc.detach().numpy()), ("dec", sae.W_dec.detach().numpy().T)):
        for j in (0, 17, 100):
            scores = embeddings @ weight[:, j]
            for sign, best in (("pos", scores.max()), ("neg", scores.min())):
                ids, values = stats.arrays[f"{name}_{sign}_ids"][j], stats.arrays[f"{name}_{sign}_values"][j]
                np.testing.assert_allclose(values, scores[ids], rtol=1e-4, atol=1e-5)
                others = np.delete(scores, ids)
                if sign == "pos":
                    assert values[0] == pytest.approx(best, abs=1e-5) and values.min() >= others.max() - 1e-5
                else:
                    assert values[0] == pytest.approx(best, abs=1e-5) and values.max() <= others.min() + 1e-5
    page = stats.latent(17)
    counts = page["dec_hist"]["counts"]
    assert len(counts) == cfg.bins and sum(counts) == len(embeddings) and counts[0] >= 1 and counts[-1] >= 1
    assert [t for t, _ in page["enc_pos"]] == minilm.vocabulary_tokens(stats.arrays["enc_pos_ids"][17].tolist(), HOOK)


def test_stored_statistics_are_reused_until_weights_settings_or_files_change(minilm, minilm_cache, dictionaries):
    cfg = FeatureConfig(top=2, samples=2, bins=4, attribution=2)
    with ActivationCache(minilm_cache) as cache:
        assert compute_features(cache, dictionaries, [HOOK], minilm, cfg, progress=False) == {HOOK: "computed"}
        assert compute_features(cache, dictionaries, [HOOK], minilm, cfg, progress=False) == {HOOK: "current"}
        wider = FeatureConfig(top=3, samples=2, bins=4, attribution=2)
        assert compute_features(cache, dictionaries, [HOOK], minilm, wider, progress=False) == {HOOK: "computed"}
        tensors, record = feature_paths(dictionaries, HOOK)
        record.write_text(record.read_text()[:50])  # cut short
        assert load_layer_features(dictionaries, HOOK) is None
        assert compute_features(cache, dictionaries, [HOOK], minilm, wider, progress=False) == {HOOK: "computed"}
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "key": "another run"}))  # the pair no longer match
        assert load_layer_features(dictionaries, HOOK) is None
        assert compute_features(cache, dictionaries, [HOOK], minilm, wider, progress=False) == {HOOK: "computed"}
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    with pytest.raises(ClearSaeError, match=f"latent {stats.d_sae} does not exist at {HOOK}"):
        stats.latent(stats.d_sae)


def test_features_command_stores_statistics_and_refuses_bad_input(capsys, minilm_cache, dictionaries, tmp_path):
    def run(*extra: str) -> tuple[int, str]:
        code = main(["features", "--dictionaries", str(dictionaries.root), "--top", "2", "--samples", "2", *extra])
        return code, capsys.readouterr().err

    code, err = run("--cache", str(minilm_cache), "--layers", "0,-1")
    assert code == 0, err
    for hook in ("text_encoder.embed", "text_encoder.blocks.5"):
        assert load_layer_features(dictionaries, hook) is not None
    assert load_layer_features(dictionaries, HOOK) is None
    before = {path: path.read_bytes() for path in (dictionaries.root / "features").iterdir()}
    for extra, expected in (
        (["--cache", str(minilm_cache), "--layers", "blocks.9"], "unknown layer 'blocks.9'"),
        (["--cache", str(tmp_path / "none.h5")], "none.h5 does not exist"),
    ):
        code, err = run(*extra)
        errors = [line for line in err.splitlines() if line.startswith("clear-sae: error:")]
        assert code == 3 and len(errors) == 1 and expected in errors[0], err
    assert before == {path: path.read_bytes() for path in (dictionaries.root / "features").iterdir()}


def test_export_writes_neuronpedia_batches_of_every_latent(capsys, minilm, minilm_cache, dictionaries, tmp_path):
    cfg = FeatureConfig(top=3, samples=12, bins=8, attribution=4)
    with ActivationCache(minilm_cache) as cache:
        compute_features(cache, dictionaries, [HOOK], minilm, cfg, progress=False)
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    out = tmp_path / "export"
    base = ["export", "--dictionaries", str(dictionaries.root), "--out", str(out), "--per-batch", "50"]
    code = main([*base, "--layers", HOOK, "--sae-set", "demo"])
    assert code == 0, capsys.readouterr().err
    folder = out / f"{dictionaries.backbone_id}_demo_{HOOK}_{stats.d_sae}"
    batches = sorted(folder.glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    assert len(batches) == -(-stats.d_sae // 50)
    indices = []
    for path in batches:
        batch = json.loads(path.read_text())
        assert tuple(batch) == BATCH_KEYS and batch["layer"] == dictionaries.hook_points.index(HOOK)
        for feature in batch["features"]:
            assert tuple(feature) == FEATURE_KEYS
            j = feature["feature_index"]
            indices.append(j)
            page = stats.latent(j)
            assert feature["frac_nonzero"] == pytest.approx(page["density"], abs=1e-8)
            assert feature["freq_hist_data_bar_heights"] == page["hist"]["counts"]
            assert len(feature["freq_hist_data_bar_values"]) == cfg.bins
            assert feature["pos_str"] == [t for t, _ in page["dec_pos"]]
            assert sum(feature["logits_hist_data_bar_heights"]) == len(input_embeddings(minilm, HOOK))
            n_top = len(page["top"])
            assert len(feature["activations"]) >= n_top
            for k, example in enumerate(feature["activations"]):
                assert tuple(example) == ACTIVATION_KEYS
                assert len(example["tokens"]) == len(example["values"])
                assert 0 <= example["qualifying_token_index"] < len(example["tokens"])
                chosen = example["values"][example["qualifying_token_index"]]
                if k < n_top:  # the top examples first, at their values
                    assert example["bin_min"] == -1 and chosen == pytest.approx(page["top"][k]["value"], abs=1e-4)
                else:  # then the sampled ones, each inside its interval
                    assert example["bin_min"] - 1e-4 <= chosen <= example["bin_max"] + 1e-4
                    assert 0 <= example["bin_contains"] <= page["density"] + 1e-5  # rounded to 5 places
    assert indices == list(range(stats.d_sae))
    # a second export refuses the folder now holding one; layers without statistics are refused by name
    refused = (([], "already holds files"), (["--layers", "0", "--force"], "no current latent statistics"))
    for extra, expected in refused:
        code = main([*base, *extra])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error:")]
        assert code == 3 and len(errors) == 1 and expected in errors[0]


def test_latent_pages_index_each_latent_by_the_words_of_its_top_contexts(minilm, minilm_cache, dictionaries, tmp_path):
    with ActivationCache(minilm_cache) as cache:
        compute_features(cache, dictionaries, [HOOK], minilm, FeatureConfig(top=3, samples=4), progress=False)
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    words: dict[str, list[int]] = {}
    chunks = list(layer_chunks(stats, words))
    assert sum(len(c["latents"]) for c in chunks) == stats.d_sae and len(chunks) == -(-stats.d_sae // CHUNK)
    for j in np.nonzero(stats.arrays["fires"])[0][:30]:
        page, chunk = stats.latent(int(j)), chunks[int(j) // CHUNK]
        for example in page["top"]:
            for word in words_of_token(example["tokens"][example["position"]]):
                assert int(j) in words[word]
            assert chunk["prompts"][str(example["prompt"])] == example["tokens"]
    assert write_latent_pages(dictionaries, tmp_path / "none", title="t") is not None
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "index.js").write_text("console.log('a site of my own')")
    with pytest.raises(ClearSaeError, match="holds no latent pages"):
        write_latent_pages(dictionaries, tmp_path / "taken")
    assert (tmp_path / "taken" / "index.js").read_text() == "console.log('a site of my own')"
    assert write_latent_pages(dictionaries, tmp_path / "none") is not None  # its own pages are replaced


def copied_library(minilm_library, folder):
    """The session's library with its entries pointing to the copied dictionaries in `folder/dicts`."""
    library = json.loads(minilm_library.read_text())
    for entry in library["concepts"].values():  # the copied dictionaries, relative to the library as written
        entry["dictionary"] = "dicts"
    (folder / "concepts.json").write_text(json.dumps(library))
    return folder / "concepts.json"


def test_inspect_writes_latent_pages_only_where_statistics_exist_and_unless_asked_not_to(
    capsys, minilm, minilm_cache, minilm_library, dictionaries, tmp_path
):
    library = copied_library(minilm_library, tmp_path)
    for name, extra in (("bare", []), ("opted_out", ["--no-latent-pages"]), ("with", [])):
        if name == "opted_out":
            with ActivationCache(minilm_cache) as cache:
                compute_features(cache, dictionaries, [HOOK], minilm, FeatureConfig(top=2, samples=2), progress=False)
        report = tmp_path / f"{name}.html"
        assert main(["inspect", "--library", str(library), "--out", str(report), *extra]) == 0, capsys.readouterr()
        assert (tmp_path / f"{name}_latents" / "index.html").is_file() == (name == "with")
        assert ('"latent_pages"' in report.read_text()) == (name == "with")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_report_links_latents_to_pages_that_find_them_by_text_in_headless_chromium(
    capsys, minilm, minilm_cache, minilm_library, dictionaries, tmp_path
):
    with ActivationCache(minilm_cache) as cache:
        compute_features(cache, dictionaries, [HOOK], minilm, FeatureConfig(top=3, samples=6), progress=False)
    report = tmp_path / "report.html"
    args = ["inspect", "--library", str(copied_library(minilm_library, tmp_path)), "--out", str(report)]
    assert main(args) == 0, capsys.readouterr().err
    pages = tmp_path / "report_latents" / "index.html"
    assert pages.is_file() and '"latent_pages":"report_latents/index.html"' in report.read_text().replace(" ", "")
    stats = load_layer_features(dictionaries, HOOK)
    assert stats is not None
    j = int(np.argmax(stats.arrays["fires"]))  # the latent that fires most: it has top contexts
    page = stats.latent(j)
    top = page["top"][0]
    word = words_of_token(top["tokens"][top["position"]])[0]
    dom = run_chromium("--dump-dom", f"{pages.as_uri()}?find={word}").stdout
    assert re.search(r'<div id="errors">\s*</div>', dom), dom[:2000]
    assert f'href="#{HOOK}/{j}">#{j}</a>' in dom
    dom = run_chromium("--dump-dom", f"{pages.as_uri()}#{HOOK}/{j}").stdout
    assert re.search(r'<div id="errors">\s*</div>', dom), dom[:2000]
    assert f"{HOOK} · latent {j}</h2>" in dom
    assert f'<span class="value">{top["value"]:.3f}</span>' in dom
    shown = re.findall(r'<div class="prompt"><span class="value">\d', dom)  # rendered, not the script's source
    assert len(shown) == len(page["top"]) + len(page["samples"])
