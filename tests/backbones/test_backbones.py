"""Backbones: named hook points and padding-free residual streams, on the real MiniLM and tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    TINY_HUNYUAN_TEMPLATE,
    tiny_cogvideox_pipeline,
    tiny_flux_pipeline,
    tiny_hooked_transformer,
    tiny_hunyuan_pipeline,
    tiny_ltx_pipeline,
    tiny_sd3_pipeline,
    tiny_two_encoder_pipeline,
    tiny_wan_pipeline,
)

from clear_sae.backbones import hook_module, load_backbone
from clear_sae.errors import ClearSaeError


def test_minilm_hook_points_match_hidden_states(minilm):
    assert minilm.backbone_id == "minilm"
    assert minilm.hook_points == ["text_encoder.embed"] + [f"text_encoder.blocks.{i}" for i in range(6)]
    prompts = ["a French horn player on a stage", "snow"]
    out = minilm.run(prompts, minilm.hook_points)
    batch = minilm.tokenize(prompts)
    with torch.inference_mode():
        reference = minilm.model(**batch, output_hidden_states=True).hidden_states
    for hook, expected in zip(minilm.hook_points, reference):
        assert torch.equal(out[hook].acts, expected)
        assert out[hook].acts.shape[-1] == minilm.d_model(hook) == 384
    mask = out["text_encoder.embed"].mask
    assert mask.dtype == torch.bool
    assert mask.sum(1).tolist() == batch["attention_mask"].sum(1).tolist()
    assert mask[1].sum() < mask[0].sum()  # the short prompt is padded
    for row, prompt in enumerate(prompts):  # one token string per real position, special tokens included
        tokens = minilm.token_strings(prompt, "text_encoder.blocks.3")
        assert (
            len(tokens) == int(mask[row].sum())
            and tokens[0] == "[CLS]"
            and "horn" in minilm.token_strings(prompts[0], "text_encoder.embed")
        )


def test_resolve_layers_accepts_names_and_indices(minilm):
    assert minilm.resolve_layers("all") == minilm.hook_points
    assert minilm.resolve_layers("0,text_encoder.blocks.3,-1") == [
        "text_encoder.embed",
        "text_encoder.blocks.3",
        "text_encoder.blocks.5",
    ]
    with pytest.raises(ClearSaeError, match="unknown layer 'text_encoder.blocks.9'.*choose from"):
        minilm.resolve_layers("text_encoder.blocks.9")
    with pytest.raises(ClearSaeError, match="unknown layer index 7"):
        minilm.resolve_layers("7")


def test_unknown_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ClearSaeError, match="unknown model 'no-such-model'"):
        load_backbone("no-such-model")
    with pytest.raises(ClearSaeError, match="is not a model folder"):
        load_backbone(tmp_path)


@pytest.mark.parametrize("family", ["t5", "umt5", "clip", "llama", "qwen2"])
def test_tiny_text_encoders_load_from_a_folder(tmp_path, minilm_tokenizer, family):
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        Qwen2Config,
        Qwen2Model,
        T5Config,
        T5EncoderModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    vocab = minilm_tokenizer.vocab_size
    decoder = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
    if family == "llama":  # decoder-only encoders: HunyuanVideo's LLM, SANA's Gemma, Qwen-Image's Qwen
        model = LlamaModel(LlamaConfig(num_key_value_heads=2, **decoder))
    elif family == "qwen2":
        model = Qwen2Model(Qwen2Config(num_key_value_heads=2, **decoder))
    elif family == "t5":
        model = T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4))
    elif family == "umt5":
        model = UMT5EncoderModel(UMT5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4))
    else:
        model = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=64,
            )
        )
    model.save_pretrained(tmp_path)
    minilm_tokenizer.save_pretrained(tmp_path)
    backbone = load_backbone(tmp_path)
    assert backbone.hook_points == ["text_encoder.embed"] + [f"text_encoder.blocks.{i}" for i in range(3)]
    out = backbone.run(["a dog", "a horse on the beach at dawn"], backbone.hook_points)
    last = out["text_encoder.blocks.2"]
    assert last.acts.shape[:2] == last.mask.shape and last.acts.shape[-1] == 32
    # A block's output is the residual stream: it differs from the embedding and from the previous block.
    assert not torch.equal(out["text_encoder.blocks.1"].acts, last.acts)
    if family in ("llama", "qwen2"):  # the hook points are the model's own hidden states (before its final norm)
        batch = backbone.tokenize(["a dog", "a horse on the beach at dawn"])
        with torch.no_grad():
            states = backbone.model(**batch, output_hidden_states=True).hidden_states
        real = last.mask
        assert torch.allclose(out["text_encoder.blocks.1"].acts[real], states[2][real], atol=1e-5)


def test_diffusers_pipeline_exposes_its_text_encoder(tmp_path, minilm_tokenizer):
    pipe = tiny_wan_pipeline(minilm_tokenizer)
    pipe.save_pretrained(tmp_path / "wan")
    backbone = load_backbone(tmp_path / "wan")
    # Read through Wan's own encode_prompt (its padding to max_sequence_length, and its mask), with no transformer
    # or VAE loaded.
    import inspect

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    assert isinstance(backbone, PipelineEncoding) and backbone.pipeline.transformer is None
    assert backbone.backbone_id.startswith("pipeline-encoding:wan:")
    assert backbone.hook_points == ["text_encoder.embed", "text_encoder.blocks.0", "text_encoder.blocks.1"]
    out = backbone.run(["a French horn"], backbone.hook_points)
    length = inspect.signature(backbone.pipeline.encode_prompt).parameters["max_sequence_length"].default
    assert out["text_encoder.blocks.1"].acts.shape[1:] == (length, 32)
    assert int(out["text_encoder.blocks.1"].mask.sum()) == len(minilm_tokenizer("a French horn")["input_ids"])
    # The same names find the same blocks on the live pipeline object.
    assert hook_module(pipe, "text_encoder.blocks.1") is pipe.text_encoder.encoder.block[1]


def test_pipeline_with_two_text_encoders_names_both(minilm_tokenizer):
    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders

    backbone = PipelineTextEncoders.from_pipeline(tiny_two_encoder_pipeline(minilm_tokenizer), "two")
    assert backbone.hook_points == [
        "text_encoder.embed",
        "text_encoder.blocks.0",
        "text_encoder.blocks.1",
        "text_encoder_2.embed",
        "text_encoder_2.blocks.0",
        "text_encoder_2.blocks.1",
        "text_encoder_2.blocks.2",
    ]
    out = backbone.run(["a dog"], ["text_encoder.blocks.1", "text_encoder_2.blocks.2"])
    assert out["text_encoder.blocks.1"].acts.shape[-1] == 32
    assert out["text_encoder_2.blocks.2"].acts.shape[-1] == 24
    assert backbone.d_model("text_encoder_2.embed") == 24
    hook = "text_encoder_2.blocks.2"
    assert len(backbone.token_strings("a dog", hook)) == int(out[hook].mask.sum())


def test_transformer_lens_model(tmp_path, minilm_tokenizer):
    from clear_sae.backbones.transformer_lens import TransformerLensBackbone, save_transformer_lens

    model = tiny_hooked_transformer()
    backbone = TransformerLensBackbone(model, minilm_tokenizer)
    assert backbone.hook_points == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    out = backbone.run(["a dog runs", "hi"], backbone.hook_points)
    tokens = minilm_tokenizer(["a dog runs", "hi"], padding=True, return_tensors="pt")["input_ids"]
    _, cache = model.run_with_cache(tokens)
    assert torch.allclose(out["blocks.1.hook_resid_post"].acts, cache["blocks.1.hook_resid_post"])
    hook = "blocks.1.hook_resid_post"
    assert len(backbone.token_strings("hi", hook)) == int(out[hook].mask[1].sum())
    save_transformer_lens(model, minilm_tokenizer, tmp_path / "tl")
    reloaded = load_backbone(tmp_path / "tl")
    again = reloaded.run(["a dog runs", "hi"], ["blocks.1.hook_resid_post"])
    assert torch.allclose(again["blocks.1.hook_resid_post"].acts, out["blocks.1.hook_resid_post"].acts, atol=1e-5)


def test_same_folder_name_different_weights_means_a_different_backbone(tmp_path, minilm_tokenizer):
    from transformers import T5Config, T5EncoderModel

    ids = []
    for seed, where in ((0, "a"), (1, "b"), (0, "c")):
        torch.manual_seed(seed)
        folder = tmp_path / where / "text_encoder"
        T5EncoderModel(
            T5Config(vocab_size=minilm_tokenizer.vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
        ).save_pretrained(folder)
        minilm_tokenizer.save_pretrained(folder)
        ids.append(load_backbone(folder).backbone_id)
    assert ids[0].startswith("hf:text_encoder:")
    assert ids[0] != ids[1] and ids[0] == ids[2]


def test_a_prompt_longer_than_the_encoder_reads_is_reported_once(minilm, caplog):
    """MiniLM reads 128 tokens: a longer prompt is cut there, and the user is told (once), not left to wonder why
    a concept named at its end is neither learned nor erased."""
    import logging

    minilm.reported_cut = False
    long_prompt = "a dog " * 100 + "and a French horn at the very end"
    exactly = " ".join(["word"] * 126)  # 126 words, [CLS] and [SEP]: exactly 128 tokens, not cut
    with caplog.at_level(logging.WARNING, logger="clear_sae"):
        minilm.run([exactly, "a cat"], ["text_encoder.embed"])
        assert not caplog.records
        minilm.run(["a cat", long_prompt], ["text_encoder.embed"])
        minilm.run([long_prompt], ["text_encoder.embed"])
    assert len(caplog.records) == 1
    assert "1 prompt(s) of a batch are longer than the 128 tokens text_encoder reads" in caplog.records[0].message
    minilm.reported_cut = False


@pytest.mark.parametrize("recorded", ["models/my_encoder", "../elsewhere", "bert-huge"])
def test_a_recorded_model_must_be_a_built_in_name_or_an_absolute_folder(recorded):
    """A model source read from a cache, manifest or library is never resolved against wherever the command runs;
    `--model` still chooses freely."""
    from clear_sae.backbones import load_backbone_for
    from clear_sae.errors import ClearSaeError

    with pytest.raises(ClearSaeError, match="is neither a built-in name .* an absolute folder nor a Hub id; pass the"):
        load_backbone_for(None, recorded)
    with pytest.raises(ClearSaeError, match="unknown model|cannot get Hub model"):
        load_backbone_for(recorded, "minilm")  # what --model names is loaded (and here does not exist)


def test_a_backbone_placed_in_bfloat16_runs_there_and_its_pipeline_encoders_all_move(minilm, minilm_tokenizer):
    from clear_sae.backbones import Placement
    from clear_sae.backbones.diffusers_pipeline import PipelineTextEncoders

    half = load_backbone("minilm", Placement(model_dtype="bfloat16"))
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    prompts = ["a dog running on the beach", "a French horn player on stage"]
    hook = "text_encoder.blocks.3"
    got, want = half.run(prompts, [hook])[hook], minilm.run(prompts, [hook])[hook]
    assert got.acts.dtype == torch.bfloat16 and torch.equal(got.mask, want.mask)
    cosine = torch.nn.functional.cosine_similarity(got.acts.float()[got.mask], want.acts[want.mask], dim=-1)
    assert cosine.min() > 0.95  # the same model, rounded; a wrong or unmoved model would be far off

    backbone = PipelineTextEncoders.from_pipeline(tiny_wan_pipeline(minilm_tokenizer), "tiny")
    backbone.place(Placement(model_dtype="float16"))
    assert {p.dtype for model in backbone.models() for p in model.parameters()} == {torch.float16}
    assert backbone.run(["a dog"], ["text_encoder.blocks.1"])["text_encoder.blocks.1"].acts.dtype == torch.float16


@pytest.mark.parametrize(
    "device, dtype, message",
    [
        ("cuda", "float32", r"device 'cuda' asked for, but CUDA is not available here; pass --device cpu"),
        ("gpu0", "float32", r"unknown device 'gpu0'; pass cpu, cuda, cuda:N or mps"),
        ("cpu", "int8", r"unsupported model dtype 'int8'; pass one of float32, bfloat16, float16"),
    ],
)
def test_a_placement_that_cannot_be_had_is_refused_before_the_model_loads(monkeypatch, device, dtype, message):
    from clear_sae.backbones import Placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    loaded = []
    monkeypatch.setattr("clear_sae.backbones._load", lambda name: loaded.append(name))
    with pytest.raises(ClearSaeError, match=message):
        load_backbone("minilm", Placement(device=device, model_dtype=dtype))
    assert loaded == []


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root, repo, saved):
    """A Hub cache holding `saved` as the snapshot of `repo`'s main branch, laid out as huggingface_hub lays it."""
    import shutil

    storage = root / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    shutil.copytree(saved, storage / "snapshots" / COMMIT)


def test_a_hub_id_loads_the_pipeline_text_side_from_the_hub_cache(tmp_path, minilm_tokenizer, monkeypatch):
    from huggingface_hub import constants

    from clear_sae.backbones import load_backbone_for

    tiny_wan_pipeline(minilm_tokenizer).save_pretrained(tmp_path / "saved")
    _hub_cache(tmp_path / "hub", "someone/tiny-wan", tmp_path / "saved")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backbone = load_backbone("someone/tiny-wan")
    assert backbone.source == f"hf://someone/tiny-wan@{COMMIT}"  # what caches and libraries record
    local = load_backbone(tmp_path / "saved")
    assert backbone.hook_points == local.hook_points
    hook = "text_encoder.blocks.1"
    assert torch.equal(backbone.run(["a dog"], [hook])[hook].acts, local.run(["a dog"], [hook])[hook].acts)
    again = load_backbone_for(None, backbone.source)  # a recorded Hub source loads again, at its commit
    assert again.source == backbone.source and again.backbone_id == backbone.backbone_id
    with pytest.raises(ClearSaeError, match=r"cannot get Hub model someone/absent \(LocalEntryNotFoundError"):
        load_backbone("someone/absent")
    with pytest.raises(ClearSaeError, match="is not a Hub model id"):
        load_backbone("hf://not a repo")


def test_only_the_text_side_of_a_hub_repository_is_fetched():
    from clear_sae.backbones.hub import wanted_files

    pipeline = [
        "model_index.json",
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder_2/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer_2/spiece.model",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "scheduler/scheduler_config.json",
        "README.md",
    ]
    assert wanted_files(pipeline) == [pipeline[i] for i in (0, 1, 2, 3, 4, 5)]
    encoder = ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "pytorch_model.bin"]
    encoder += ["onnx/model.safetensors", "README.md"]
    assert wanted_files(encoder) == ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]


def _capture(module, store):
    """A forward hook keeping every output of `module` (the residual stream), call by call."""
    from clear_sae.backbones import first_tensor

    return module.register_forward_hook(lambda _m, _i, output: store.append(first_tensor(output).detach().clone()))


def test_the_pipeline_encoding_caches_what_wan_generates_with(minilm_tokenizer):
    """Through Wan's own encode_prompt, the real tokens' activations at a hook point are those the encoder gives
    while `pipe(...)` generates, bit for bit, and the mask is the one Wan passes."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    pipe = tiny_wan_pipeline(minilm_tokenizer)
    backbone = PipelineEncoding(pipe, "tiny-wan", max_sequence_length=32)
    prompt, hook = "a French horn player on a quiet stage at dusk", "text_encoder.blocks.1"
    learned = backbone.run([prompt], [hook])[hook]
    assert learned.acts.shape[1] == 32  # Wan pads to max_sequence_length
    seen = []
    handle = _capture(backbone.module(hook), seen)
    try:
        pipe(prompt=prompt, negative_prompt="", height=16, width=16, num_frames=9, num_inference_steps=1,
             max_sequence_length=32, output_type="np")  # fmt: skip
    finally:
        handle.remove()
    real = learned.mask[0]
    assert int(real.sum()) == len(minilm_tokenizer(prompt)["input_ids"])
    assert torch.equal(seen[0][0][real], learned.acts[0][real])  # the positive prompt's call, first of two


def test_the_pipeline_encoding_reads_cogvideox_as_it_runs_without_a_mask(minilm_tokenizer, tmp_path):
    """CogVideoX pads T5's input to max_sequence_length and passes no mask: real tokens attend to the padding, so
    their states differ from an encoding padded to the longest prompt; the pipeline's own encoding reproduces them,
    and its real positions are those before the padding."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding, PipelineTextEncoders

    pipe = tiny_cogvideox_pipeline(minilm_tokenizer)
    own = PipelineEncoding(pipe, "tiny-cog", max_sequence_length=16)
    prompts, hook = ["a dog", "a French horn player on a quiet stage"], "text_encoder.blocks.1"
    learned = own.run(prompts, [hook])[hook]
    lengths = [len(minilm_tokenizer(p)["input_ids"]) for p in prompts]
    assert learned.acts.shape[1] == 16 and learned.mask.sum(-1).tolist() == lengths
    seen = []
    handle = _capture(own.module(hook), seen)
    try:  # as pipe(prompt=prompts) encodes (without gradients): the prompts as one batch, then the negatives
        with torch.no_grad():
            pipe.encode_prompt(prompt=prompts, negative_prompt="", do_classifier_free_guidance=True,
                               max_sequence_length=16)  # fmt: skip
    finally:
        handle.remove()
    for row, n in enumerate(lengths):
        assert torch.equal(seen[0][row][:n], learned.acts[row][:n])
    masked = PipelineTextEncoders.from_pipeline(pipe, "tiny-cog").run(prompts, [hook])[hook]
    assert not torch.allclose(masked.acts[0][: lengths[0]], learned.acts[0][: lengths[0]], atol=1e-4)
    # A cache written through it holds the real tokens only, each row the pipeline's own.
    from clear_sae.cache import ActivationCache, CacheConfig, write_cache

    write_cache(own, prompts, tmp_path / "c.h5", [hook], CacheConfig(batch_size=2, dtype="float32"), progress=False)
    with ActivationCache(tmp_path / "c.h5") as cache:
        rows = torch.from_numpy(cache.rows(hook))
    assert torch.equal(rows, learned.acts[learned.mask])


def test_the_pipeline_encoding_reads_both_flux_encoders_as_flux_calls_them(minilm_tokenizer):
    """Flux reads CLIP (padded to the tokenizer's length, no mask) and T5 (padded to max_sequence_length, no mask):
    the pipeline's own encoding captures both encoders in one call each, with their real positions."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    pipe = tiny_flux_pipeline(minilm_tokenizer)
    own = PipelineEncoding(pipe, "tiny-flux", max_sequence_length=16)
    prompts = ["a dog", "a French horn player on a quiet stage"]
    hooks = ["text_encoder.blocks.1", "text_encoder_2.blocks.1"]
    out = own.run(prompts, hooks)
    lengths = [len(minilm_tokenizer(p)["input_ids"]) for p in prompts]
    assert out[hooks[0]].acts.shape[1] == minilm_tokenizer.model_max_length and out[hooks[1]].acts.shape[1] == 16
    # The tokenizer pads with an id of its own, so every token up to the last real one counts as real.
    assert out[hooks[0]].mask.sum(-1).tolist() == lengths == out[hooks[1]].mask.sum(-1).tolist()
    seen: dict[str, list] = {hook: [] for hook in hooks}
    handles = [_capture(own.module(hook), seen[hook]) for hook in hooks]
    try:
        with torch.no_grad():
            pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=16)
    finally:
        for handle in handles:
            handle.remove()
    for hook in hooks:
        real = out[hook].mask
        assert torch.equal(seen[hook][0][real], out[hook].acts[real])


PIPE_CALLS = {  # the encode_prompt arguments each pipeline's __call__ passes (its prompts, then its negatives)
    "sd3": {"prompt_2": None, "prompt_3": None, "negative_prompt": "", "do_classifier_free_guidance": True},
    "ltx": {"negative_prompt": "", "do_classifier_free_guidance": True},
    "hunyuan": {"prompt_2": None, "prompt_template": TINY_HUNYUAN_TEMPLATE},
}
BUILDERS = {"sd3": tiny_sd3_pipeline, "ltx": tiny_ltx_pipeline, "hunyuan": tiny_hunyuan_pipeline}


@pytest.mark.parametrize("family", sorted(PIPE_CALLS))
def test_the_pipeline_encoding_reads_sd3_ltx_and_hunyuan_as_they_run(minilm_tokenizer, family):
    """SD3 (two CLIPs and T5), LTX-Video (T5 without a mask) and HunyuanVideo (a Llama reading the prompt inside a
    template, and CLIP): every encoder's real tokens hold, bit for bit, the states its pipeline's encoding computes;
    the template's positions are not real tokens of the prompt."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    pipe = BUILDERS[family](minilm_tokenizer)
    options = {"prompt_template": TINY_HUNYUAN_TEMPLATE} if family == "hunyuan" else {}
    own = PipelineEncoding(pipe, f"tiny-{family}", max_sequence_length=16, encode_options=options)
    prompts = ["a dog", "a French horn player on a quiet stage"]
    out = own.run(prompts, own.hook_points)
    assert {hook.split(".", 1)[0] for hook in own.hook_points} == set(own.encoders)
    seen: dict[str, list] = {hook: [] for hook in own.hook_points}
    handles = [_capture(own.module(hook), seen[hook]) for hook in own.hook_points]
    try:
        with torch.no_grad():
            pipe.encode_prompt(prompt=prompts, max_sequence_length=16, **PIPE_CALLS[family])
    finally:
        for handle in handles:
            handle.remove()
    lengths = [len(minilm_tokenizer(p)["input_ids"]) for p in prompts]
    for hook in own.hook_points:
        real = out[hook].mask
        crop = TINY_HUNYUAN_TEMPLATE["crop_start"] if family == "hunyuan" and hook.startswith("text_encoder.") else 0
        assert not real[:, :crop].any()
        assert real.sum(-1).tolist() == [n - (1 if crop else 0) for n in lengths]  # [CLS] opens the template
        assert torch.equal(seen[hook][0][real], out[hook].acts[real])
    if family == "hunyuan":
        assert own.token_strings("a dog", "text_encoder.blocks.0") == ["a", "dog", "[SEP]"]


def test_blocks_past_the_hidden_state_a_pipeline_reads_are_no_hook_points(minilm_tokenizer):
    """HunyuanVideo reads its Llama's third-last hidden state: the last two blocks change nothing it generates
    from, so they are left out of the hook points and refused by name. SD3 reads CLIP's penultimate layer but
    also its pooled output, so every CLIP block stays."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    options = {"prompt_template": TINY_HUNYUAN_TEMPLATE}
    hunyuan = PipelineEncoding(tiny_hunyuan_pipeline(minilm_tokenizer), "tiny-hy", 16, options)
    assert hunyuan.unread_hook_points == ["text_encoder.blocks.2", "text_encoder.blocks.3"]
    assert hunyuan.hook_points[:3] == ["text_encoder.embed", "text_encoder.blocks.0", "text_encoder.blocks.1"]
    with pytest.raises(ClearSaeError, match="past the hidden state HunyuanVideoPipeline reads from text_encoder"):
        hunyuan.run(["a dog"], ["text_encoder.blocks.2"])
    sd3 = PipelineEncoding(tiny_sd3_pipeline(minilm_tokenizer), "tiny-sd3", 16)
    assert sd3.unread_hook_points == []


PADDING_READ = {  # from each pipeline's encode_prompt: is the encoder unmasked, and are its padded states handed on?
    "wan": {"text_encoder": False},  # masked, and the padding zeroed
    "cogvideox": {"text_encoder": True},
    "ltx": {"text_encoder": False},  # unmasked, but the transformer gets the mask
    "flux": {"text_encoder": False, "text_encoder_2": True},  # CLIP: only the pooled end-of-text state
    "sd3": {"text_encoder": True, "text_encoder_2": True, "text_encoder_3": True},
    "hunyuan": {"text_encoder": False, "text_encoder_2": False},
}


@pytest.mark.parametrize("family", sorted(PADDING_READ))
def test_the_padding_a_pipeline_hands_its_transformer_is_flagged(minilm_tokenizer, family):
    """Where a pipeline feeds its transformer an encoder's padded states, the activations flag those positions as
    padding; where it masks or drops them, they carry no flag."""
    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    builders = {**BUILDERS, "wan": tiny_wan_pipeline, "cogvideox": tiny_cogvideox_pipeline, "flux": tiny_flux_pipeline}
    options = {"prompt_template": TINY_HUNYUAN_TEMPLATE} if family == "hunyuan" else {}
    own = PipelineEncoding(builders[family](minilm_tokenizer), family, max_sequence_length=16, encode_options=options)
    assert own.padding_read == PADDING_READ[family]
    out = own.run(["a dog", "a French horn player"], own.hook_points)
    for hook, acts in out.items():
        if PADDING_READ[family][hook.split(".", 1)[0]]:
            assert acts.padding is not None and torch.equal(acts.padding, ~acts.mask)
            assert acts.padding.sum(-1).tolist() == [acts.mask.shape[1] - n for n in acts.mask.sum(-1).tolist()]
        else:
            assert acts.padding is None


def test_an_end_of_text_token_that_shares_the_padding_id_is_a_real_token(minilm_tokenizer):
    """CLIP-L's tokenizer pads with its end-of-text id: that first id after the prompt is the token CLIP pools at,
    so it counts as real, and Flux's CLIP (read only through its pooled output) is still found not to pass its
    padding on."""
    import copy

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding

    tokenizer = copy.deepcopy(minilm_tokenizer)
    tokenizer.pad_token = tokenizer.sep_token  # padding and end of text share one id, as in CLIP-L
    own = PipelineEncoding(tiny_flux_pipeline(tokenizer), "tiny-flux-eos", max_sequence_length=16)
    assert own.padding_read == {"text_encoder": False, "text_encoder_2": True}
    out = own.run(["a dog", "a French horn player"], ["text_encoder.blocks.1"])["text_encoder.blocks.1"]
    assert out.mask.sum(-1).tolist() == [len(tokenizer(p)["input_ids"]) for p in ["a dog", "a French horn player"]]
    assert out.padding is None


def test_a_batch_runs_in_groups_of_similar_length_and_comes_back_in_order(minilm):
    from clear_sae.backbones.base import LENGTH_GROUP

    words = "a red circle rises slowly over the calm harbour while gulls circle at dusk".split()
    prompts = [" ".join(words[: 2 + (7 * i) % len(words)]) for i in range(3 * LENGTH_GROUP + 5)]
    groups = minilm.length_groups(prompts)
    assert sorted(i for g in groups for i in g) == list(range(len(prompts))) and len(groups) == 4
    lengths = [len(minilm.token_strings(p, "text_encoder.embed")) for p in prompts]
    assert [lengths[i] for g in groups for i in g] == sorted(lengths)  # similar lengths together
    hooks = ["text_encoder.embed", "text_encoder.blocks.5"]
    together = minilm.run(prompts, hooks)
    assert together["text_encoder.blocks.5"].acts.shape[1] == max(lengths)
    for i in (0, 7, len(prompts) - 1):  # each prompt as if run alone, at its place in the batch
        alone = minilm.run([prompts[i]], hooks)
        for hook in hooks:
            mask = together[hook].mask[i]
            assert mask.sum() == lengths[i] and torch.equal(mask[: lengths[i]], alone[hook].mask[0])
            torch.testing.assert_close(together[hook].acts[i][mask], alone[hook].acts[0], rtol=1e-4, atol=1e-4)
