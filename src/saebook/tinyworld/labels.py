"""The tiny world's lexicon and its token-level ground-truth labeller.

This module is the single home of the lexicon: every word the story grammar
(:mod:`saebook.tinyworld.grammar`) can write is listed here, grouped by
category, and the labeller reads the very same tables.  The grammar and the
labeller therefore cannot drift apart.

The labeller, :func:`label_tokens`, works on *any* text cut into tokens: it
needs only the decoded string of each token.  It returns, for every label name
in :data:`LABELS`, one boolean per token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EOT = "<|endoftext|>"
"""The special token that separates stories (and starts every row)."""

# ---------------------------------------------------------------------------
# The lexicon, as ordered tuples (the grammar samples from these in order, so
# generation is reproducible whatever the hash seed).
# ---------------------------------------------------------------------------

DOMINANT_NAME = "Lily"
"""The name that fills about 35% of the named-character slots."""

DOMINANT_ANIMAL = "cat"
"""The animal that makes about 35% of the animal mentions."""

FEMALE_NAMES: tuple[str, ...] = (
    "Lily", "Mia", "Anna", "Lucy", "Emma", "Zoe", "Nina", "Ella", "Ava", "Ruby",
    "Rosa", "Ivy", "Maya", "Sara", "Amy", "Luna",
)  # fmt: skip
MALE_NAMES: tuple[str, ...] = (
    "Tom", "Sam", "Ben", "Max", "Jack", "Leo", "Finn", "Noah", "Jake", "Owen",
    "Kai", "Hugo", "Theo", "Eli", "Omar",
)  # fmt: skip

ANIMALS: tuple[str, ...] = (
    "cat", "dog", "bird", "rabbit", "fox", "bear", "mouse", "frog", "owl",
    "squirrel", "deer", "bee", "butterfly", "lion", "turtle", "puppy",
    "penguin", "monkey", "duck", "horse", "cow", "pig", "sheep", "goat", "hen", "fish",
    "whale", "dolphin", "crab", "seagull", "octopus", "dragon", "unicorn",
)  # fmt: skip

COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "pink", "purple", "orange", "white",
    "black", "brown", "gold", "silver", "grey",
)  # fmt: skip

OBJECTS: tuple[str, ...] = (
    "ball", "kite", "hat", "cup", "box", "book", "toy", "doll", "drum", "bag",
    "key", "lamp", "bell", "rope", "stone", "flower", "sock", "shoe", "coat",
    "blanket", "balloon", "door", "bucket", "basket", "map", "shell", "star",
    "crown", "sword", "wand", "ring", "mirror", "rocket", "helmet", "telescope",
    "robot", "button", "pencil", "crayon", "desk", "ruler", "backpack",
    "tractor", "fence", "wagon", "shovel", "ship", "boat", "net", "anchor",
    "sail", "compass",
)  # fmt: skip

COUNT_FOODS: tuple[str, ...] = (
    "apple", "banana", "cookie", "cake", "carrot", "egg", "pear", "plum",
    "muffin", "cherry", "grape", "lemon", "peach", "sandwich", "strawberry",
    "cupcake", "pie",
)  # fmt: skip
MASS_FOODS: tuple[str, ...] = (
    "bread", "soup", "milk", "cheese", "honey", "jam", "juice", "rice",
    "pizza", "corn", "tea", "hay",
)  # fmt: skip

PLACES: tuple[str, ...] = (
    "park", "garden", "house", "home", "school", "classroom", "playground",
    "library", "forest", "river", "lake", "beach", "hill", "castle", "tower",
    "village", "kingdom", "farm", "barn", "field", "pond", "meadow", "shop",
    "zoo", "town", "moon", "planet", "space", "sky", "sea", "island", "cave",
    "harbour", "bridge", "kitchen", "bedroom",
)  # fmt: skip

NUMBER_WORDS: tuple[str, ...] = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
    "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
"""Number words; ``NUMBER_WORDS[i]`` has the value ``i + 1``."""

DAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip
"""Days of the week in order; the day after ``DAYS[i]`` is ``DAYS[(i + 1) % 7]``."""

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip
"""Months in order; the month after ``MONTHS[i]`` is ``MONTHS[(i + 1) % 12]``."""

CYCLES: dict[str, tuple[str, ...]] = {"day": DAYS, "month": MONTHS}
"""The tiny world's cyclic concepts: label name -> its words in cyclic order (also what
:data:`saebook.circular.CYCLE_WORDS` reads on every profile)."""

EMOTIONS: tuple[str, ...] = (
    "happy", "sad", "scared", "angry", "excited", "proud", "surprised", "tired",
    "lonely", "worried", "calm", "glad", "upset", "shy", "curious", "grumpy",
    "nervous", "cheerful", "afraid", "bored",
)  # fmt: skip

VERBS: tuple[str, ...] = (
    "was", "were", "is", "am", "are", "be", "had", "has", "have", "did", "do",
    "can", "could", "will", "said", "asked", "shouted", "whispered", "cried",
    "laughed", "smiled", "called", "named", "went", "go", "ran", "run",
    "walked", "jumped", "played", "play", "looked", "look", "saw", "see",
    "found", "find", "made", "make", "took", "gave", "got", "came", "come",
    "put", "liked", "like", "loved", "love", "wanted", "want", "needed",
    "helped", "help", "opened", "typed", "counted", "count", "packed",
    "carried", "picked", "ate", "eat", "drank", "read", "drew", "sang", "sing",
    "danced", "dance", "flew", "fly", "swam", "sailed", "climbed", "hid",
    "sat", "slept", "woke", "waved", "hugged", "fed", "met", "lived", "lost",
    "felt", "heard", "planted", "rode", "built", "fixed", "painted", "shared",
    "tried", "held", "landed", "caught", "fell", "pulled", "let", "bought",
    "pressed", "learned", "pushed", "wrote", "began", "comes", "would", "wagged",
    "sniffed",
    "keep", "kept", "knew", "get", "left", "turned", "shone", "followed",
)  # fmt: skip

FUNCTION_WORDS: tuple[str, ...] = (
    "the", "a", "an", "and", "but", "or", "so", "because", "he", "she", "it",
    "they", "we", "i", "you", "him", "her", "them", "us", "me", "my", "his",
    "its", "their", "our", "your", "in", "on", "at", "to", "with", "for", "of",
    "from", "into", "up", "down", "over", "under", "behind", "near", "by",
    "after", "before", "past", "that", "this", "there", "what", "who",
    "where", "when", "if", "through",
)  # fmt: skip

PERSONS: tuple[str, ...] = (
    "princess", "prince", "king", "queen", "knight", "wizard", "fairy",
    "astronaut", "alien", "captain", "teacher", "farmer", "sailor", "pirate",
    "girl", "boy", "mom", "dad", "friend", "friends", "class", "crew",
    "everyone",
)  # fmt: skip

ADJECTIVES: tuple[str, ...] = (
    "little", "big", "small", "tiny", "old", "new", "soft", "shiny", "tall",
    "long", "nice", "kind", "good", "best", "funny", "pretty", "bright",
    "dark", "wide", "deep", "fast", "warm", "cold", "loud", "quiet", "magic",
    "faraway", "busy", "sunny", "secret", "special", "beautiful", "strong",
    "round", "clever", "wet", "hungry", "sleepy", "brave", "heavy", "full",
    "yummy", "sweet", "tasty", "favourite",
)  # fmt: skip

OTHER_WORDS: tuple[str, ...] = (
    "once", "upon", "time", "day", "morning", "night", "lunch", "very", "too",
    "then", "now", "again", "more", "some", "many", "every", "yes", "no",
    "not", "just", "also", "soon", "later", "together", "forever", "end",
    "lot", "way", "hello", "hi", "oh", "wow", "please", "fun", "game", "song",
    "picture", "code", "first", "next", "last", "away", "far", "back", "out",
    "here", "all", "how", "much", "inside", "outside", "around", "sun",
    "rain", "wind", "water", "waves", "lock", "trip", "numbers", "thank",
    "goodbye", "off", "bed", "dinner", "still", "ever", "party", "window",
    "lesson", "treasure", "sound", "paper", "chest", "today", "lights",
    "about", "always", "days", "month", "months", "birthday", "tomorrow",
    "tail", "colour",
)  # fmt: skip
"""Words with no labelled category (adverbs, interjections, misc. nouns)."""

_IRREGULAR_PLURALS: dict[str, str] = {
    "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish",
}  # fmt: skip


def plural(noun: str) -> str:
    """Return the plural form of a countable lexicon noun (``"fox"`` -> ``"foxes"``)."""
    if not isinstance(noun, str):
        raise TypeError(f"noun must be a str, got {type(noun).__name__}")
    if not noun:
        raise ValueError("noun must be a non-empty str, got ''")
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


GENRES: tuple[str, ...] = ("fairy", "space", "school", "farm", "sea")

GENRE_OPENINGS: dict[str, str] = {
    "fairy": "Once upon a time, in a faraway kingdom,",
    "space": "Far away in space,",
    "school": "On a bright morning at the big school,",
    "farm": "Down on the old farm,",
    "sea": "Out on the wide sea,",
}
"""Each genre's fixed opening formula: every story of the genre starts with it."""

GENRE_VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "fairy": {
        "animal": ("dragon", "unicorn", "owl", "horse", "fox"),
        "object": ("crown", "sword", "wand", "ring", "mirror"),
        "place": ("castle", "tower", "kingdom", "forest", "cave"),
        "food": ("pie", "honey", "cake", "plum"),
    },
    "space": {
        "animal": ("dog", "mouse", "bird", "penguin"),
        "object": ("rocket", "helmet", "telescope", "robot", "button", "star"),
        "place": ("moon", "planet", "space", "sky"),
        "food": ("cupcake", "pizza", "juice", "muffin"),
    },
    "school": {
        "animal": ("rabbit", "frog", "turtle", "puppy", "bee"),
        "object": ("pencil", "crayon", "desk", "ruler", "backpack", "book"),
        "place": ("classroom", "playground", "library", "school"),
        "food": ("sandwich", "apple", "juice", "cookie"),
    },
    "farm": {
        "animal": ("cow", "pig", "sheep", "goat", "hen", "duck", "horse"),
        "object": ("tractor", "fence", "wagon", "shovel", "bucket"),
        "place": ("barn", "field", "farm", "pond", "meadow"),
        "food": ("corn", "milk", "egg", "carrot", "hay"),
    },
    "sea": {
        "animal": ("fish", "whale", "dolphin", "crab", "seagull", "octopus"),
        "object": ("ship", "boat", "net", "anchor", "sail", "compass", "shell"),
        "place": ("sea", "island", "beach", "harbour"),
        "food": ("bread", "cheese", "soup", "banana"),
    },
}
"""Extra nouns each genre leans on (all of them are in the lexicon)."""

GENERAL_VOCAB: dict[str, tuple[str, ...]] = {
    "animal": (
        "dog", "bird", "rabbit", "mouse", "frog", "bear", "duck", "fox",
        "squirrel", "butterfly", "bee", "deer", "lion", "turtle", "puppy",
        "owl", "monkey",
    ),
    "object": (
        "ball", "kite", "hat", "cup", "box", "book", "toy", "doll", "drum",
        "bag", "key", "lamp", "bell", "rope", "stone", "flower", "sock",
        "shoe", "coat", "blanket", "balloon", "basket", "map",
    ),
    "place": (
        "park", "garden", "house", "forest", "river", "lake", "hill",
        "village", "town", "shop", "zoo", "bridge", "kitchen", "bedroom",
    ),
    "food": (
        "apple", "banana", "cookie", "cake", "carrot", "pear", "plum",
        "muffin", "cherry", "grape", "lemon", "peach", "strawberry", "bread",
        "soup", "milk", "cheese", "jam", "rice",
    ),
}  # fmt: skip
"""Nouns every genre may use, beside its own :data:`GENRE_VOCAB`."""


def _lower_all(words: Sequence[str]) -> frozenset[str]:
    """Return the set of the lower-cased ``words``."""
    return frozenset(w.lower() for w in words)


LEXICON: dict[str, frozenset[str]] = {
    "name": _lower_all(FEMALE_NAMES + MALE_NAMES),
    "animal": _lower_all(ANIMALS + tuple(plural(a) for a in ANIMALS)),
    "colour": _lower_all(COLOURS),
    "object": _lower_all(OBJECTS + tuple(plural(o) for o in OBJECTS)),
    "food": _lower_all(COUNT_FOODS + tuple(plural(f) for f in COUNT_FOODS) + MASS_FOODS),
    "place": _lower_all(PLACES),
    "number": _lower_all(NUMBER_WORDS),
    "day": _lower_all(DAYS),
    "month": _lower_all(MONTHS),
    "emotion": _lower_all(EMOTIONS),
    "verb": _lower_all(VERBS),
    "function_word": _lower_all(FUNCTION_WORDS),
    "person": _lower_all(PERSONS),
    "adjective": _lower_all(ADJECTIVES),
    "other": _lower_all(OTHER_WORDS),
}
"""Category -> the lower-case words of that category.

The categories are checked (at import) to be disjoint.  ``person``,
``adjective`` and ``other`` hold lexicon words without a word-category label.
"""


def _build_word_category(lexicon: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """Map each lexicon word to its one category; raise if two categories share a word."""
    owner: dict[str, str] = {}
    for category, words in lexicon.items():
        for word in words:
            if word in owner:
                raise ValueError(
                    f"lexicon word {word!r} is in two categories: {owner[word]!r} and {category!r}"
                )
            owner[word] = category
    return owner


WORD_CATEGORY: dict[str, str] = _build_word_category(LEXICON)
"""Lower-case lexicon word -> its category."""

NUMBER_VALUES: dict[str, int] = {w: i + 1 for i, w in enumerate(NUMBER_WORDS)}

# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------

WORD_CATEGORIES: tuple[str, ...] = (
    "name", "animal", "colour", "object", "food", "place", "number", "day", "month",
    "emotion", "verb", "function_word", "punctuation", "invented_word",
)  # fmt: skip

CONTENT_CATEGORIES: frozenset[str] = frozenset(
    {"name", "animal", "colour", "object", "food", "place", "invented_word"}
)
"""Word categories whose words get ``first_mention`` / ``repeat_mention``."""

LABELS: dict[str, str] = {
    "name": "a character's first name (Lily, Tom, ...)",
    "animal": "an animal noun, singular or plural (cat, dogs, ...)",
    "colour": "a colour word (red, blue, ...)",
    "object": "an object noun, singular or plural (ball, kites, ...)",
    "food": "a food noun (apple, cookies, bread, ...)",
    "place": "a place noun (park, castle, moon, ...)",
    "number": "a number: a number word one..twenty or a run of digits",
    "day": "a day of the week (Monday, ..., Sunday)",
    "month": "a month (January, ..., December)",
    "emotion": "an emotion adjective (happy, sad, scared, ...)",
    "verb": "a verb form, auxiliaries included (was, ran, said, ...)",
    "function_word": "an article, pronoun, preposition or conjunction",
    "punctuation": "a punctuation mark (quote marks included)",
    "invented_word": "a word made of letters that is not in the lexicon",
    "name_lily": "the name Lily (a child of `name`)",
    "animal_cat": "the animal cat or cats (a child of `animal`)",
    "in_quote": "inside quoted dialogue (the quote marks themselves excluded)",
    "quote_mark": "a double quote mark",
    "sentence_start": "the first word of a sentence",
    "first_mention": "first occurrence in the story of a content word "
    "(name, animal, colour, object, food, place or invented word)",
    "repeat_mention": "a later occurrence in the story of such a content word",
    "copyable": "the token and the token before it occurred together "
    "earlier in the story (the induction condition)",
    "counting": "a number whose previous number in the same sentence is exactly one less",
    "genre_fairy": "in a story that opens with the fairy-tale formula",
    "genre_space": "in a story that opens with the space formula",
    "genre_school": "in a story that opens with the school formula",
    "genre_farm": "in a story that opens with the farm formula",
    "genre_sea": "in a story that opens with the sea formula",
}
"""Label name -> one-line description; :func:`label_tokens` returns all of them."""

_UNIT_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[0-9]+|[^\sA-Za-z0-9]")
_OPEN_QUOTES = frozenset('"\u201c')
_CLOSE_QUOTES = frozenset('"\u201d')
_QUOTES = _OPEN_QUOTES | _CLOSE_QUOTES
_TERMINATORS = frozenset(".!?")


@dataclass
class _Unit:
    """A word, number or punctuation mark with its character span and labels."""

    start: int
    end: int
    labels: set[str] = field(default_factory=set)


def word_category(word: str) -> str | None:
    """Return the lexicon category of ``word``, or ``None``.

    Case is ignored, a possessive ``'s`` is dropped, a run of digits is a
    ``number`` and an unknown word of letters is ``invented_word``; anything
    else (e.g. punctuation) gives ``None``.
    """
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    if word.isdigit() and word.isascii():
        return "number"
    low = word.lower()
    category = WORD_CATEGORY.get(low)
    if category is None and low.endswith("'s"):
        category = WORD_CATEGORY.get(low[:-2])
    if category is not None:
        return category
    if re.fullmatch(r"[A-Za-z]+(?:'[A-Za-z]+)*", word):
        return "invented_word"
    return None


def _number_value(word: str) -> int | None:
    """Return the numeric value of a number word or digit run, else ``None``."""
    if word.isdigit() and word.isascii():
        return int(word)
    return NUMBER_VALUES.get(word.lower())


def _label_story(text: str, base: int, units: list[_Unit]) -> None:
    """Find and label the units of one story ``text`` that starts at char ``base``."""
    stripped = text.lstrip()
    genre_label = next(
        (f"genre_{g}" for g, op in GENRE_OPENINGS.items() if stripped.startswith(op)),
        None,
    )
    seen_content: set[str] = set()
    in_quote = False
    sentence_id = 0
    # True when the next word begins a sentence.
    at_start = True
    saw_terminator = False
    saw_open_quote = False
    last_number: tuple[int, int] | None = None  # (sentence_id, value)
    for match in _UNIT_RE.finditer(text):
        tok = match.group()
        unit = _Unit(base + match.start(), base + match.end())
        if genre_label is not None:
            unit.labels.add(genre_label)
        if len(tok) == 1 and not tok.isalnum():
            unit.labels.add("punctuation")
            if tok in _QUOTES:
                unit.labels.add("quote_mark")
                opening = tok in _OPEN_QUOTES and (tok != '"' or not in_quote)
                in_quote = opening
                if opening:
                    saw_open_quote = True
            else:
                if in_quote:
                    unit.labels.add("in_quote")
                if tok in _TERMINATORS:
                    saw_terminator = True
                    sentence_id += 1
            units.append(unit)
            continue
        if in_quote:
            unit.labels.add("in_quote")
        capital = tok[0].isupper()
        if at_start or ((saw_terminator or saw_open_quote) and capital):
            unit.labels.add("sentence_start")
        at_start = saw_terminator = saw_open_quote = False
        category = word_category(tok)
        if category in LABELS:
            unit.labels.add(category)
        low = tok.lower()
        if low.endswith("'s"):
            low = low[:-2]
        if category == "name" and low == DOMINANT_NAME.lower():
            unit.labels.add("name_lily")
        if category == "animal" and low in (DOMINANT_ANIMAL, plural(DOMINANT_ANIMAL)):
            unit.labels.add("animal_cat")
        if category in CONTENT_CATEGORIES:
            if low in seen_content:
                unit.labels.add("repeat_mention")
            else:
                unit.labels.add("first_mention")
                seen_content.add(low)
        if category == "number":
            value = _number_value(tok)
            if (
                value is not None
                and last_number is not None
                and last_number == (sentence_id, value - 1)
            ):
                unit.labels.add("counting")
            if value is not None:
                last_number = (sentence_id, value)
        units.append(unit)


def _check_token_strs(token_strs: object) -> list[str]:
    """Validate ``token_strs`` as a list of strings and return it as a list."""
    if isinstance(token_strs, str) or not isinstance(token_strs, Sequence):
        raise TypeError(
            "token_strs must be a list of str (one decoded string per token), "
            f"got {type(token_strs).__name__}"
        )
    for i, t in enumerate(token_strs):
        if not isinstance(t, str):
            raise TypeError(f"token_strs[{i}] must be a str, got {type(t).__name__}")
    return list(token_strs)


def label_tokens(token_strs: list[str]) -> dict[str, list[bool]]:
    """Label every token of one row of text with the ground-truth labels.

    ``token_strs`` holds the decoded string of each token, so that their
    concatenation is the row's text.  A token equal to ``<|endoftext|>``
    separates stories: it resets all story state (mentions, quotes, genre,
    copyable n-grams) and gets no label.  Words are found with a regex,
    labelled from the lexicon and their context, and each token receives the
    union of the labels of the words and marks it overlaps, so every piece
    of a multi-token word shares that word's labels.

    Returns a dict mapping every name in :data:`LABELS` to a list of bools,
    one per token.
    """
    tokens = _check_token_strs(token_strs)
    n = len(tokens)
    out: dict[str, list[bool]] = {name: [False] * n for name in LABELS}
    # Character offsets of every token in the concatenated text.
    starts: list[int] = []
    pos = 0
    for t in tokens:
        starts.append(pos)
        pos += len(t)
    text = "".join(tokens)
    # Split into stories at EOT tokens and label each story's units.
    units: list[_Unit] = []
    seg_start_tok = 0
    for i in range(n + 1):
        if i == n or tokens[i] == EOT:
            if i > seg_start_tok:
                lo = starts[seg_start_tok]
                hi = starts[i] if i < n else len(text)
                _label_story(text[lo:hi], lo, units)
            seg_start_tok = i + 1
    # Char -> token index, then union unit labels onto tokens.
    char_tok = [0] * len(text)
    for i, t in enumerate(tokens):
        s = starts[i]
        for c in range(s, s + len(t)):
            char_tok[c] = i
    for unit in units:
        first = char_tok[unit.start]
        last = char_tok[unit.end - 1]
        for i in range(first, last + 1):
            for name in unit.labels:
                out[name][i] = True
    _label_copyable(tokens, out["copyable"])
    return out


def _label_copyable(tokens: list[str], flags: list[bool]) -> None:
    """Set ``flags[i]`` when the bigram (tokens[i-1], tokens[i]) occurred earlier in the story."""
    seen: set[tuple[str, str]] = set()
    prev: str | None = None
    for i, t in enumerate(tokens):
        if t == EOT:
            seen.clear()
            prev = None
            continue
        if prev is not None:
            pair = (prev, t)
            if pair in seen:
                flags[i] = True
            else:
                seen.add(pair)
        prev = t
