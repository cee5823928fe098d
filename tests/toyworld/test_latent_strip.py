"""One latent's effect on toy-world clips: the boost hook, and `clear-sae latent-strip` end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clear_sae.cli import main
from clear_sae.dictionary import Dictionaries
from clear_sae.erase import LatentBoost, attach
from clear_sae.errors import ClearSaeError

HOOK = "text_encoder.blocks.2"


def test_boost_adds_the_decoder_direction_up_to_the_value_on_real_tokens_only(minilm, minilm_dictionaries):
    sae = Dictionaries(minilm_dictionaries).sae(HOOK)
    prompts = ["a red circle rises", "a long caption about a blue bar that drifts left on a checkerboard"]
    plain = minilm.run(prompts, [HOOK])[HOOK]
    boost = LatentBoost(sae, [7], 5.0)
    with attach(minilm, {HOOK: boost}):
        boosted = minilm.run(prompts, [HOOK])[HOOK]
    real = plain.mask.bool()
    with torch.no_grad():
        before = sae.encode(plain.acts[real].float())[:, 7]
        expected = plain.acts[real] + (5.0 - before)[:, None] * sae.W_dec[7]
    torch.testing.assert_close(boosted.acts[real], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(boosted.acts[~real], plain.acts[~real])  # padding untouched
    assert boost.tokens_edited == int(real.sum())
    with pytest.raises(ClearSaeError, match="boost value"):
        LatentBoost(sae, [7], -1.0)


def test_latent_strip_samples_untouched_clamped_and_boosted_rows(
    capsys, tiny_toy_generator, minilm_dictionaries, tmp_path
):
    prompts = tmp_path / "captions.txt"
    prompts.write_text("a red circle rises on a black backdrop\na blue bar drifts left\n")
    out = tmp_path / "strip.png"
    base = ["latent-strip", "--dictionaries", str(minilm_dictionaries), "--generator", str(tiny_toy_generator)]
    args = ["--latent", f"{HOOK}/3", "--prompts", str(prompts), "--boost", "40", "--steps", "2", "--out", str(out)]
    code = main([*base, *args])
    assert code == 0, capsys.readouterr().err
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # six rows of 32-pixel clips (untouched, clamped, boosted per caption), 2-pixel gaps, all scaled 3 times,
    # right of a 240-pixel label column
    assert sheet.shape[0] == 3 * (6 * 32 + 5 * 2)
    rows = [sheet[3 * 34 * k : 3 * 34 * k + 3 * 32, 240:] for k in range(6)]
    assert not np.array_equal(rows[0], rows[2])  # a large boost changes the first caption's clip
    assert not np.array_equal(rows[0], rows[3])  # the two captions give two clips
    for argv, expected in (
        (["--latent", "blocks.2:3"], "is not HOOK/ID"),
        (["--latent", f"{HOOK}/3"], "no latent statistics"),
        (["--latent", f"{HOOK}/999999", "--boost", "1"], "does not exist at"),
    ):
        code = main([*base, *argv, "--prompts", str(prompts), "--out", str(tmp_path / "x.png")])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error:")]
        assert code == 3 and len(errors) == 1 and expected in errors[0], errors
    for argv, expected in (  # refused before the toy world is loaded or a caption encoded
        (["--latent", f"{HOOK}/999999"], "does not exist at"),
        (["--latent", f"{HOOK}/3", "--boost", "1", "--steps", "0"], "--steps must be between 1"),
    ):
        code = main([*base, *argv, "--out", str(tmp_path / "x.png")])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("clear-sae: error:")]
        assert code == 3 and len(errors) == 1 and expected in errors[0], errors
    assert not (tmp_path / "x.png").exists()
