"""Latent pages: a folder of static files, opened from disk without a server, with a page for every latent that has
stored statistics (`clear_sae.features`), found by layer and id or by a word of its top contexts.

The folder holds `index.html` (the viewer), `index.js` (the layers and their widths) and, per layer `L` (its
position in the dictionaries), `L<L>-<k>.js` files of `CHUNK` latents each and one `L<L>-words.js` index from the
words a latent fires on most (those of its top contexts) to the latents. Each data file is a script that hands its
JSON to the viewer, which is how a page opened from disk may read it; the viewer loads a layer's files only
when a page or a search needs them, so a dictionary of 24 layers x 65,536 latents opens as fast as a small one.
A page's URL fragment names it (`index.html#<hook point>/<latent>`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from clear_sae.errors import ClearSaeError
from clear_sae.features import LayerFeatures, load_layer_features
from clear_sae.io import atomic_write_text

if TYPE_CHECKING:
    from clear_sae.dictionary import Dictionaries

CHUNK = 256
"""Latents per data file."""
TEMPLATE = Path(__file__).resolve().parent / "data" / "latents_template.html"
WORD = re.compile(r"[a-z0-9]+")


def script(call: str, name: str, payload: Any) -> str:
    """A data file: one call that hands `payload` to the viewer (`<` escaped so no string can close a tag)."""
    text = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    return f"clearSae.{call}({json.dumps(name)},{text});\n"


def compact_example(example: dict[str, Any]) -> list[Any]:
    """One context: its prompt, the token chosen, its value, and the tokens where the latent fires."""
    fired = [[i, round(v, 3)] for i, v in enumerate(example["acts"]) if v > 0]
    return [example["prompt"], example["position"], round(example["value"], 3), fired]


def compact_page(page: dict[str, Any]) -> dict[str, Any]:
    """A latent's page data, the contexts by reference to the chunk's prompts."""
    out = {
        "density": page["density"],
        "fires": page["fires"],
        "max": round(page["max"], 4),
        "mean": round(page["mean"], 4),
        "hist": page["hist"]["counts"],
        "top": [compact_example(e) for e in page["top"]],
        "samples": [compact_example(e) for e in page["samples"]],
    }
    for name in ("enc_pos", "enc_neg", "dec_pos", "dec_neg", "dec_hist"):
        if name in page:
            out[name] = page[name]
    return out


def words_of_token(token: str) -> list[str]:
    """The searchable words of a token string (lower case, sub-word marks dropped)."""
    return WORD.findall(token.lower().replace("##", "").replace("\u2581", " ").replace("\u0120", " "))


def layer_chunks(stats: LayerFeatures, words: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
    """A layer's data files' contents, `CHUNK` latents each, one at a time; `words` collects the layer's word index
    on the way: each word a latent fires on most in its top contexts, with the latents (by id) that do."""
    for start in range(0, stats.d_sae, CHUNK):
        latents, prompts = {}, {}
        for j in range(start, min(start + CHUNK, stats.d_sae)):
            page = stats.latent(j)
            latents[str(j)] = compact_page(page)
            for example in page["top"] + page["samples"]:
                prompts[str(example["prompt"])] = example["tokens"]
            for example in page["top"]:
                for word in words_of_token(example["tokens"][example["position"]]):
                    found = words.setdefault(word, [])
                    if not found or found[-1] != j:
                        found.append(j)
        yield {"latents": latents, "prompts": prompts}


def is_latent_pages(folder: Path) -> bool:
    """Whether `folder` holds latent pages this module wrote (its index begins with the viewer's call)."""
    try:
        with open(folder / "index.js", encoding="utf-8") as index:
            return index.read(len("clearSae.index(")) == "clearSae.index("
    except OSError:
        return False


def write_latent_pages(dictionaries: "Dictionaries", out: str | Path, title: str = "") -> Path | None:
    """Write the latent pages of every layer of `dictionaries` with current statistics into folder `out` (replaced
    as a whole, through a folder beside it); returns the viewer's path, or None where no layer has statistics."""
    out = Path(out)
    current = {}
    for hook in dictionaries.hook_points:
        stats = load_layer_features(dictionaries, hook, weights=dictionaries.fingerprint(hook))
        if stats is not None:
            current[hook] = stats
    if not current:
        return None
    if out.is_symlink() or (out.exists() and not is_latent_pages(out)):
        raise ClearSaeError(f"{out} exists and holds no latent pages; remove it or write the report elsewhere")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    layers = []
    for hook, stats in current.items():
        position = dictionaries.hook_points.index(hook)
        words: dict[str, list[int]] = {}
        for k, chunk in enumerate(layer_chunks(stats, words)):  # written as made: a layer never sits in memory
            atomic_write_text(partial / f"L{position}-{k}.js", script("chunk", f"L{position}-{k}", chunk))
        atomic_write_text(partial / f"L{position}-words.js", script("words", f"L{position}-words", words))
        layers.append(
            {"hook": hook, "file": f"L{position}", "d_sae": stats.d_sae, "rows": stats.record["rows"], "chunk": CHUNK}
        )
    settings = next(iter(current.values())).record["settings"]
    index = {"title": title or str(dictionaries.root), "layers": layers, "settings": settings}
    atomic_write_text(partial / "index.js", script("index", "index", index))
    atomic_write_text(partial / "index.html", TEMPLATE.read_text(encoding="utf-8"))
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return out / "index.html"
