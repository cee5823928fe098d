"""CLEAR as published (clear-joint): one SAE per concept trained with Gumbel-softmax layer preferences."""

from __future__ import annotations

import pytest
import torch

from clear_sae.compare.joint import JointConfig, LayerActivations, train_joint

SMALL = JointConfig(
    expansion=2, rounds=12, warmup_rounds=5, sae_steps=25, preference_steps=5, batch_tokens=128, sae_lr=3e-3
)


def planted_layers(
    good: int, n_layers: int = 4, d: int = 16, n: int = 40, tokens: int = 6, seed: int = 0
) -> dict[str, LayerActivations]:
    """Layers of a residual stream of sparse context features; a concept direction rides on the first two tokens
    of every target prompt. Only at layer `good` is it absent from the non-targets (elsewhere the model has
    mixed it into every prompt), so only there can a latent be specific."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(10, d, generator=gen)
    concept = torch.randn(d, generator=gen)
    layers = {}
    for layer in range(n_layers):

        def prompts(with_concept: bool) -> torch.Tensor:
            coeff = torch.relu(torch.randn(n, tokens, 10, generator=gen) - 0.8)
            x = coeff @ basis
            if with_concept or layer != good:
                x[:, :2] += 3 * concept
            return x

        mask = torch.ones(n, tokens, dtype=torch.bool)
        mask[: n // 2, -1] = False  # some padding
        layers[f"layer.{layer}"] = LayerActivations(prompts(True), mask, prompts(False), mask.clone())
    return layers


@pytest.mark.parametrize("good", [1, 3])
def test_preferences_move_to_the_layer_where_a_planted_concept_separates(good):
    layers = planted_layers(good)
    result = train_joint(layers, SMALL, progress=False)
    assert result.hook_point == f"layer.{good}"
    assert result.preferences[f"layer.{good}"] > 0.5
    assert min(result.separability_loss, key=result.separability_loss.get) == f"layer.{good}"
    # The preference for the good layer grows over the rounds, from a uniform start.
    first, last = result.history[0][f"layer.{good}"], result.history[-1][f"layer.{good}"]
    assert first < last and abs(result.history[0]["tau"] - SMALL.tau_start) < 1e-9
    assert result.latents


def test_the_exported_sae_reads_raw_activations_and_its_latents_mark_the_concept():
    layers = planted_layers(2, d=24)
    result = train_joint(layers, SMALL, progress=False)
    acts = layers[result.hook_point]
    sae = result.sae
    x = acts.tokens()
    recon = sae.decode(sae.encode(x))
    explained = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert explained > 0.5

    def fires(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (sae.encode(a)[..., result.latents] > 0).any(-1)[m]

    on_concept_tokens = fires(acts.target, acts.target_mask).view(-1).float()
    assert fires(acts.target[:, :2], acts.target_mask[:, :2]).float().mean() > 0.9
    assert fires(acts.nontarget, acts.nontarget_mask).float().mean() < 0.05
    assert on_concept_tokens.mean() < 0.6  # it marks the concept's tokens, not every token


def test_layers_of_different_widths_or_without_tokens_are_refused():
    from clear_sae.errors import ClearSaeError

    layers = planted_layers(0, n_layers=2)
    narrow = planted_layers(0, n_layers=1, d=8)["layer.0"]
    with pytest.raises(ClearSaeError, match="share a width"):
        train_joint({**layers, "narrow": narrow}, SMALL, progress=False)
    empty = LayerActivations(
        layers["layer.0"].target,
        torch.zeros_like(layers["layer.0"].target_mask),
        layers["layer.0"].nontarget,
        torch.zeros_like(layers["layer.0"].nontarget_mask),
    )
    with pytest.raises(ClearSaeError, match="no tokens"):
        train_joint({"layer.0": empty}, SMALL, progress=False)


def test_cli_learns_a_new_concept_the_published_way_and_erases_it(minilm, tmp_path, capsys):
    """`clear-sae concept --method clear-joint` on prompts no dictionary was trained for, then the entry erases."""
    from clear_sae.cli import main
    from clear_sae.erase import erase_concepts
    from clear_sae.library import ConceptLibrary

    scenes = [
        "{} on a quiet street at dusk",
        "a close-up of {} on a wooden table",
        "a musician holds {} in a park",
        "{} in a shop window, slow pan",
        "a child looks at {} at a fair",
        "an old photo of {} on a stage",
        "{} under soft studio light",
        "a band plays {} by the sea",
        "a street performer with {} in the rain",
        "{} lying on a bed, morning light",
        "a woman tunes {} backstage",
        "{} resting on a piano",
    ]
    (tmp_path / "t.txt").write_text("\n".join(s.format("an accordion") for s in scenes))
    (tmp_path / "n.txt").write_text("\n".join(s.format("a violin") for s in scenes))
    library_path = tmp_path / "lib.json"
    code = main(
        [
            "concept",
            "--method",
            "clear-joint",
            "--model",
            "minilm",
            "--name",
            "accordion",
            "--target",
            str(tmp_path / "t.txt"),
            "--nontarget",
            str(tmp_path / "n.txt"),
            "--library",
            str(library_path),
            "--joint-rounds",
            "3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    entry = ConceptLibrary.load(library_path).get("accordion")
    assert "<- chosen" in out and entry.hook_point in out and entry.latents
    assert entry.method == "clear-joint" and (tmp_path / "lib_joint" / "accordion").is_dir()
    prompt = ["a sailor plays an accordion on the deck of a ship"]
    hook = entry.hook_point
    clean = minilm.run(prompt, [hook])[hook].acts
    with erase_concepts(minilm, ConceptLibrary.load(library_path), ["accordion"]) as clamps:
        erased = minilm.run(prompt, [hook])[hook].acts
    assert clamps[hook].tokens_edited > 0 and not torch.equal(clean, erased)
    # Without dictionaries the reuse method has nothing to reuse.
    assert (
        main(
            [
                "concept",
                "--name",
                "x",
                "--target",
                str(tmp_path / "t.txt"),
                "--nontarget",
                str(tmp_path / "n.txt"),
                "--library",
                str(library_path),
            ]
        )
        == 3
    )
    assert "--dictionaries is required" in capsys.readouterr().err
