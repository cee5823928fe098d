"""Per-layer dictionaries: sae-lens classes and format, manifest health figures, determinism, foreign SAEs."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE

from clear_sae.cache import ActivationCache
from clear_sae.dictionary import (
    BACKGROUND_SAMPLE,
    CONFIG,
    MANIFEST,
    WEIGHTS,
    Dictionaries,
    TrainConfig,
    corpus_record,
    explained_variance,
    load_sae,
    train_dictionaries,
)
from clear_sae.errors import ClearSaeError

QUICK = dict(expansion=2, k=8, tokens=4096, batch_size=256)


def test_every_folder_loads_with_sae_lens_and_manifest_reports_health(minilm_dictionaries, minilm_cache):
    manifest = json.loads((minilm_dictionaries / "manifest.json").read_text())
    assert manifest["backbone_id"] == "minilm"
    assert manifest["hook_points"] == ["text_encoder.embed"] + [f"text_encoder.blocks.{i}" for i in range(6)]
    with ActivationCache(minilm_cache) as cache:
        for hook, record in manifest["layers"].items():
            sae = SAE.load_from_disk(minilm_dictionaries / record["folder"])
            assert sae.cfg.d_in == 384 and sae.cfg.d_sae == 768 and sae.cfg.architecture() == "topk"
            assert record["d_sae"] == 768 and record["training_tokens"] == 40_960
            # The saved SAE reads raw activations: its reconstruction of cached rows matches the manifest.
            x = torch.from_numpy(cache.sample(hook, 8192))
            with torch.no_grad():
                codes = sae.encode(x)
                ev = explained_variance(x, sae.decode(codes))
            assert ev == pytest.approx(record["explained_variance"], abs=1e-3)
            assert ev > 0.6
            assert float((codes > 0).sum(-1).float().mean()) == pytest.approx(record["l0"], abs=1e-2)
            assert record["l0"] <= 16
            assert 0.0 <= record["dead_fraction"] < 0.5


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu"])
def test_architectures_train_deterministically(minilm_cache, tmp_path, arch):
    cfg = TrainConfig(architecture=arch, **QUICK)
    with ActivationCache(minilm_cache) as cache:
        train_dictionaries(cache, tmp_path / "a", ["text_encoder.blocks.1"], cfg, progress=False)
        train_dictionaries(cache, tmp_path / "b", ["text_encoder.blocks.1"], cfg, progress=False)
        train_dictionaries(
            cache,
            tmp_path / "c",
            ["text_encoder.blocks.1"],
            TrainConfig(architecture=arch, seed=1, **QUICK),
            progress=False,
        )
    a, b, c = (load_sae(tmp_path / x / "text_encoder.blocks.1") for x in "abc")
    assert a.cfg.architecture() == arch
    assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.W_dec, b.W_dec)
    assert not torch.equal(a.W_enc, c.W_enc)


def test_retraining_needs_force_and_leaves_files_alone(minilm_cache, tmp_path):
    with ActivationCache(minilm_cache) as cache:
        train_dictionaries(cache, tmp_path / "d", ["text_encoder.embed"], TrainConfig(**QUICK), progress=False)
        weights = tmp_path / "d" / "text_encoder.embed" / "sae_weights.safetensors"
        before = weights.read_bytes()
        with pytest.raises(ClearSaeError, match="already holds dictionaries; pass --force"):
            train_dictionaries(cache, tmp_path / "d", ["text_encoder.embed"], TrainConfig(**QUICK), progress=False)
        assert weights.read_bytes() == before
        with pytest.raises(ClearSaeError, match="not in cache"):
            train_dictionaries(cache, tmp_path / "e", ["text_encoder.blocks.9"], TrainConfig(**QUICK), progress=False)


def test_sae_lens_saes_saved_elsewhere_load(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    topk = TopKSAE(TopKSAEConfig(d_in=384, d_sae=512, k=4))
    topk.cfg.metadata.hook_name = "text_encoder.blocks.2"
    topk.save_model(tmp_path / "foreign" / "layer2")
    std = StandardSAE(StandardSAEConfig(d_in=384, d_sae=256))
    std.save_model(tmp_path / "foreign" / "text_encoder.blocks.4")
    dictionaries = Dictionaries(tmp_path / "foreign")
    assert set(dictionaries.hook_points) == {"text_encoder.blocks.2", "text_encoder.blocks.4"}
    loaded = dictionaries.sae("text_encoder.blocks.2")
    assert torch.equal(loaded.W_enc, topk.W_enc)
    assert dictionaries.sae("text_encoder.blocks.4").cfg.d_sae == 256


def test_bad_dictionary_folders(tmp_path, minilm_dictionaries):
    (tmp_path / "empty" / "text_encoder.embed").mkdir(parents=True)
    (tmp_path / "empty" / "text_encoder.embed" / "cfg.json").write_text("{}")
    with pytest.raises(ClearSaeError, match="has no sae_weights.safetensors"):
        load_sae(tmp_path / "empty" / "text_encoder.embed")
    with pytest.raises(ClearSaeError, match="does not exist"):
        Dictionaries(tmp_path / "missing")
    dictionaries = Dictionaries(minilm_dictionaries)
    with pytest.raises(ClearSaeError, match="trained on backbone 'minilm', not 'other'"):
        dictionaries.check_backbone("other", {})
    with pytest.raises(ClearSaeError, match="dimension mismatch at text_encoder.embed"):
        dictionaries.check_backbone("minilm", {"text_encoder.embed": 512})


def test_folders_without_manifest_are_in_model_order_and_checked_by_width_only(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    for hook in ("text_encoder.blocks.10", "text_encoder.blocks.2", "text_encoder.embed"):
        sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2))
        sae.cfg.metadata.hook_name = hook
        sae.cfg.metadata.model_name = "some-other-naming"
        sae.save_model(tmp_path / hook)
    dictionaries = Dictionaries(tmp_path)
    assert dictionaries.hook_points == ["text_encoder.embed", "text_encoder.blocks.2", "text_encoder.blocks.10"]
    dictionaries.check_backbone("minilm", {"text_encoder.embed": 8})
    with pytest.raises(ClearSaeError, match="dimension mismatch"):
        dictionaries.check_backbone("minilm", {"text_encoder.embed": 384})


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu"])
def test_plain_loader_encodes_and_decodes_like_sae_lens_bit_for_bit(minilm_cache, tmp_path, arch):
    from clear_sae.sae.plain import PlainSAE, fired_codes

    with ActivationCache(minilm_cache) as cache:
        train_dictionaries(
            cache, tmp_path / "d", ["text_encoder.blocks.2"], TrainConfig(architecture=arch, **QUICK), progress=False
        )
        x = torch.from_numpy(cache.sample("text_encoder.blocks.2", 2048))
    folder = tmp_path / "d" / "text_encoder.blocks.2"
    plain, reference = load_sae(folder), SAE.load_from_disk(folder, device="cpu", dtype="float32")
    assert isinstance(plain, PlainSAE) and plain.cfg.architecture() == arch
    with torch.no_grad():
        codes = plain.encode(x)
        assert torch.equal(codes, reference.encode(x))
        assert torch.equal(plain.decode(codes), reference.decode(codes))
    assert (codes > 0).any()
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(plain, name), getattr(reference, name))
    # The sparse path (TopK: straight from the top-k) gives exactly the dense codes' non-zero entries, rows in order,
    # whichever class holds the SAE.
    for sae in (plain, reference):
        row, latent, value = fired_codes(sae, x)
        assert torch.equal(row, row.sort().values) and bool((value > 0).all())
        rebuilt = torch.zeros_like(codes)
        rebuilt[row, latent] = value
        assert torch.equal(rebuilt, codes) and len(row) == int((codes > 0).sum())


def test_a_trained_topk_folder_is_the_one_sae_lens_would_write(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig
    from safetensors.torch import load_file

    from clear_sae.sae.trainer import TopKParams, to_inference_sae

    p = TopKParams(24, 96, torch.randn(24, generator=torch.Generator().manual_seed(2)), seed=3)
    with torch.no_grad():
        p.dec.mul_(1 + torch.rand(96, 1, generator=torch.Generator().manual_seed(4)))
    ours = to_inference_sae(p, 5, "text_encoder.blocks.1", "minilm")
    cfg = TopKSAEConfig(d_in=24, d_sae=96, k=5, dtype="float32", device="cpu", rescale_acts_by_decoder_norm=False)
    cfg.metadata.hook_name, cfg.metadata.model_name = "text_encoder.blocks.1", "minilm"
    theirs = TopKSAE(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(theirs, name).copy_(getattr(ours, name))
    for sae, folder in ((ours, tmp_path / "ours"), (theirs, tmp_path / "theirs")):
        sae.fold_activation_norm_scaling_factor(1.7)
        sae.cfg.dtype = "float16"
        sae.to(dtype=torch.float16)
        sae.save_model(folder)
    assert json.loads((tmp_path / "ours" / "cfg.json").read_text()) == json.loads(
        (tmp_path / "theirs" / "cfg.json").read_text()
    )
    written = {name: load_file(str(tmp_path / name / "sae_weights.safetensors")) for name in ("ours", "theirs")}
    assert written["ours"].keys() == written["theirs"].keys() == {"W_enc", "W_dec", "b_enc", "b_dec"}
    for name, tensor in written["ours"].items():
        assert tensor.dtype == torch.float16 and torch.equal(tensor, written["theirs"][name]), name
    loaded = SAE.load_from_disk(tmp_path / "ours", device="cpu", dtype="float32")
    assert isinstance(loaded, TopKSAE) and loaded.cfg.k == 5


def test_training_topk_dictionaries_does_not_import_sae_lens(minilm_cache, tmp_path):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from clear_sae.cache import ActivationCache\n"
        "from clear_sae.dictionary import TrainConfig, load_sae, train_dictionaries\n"
        f"with ActivationCache({str(minilm_cache)!r}) as cache:\n"
        f"    train_dictionaries(cache, {str(tmp_path)!r}, ['text_encoder.embed'], TrainConfig(**{QUICK!r}),\n"
        "                       progress=False)\n"
        "print('sae_lens' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
    assert isinstance(SAE.load_from_disk(tmp_path / "text_encoder.embed", device="cpu"), SAE)


@pytest.mark.artifacts
def test_concept_learning_on_shipped_dictionaries_does_not_import_sae_lens():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from clear_sae.backbones import load_backbone\n"
        "from clear_sae.concepts import learn_concept\n"
        "from clear_sae.dictionary import Dictionaries\n"
        "d = Dictionaries('dictionaries/minilm')\n"
        "entry, _ = learn_concept(load_backbone('minilm'), d, 'lute', ['a lute on a table', 'he plays a lute'],\n"
        "                         ['a harp on a table', 'he plays a harp'])\n"
        "print(entry.hook_point, 'sae_lens' in sys.modules)\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    hook, imported = out.stdout.split()
    assert hook.startswith("text_encoder.") and imported == "False"


def test_an_interrupted_training_run_never_loads_and_a_rerun_finishes_it(minilm_cache, tmp_path, monkeypatch):
    """Killed after the first of two layers, the folder is refused (not searched on the layer that finished);
    the same command rerun with --force finishes it."""
    import clear_sae.dictionary
    from clear_sae.cache import ActivationCache
    from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
    from clear_sae.errors import ClearSaeError

    layers = ["text_encoder.blocks.1", "text_encoder.blocks.2"]
    cfg = TrainConfig(expansion=2, k=8, tokens=2048, batch_size=256)
    real_train_layer = clear_sae.dictionary.train_layer

    def killed_at_the_second_layer(cache, hook, *args, **kwargs):
        if hook == layers[1]:
            raise KeyboardInterrupt
        return real_train_layer(cache, hook, *args, **kwargs)

    monkeypatch.setattr(clear_sae.dictionary, "train_layer", killed_at_the_second_layer)
    with ActivationCache(minilm_cache) as cache:
        with pytest.raises(KeyboardInterrupt):
            train_dictionaries(cache, tmp_path / "d", layers, cfg, progress=False)
        with pytest.raises(ClearSaeError, match="unfinished training run .*rerun the same `clear-sae train"):
            Dictionaries(tmp_path / "d")
        monkeypatch.setattr(clear_sae.dictionary, "train_layer", real_train_layer)
        train_dictionaries(cache, tmp_path / "d", layers, cfg, force=True, progress=False)
    assert Dictionaries(tmp_path / "d").hook_points == layers


@pytest.mark.parametrize("folder", ["../other", "/tmp", ".", "text_encoder.blocks.1/../../x"])
def test_a_manifest_cannot_place_a_layer_outside_its_folder(minilm_dictionaries, tmp_path, folder):
    import json
    import shutil

    from clear_sae.dictionary import Dictionaries
    from clear_sae.errors import ClearSaeError

    root = tmp_path / "d"
    shutil.copytree(minilm_dictionaries, root, ignore=shutil.ignore_patterns("details"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["layers"]["text_encoder.blocks.2"]["folder"] = folder
    (root / "manifest.json").write_text(json.dumps(manifest))
    dictionaries = Dictionaries(root)
    with pytest.raises(ClearSaeError, match="outside its own folder"):
        dictionaries.sae("text_encoder.blocks.2")
    assert dictionaries.sae("text_encoder.blocks.1").cfg.d_in == 384  # the other layers load as before


def _small_cache(minilm, path, prompts=("a red dog running", "a blue cat sleeping", "a horse near the river")):
    from clear_sae.cache import CacheConfig, write_cache

    return write_cache(
        minilm, list(prompts) * 20, path, ["text_encoder.blocks.1"], CacheConfig(dtype="float32"), progress=False
    )


@pytest.mark.parametrize(
    "fill, message",
    [
        (float("inf"), r"at text_encoder.blocks.1 holds NaN or infinite values; recreate it .*--dtype float32 --force"),
        (float("nan"), r"at text_encoder.blocks.1 holds NaN or infinite values"),
        (0.0, r"holds the same activation in every row at text_encoder.blocks.1: there is nothing to learn"),
    ],
    ids=["inf", "nan", "constant"],
)
def test_activations_no_sae_can_learn_from_are_refused_and_no_manifest_claims_a_result(minilm, tmp_path, fill, message):
    """A cache with non-finite rows (a float16 cache of a T5-family encoder, written before caches refused them)
    or a constant layer (whose explained variance is undefined) is refused before anything is written, so no
    manifest exists to claim a result."""
    import h5py

    path = _small_cache(minilm, tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        acts = f["text_encoder.blocks.1"]["acts"]
        if fill == 0.0:
            acts[...] = 0.0
        else:
            acts[0, 7] = fill
    with ActivationCache(path) as cache, pytest.raises(ClearSaeError, match=message):
        train_dictionaries(cache, tmp_path / "d", cfg=TrainConfig(expansion=2, k=8, tokens=1024, batch_size=256))
    assert not (tmp_path / "d").exists()


def _copied_dictionaries(source, root):
    import shutil

    shutil.copytree(source, root, ignore=shutil.ignore_patterns("details"))
    return root


@pytest.mark.parametrize(
    "tensor, value",
    [("W_dec", float("nan")), ("b_enc", float("inf")), ("W_enc", float("-inf"))],
)
def test_an_sae_with_non_finite_weights_is_refused_on_load(minilm_dictionaries, tmp_path, tensor, value):
    from safetensors.torch import load_file, save_file

    root = _copied_dictionaries(minilm_dictionaries, tmp_path / "d")
    weights = root / "text_encoder.blocks.2" / WEIGHTS
    tensors = load_file(str(weights))
    tensors[tensor].view(-1)[3] = value
    save_file(tensors, str(weights))
    dictionaries = Dictionaries(root)
    with pytest.raises(ClearSaeError, match=rf"the SAE in .*text_encoder.blocks.2 \({tensor}\) holds NaN or infinite"):
        dictionaries.sae("text_encoder.blocks.2")
    assert dictionaries.sae("text_encoder.blocks.1").cfg.d_in == 384


@pytest.mark.parametrize(
    "change, message",
    [
        ({"k": 0}, r"k must be an integer between 1 and d_sae \(768\), not 0"),
        ({"k": -3}, r"k must be an integer between 1 and d_sae \(768\), not -3"),
        ({"k": 769}, r"k must be an integer between 1 and d_sae \(768\), not 769"),
        ({"k": "16"}, r"k must be an integer"),
        ({"d_sae": 0}, r"d_sae must be a positive integer, not 0"),
        ({"d_in": None}, r"d_in must be a positive integer, not None"),
    ],
    ids=["k-zero", "k-negative", "k-above-d_sae", "k-string", "d_sae-zero", "d_in-null"],
)
def test_an_sae_config_whose_sizes_describe_no_sae_is_a_one_line_error(minilm_dictionaries, tmp_path, change, message):

    root = _copied_dictionaries(minilm_dictionaries, tmp_path / "d")
    cfg_path = root / "text_encoder.blocks.2" / CONFIG
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **change}))
    with pytest.raises(ClearSaeError, match=rf"cannot load the SAE in .*{message}.*retrain it"):
        Dictionaries(root).sae("text_encoder.blocks.2")


@pytest.mark.parametrize(
    "sizes, message",
    [
        (
            dict(expansion=1_000_000),
            r"training an SAE of 384,000,000 latents at text_encoder.blocks.2 in batches of 256",
        ),
        (dict(batch_size=10**9, tokens=10**9), r"of 768 latents at text_encoder.blocks.2 in batches of 1,000,000,000"),
    ],
    ids=["expansion", "batch"],
)
def test_training_larger_than_memory_is_refused_before_anything_is_written(minilm_cache, tmp_path, sizes, message):
    """Sizes whose training could not fit (it used to allocate until the kernel killed it, or hang) are refused
    with the estimate, before the folder or its manifest exists."""
    cfg = TrainConfig(**{**dict(expansion=2, k=8, tokens=4096, batch_size=256), **sizes})
    with ActivationCache(minilm_cache) as cache, pytest.raises(ClearSaeError, match=rf"{message} needs about .* GiB"):
        train_dictionaries(cache, tmp_path / "d", ["text_encoder.blocks.2"], cfg, progress=False)
    assert not (tmp_path / "d").exists()


def test_the_memory_estimate_grows_with_every_size_it_depends_on():
    from clear_sae.dictionary import training_memory

    base = TrainConfig(expansion=4, batch_size=512, eval_tokens=8192)
    for bigger in (dict(expansion=8), dict(batch_size=1024), dict(eval_tokens=16384)):
        assert training_memory(TrainConfig(**{**vars(base), **bigger}), 384) > training_memory(base, 384)
    assert training_memory(base, 768) > training_memory(base, 384)


def test_the_manifest_records_how_many_captions_hold_each_word_of_the_training_corpus(
    minilm_dictionaries, minilm_cache
):
    from clear_sae.io import corpus_vocabulary

    corpus = json.loads((minilm_dictionaries / MANIFEST).read_text())["corpus"]
    with ActivationCache(minilm_cache) as cache:
        prompts = cache.prompts()
    assert corpus["captions"] == len(prompts)
    assert corpus["word_counts"] == corpus_vocabulary(prompts)
    # a seeded sample of the captions themselves: the background concept latents are checked against
    assert len(corpus["sample"]) == min(BACKGROUND_SAMPLE, len(prompts)) == len(set(corpus["sample"]))
    assert set(corpus["sample"]) <= set(prompts) and corpus["sample"] != prompts[: len(corpus["sample"])]
    assert Dictionaries(minilm_dictionaries).corpus_sample() == corpus["sample"] == corpus_record(prompts)["sample"]
    horn = sum("horn" in p.lower().replace(",", " ").split() for p in prompts)
    assert horn > 0 and corpus["word_counts"]["horn"] == horn
    assert corpus_vocabulary(["A dog, a DOG.", "the dog's toy", "a well-known x"]) == {
        "a": 2,
        "dog": 1,
        "dog's": 1,
        "the": 1,
        "toy": 1,
        "well-known": 1,
        "x": 1,
    }


@pytest.mark.artifacts
def test_the_shipped_manifest_records_the_vocabulary_of_the_corpus_it_was_trained_on():
    """The shipped dictionaries' corpus record is the demo corpus's vocabulary: the same prompts (by the hash the
    manifest recorded when training) counted the way `clear-sae train` counts them."""
    from pathlib import Path

    from clear_sae.cli.demo import PROMPTS_DIR, DemoConfig
    from clear_sae.io import prompts_hash, read_prompt_file
    from clear_sae.toyworld.concepts import toy_corpus

    manifest = json.loads((Path(__file__).resolve().parents[1] / "dictionaries" / "minilm" / MANIFEST).read_text())
    prompts = read_prompt_file(PROMPTS_DIR / "corpus.txt") + toy_corpus(DemoConfig().toy_captions)
    assert prompts_hash(prompts) == manifest["cache_prompts_hash"]
    assert manifest["corpus"] == corpus_record(prompts)


@pytest.mark.parametrize("sample", ["not a list", [1, 2], {"a": 1}], ids=["string", "numbers", "mapping"])
def test_a_malformed_corpus_sample_in_the_manifest_is_a_one_line_error(tmp_path, minilm_dictionaries, sample):
    import shutil

    folder = tmp_path / "dicts"
    shutil.copytree(minilm_dictionaries, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["corpus"]["sample"] = sample
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ClearSaeError, match="corpus sample that is not a list of captions; retrain"):
        Dictionaries(folder).corpus_sample()


def _sparsify_folder(root, hook, d_in=24, num_latents=96, k=5, dtype=torch.bfloat16, **cfg):
    """A folder as sparsify's `SparseCoder.save_to_disk` writes one: `cfg.json` + `sae.safetensors`."""
    from safetensors.torch import save_file

    folder = root / hook
    folder.mkdir(parents=True)
    config = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": num_latents}
    config |= {"k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d_in} | cfg
    (folder / "cfg.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(3)
    tensors = {
        "encoder.weight": torch.randn(num_latents, d_in, generator=generator) * 0.3,
        "encoder.bias": torch.randn(num_latents, generator=generator) * 0.1,
        "W_dec": torch.randn(num_latents, d_in, generator=generator) * 0.3,
        "b_dec": torch.randn(d_in, generator=generator) * 0.1,
    }
    save_file({name: t.to(dtype) for name, t in tensors.items()}, str(folder / "sae.safetensors"))
    return {name: t.to(dtype).float() for name, t in tensors.items()}


def test_a_sparsify_folder_loads_as_a_dictionary_and_encodes_by_sparsify_formula(tmp_path):
    hook = "text_encoder.blocks.2"
    weights = _sparsify_folder(tmp_path / "dicts", hook)
    dictionaries = Dictionaries(tmp_path / "dicts")
    assert dictionaries.hook_points == [hook] and dictionaries.layers[hook]["d_sae"] == 96
    sae = dictionaries.sae(hook)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (24, 96, 5)
    assert len(dictionaries.fingerprint(hook)) == 16
    x = torch.randn(40, 24, generator=torch.Generator().manual_seed(4))
    # sparsify's encoder: ReLU of the affine map of the centred input, then the k largest per row.
    encoder = weights["encoder.weight"], weights["encoder.bias"]
    pre = torch.relu(torch.nn.functional.linear(x - weights["b_dec"], *encoder))
    values, ids = pre.topk(5, dim=-1)
    want = torch.zeros_like(pre).scatter_(-1, ids, values)
    codes = sae.encode(x)
    assert torch.allclose(codes, want, atol=1e-5) and ((codes > 0).sum(-1) <= 5).all()
    assert torch.allclose(sae.decode(codes), want @ weights["W_dec"] + weights["b_dec"], atol=1e-4)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"transcode": True}, "it is a transcoder"),
        ({"skip_connection": True}, "skip connection"),
        ({"activation": "groupmax"}, "only topk sparse coders load"),
        ({"k": 500}, "k must be an integer between 1 and the 96 latents"),
    ],
    ids=["transcoder", "skip", "groupmax", "k"],
)
def test_a_sparse_coder_that_is_not_a_plain_topk_sae_is_a_one_line_error(tmp_path, cfg, message):
    _sparsify_folder(tmp_path / "dicts", "text_encoder.blocks.2", **cfg)
    with pytest.raises(ClearSaeError, match=message) as err:
        Dictionaries(tmp_path / "dicts").sae("text_encoder.blocks.2")
    assert "\n" not in str(err.value)


def test_the_manifest_says_where_each_hook_point_lives_and_which_hub_model(tmp_path, minilm_tokenizer, small_corpus):
    """A dictionary folder names, per hook point, the pipeline subfolder and the module inside that model (enough
    for another tool to hook the same module), and the Hub id and revision the model was loaded from."""
    from conftest import tiny_two_encoder_pipeline

    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders
    from clear_sae.cache import CacheConfig, write_cache

    pipe = tiny_two_encoder_pipeline(minilm_tokenizer)
    backbone = PipelineTextEncoders.from_pipeline(pipe, "tiny-two")
    backbone.source = "hf://someone/tiny-flux@0123abcd"
    hooks = ["text_encoder.blocks.1", "text_encoder_2.blocks.2"]
    write_cache(backbone, small_corpus[:64], tmp_path / "c.h5", hooks, CacheConfig(64), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        manifest = train_dictionaries(
            cache, tmp_path / "d", ["text_encoder_2.blocks.2"], TrainConfig(**QUICK), progress=False
        )
    assert manifest["hub_model"] == {"repo_id": "someone/tiny-flux", "revision": "0123abcd"}
    where = manifest["hook_modules"]
    assert list(where) == ["text_encoder_2.blocks.2"]  # the layers trained, not every layer cached
    assert where["text_encoder_2.blocks.2"] == {"subfolder": "text_encoder_2", "module": "encoder.block.2"}
    assert pipe.text_encoder_2.get_submodule("encoder.block.2") is backbone.module("text_encoder_2.blocks.2")
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["hook_modules"] == where


def test_a_bare_encoders_hook_points_name_modules_of_the_model_itself(minilm):
    assert minilm.subfolder("text_encoder.blocks.3") is None
    assert minilm.model.get_submodule(minilm.module_path("text_encoder.blocks.3")) is minilm.module(
        "text_encoder.blocks.3"
    )
