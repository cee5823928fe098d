"""Checks for the synthetic demo corpus and the concept target/non-target prompt sets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clear_sae import corpus
from clear_sae.corpus import CONCEPTS, KINDS, concept_prompts, generate_captions, write_demo_prompts

SHIPPED = Path(corpus.__file__).resolve().parent / "data" / "prompts"


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return generate_captions()


def _grammar_problems(text: str) -> list[str]:
    problems = []
    if re.search(r"\b(a|an|the)\s+(a|an|the)\b", text, re.IGNORECASE):
        problems.append("double article")
    if any(bad in text for bad in ("  ", " ,", ",,", " .", ".,", "{", "}")):
        problems.append("spacing or punctuation")
    for match in re.finditer(r"\b(a|an) ([\w-]+)", text, re.IGNORECASE):
        if corpus._article(match.group(2)) != match.group(1).lower():
            problems.append(f"article in {match.group(0)!r}")
    if not text[:1].isupper():
        problems.append("lower-case start")
    return problems


def test_captions_are_deterministic() -> None:
    assert generate_captions(500, seed=3) == generate_captions(500, seed=3)
    assert generate_captions(500, seed=3) != generate_captions(500, seed=4)


def test_corpus_size_distinct_and_varied(captions: list[str]) -> None:
    assert len(captions) == 6000
    assert len(set(captions)) == len(captions)
    assert all(c == c.strip() and c and not c.startswith("#") and "\n" not in c for c in captions)
    used = {index for _, index, _ in corpus._generate(6000, 0)}
    assert len(corpus.TEMPLATES) >= 30
    assert len(used) >= 30


def test_corpus_reads_cleanly(captions: list[str]) -> None:
    bad = [(c, _grammar_problems(c)) for c in captions if _grammar_problems(c)]
    assert not bad, bad[:5]


def test_every_concept_in_corpus_in_a_small_share(captions: list[str]) -> None:
    assert len(CONCEPTS) >= 9
    for name in CONCEPTS:
        count = sum(corpus.mentions_concept(c, name) for c in captions)
        assert 100 <= count <= 250, (name, count)
    generic = [c for c in captions if not any(corpus.mentions_concept(c, n) for n in CONCEPTS)]
    assert len(generic) > len(captions) // 2


@pytest.fixture(scope="module")
def broad_captions() -> list[str]:
    return generate_captions(3000, broad=True)


def _words(captions: list[str]) -> set[str]:
    return {word for caption in captions for word in re.findall(r"[a-z']+", caption.lower())}


def test_the_broad_corpus_reads_cleanly_and_names_many_more_words(broad_captions: list[str]) -> None:
    assert broad_captions == generate_captions(3000, broad=True)
    assert len(set(broad_captions)) == len(broad_captions) == 3000
    bad = [(c, _grammar_problems(c)) for c in broad_captions if _grammar_problems(c)]
    assert not bad, bad[:5]
    assert len(_words(broad_captions)) > 1.5 * len(_words(generate_captions(3000)))
    assert any("pizza" in caption or "pancake" in caption for caption in broad_captions)


def test_the_broad_vocabulary_never_names_a_concept_and_only_adds_to_the_demo_lists() -> None:
    broad, demo = corpus.broad_vocabulary(), corpus.DEMO_VOCABULARY
    added = [
        word
        for name, (nouns, _, modes) in broad.categories.items()
        for word in nouns + [action for _, actions, _ in modes for action in actions]
    ]
    added += [noun for pairs in broad.places.values() for _, noun in pairs] + broad.times + broad.styles
    named = [(word, name) for word in added for name in CONCEPTS if corpus.mentions_concept(word, name)]
    assert not named
    for name, (nouns, weight, modes) in demo.categories.items():
        assert broad.categories[name][0][: len(nouns)] == nouns and broad.categories[name][1] == weight
        assert [tag for tag, _, _ in broad.categories[name][2]] == [tag for tag, _, _ in modes]
    assert set(broad.categories) == set(demo.categories) | {"food"}


def test_concept_specs_are_well_formed() -> None:
    assert {spec.kind for spec in CONCEPTS.values()} >= {"object", "animal", "style", "place", "action"}
    for name, spec in CONCEPTS.items():
        assert spec.name == name and re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert spec.kind in KINDS
        assert spec.phrases and spec.swaps
        for swap in spec.swaps:
            assert not corpus.mentions_concept(swap, name), (name, swap)


def _split_on_phrase(text: str, phrases: list[str]) -> tuple[str, str, str]:
    """(prefix, phrase, suffix) for the single occurrence of the longest matching phrase."""
    for phrase in sorted(phrases, key=len, reverse=True):
        hits = [m.start() for m in re.finditer(re.escape(phrase), text)]
        if hits:
            assert len(hits) == 1, (text, phrase)
            start = hits[0]
            return text[:start], phrase, text[start + len(phrase) :]
    raise AssertionError(f"no concept phrase in {text!r}")


def _strip_article(prefix: str) -> str:
    return re.sub(r"\b(a|an|A|An) $", "", prefix)


@pytest.mark.parametrize("name", sorted(CONCEPTS))
def test_concept_pairs_differ_only_in_the_concept(name: str) -> None:
    spec = CONCEPTS[name]
    targets, nontargets = concept_prompts(name)
    assert (targets, nontargets) == concept_prompts(name)
    assert len(targets) == len(nontargets) == 60
    assert len(set(targets)) == len(targets)
    for target, nontarget in zip(targets, nontargets):
        assert corpus.mentions_concept(target, name)
        assert not corpus.mentions_concept(nontarget, name), nontarget
        assert not _grammar_problems(target) and not _grammar_problems(nontarget), (target, nontarget)
        prefix, _, suffix = _split_on_phrase(target, spec.phrases)
        assert nontarget.endswith(suffix)
        middle = nontarget[: len(nontarget) - len(suffix)]
        assert any(
            middle.endswith(swap) and _strip_article(middle[: -len(swap)]) == _strip_article(prefix)
            for swap in spec.swaps
        ), (target, nontarget)


def test_concept_targets_stay_out_of_the_corpus(captions: list[str]) -> None:
    in_corpus = set(captions)
    for name in CONCEPTS:
        targets, _ = concept_prompts(name)
        assert not in_corpus & set(targets), name


def test_unknown_concept_is_rejected() -> None:
    with pytest.raises(KeyError):
        concept_prompts("no_such_concept")


def test_shipped_files_match_the_generator(tmp_path: Path) -> None:
    write_demo_prompts(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.txt"))
    assert len(generated) == 1 + 2 * len(CONCEPTS)
    for rel in generated:
        assert (SHIPPED / rel).is_file(), f"{rel} is missing; run `python -m clear_sae.corpus` to regenerate it"
        assert (SHIPPED / rel).read_bytes() == (tmp_path / rel).read_bytes(), (
            f"{rel} is stale; run `python -m clear_sae.corpus` to regenerate it"
        )


def test_written_files_follow_the_prompt_file_format(tmp_path: Path) -> None:
    write_demo_prompts(tmp_path)
    for path in tmp_path.rglob("*.txt"):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and any(
            "python -m clear_sae.corpus" in line for line in lines if line.startswith("#")
        )
    prompts = [
        line
        for line in (tmp_path / "corpus.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert prompts == generate_captions()

    def read(name: str, suffix: str) -> list[str]:
        text = (tmp_path / "concepts" / f"{name}.{suffix}.txt").read_text(encoding="utf-8")
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    for name in CONCEPTS:
        assert (read(name, "target"), read(name, "nontarget")) == concept_prompts(name)
