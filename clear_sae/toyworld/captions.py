"""Captions for toy-world clips: many templates, several synonyms per attribute, a held-out slice and a reserved one.

The held-out slice (`split="heldout"`) uses synonyms and templates that never occur in training
captions (`split="train"`), so erasure can be measured on paraphrases the dictionaries and the
generator have not seen. Which words and templates are held out is fixed here:

- the last synonym listed for every colour, shape, motion and background;
- the last `HELDOUT_TEMPLATES` templates of each list.

The reserved slice (`split="reserved"`) is meant for the sealed protocol's test: its own synonyms
(`RESERVED_WORDS`) and templates. The words of its colour, shape and motion synonyms (`reserved_vocabulary`) occur
nowhere in the dictionaries' corpus, the prompt files or the learning and calibration prompts, and hold no naming
word of another slice (its background phrases are context and are not held to that). A generator trained with
`GeneratorConfig.reserved_rate > 0` sees them, so they are rendered, while nothing a concept is learned or
calibrated from ever does. No evaluation reads the slice yet: the shipped generator was trained without it.
"""

from __future__ import annotations

import re

import numpy as np

from clear_sae.toyworld.render import NEUTRAL, ClipSpec, ToyObject

COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "grass-green"],
    "blue": ["blue", "cobalt", "azure"],
    "yellow": ["yellow", "lemon", "golden"],
    "purple": ["purple", "violet", "lilac"],
    "orange": ["orange", "tangerine", "amber"],
}
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "disc", "round dot"],
    "bar": ["bar", "horizontal bar", "plank"],
    "triangle": ["triangle", "three-sided shape", "wedge"],
    "cross": ["cross", "X shape", "diagonal cross"],
}
MOTION_WORDS: dict[str, list[str]] = {
    "left": ["moves to the left", "drifts left", "glides to the left"],
    "right": ["moves to the right", "drifts right", "slides to the right"],
    "rise": ["rises", "floats upward", "climbs toward the top"],
    "fall": ["falls", "drops down", "sinks toward the bottom"],
    "grow": ["grows", "gets bigger", "expands"],
    "shrink": ["shrinks", "gets smaller", "contracts"],
}
BACKGROUND_WORDS: dict[str, list[str]] = {
    "plain": ["on a dark background", "against a black backdrop", "in front of a plain dark wall"],
    "checker": ["on a checkerboard", "over a checkered floor", "against a chessboard pattern"],
    "gradient": ["against a sunset gradient", "over a twilight sky", "in front of a dusky gradient"],
}
WORDS_BY_AXIS: dict[str, dict[str, list[str]]] = {"colour": COLOUR_WORDS, "shape": SHAPE_WORDS, "motion": MOTION_WORDS}
NEUTRAL_WORDS = {"colour": "", "shape": "shape", "motion": "sits"}
"""The words of an unnamed attribute, which the renderer draws with its neutral value (a grey square that
stands still); `without_words` puts them where a concept's words were."""
ONE_OBJECT_TEMPLATES = [
    "{a_obj} {motion} {bg}",
    "{A_obj} {motion} {bg}.",
    "a short clip: {a_obj} {motion} {bg}",
    "video of {a_obj} that {motion} {bg}",
    "{bg_cap}, {a_obj} {motion}",
    "animation where {a_obj} {motion} {bg}",
    "we see {a_obj}; it {motion} {bg}",
    "simple footage, {a_obj} {motion}, {bg}",
    "close-up of {a_obj} that {motion} {bg}",
    "{bg_cap}: {a_obj} {motion} slowly",
]
TWO_OBJECT_TEMPLATES = [
    "{a_obj} {motion} while {a_obj2} {motion2} {bg}",
    "{A_obj} {motion} and {a_obj2} {motion2}, {bg}",
    "{bg_cap}, {a_obj} {motion} next to {a_obj2} that {motion2}",
    "two shapes: {a_obj} {motion} and {a_obj2} {motion2} {bg}",
    "video where {a_obj} {motion} as {a_obj2} {motion2} {bg}",
]
HELDOUT_TEMPLATES = 2
RESERVED_WORDS: dict[str, dict[str, list[str]]] = {
    "colour": {
        "red": ["vermilion"],
        "green": ["viridian"],
        "blue": ["cerulean"],
        "yellow": ["saffron"],
        "purple": ["amethyst"],
        "orange": ["apricot"],
    },
    "shape": {"circle": ["orb"], "bar": ["slab"], "triangle": ["trigon"], "cross": ["saltire"]},
    "motion": {
        "left": ["roams westward"],
        "right": ["roams eastward"],
        "rise": ["soars"],
        "fall": ["descends"],
        "grow": ["swells"],
        "shrink": ["dwindles"],
    },
    "background": {
        "plain": ["before a featureless void"],
        "checker": ["over chequered tiling"],
        "gradient": ["beneath an ombre horizon"],
    },
}
"""The reserved slice's synonyms: test-only paraphrases (see the module's docstring)."""
RESERVED_ONE_OBJECT_TEMPLATES = ["in this scene {a_obj} {motion} {bg}", "{A_obj} {motion}, seen {bg}."]
RESERVED_TWO_OBJECT_TEMPLATES = ["{a_obj} {motion}; meanwhile {a_obj2} {motion2} {bg}"]
SPLITS = ("train", "heldout", "reserved")


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def _pick_word(words: list[str], split: str, rng: np.random.Generator, reserved: list[str] | None = None) -> str:
    """A word of `split`'s pool: all but the last of `words` (train), the last (heldout), or `reserved`."""
    if split == "reserved":
        pool = words if reserved is None else reserved  # an unnamed attribute keeps its neutral word
    else:
        pool = words[:-1] if split == "train" else words[-1:]
    return str(pool[rng.integers(len(pool))])


def _pick_template(templates: list[str], split: str, rng: np.random.Generator, reserved: list[str]) -> str:
    if split == "reserved":
        pool = reserved
    else:
        pool = templates[:-HELDOUT_TEMPLATES] if split == "train" else templates[-HELDOUT_TEMPLATES:]
    return str(pool[rng.integers(len(pool))])


def _word(axis: str, value: str, split: str, rng: np.random.Generator, unnamed: str | None = None) -> str:
    if value == NEUTRAL[axis]:
        # Drawn like a named value's synonym (every list has 3), so that a caption with the attribute unnamed is
        # word for word the caption with it named, less its words: what `without_words` makes of it.
        return _pick_word([NEUTRAL_WORDS[axis] if unnamed is None else unnamed] * 3, split, rng)
    return _pick_word(WORDS_BY_AXIS[axis][value], split, rng, RESERVED_WORDS[axis][value])


def _object_phrase(
    obj: ToyObject, split: str, rng: np.random.Generator, unnamed_shape: str | None = None
) -> tuple[str, str]:
    colour = _word("colour", obj.colour, split, rng)
    shape = _word("shape", obj.shape, split, rng, unnamed_shape)
    return _article(f"{colour} {shape}".strip()), _word("motion", obj.motion, split, rng)


def caption(spec: ClipSpec, rng: np.random.Generator, split: str = "train", unnamed_shape: str | None = None) -> str:
    """A caption for `spec` using only the words and templates of `split` (train, heldout or reserved).

    An object whose shape is unnamed (the neutral square) is called `unnamed_shape`, "shape" by default; the
    generator's second phase also calls it "thing", "object" and the like (`GeneratorConfig.polish_nouns`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use train, heldout or reserved")
    a_obj, motion = _object_phrase(spec.main, split, rng, unnamed_shape)
    bg = _pick_word(BACKGROUND_WORDS[spec.background], split, rng, RESERVED_WORDS["background"][spec.background])
    fields = {
        "a_obj": a_obj,
        "A_obj": a_obj[0].upper() + a_obj[1:],
        "motion": motion,
        "bg": bg,
        "bg_cap": bg[0].upper() + bg[1:],
    }
    if spec.second is None:
        template = _pick_template(ONE_OBJECT_TEMPLATES, split, rng, RESERVED_ONE_OBJECT_TEMPLATES)
    else:
        fields["a_obj2"], fields["motion2"] = _object_phrase(spec.second, split, rng, unnamed_shape)
        template = _pick_template(TWO_OBJECT_TEMPLATES, split, rng, RESERVED_TWO_OBJECT_TEMPLATES)
    return template.format(**fields)


def training_words(axis: str, value: str) -> list[str]:
    """The value's synonyms that training captions use (the held-out one stays unseen)."""
    return WORDS_BY_AXIS[axis][value][:-1]


def keyword_caption(spec: ClipSpec, rng: np.random.Generator) -> str | None:
    """A bare keyword caption for `spec`: the training synonyms of one named attribute of its main object, comma
    separated ("red, crimson"), the way the negative-prompt baseline writes its negative prompt. None when the main
    object's colour, shape and motion are all unnamed."""
    named = [(axis, getattr(spec.main, axis)) for axis in WORDS_BY_AXIS if getattr(spec.main, axis) != NEUTRAL[axis]]
    if not named:
        return None
    axis, value = named[rng.integers(len(named))]
    return ", ".join(training_words(axis, value))


def without_words(prompt: str, axis: str, value: str) -> str:
    """`prompt` with every synonym of `value` on `axis` replaced by the axis's neutral word ("a crimson disc
    drifts left" without red is "a disc drifts left", without circle "a crimson shape drifts left")."""
    text = _synonyms(axis, value).sub(NEUTRAL_WORDS[axis], prompt)
    text = re.sub(r" {2,}", " ", text).strip()
    text = re.sub(r" ([,.;:])", r"\1", text)
    # Re-choose each article for the word that now follows it.
    return re.sub(r"\b([Aa])n? (?=(\w))", lambda m: m.group(1) + ("n " if m.group(2)[0] in "aeiouAEIOU" else " "), text)


def concept_word(prompt: str, axis: str, value: str) -> str | None:
    """Which synonym of `value` on `axis` the prompt names first (None if none does)."""
    match = _synonyms(axis, value).search(prompt)
    if match is None:
        return None
    return next(w for w in all_synonyms(axis, value) if w.lower() == match.group(0).lower())


def naming_word(synonym: str, value: str) -> str:
    """The word of `synonym` that names `value` ("left" in "drifts left", "rises" for rise), or else its longest
    word (the first of equal length: "floats" in "floats upward")."""
    words = synonym.split(" ")
    naming = [w for w in words if value in w.lower()]
    return naming[0] if naming else max(words, key=len)


def own_naming_word(axis: str, value: str) -> str:
    """The naming word of the value's own name, its first synonym: "red", "left" in "moves to the left"."""
    return naming_word(WORDS_BY_AXIS[axis][value][0], value)


def renamed(prompt: str, axis: str, value: str, word: str) -> str:
    """`prompt` with the synonym of `value` it uses replaced by the value's own name (its first synonym) in which
    the naming word is `word`: "a crimson disc drifts left" with "lfet" for left is "a crimson disc moves to the
    lfet". No other synonym of the value is left to name it."""
    name = WORDS_BY_AXIS[axis][value][0]
    replacement = re.sub(rf"\b{re.escape(own_naming_word(axis, value))}\b", lambda _: word, name, count=1)
    return _synonyms(axis, value).sub(lambda _: replacement, prompt, count=1)


def _synonyms(axis: str, value: str) -> re.Pattern[str]:
    """A case-blind pattern for any whole synonym of `value`, longest first ("diagonal cross" before "cross")."""
    words = sorted(all_synonyms(axis, value), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", flags=re.IGNORECASE)


def all_synonyms(axis: str, value: str) -> list[str]:
    """Every synonym of `value` on `axis`: the training and held-out ones, then the reserved ones."""
    return WORDS_BY_AXIS[axis][value] + RESERVED_WORDS[axis][value]


def reserved_vocabulary() -> set[str]:
    """Every word of every reserved synonym of a colour, shape or motion, lower-cased: the words that must occur in
    nothing a concept is learned or calibrated from (the backgrounds' reserved phrases are context, not concepts)."""
    return {
        w.lower()
        for axis, table in WORDS_BY_AXIS.items()
        for v in table
        for s in RESERVED_WORDS[axis][v]
        for w in s.split()
    }


def heldout_vocabulary() -> set[str]:
    """Every held-out synonym (these never appear in a training caption)."""
    words: set[str] = set()
    for table in (COLOUR_WORDS, SHAPE_WORDS, MOTION_WORDS, BACKGROUND_WORDS):
        words.update(values[-1] for values in table.values())
    return words
