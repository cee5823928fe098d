"""Toy world renderer and captions."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clear_sae.errors import ClearSaeError
from clear_sae.toyworld.captions import (
    BACKGROUND_WORDS,
    COLOUR_WORDS,
    MOTION_WORDS,
    SHAPE_WORDS,
    caption,
    heldout_vocabulary,
)
from clear_sae.toyworld.concepts import MAX_NONTARGET_RATE
from clear_sae.toyworld.render import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    ClipSpec,
    RenderConfig,
    ToyObject,
    random_spec,
    render_clip,
    shape_mask,
)

EXACT = RenderConfig(noise=0.0)


ROOT = Path(__file__).resolve().parents[2]


def _object_pixels(clip: np.ndarray, colour: str) -> np.ndarray:
    """Per frame, the mask of pixels close to the object's colour."""
    target = np.array(COLOURS[colour], dtype=np.float32)
    return np.abs(clip.astype(np.float32) - target).max(-1) < 30


def test_render_is_seeded_and_shaped():
    spec = ClipSpec(ToyObject("circle", "red", "left"), "checker")
    a, b, c = render_clip(spec, seed=3), render_clip(spec, seed=3), render_clip(spec, seed=4)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shapes_differ_grossly():
    masks = {s: shape_mask(s, 32, 16, 16, 8) for s in SHAPES}
    for s in SHAPES:
        assert masks[s].sum() > 60  # drawn large
    for s, t in itertools.combinations(SHAPES, 2):
        iou = (masks[s] & masks[t]).sum() / (masks[s] | masks[t]).sum()
        assert iou < 0.6, (s, t, iou)


@pytest.mark.parametrize("motion", MOTIONS)
def test_motions_move_the_object_the_right_way(motion):
    clip = render_clip(ClipSpec(ToyObject("cross", "yellow", motion), "plain"), EXACT)
    pixels = _object_pixels(clip, "yellow")
    ys, xs = zip(*[np.nonzero(p) for p in (pixels[0], pixels[-1])])
    first, last = (xs[0].mean(), ys[0].mean(), len(xs[0])), (xs[1].mean(), ys[1].mean(), len(xs[1]))
    expected = {
        "left": first[0] - last[0],
        "right": last[0] - first[0],
        "rise": first[1] - last[1],
        "fall": last[1] - first[1],
        "grow": last[2] - first[2],
        "shrink": first[2] - last[2],
    }
    assert expected[motion] > 5


def test_colours_and_backgrounds_render():
    for colour, background in itertools.product(COLOURS, BACKGROUNDS):
        clip = render_clip(ClipSpec(ToyObject("circle", colour, "grow"), background), EXACT)
        assert _object_pixels(clip, colour)[-1].sum() > 100
    plain = render_clip(ClipSpec(ToyObject("circle", "red", "grow"), "plain"), EXACT)[0]
    checker = render_clip(ClipSpec(ToyObject("circle", "red", "grow"), "checker"), EXACT)[0]
    assert plain[0:4, 0:8].std() < 1 and checker[0:4, 0:8].std() > 10


def test_two_objects_are_both_visible():
    spec = ClipSpec(ToyObject("triangle", "orange", "left"), "plain", ToyObject("cross", "blue", "rise"))
    clip = render_clip(spec, EXACT)
    assert (_object_pixels(clip, "orange").sum((1, 2)) > 20).all()
    assert (_object_pixels(clip, "blue").sum((1, 2)) > 20).all()


def test_heldout_words_never_appear_in_training_captions():
    rng = np.random.default_rng(0)
    heldout = heldout_vocabulary()
    train_words = {
        w
        for table in (COLOUR_WORDS, SHAPE_WORDS, MOTION_WORDS, BACKGROUND_WORDS)
        for values in table.values()
        for w in values[:-1]
    }
    specs = [random_spec(rng) for _ in range(600)]
    train = [caption(s, rng, "train") for s in specs]
    held = [caption(s, rng, "heldout") for s in specs]
    for text in train:
        assert not any(f" {w} " in f" {text} " for w in heldout if w not in train_words), text
    for text, spec in zip(held, specs):
        assert any(w in text for w in COLOUR_WORDS[spec.main.colour][-1:])
        assert SHAPE_WORDS[spec.main.shape][-1] in text
    assert len(set(train)) > 500 and not set(train) & set(held)


def test_captions_name_every_attribute():
    rng = np.random.default_rng(1)
    for shape, colour, motion, background in itertools.product(SHAPES, COLOURS, MOTIONS, BACKGROUNDS):
        text = caption(ClipSpec(ToyObject(shape, colour, motion), background), rng).lower()
        assert any(w.lower() in text for w in COLOUR_WORDS[colour])
        assert any(w.lower() in text for w in SHAPE_WORDS[shape])
        assert any(w in text for w in MOTION_WORDS[motion])
        assert any(w.lower() in text for w in BACKGROUND_WORDS[background])


def test_detector_training_lowers_the_loss_and_round_trips(tmp_path):
    from clear_sae.toyworld.detector import DetectorConfig, detect, load_detector, save_detector, train_detector

    cfg = DetectorConfig(steps=40, width=8, batch_clips=8)
    losses: list[float] = []
    model = train_detector(cfg, progress=False, losses=losses)
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8])
    save_detector(model, cfg, tmp_path, {"note": 1.0})
    again = load_detector(tmp_path)
    clip = render_clip(ClipSpec(ToyObject("circle", "red", "left"), "plain"), seed=0)[None]
    assert np.allclose(detect(model, clip).motion, detect(again, clip).motion)


def test_generator_trains_samples_and_takes_the_erasure_hook(tmp_path):
    import torch

    from clear_sae.backbones import hook_module
    from clear_sae.toyworld.generator import GeneratorConfig, load_generator, save_generator, train_generator

    cfg = GeneratorConfig(heads=2, head_dim=8, layers=1, ffn_dim=32, steps=3, batch_clips=4, polish_steps=2)
    pipe = train_generator(cfg, progress=False)
    video = pipe(
        ["a red circle moves to the right on a dark background"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert video.shape == (1, 8, 32, 32, 3) and video.dtype == np.uint8
    save_generator(pipe, cfg, tmp_path)
    again = load_generator(tmp_path)(
        ["a red circle moves to the right on a dark background"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert np.array_equal(video, again)
    # The text encoder sits where a Wan pipeline keeps it, so clear_sae's hooks find its blocks.
    assert hook_module(pipe, "text_encoder.blocks.3") is pipe.text_encoder.encoder.layer[3]


@pytest.mark.artifacts
def test_second_phase_from_saved_first_phase_gives_the_same_weights(tmp_path):
    import torch

    from clear_sae.toyworld.generator import GeneratorConfig, load_first_phase, save_generator, train_generator

    tiny = dict(heads=2, head_dim=8, layers=1, ffn_dim=32, steps=3, batch_clips=4)
    whole = train_generator(GeneratorConfig(**tiny, polish_steps=2), progress=False).transformer
    first = GeneratorConfig(**tiny, polish_steps=0)
    save_generator(train_generator(first, progress=False), first, tmp_path)
    start = load_first_phase(tmp_path, GeneratorConfig(**tiny, polish_steps=2))
    resumed = train_generator(GeneratorConfig(**tiny, polish_steps=2), progress=False, first_phase=start).transformer
    save_generator(SimpleNamespace(transformer=resumed), GeneratorConfig(**tiny, polish_steps=2), tmp_path / "resumed")
    saved_config = json.loads((tmp_path / "resumed" / "transformer" / "config.json").read_text())
    assert "_name_or_path" not in saved_config and saved_config["num_layers"] == 1  # no path of this machine
    pairs = list(zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(whole.state_dict().values(), load_first_phase(tmp_path, first).state_dict().values())
    )
    with pytest.raises(ClearSaeError, match="layers differ"):
        load_first_phase(tmp_path, GeneratorConfig(**{**tiny, "layers": 2}))
    with pytest.raises(ClearSaeError, match="has no toy_generator.json"):
        load_first_phase(tmp_path / "missing", first)
    shipped = Path(__file__).resolve().parents[2] / "clear_sae" / "toyworld" / "weights" / "generator"
    with pytest.raises(ClearSaeError, match="second phase already"):
        load_first_phase(shipped, GeneratorConfig())


def test_polish_batch_ends_with_unnamed_shapes_that_grow_or_shrink():
    from clear_sae.toyworld.generator import GeneratorConfig, polish_batch

    captions, clips = polish_batch(np.random.default_rng(0), 16, RenderConfig(), GeneratorConfig(polish_share=0.25))
    assert len(captions) == len(clips) == 16 and clips.dtype == np.float32 and clips.shape[1] == 3
    size_words = MOTION_WORDS["grow"] + MOTION_WORDS["shrink"]
    shape_words = [w for words in SHAPE_WORDS.values() for w in words]
    for text in captions[-4:]:
        assert any(w in text for w in size_words) and not any(w in text for w in shape_words), text
    named = [t for t in captions[:-4] if any(w in t for w in shape_words)]
    assert len(named) >= 8  # the rest of the batch keeps the world's own mix


def test_polish_batch_calls_some_unnamed_shapes_by_other_nouns():
    """The second phase names an unnamed shape "thing", "object"... in about `polish_noun_rate` of captions."""
    import re

    from clear_sae.toyworld.generator import GeneratorConfig, polish_batch

    def unnamed_shape_names(cfg: GeneratorConfig) -> list[str]:
        rng = np.random.default_rng(3)
        focused = [c for _ in range(8) for c in polish_batch(rng, 8, RenderConfig(), cfg)[0][-4:]]
        pattern = re.compile(r"\b(" + "|".join(("shape",) + cfg.polish_nouns) + r")\b")
        return [pattern.findall(text)[0] for text in focused]  # every one names its unnamed shape somehow

    names = unnamed_shape_names(GeneratorConfig(polish_share=0.5))
    assert 12 <= sum(n != "shape" for n in names) <= 30  # 32 captions, 70% expected
    assert set(names) - {"shape"} <= set(GeneratorConfig.polish_nouns) and len(set(names)) >= 4
    assert set(unnamed_shape_names(GeneratorConfig(polish_share=0.5, polish_noun_rate=0.0))) == {"shape"}


def test_a_named_shape_ignores_the_unnamed_shape_noun():
    from dataclasses import replace

    from clear_sae.toyworld.render import NEUTRAL

    spec = ClipSpec(ToyObject("circle", "red", "left"), "plain")
    assert caption(spec, np.random.default_rng(0), unnamed_shape="thing") == caption(spec, np.random.default_rng(0))
    unnamed = replace(spec, main=replace(spec.main, shape=NEUTRAL["shape"]))
    text = caption(unnamed, np.random.default_rng(0), unnamed_shape="thing")
    assert text == caption(unnamed, np.random.default_rng(0)).replace("shape", "thing") and "thing" in text


@pytest.mark.artifacts
def test_shipped_detector_is_accurate_on_fresh_clips():
    from clear_sae.toyworld.detector import accuracy, load_detector

    folder = Path(__file__).resolve().parents[2] / "clear_sae" / "toyworld" / "weights" / "detector"
    measured = accuracy(load_detector(folder), n_clips=200, seed=2024)
    assert measured["shape_frames"] >= 0.97
    assert measured["colour_frames"] >= 0.97
    assert measured["motion_clips"] >= 0.97


def test_generator_learning_rate_warms_up_holds_and_decays_to_zero():
    from clear_sae.toyworld.generator import GeneratorConfig, learning_rate_factor

    cfg = GeneratorConfig(steps=1000, decay_fraction=0.2)
    factors = [learning_rate_factor(s, cfg) for s in range(cfg.steps)]
    assert factors[0] == 1 / 50 and factors[49] == 1.0  # warm-up over the first 5%
    assert all(f == 1.0 for f in factors[50:800])
    assert all(a > b for a, b in zip(factors[800:], factors[801:]))  # strictly falling over the last 20%
    assert factors[-1] == 1 / 200


def test_unnamed_attributes_render_as_a_grey_square_standing_still():
    from clear_sae.toyworld.render import NEUTRAL, NEUTRAL_RGB

    clip = render_clip(ClipSpec(ToyObject(NEUTRAL["shape"], NEUTRAL["colour"], NEUTRAL["motion"]), "plain"), EXACT)
    grey = np.abs(clip.astype(np.float32) - np.array(NEUTRAL_RGB, np.float32)).max(-1) < 30
    assert np.array_equal(grey[0], grey[-1])  # still
    assert grey[0].sum() == shape_mask("square", 32, 16, 16, 8).sum() > 100
    for colour in COLOURS:
        assert not _object_pixels(clip, colour).any()
    square = shape_mask("square", 32, 16, 16, 8)
    for s in SHAPES:
        other = shape_mask(s, 32, 16, 16, 8)
        assert (square & other).sum() / (square | other).sum() < 0.8, s


def test_a_caption_with_an_attribute_unnamed_is_the_full_caption_without_its_words():
    """What `evaluate` samples as "no words" is exactly what the generator was trained on for a neutral value."""
    from dataclasses import replace

    from clear_sae.toyworld.captions import NEUTRAL_WORDS, without_words
    from clear_sae.toyworld.render import NEUTRAL

    rng = np.random.default_rng(8)
    for i in range(300):
        spec = random_spec(rng, second_object_rate=0.0)
        axis = ("colour", "shape", "motion")[i % 3]
        split = ("train", "heldout")[i % 2]
        named = caption(spec, np.random.default_rng(i), split)
        unnamed = caption(
            replace(spec, main=replace(spec.main, **{axis: NEUTRAL[axis]})), np.random.default_rng(i), split
        )
        assert unnamed == without_words(named, axis, getattr(spec.main, axis)), (named, unnamed)
        assert unnamed != named and NEUTRAL_WORDS[axis] in unnamed


@pytest.mark.artifacts
def test_neutral_values_are_drawn_only_when_asked_and_carry_no_detector_label():
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import attribute_of, concept_pairs
    from clear_sae.toyworld.detector import clip_labels
    from clear_sae.toyworld.render import NEUTRAL

    # Without neutral values the random stream is the old one: the shipped library's toy concepts were learned
    # from exactly the prompts concept_pairs still draws.
    shipped = ConceptLibrary.load(Path(__file__).resolve().parents[2] / "dictionaries" / "minilm" / "concepts.json")
    for name in ("red", "bar", "shrink"):
        targets, nontargets, _, _ = concept_pairs(*attribute_of(name), len(shipped.get(name).target_prompts))
        assert (targets, nontargets) == (shipped.get(name).target_prompts, shipped.get(name).nontarget_prompts)
    rng = np.random.default_rng(6)
    objects = [random_spec(rng, second_object_rate=0.0, neutral_rate=0.3).main for _ in range(400)]
    for axis, value in NEUTRAL.items():
        share = np.mean([getattr(o, axis) == value for o in objects])
        assert 0.2 < share < 0.4, (axis, share)
    shape, colour, motion = clip_labels(
        ClipSpec(ToyObject("square", "grey", "left"), "plain", ToyObject("circle", "grey", "still"))
    )
    assert shape.tolist() == [float(s == "circle") for s in SHAPES]
    assert not colour.any() and motion.tolist() == [float(m == "left") for m in MOTIONS]


def test_the_generator_reads_frame_row_and_column_as_extra_channels():
    import torch

    from clear_sae.toyworld.generator import GeneratorConfig, build_transformer, with_coordinates

    x = torch.randn(2, 3, 8, 32, 32)
    with_coords = with_coordinates(build_transformer(GeneratorConfig(layers=1)), x)
    assert with_coords.shape == (2, 6, 8, 32, 32) and torch.equal(with_coords[:, :3], x)
    frame, row, column = with_coords[0, 3:]
    assert torch.equal(frame[:, 0, 0], torch.linspace(-1, 1, 8)) and (frame == frame[:, :1, :1]).all()
    assert torch.equal(row[0, :, 0], torch.linspace(-1, 1, 32)) and torch.equal(column[0, 0], torch.linspace(-1, 1, 32))
    # A generator trained without them (3 input channels) is given the clip alone.
    assert with_coordinates(build_transformer(GeneratorConfig(layers=1, coordinates=False)), x) is x


@pytest.mark.artifacts
def test_the_fidelity_script_reads_the_shipped_generator_and_breaks_down_the_unnamed_shape(analysis_script, tmp_path):
    import json

    script = analysis_script("toy_generator_fidelity")
    out = tmp_path / "fidelity.json"
    assert (
        script.main(
            [
                "--generator",
                str(ROOT / "clear_sae" / "toyworld" / "weights" / "generator"),
                "--clips",
                "4",
                "--neutral-clips",
                "6",
                "--steps",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["colour_frames"] >= 0.75 and result["neutral_colour_frames"] >= 0.75
    # Every frame is either the square (no shape found) or read as some shape: no class can exceed the rest.
    not_square = 1 - result["neutral_shape_frames"]
    assert set(result["neutral_shape_read_as"]) == set(SHAPES)
    assert max(result["neutral_shape_read_as"].values()) <= not_square + 1e-4
    assert set(result["neutral_shape_not_square_by_motion"]) <= set(MOTIONS)
    # The reserved slice's captions are measured apart (the shipped generator was trained without them).
    reserved = tmp_path / "reserved.json"
    generator = str(ROOT / "clear_sae" / "toyworld" / "weights" / "generator")
    args = ["--generator", generator, "--clips", "2", "--neutral-clips", "0", "--steps", "2", "--split", "reserved"]
    assert script.main([*args, "--out", str(reserved)]) == 0
    measured = json.loads(reserved.read_text())
    assert measured["split"] == "reserved" and measured["clips"] == 2 and 0 <= measured["colour_frames"] <= 1


@pytest.mark.artifacts
def test_the_fidelity_script_reads_which_shape_a_noun_that_names_none_gets(analysis_script, tmp_path):
    import json

    script = analysis_script("toy_generator_fidelity")
    out = tmp_path / "fidelity.json"
    assert (
        script.main(
            [
                "--generator",
                str(ROOT / "clear_sae" / "toyworld" / "weights" / "generator"),
                "--clips",
                "2",
                "--neutral-clips",
                "0",
                "--steps",
                "6",
                "--nouns",
                "thing,zorp",
                "--noun-clips",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    by_noun = json.loads(out.read_text())["unnamed_shape_by_noun"]
    assert list(by_noun) == ["thing", "zorp"]
    for reading in by_noun.values():
        assert set(reading["read_as"]) == set(SHAPES)
        assert max(reading["read_as"].values()) <= 1 - reading["square_frames"] + 1e-4
    assert by_noun["thing"]["square_frames"] >= 0.5  # the shipped generator draws "a red thing" as the square


@pytest.mark.artifacts
def test_the_token_swap_script_finds_the_concept_on_its_word_and_not_without_it(analysis_script, tmp_path, capsys):
    import json

    script = analysis_script("toy_token_swap")
    assert script.differing_span([1, 2, 3, 4], [1, 9, 9, 4]) == (1, 3)
    assert script.differing_span([1, 2, 3], [1, 2]) is None and script.differing_span([1, 2, 3], [9, 2, 9]) is None
    out = tmp_path / "swap.json"
    assert script.main(["--concept", "circle", "--clips", "4", "--seed", "3000", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rates = result["rates"]
    assert result["captions"] == 4 and len(rates) == 6  # "circle" and "disc" are one token, as is "shape"
    assert rates["original"]["rate"] >= 75 and rates["no words"]["rate"] <= 25
    # The original caption with the neutral word's states on the word's tokens is no longer mostly a circle.
    assert rates["original context + neutral word"]["rate"] < rates["original"]["rate"]
    assert "4 of 4 captions" in capsys.readouterr().out


@pytest.mark.artifacts
def test_the_latent_budget_script_prints_the_selection_in_its_own_order(analysis_script, capsys):
    script = analysis_script("toy_latent_budget")
    assert script.main(["--concept", "circle", "--layer", "blocks.1", "--rows", "12"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("share of target prompts per word: 'circle'")
    rows = [line for line in lines if line.startswith("latent ")]
    assert len(rows) == 12 and any(" taken " in r for r in rows) and any(" left " in r for r in rows)
    # The union of the latents taken never exceeds the selection's non-target budget (the toy world's by default).
    unions = [float(r.split("taken so far ")[1].split(";")[0]) for r in rows]
    assert unions == sorted(unions) and unions[-1] <= MAX_NONTARGET_RATE


@pytest.mark.artifacts
def test_shipped_purple_entry_leaves_the_word_blue_alone(analysis_script, minilm):
    """When the toy ladder started at tolerance 0.2, purple's entry took a latent that fires on nearly every
    caption naming "blue" (a fifth of purple's non-targets are blue, so 0.2 admits it), and erasing it changed
    blue non-target clips: it fired on every one of these "blue" captions. The shipped entry fires on every
    purple caption and on few that say "blue" (4 of 42 when this test was written)."""
    from clear_sae.library import ConceptLibrary
    from clear_sae.toyworld.concepts import concept_pairs
    from clear_sae.toyworld.protocol import EVAL_SEED

    script = analysis_script("toy_neighbour_firing")
    library = ConceptLibrary.load(script.SHIPPED_LIBRARY)
    purple = concept_pairs("colour", "purple", 40, seed=EVAL_SEED)[0]
    blue = [p for p in concept_pairs("colour", "blue", 80, seed=EVAL_SEED)[0] if "blue" in p.lower().split()]
    assert len(blue) >= 20
    assert np.mean(script.prompts_clamped(minilm, library, "purple", purple)) >= 0.95
    assert np.mean(script.prompts_clamped(minilm, library, "purple", blue)) <= 0.25


@pytest.mark.artifacts
def test_the_neighbour_firing_script_groups_nontargets_by_the_value_swapped_in(analysis_script, capsys):
    script = analysis_script("toy_neighbour_firing")
    assert script.main(["--concepts", "purple,circle", "--pairs", "40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["purple", "circle"]
    groups = {line.split()[0]: re.findall(r"  ([a-z]+) (\d+)%", line.split(":", 1)[1]) for line in lines}
    assert [g for g, _ in groups["purple"]] == ["blue", "green", "orange", "red", "yellow"]
    assert [g for g, _ in groups["circle"]] == ["bar", "cross", "triangle"]
    # The overall share is the per-group shares weighted by group size, so it lies between their extremes.
    for name, line in zip(("purple", "circle"), lines):
        overall = float(re.search(r"clamped ([\d.]+)%", line).group(1))
        shares = [int(v) for _, v in groups[name]]
        assert min(shares) - 0.5 <= overall <= max(shares) + 0.5


def test_the_rule_based_judge_reads_fresh_renders_as_they_were_drawn():
    """The second judge learns nothing: on freshly rendered clips (two objects in 30%, neutral values in 15%) it
    names the shapes and colours of most frames and the motions of most clips exactly, neutral values as none."""
    from clear_sae.toyworld.geometry import accuracy

    measured = accuracy(n_clips=120)
    assert measured["shape_frames"] >= 0.9 and measured["colour_frames"] >= 0.9 and measured["motion_clips"] >= 0.85


@pytest.mark.parametrize(
    "obj, found",
    [
        (ToyObject("circle", "red", "right"), ("circle", "red", "right")),
        (ToyObject("cross", "blue", "rise"), ("cross", "blue", "rise")),
        (ToyObject("bar", "yellow", "fall"), ("bar", "yellow", "fall")),
        (ToyObject("triangle", "purple", "grow"), ("triangle", "purple", "grow")),
        (ToyObject("square", "grey", "still"), (None, None, None)),  # the neutral values are no class
    ],
)
def test_the_rule_based_judge_names_one_objects_shape_colour_and_motion(obj, found):
    from clear_sae.toyworld.detector import COLOUR_NAMES
    from clear_sae.toyworld.geometry import judge_clips

    clip = render_clip(ClipSpec(obj, background="gradient"), seed=3)
    det = judge_clips(clip[None])
    shape, colour, motion = found
    middle = det.shape.shape[1] // 2
    assert [SHAPES[i] for i in np.nonzero(det.shape[0, middle])[0]] == ([shape] if shape else [])
    assert [COLOUR_NAMES[i] for i in np.nonzero(det.colour[0, middle])[0]] == ([colour] if colour else [])
    assert [MOTIONS[i] for i in np.nonzero(det.motion[0])[0]] == ([motion] if motion else [])
