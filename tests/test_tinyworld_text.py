"""Fast tests of the tiny world's text side: grammar, labeller, tokenizer and corpus."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from saebook.tinyworld.corpus import corpus_rows, labeled_batch, token_strings
from saebook.tinyworld.grammar import generate_stories, generate_story, invented_word
from saebook.tinyworld.labels import (
    EOT,
    GENERAL_VOCAB,
    GENRE_OPENINGS,
    GENRE_VOCAB,
    LABELS,
    LEXICON,
    WORD_CATEGORIES,
    WORD_CATEGORY,
    label_tokens,
    word_category,
)
from saebook.tinyworld.tokenizer import load_tokenizer, train_tokenizer

WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
WORD_RE_SPACED = re.compile(r"(?<!')( ?)([A-Za-z]+)")


@pytest.fixture(scope="module")
def stories() -> list[str]:
    return generate_stories(2000, 0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def batch(tokenizer):
    return labeled_batch(64, 128, seed=0, tokenizer=tokenizer)


def _split(text: str) -> list[str]:
    """Cut ``text`` into word-ish token strings (the labeller accepts any cut)."""
    return re.findall(r"<\|endoftext\|>| ?[A-Za-z0-9']+| ?[^\sA-Za-z0-9]|\s+", text)


def _labels_of(tokens: list[str], labels: dict[str, list[bool]], token: str, nth: int = 0):
    """Return the set of label names of the ``nth`` occurrence of ``token``."""
    idx = [i for i, t in enumerate(tokens) if t == token][nth]
    return {name for name, flags in labels.items() if flags[idx]}


# -- grammar -------------------------------------------------------------------


def test_generation_is_deterministic():
    assert generate_stories(50, 3) == generate_stories(50, 3)
    assert generate_stories(50, 3) != generate_stories(50, 4)
    rng_a, rng_b = random.Random(9), random.Random(9)
    assert generate_story(rng_a) == generate_story(rng_b)


def test_story_shape(stories):
    for story in stories[:500]:
        n_words = len(story.split())
        assert 60 <= n_words <= 200, story
        assert any(story.startswith(op) for op in GENRE_OPENINGS.values()), story
        for sentence in re.split(r"(?<=[.!?]) ", story):
            first = sentence.lstrip('"')[:1]
            assert first.isupper() or first.isdigit() or first == "", (sentence, story)
        assert story.count('"') % 2 == 0, story


def test_genres_are_balanced_and_have_their_own_words(stories):
    genre_of = {g: [s for s in stories if s.startswith(op)] for g, op in GENRE_OPENINGS.items()}
    assert all(150 < len(v) < 650 for v in genre_of.values())
    # genre-specific vocabulary: e.g. "rocket" is far more common in space stories
    space = sum(s.count("rocket") for s in genre_of["space"]) / len(genre_of["space"])
    farm = sum(s.count("rocket") for s in genre_of["farm"]) / len(genre_of["farm"])
    assert space > 5 * farm


def test_vocabulary_size_and_lexicon(stories):
    words = Counter(w.lower() for s in stories for w in WORD_RE.findall(s))
    known = {w.removesuffix("'s") for w in words if word_category(w) != "invented_word"}
    assert 500 <= len(known) <= 700, len(known)
    assert 500 <= len(WORD_CATEGORY) <= 700
    assert set(WORD_CATEGORY) - known <= {"doors"}, "lexicon words the grammar never writes"


def test_only_copy_words_are_unknown(stories):
    """Every word outside the lexicon is an invented name repeated >= 3 times in its story."""
    n_with = 0
    for story in stories:
        counts = Counter(WORD_RE.findall(story))
        invented = [w for w in counts if word_category(w) == "invented_word"]
        for w in invented:
            assert w[0].isupper() and counts[w] >= 3, (w, story)
        n_with += bool(invented)
    assert 0.28 < n_with / len(stories) < 0.42


def test_copy_codes_and_recalled_lists(stories):
    n_code = n_list = 0
    list_re = re.compile(r"(?:an? [a-z ]+, )+an? [a-z ]+ and an? [a-z]+")
    for story in stories:
        codes = Counter(re.findall(r"\d \d \d(?: \d)?(?= and|[.?,\"])", story))
        n_code += any(c >= 2 for c in codes.values())
        lists = Counter(list_re.findall(story))
        n_list += any(c >= 2 for c in lists.values())
    assert 0.18 < n_code / len(stories) < 0.34
    assert 0.18 < n_list / len(stories) < 0.32


def test_invented_words():
    rng = random.Random(1)
    words = [invented_word(rng) for _ in range(500)]
    assert len(set(words)) > 490
    for w in words:
        assert w.isalpha() and w[0].isupper() and 4 <= len(w) <= 15
        assert w.lower() not in WORD_CATEGORY


def test_hierarchy_frequencies(stories):
    names: Counter[str] = Counter()
    animals: Counter[str] = Counter()
    left_of: dict[str, Counter[str]] = {k: Counter() for k in ("lily", "name", "cat", "animal")}
    for story in stories:
        prev = ""
        for word in WORD_RE.findall(story):
            low = word.lower().removesuffix("'s")
            cat = word_category(word)
            if cat == "name":
                names[low] += 1
                left_of["lily" if low == "lily" else "name"][prev] += 1
            elif cat == "animal":
                animals[low] += 1
                left_of["cat" if low in ("cat", "cats") else "animal"][prev] += 1
            prev = low
    lily = names["lily"] / sum(names.values())
    cat = (animals["cat"] + animals["cats"]) / sum(animals.values())
    print(f"\nLily: {lily:.3f} of {sum(names.values())} names; cat: {cat:.3f} of animals")
    assert 0.31 < lily < 0.39
    assert 0.31 < cat < 0.39
    assert len(names) == 31 and len({a.rstrip("s") for a in animals}) >= 28
    # the child shares the parent's contexts: its common left neighbours are theirs
    for child, parent in (("lily", "name"), ("cat", "animal")):
        top = [w for w, _ in left_of[parent].most_common(15)]
        assert all(left_of[child][w] > 0 for w in top), (child, top)


def test_generation_speed():
    generate_stories(50, 0)
    t0 = time.perf_counter()
    generate_stories(1000, 1)
    rate = 1000 / (time.perf_counter() - t0)
    print(f"\n{rate:.0f} stories/s")
    assert rate > 2000


# -- labeller ------------------------------------------------------------------


def test_label_names():
    required = set(WORD_CATEGORIES) | {
        "name_lily", "animal_cat", "in_quote", "quote_mark", "sentence_start",
        "first_mention", "repeat_mention", "copyable", "counting", "genre_fairy",
        "genre_space", "genre_school", "genre_farm", "genre_sea",
    }  # fmt: skip
    assert required <= set(LABELS)
    assert all(isinstance(v, str) and v for v in LABELS.values())
    assert set(LEXICON) >= set(WORD_CATEGORIES) - {"punctuation", "invented_word"}


def test_word_pools_are_in_the_lexicon():
    pools = [GENERAL_VOCAB, *GENRE_VOCAB.values()]
    for pool in pools:
        for category, words in pool.items():
            for word in words:
                assert WORD_CATEGORY[word] == category, (word, category)


def test_labeller_on_hand_written_text():
    text = (
        "Once upon a time, in a faraway kingdom, there lived a girl named Lily. "
        '"Look at the red ball!" said Lily. She counted: one, two, three. '
        "The code was 7 3 9. Lily typed 7 3 9. The cat met Zibvor. Zibvor's hat was big."
    )
    toks = _split(text)
    assert "".join(toks) == text
    lab = label_tokens(toks)
    assert set(lab) == set(LABELS) and all(len(v) == len(toks) for v in lab.values())
    # genre: every token
    assert all(lab["genre_fairy"]) and not any(lab["genre_space"])
    # quotes
    assert {"quote_mark", "punctuation"} <= _labels_of(toks, lab, ' "')
    assert "in_quote" not in _labels_of(toks, lab, ' "')
    for word in ("Look", " at", " ball", "!"):
        assert "in_quote" in _labels_of(toks, lab, word), word
    assert "in_quote" not in _labels_of(toks, lab, " said")
    # sentence starts
    assert "sentence_start" in _labels_of(toks, lab, "Once")
    assert "sentence_start" in _labels_of(toks, lab, "Look")
    assert "sentence_start" in _labels_of(toks, lab, " She")
    assert "sentence_start" not in _labels_of(toks, lab, " said")
    assert "sentence_start" not in _labels_of(toks, lab, " Lily", 1)
    assert "sentence_start" in _labels_of(toks, lab, " Lily", 2)
    # word categories and hierarchy
    assert {"name", "name_lily", "first_mention"} <= _labels_of(toks, lab, " Lily", 0)
    assert {"name", "repeat_mention"} <= _labels_of(toks, lab, " Lily", 1)
    assert {"animal", "animal_cat", "first_mention"} <= _labels_of(toks, lab, " cat")
    assert {"colour"} <= _labels_of(toks, lab, " red")
    assert {"verb"} <= _labels_of(toks, lab, " counted")
    assert {"function_word"} <= _labels_of(toks, lab, " the")
    assert {"invented_word", "first_mention"} <= _labels_of(toks, lab, " Zibvor")
    assert {"invented_word", "repeat_mention"} <= _labels_of(toks, lab, " Zibvor's")
    # counting: "two" and "three" continue "one"; the code's digits do not count
    assert "counting" not in _labels_of(toks, lab, " one")
    assert "counting" in _labels_of(toks, lab, " two")
    assert "counting" in _labels_of(toks, lab, " three")
    assert "counting" not in _labels_of(toks, lab, " 3")
    # copyable: the second "7 3 9" continues like the first one
    assert "copyable" not in _labels_of(toks, lab, " 7", 1)
    assert "copyable" in _labels_of(toks, lab, " 3", 1)
    assert "copyable" in _labels_of(toks, lab, " 9", 1)
    assert "copyable" not in _labels_of(toks, lab, " 3", 0)


def test_labeller_multi_token_words_and_story_reset():
    toks = ["Far", " away", " in", " space", ",", " Zib", "vor", " saw", " 1", " 2",
            " 3", ".", EOT, "Down", " on", " the", " old", " farm", ",", " Zib", "vor",
            " saw", " 10", " 11", "."]  # fmt: skip
    lab = label_tokens(toks)
    i, j = toks.index(" Zib"), 19
    assert lab["invented_word"][i] and lab["invented_word"][i + 1]
    assert lab["first_mention"][i] and lab["first_mention"][i + 1]
    # the EOT token has no label and resets the story state
    assert not any(flags[12] for flags in lab.values())
    assert lab["first_mention"][j] and not lab["repeat_mention"][j]
    assert not lab["copyable"][j + 1]
    assert lab["genre_space"][:12] == [True] * 12 and not any(lab["genre_space"][13:])
    assert all(lab["genre_farm"][13:]) and lab["sentence_start"][13]
    assert [lab["counting"][k] for k in (8, 9, 10, 22, 23)] == [False, True, True, False, True]


def test_labeller_details():
    toks = _split("I had two. Three more came. \u201cHi there,\u201d said Mom. He is 12 and 13.")
    lab = label_tokens(toks)
    assert "counting" not in _labels_of(toks, lab, " Three")  # another sentence
    assert "counting" in _labels_of(toks, lab, " 13")
    assert {"in_quote"} <= _labels_of(toks, lab, "Hi")
    assert "quote_mark" in _labels_of(toks, lab, " \u201c")
    assert "in_quote" not in _labels_of(toks, lab, " said")
    assert "sentence_start" in _labels_of(toks, lab, "Hi")
    assert "invented_word" not in _labels_of(toks, lab, " Mom")
    assert label_tokens([]) == {name: [] for name in LABELS}
    assert word_category("CATS") == "animal" and word_category("Lily's") == "name"
    assert word_category("42") == "number" and word_category("!") is None


# -- tokenizer -----------------------------------------------------------------


def test_tokenizer_special_tokens_and_round_trip(tokenizer, stories):
    assert len(tokenizer) == 2048
    assert tokenizer.convert_tokens_to_ids(EOT) == 0
    for attr in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        assert getattr(tokenizer, attr) == 0
    for story in stories[:50]:
        ids = tokenizer(story, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == story
        assert 0 not in ids
    text = EOT + stories[0]
    assert tokenizer(text, add_special_tokens=False)["input_ids"][0] == 0


def test_lexicon_words_are_single_tokens(tokenizer, stories):
    def n_tokens(strings: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(strings, add_special_tokens=False)["input_ids"]]

    # each lexicon word in its usual form: " cat", " Lily"
    natural = [" " + (w.capitalize() if WORD_CATEGORY[w] == "name" else w) for w in WORD_CATEGORY]
    share = sum(n == 1 for n in n_tokens(natural)) / len(natural)
    # every word as it occurs in the text, with its leading space if any (not the s of "Lily's")
    uses = [m.group() for story in stories[:300] for m in WORD_RE_SPACED.finditer(story)]
    invented = [word_category(u.strip()) == "invented_word" for u in uses]
    counts = n_tokens(uses)
    lex = [n for n, inv in zip(counts, invented, strict=True) if not inv]
    inv = [n for n, inv in zip(counts, invented, strict=True) if inv]
    lex_single = sum(n == 1 for n in lex) / len(lex)
    inv_multi = sum(n > 1 for n in inv) / len(inv)
    print(f"\nlexicon single-token: {share:.3f} of words, {lex_single:.4f} of uses; "
          f"invented multi-token: {inv_multi:.3f} of uses")  # fmt: skip
    assert share > 0.93
    assert lex_single > 0.995
    assert inv_multi > 0.95


def test_train_tokenizer_saves_loadable_folder(tmp_path: Path):
    tok = train_tokenizer(generate_stories(200, 5), 400, tmp_path / "tok")
    assert len(tok) == 400
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again.bos_token == EOT and again.bos_token_id == 0
    text = generate_stories(1, 6)[0]
    assert again.decode(again(text)["input_ids"]) == text
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tok.get_vocab()
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loads in transformers 4 and 5


def test_load_tokenizer_missing(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="python -m saebook.tinyworld build"):
        load_tokenizer(tmp_path)


# -- corpus --------------------------------------------------------------------


def test_corpus_rows_packing(tokenizer):
    rows = corpus_rows(16, 128, seed=0, tokenizer=tokenizer)
    assert rows.shape == (16, 128) and rows.dtype == torch.int64
    assert (rows[:, 0] == 0).all()
    assert torch.equal(rows, corpus_rows(16, 128, seed=0, tokenizer=tokenizer))
    assert not torch.equal(rows, corpus_rows(16, 128, seed=1, tokenizer=tokenizer))
    assert torch.equal(rows[:4], corpus_rows(4, 128, seed=0, tokenizer=tokenizer))
    # stories in order: a row's texts are consecutive stories of the seed, the last one cut
    stories = generate_stories(40, 0)
    texts = [t for row in rows for t in tokenizer.decode(row[1:]).split(EOT)]
    k = 0
    for row in rows:
        parts = tokenizer.decode(row[1:]).split(EOT)
        for part in parts[:-1]:
            assert part == stories[k]
            k += 1
        assert stories[k].startswith(parts[-1])
        k += 1
    assert len(texts) >= 16
    small = corpus_rows(3, 2, seed=0, tokenizer=tokenizer)
    assert small.shape == (3, 2) and (small[:, 0] == 0).all()


def test_labeled_batch_coverage(batch):
    tokens, labels = batch
    assert set(labels) == set(LABELS)
    counts = {name: int(flags.sum()) for name, flags in labels.items()}
    print("\nlabel counts in a 64x128 batch of seed 0:")
    for name, count in counts.items():
        print(f"  {name:16s} {count:6d}")
    for name, flags in labels.items():
        assert flags.dtype == torch.bool and flags.shape == tokens.shape
        assert counts[name] > 0, name
        assert not flags[tokens == 0].any(), name  # BOS / EOT have no label
    for name in WORD_CATEGORIES:
        assert counts[name] >= 20, name


def test_labeled_batch_matches_label_tokens(batch, tokenizer):
    tokens, labels = batch
    strings = token_strings(tokenizer)
    row = tokens[3].tolist()
    direct = label_tokens([strings[i] for i in row])
    for name in LABELS:
        assert labels[name][3].tolist() == direct[name]
    assert "".join(strings[i] for i in row) == tokenizer.decode(row)


def test_corpus_speed(tokenizer):
    t0 = time.perf_counter()
    labeled_batch(64, 128, seed=11, tokenizer=tokenizer)
    assert time.perf_counter() - t0 < 1.0


# -- bad arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: generate_stories(-1, 0), ValueError, "n_stories"),
        (lambda: generate_stories(2.5, 0), TypeError, "n_stories"),
        (lambda: generate_stories(2, "0"), TypeError, "seed"),
        (lambda: generate_story(42), TypeError, "rng"),
        (lambda: corpus_rows(0, 128), ValueError, "n_seqs"),
        (lambda: corpus_rows(2, 1), ValueError, "seq_len"),
        (lambda: corpus_rows(2, 8.0), TypeError, "seq_len"),
        (lambda: corpus_rows(2, 8, seed=None), TypeError, "seed"),
        (lambda: labeled_batch(True, 8), TypeError, "n_seqs"),
        (lambda: label_tokens("a cat"), TypeError, "token_strs"),
        (lambda: label_tokens(["a", 3]), TypeError, r"token_strs\[1\]"),
        (lambda: train_tokenizer(["a b"], 10, Path("/nonexistent")), ValueError, "vocab_size"),
        (lambda: train_tokenizer("a b", 400, Path("/nonexistent")), TypeError, "texts"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
