"""A seeded probabilistic grammar of short, TinyStories-like English stories.

Each story belongs to one of five genres (see :data:`~.labels.GENRES`) and
opens with that genre's fixed formula.  Stories mix named characters,
animals, colours, objects, foods, places, numbers and counting, days of the
week and months (with arithmetic around their cycles: "the day after Sunday
is Monday"), quoted dialogue, lists and emotions.  Some content can only be predicted by copying
from earlier in the story (invented words, secret codes, recalled lists),
and two planted hierarchies (the name "Lily" and the animal "cat") each fill
about 35% of their category's slots.

Every word comes from the lexicon in :mod:`saebook.tinyworld.labels`, so the
labeller knows every word the grammar can write.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .labels import (
    COLOURS,
    COUNT_FOODS,
    DAYS,
    DOMINANT_ANIMAL,
    DOMINANT_NAME,
    EMOTIONS,
    FEMALE_NAMES,
    GENERAL_VOCAB,
    GENRE_OPENINGS,
    GENRE_VOCAB,
    GENRES,
    MALE_NAMES,
    MASS_FOODS,
    MONTHS,
    NUMBER_WORDS,
    WORD_CATEGORY,
    plural,
)

P_DOMINANT = 0.35
"""Share of name slots filled by "Lily" and of animal mentions that are "cat"."""

P_INVENTED = 0.35
"""Probability that a story introduces (and repeats) an invented word."""

P_CODE = 0.25
"""Probability that a story has a secret digit code, repeated later."""

P_RECALL_LIST = 0.25
"""Probability that a story has a list that is recalled later verbatim."""

P_FRIEND = 0.7
"""Probability that a story has a second named character."""

MIN_WORDS = 60
MAX_WORDS = 200
"""Bounds on a story's length in whitespace-separated words."""

P_GENRE_WORD = 0.5
"""Probability that a noun is drawn from the genre's own vocabulary."""

_NON_DOMINANT_ANIMALS = {
    g: tuple(a for a in GENRE_VOCAB[g]["animal"] if a != DOMINANT_ANIMAL) for g in GENRES
}
_GENERAL_ANIMALS = tuple(a for a in GENERAL_VOCAB["animal"] if a != DOMINANT_ANIMAL)
_OTHER_NAMES = tuple(n for n in FEMALE_NAMES + MALE_NAMES if n != DOMINANT_NAME)
_FEMALE = frozenset(FEMALE_NAMES)
_COUNT_FOOD_SET = frozenset(COUNT_FOODS)
_MASS_FOOD_SET = frozenset(MASS_FOODS)
_DRINKS = ("milk", "juice", "tea")
_COUNTABLE_KINDS = ("object", "food", "animal")
_HAPPY = ("happy", "glad", "proud", "cheerful", "excited", "calm")
_SAD = ("sad", "scared", "angry", "lonely", "worried", "upset", "grumpy", "nervous", "afraid")
_GLAD = ("happy", "excited", "proud", "glad", "cheerful", "calm", "curious", "surprised")
_THING_ADJECTIVES = (
    "little", "big", "small", "tiny", "old", "new", "soft", "shiny", "tall", "long", "nice",
    "pretty", "bright", "funny", "beautiful", "round", "special", "magic", "heavy", "warm",
)  # fmt: skip
_TRAITS = ("kind", "clever", "brave", "funny", "strong", "busy", "quiet", "loud", "good", "fast")
_KID_ADJECTIVES = ("little", "kind", "clever", "brave", "funny", "small", "tall", "nice")

# Invented words: 2-3 syllables of onset + vowel (+ coda).
_ONSETS = (
    "b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
    "w", "z", "br", "dr", "gl", "kr", "pl", "sn", "st", "tr", "zh", "vl",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "u", "ai", "oo")
_CODAS = ("n", "r", "l", "m", "k", "s", "x", "v", "b", "z")
P_CODA = 0.35
"""Probability that a syllable of an invented word ends in a consonant."""

# What an invented word names, when it does not name an animal.
_INVENTED_THINGS: dict[str, tuple[str, ...]] = {
    "fairy": ("fairy", "wizard", "knight", "castle"),
    "space": ("robot", "alien", "planet", "star", "rocket"),
    "school": ("robot", "doll", "teacher"),
    "farm": ("tractor", "wagon", "farmer"),
    "sea": ("ship", "boat", "island", "pirate"),
}


def invented_word(rng: random.Random) -> str:
    """Return a capitalised pronounceable non-word of 2-3 syllables (e.g. "Zibvor").

    The word is guaranteed not to be in the lexicon.
    """
    while True:
        n_syll = 2 if rng.random() < 0.6 else 3
        word = "".join(
            rng.choice(_ONSETS)
            + rng.choice(_VOWELS)
            + (rng.choice(_CODAS) if rng.random() < P_CODA else "")
            for _ in range(n_syll)
        )
        if len(word) >= 4 and word not in WORD_CATEGORY:
            return word.capitalize()


def _article(word: str) -> str:
    """Return ``word`` with the right indefinite article ("an apple", "a unicorn")."""
    if word[0] in "aeio" or (word[0] == "u" and not word.startswith("uni")):
        return "an " + word
    return "a " + word


def _cap(sentence: str) -> str:
    """Return ``sentence`` with its first letter upper-cased (after an opening quote)."""
    if sentence[0] == '"':
        return '"' + sentence[1].upper() + sentence[2:]
    return sentence[0].upper() + sentence[1:]


def _number(n: int, digits: bool) -> str:
    """Return ``n`` (1..20) as digits or as a number word."""
    return str(n) if digits else NUMBER_WORDS[n - 1]


@dataclass(frozen=True)
class _Character:
    """A named character with the pronouns that go with the name."""

    name: str
    he: str
    him: str
    his: str

    @classmethod
    def named(cls, name: str) -> _Character:
        """Return the character called ``name`` (gender from the name lists)."""
        if name in _FEMALE:
            return cls(name, "she", "her", "her")
        return cls(name, "he", "him", "his")


class _StoryWriter:
    """Writes one story: picks a genre and a cast, then sentences."""

    def __init__(self, rng: random.Random) -> None:
        """Draw the genre, the hero, maybe a friend, and the pet."""
        self.rng = rng
        self.genre = rng.choice(GENRES)
        self.vocab = GENRE_VOCAB[self.genre]
        self.hero = _Character.named(self._name(exclude=None))
        self.friend: _Character | None = None
        if rng.random() < P_FRIEND:
            self.friend = _Character.named(self._name(exclude=self.hero.name))
        self.pet = self.animal()
        self.used_genre_events: set[int] = set()

    # -- word pickers --------------------------------------------------------

    def _name(self, exclude: str | None) -> str:
        """Pick a name so that every slot is "Lily" with probability P_DOMINANT."""
        rng = self.rng
        if exclude is None:
            p = P_DOMINANT
        elif exclude == DOMINANT_NAME:
            p = 0.0
        else:  # keep the marginal share at P_DOMINANT for the second slot too
            p = P_DOMINANT / (1.0 - P_DOMINANT)
        if rng.random() < p:
            return DOMINANT_NAME
        while True:
            name = rng.choice(_OTHER_NAMES)
            if name != exclude:
                return name

    def animal(self) -> str:
        """Pick an animal: "cat" with probability P_DOMINANT, else genre or general."""
        rng = self.rng
        if rng.random() < P_DOMINANT:
            return DOMINANT_ANIMAL
        if rng.random() < P_GENRE_WORD:
            return rng.choice(_NON_DOMINANT_ANIMALS[self.genre])
        return rng.choice(_GENERAL_ANIMALS)

    def _noun(self, kind: str) -> str:
        """Pick an object, place or food, from the genre vocabulary or the general one."""
        if self.rng.random() < P_GENRE_WORD:
            return self.rng.choice(self.vocab[kind])
        return self.rng.choice(GENERAL_VOCAB[kind])

    def obj(self) -> str:
        """Pick an object noun."""
        return self._noun("object")

    def place(self) -> str:
        """Pick a place noun."""
        return self._noun("place")

    def count_food(self) -> str:
        """Pick a countable food noun."""
        while True:
            food = self._noun("food")
            if food in _COUNT_FOOD_SET:
                return food

    def mass_food(self) -> str:
        """Pick an uncountable food noun."""
        while True:
            food = self._noun("food")
            if food in _MASS_FOOD_SET:
                return food

    def countable(self) -> str:
        """Pick a countable noun: an object, a food or an animal."""
        kind = self.rng.choice(_COUNTABLE_KINDS)
        if kind == "animal":
            return self.animal()
        if kind == "food":
            return self.count_food()
        return self.obj()

    def colour(self) -> str:
        """Pick a colour."""
        return self.rng.choice(COLOURS)

    def emotion(self) -> str:
        """Pick any emotion."""
        return self.rng.choice(EMOTIONS)

    def adj(self) -> str:
        """Pick an adjective that fits an object or an animal."""
        return self.rng.choice(_THING_ADJECTIVES)

    def sad(self) -> str:
        """Pick an unhappy emotion."""
        return self.rng.choice(_SAD)

    def glad(self) -> str:
        """Pick a happy emotion."""
        return self.rng.choice(_GLAD)

    def kid_adj(self) -> str:
        """Pick an adjective that fits a child."""
        return self.rng.choice(_KID_ADJECTIVES)

    def someone(self) -> _Character:
        """Pick the hero or (when there is one) the friend."""
        if self.friend is not None and self.rng.random() < 0.4:
            return self.friend
        return self.hero

    def ref(self, c: _Character) -> str:
        """Refer to ``c`` by name or by subject pronoun."""
        return c.name if self.rng.random() < 0.6 else c.he

    def digits(self, n: int) -> str:
        """Return a code of ``n`` random digits separated by spaces ("7 3 9")."""
        return " ".join(str(self.rng.randrange(10)) for _ in range(n))

    def item_list(self, n: int) -> str:
        """Return a list of ``n`` distinct things: "a hat, a cup and a kite"."""
        items: list[str] = []
        while len(items) < n:
            if self.rng.random() < 0.7:
                noun = self.obj()
                if self.rng.random() < 0.3:
                    noun = self.colour() + " " + noun
            else:
                noun = self.count_food()
            phrase = _article(noun)
            if phrase not in items:
                items.append(phrase)
        return ", ".join(items[:-1]) + " and " + items[-1]

    # -- sentences -------------------------------------------------------------

    def opening(self) -> str:
        """Return the genre's opening formula and the sentence it begins."""
        h, r = self.hero, self.rng
        kid = "girl" if h.he == "she" else "boy"
        g = self.genre
        if g == "fairy":
            royal = "princess" if h.he == "she" else "prince"
            who = r.choice((royal, kid))
            rest = f"there lived {_article(self.kid_adj() + ' ' + who)} named {h.name}."
        elif g == "space":
            rest = (
                f"an astronaut named {h.name} flew "
                f"{_article(self.colour())} rocket to the {r.choice(('moon', 'stars'))}."
            )
        elif g == "school":
            rest = f"{_article(self.kid_adj() + ' ' + kid)} named {h.name} sat at {h.his} desk."
        elif g == "farm":
            rest = f"there lived {_article(self.kid_adj() + ' ' + kid)} named {h.name}."
        else:
            rest = f"a sailor named {h.name} sailed {_article(self.colour())} boat."
        return GENRE_OPENINGS[g] + " " + rest

    def intro_friend(self) -> str:
        """Return the sentence that introduces the friend."""
        h, f = self.hero, self.friend
        if f is None:
            raise RuntimeError("intro_friend needs a story with a friend")
        kid = _article(self.kid_adj() + (" girl" if f.he == "she" else " boy"))
        return self.rng.choice(
            (
                f"{h.name} had a friend named {f.name}.",
                f"{h.name}'s best friend was {f.name}.",
                f"One day, {h.name} met {kid} named {f.name}.",
            )
        )

    def intro_pet(self) -> str:
        """Return the sentence that introduces the pet."""
        h, r = self.hero, self.rng
        return r.choice(
            (
                f"{_cap(self.ref(h))} had {_article(self.colour() + ' ' + self.pet)}.",
                f"{_cap(self.ref(h))} had a little {self.pet} that liked to play.",
                f"{h.name} loved {h.his} {self.pet} very much.",
                f"{h.name} had {_article(self.pet)}, and the {self.pet} was always {self.glad()}.",
            )
        )

    def event(self) -> str:
        """Return one event sentence (or a few), generic or genre-specific."""
        r = self.rng
        if r.random() < 0.3:
            events = _GENRE_EVENTS[self.genre]
            k = r.randrange(len(events))
            if k not in self.used_genre_events:  # each genre event at most once
                self.used_genre_events.add(k)
                return _cap(events[k](self))
        return _cap(r.choice(_EVENTS)(self))

    def ending(self) -> str:
        """Return the closing sentence."""
        h, r = self.hero, self.rng
        options = [
            f"At the end of the day, {self.ref(h)} was very {r.choice(_HAPPY)}.",
            f"That night, {self.ref(h)} slept with {h.his} {r.choice(GENERAL_VOCAB['object'])}.",
            "It was the best day ever.",
            f"{h.name} went home and hugged {h.his} {self.pet}.",
        ]
        if self.friend is not None:
            options.append(f"{h.name} and {self.friend.name} were best friends forever.")
        return _cap(r.choice(options))

    # -- copy-only content -----------------------------------------------------

    def invented_parts(self) -> tuple[str, list[str]]:
        """Return the sentence introducing an invented word and 2-4 that repeat it."""
        r, h = self.rng, self.hero
        word = invented_word(r)
        # half the time an animal (from the usual picker, so "cat" keeps its share)
        thing = self.animal() if r.random() < 0.5 else r.choice(_INVENTED_THINGS[self.genre])
        intro = r.choice(
            (
                f"The little {thing} was called {word}.",
                f"{h.name} met {_article(self.adj() + ' ' + thing)} called {word}.",
                f"There was {_article(thing)} named {word}.",
            )
        )
        templates: tuple[Callable[[], str], ...] = (
            lambda: f"{word} was very {self.emotion()}.",
            lambda: f"{self.ref(self.someone())} played with {word} in the {self.place()}.",
            lambda: f'"Come here, {word}!" said {self.someone().name}.',
            lambda: f"{word} jumped up and down.",
            lambda: f"Everyone loved {word}.",
            lambda: f"{self.someone().name} and {word} went to the {self.place()} together.",
            lambda: f'"I like you, {word}," said {self.someone().name}.',
            lambda: f"{word} gave {self.hero.name} {_article(self.obj())}.",
        )
        repeats = [_cap(f()) for f in r.sample(templates, r.randint(2, 4))]
        return intro, repeats

    def code_parts(self) -> tuple[str, list[str]]:
        """Return the sentence giving a secret code and 1-2 that repeat it."""
        r = self.rng
        code = self.digits(r.randint(3, 4))
        thing = r.choice(("box", "door", "chest"))
        intro = r.choice(
            (
                f"The {thing} had a secret lock. The code was {code}.",
                f'"The secret code is {code}," said {self.someone().name}.',
                f"{self.hero.name} found a paper with a code on it: {code}.",
            )
        )
        templates: tuple[Callable[[], str], ...] = (
            lambda: f"{self.ref(self.someone())} typed {code} and the {thing} opened.",
            lambda: f'"Is it {code}?" asked {self.someone().name}.',
            lambda: f"{self.ref(self.hero)} pressed {code} and the lock opened.",
        )
        repeats = [_cap(f()) for f in r.sample(templates, r.randint(1, 2))]
        return intro, repeats

    def list_parts(self) -> tuple[str, list[str]]:
        """Return a sentence with a list and one that recalls it verbatim."""
        r, h = self.rng, self.hero
        items = self.item_list(r.randint(3, 4))
        intro = r.choice(
            (
                f"{self.ref(h).capitalize()} packed {items} in {h.his} bag.",
                f"In the {self.place()}, {self.ref(h)} found {items}.",
                f"{h.name} took {items} on the trip.",
            )
        )
        recall = r.choice(
            (
                f"Later, {self.ref(h)} took out {items}.",
                f"At home, {self.ref(h)} put back {items}.",
                f'"I still have {items}," said {h.name}.',
            )
        )
        return _cap(intro), [_cap(recall)]

    # -- the whole story -------------------------------------------------------

    def write(self) -> str:
        """Return the story as one string."""
        r = self.rng
        head = [self.opening()]
        if self.friend is not None:
            head.append(self.intro_friend())
        if r.random() < 0.6:
            head.append(self.intro_pet())
        # body: (sentence, removable) pairs
        body: list[tuple[str, bool]] = [(self.event(), True) for _ in range(r.randint(4, 8))]
        copy_parts = []
        if r.random() < P_INVENTED:
            copy_parts.append(self.invented_parts())
        if r.random() < P_CODE:
            copy_parts.append(self.code_parts())
        if r.random() < P_RECALL_LIST:
            copy_parts.append(self.list_parts())
        for intro, repeats in copy_parts:
            at = r.randint(0, len(body) // 2)
            body.insert(at, (intro, False))
            slots = sorted(r.randint(at + 1, len(body)) for _ in range(len(repeats)))
            # insert from the back so earlier slots stay valid
            for slot, sentence in reversed(list(zip(slots, repeats, strict=True))):
                body.insert(slot, (sentence, False))
        tail = self.ending()
        fixed_words = sum(len(s.split()) for s in head) + len(tail.split())
        words = fixed_words + sum(len(s.split()) for s, _ in body)
        while words < MIN_WORDS:
            extra = self.event()
            body.append((extra, True))
            words += len(extra.split())
        i = len(body) - 1
        while words > MAX_WORDS and i >= 0:
            sentence, removable = body[i]
            if removable:
                del body[i]
                words -= len(sentence.split())
            i -= 1
        return " ".join(head + [s for s, _ in body] + [tail])


# -- generic events ------------------------------------------------------------

_Event = Callable[[_StoryWriter], str]


def _choose(w: _StoryWriter, options: tuple[Callable[[], str], ...]) -> str:
    """Pick one of ``options`` at random and return the sentence it writes."""
    return w.rng.choice(options)()


def _c(w: _StoryWriter) -> _Character:
    """Pick the character an event is about."""
    return w.someone()


def _other(w: _StoryWriter, c: _Character) -> str:
    """Name someone other than ``c``: the other character, or Mom or Dad."""
    if w.friend is not None:
        return (w.hero if c is w.friend else w.friend).name
    return w.rng.choice(("Mom", "Dad"))


def _ev_went(w: _StoryWriter) -> str:
    """Someone goes to a place with the friend or the pet."""
    c = w.someone()
    if w.friend is not None and c is w.hero and w.rng.random() < 0.5:
        return f"{w.ref(c)} went to the {w.place()} with {w.friend.name}."
    return f"{w.ref(c)} went to the {w.place()} with {c.his} {w.pet}."


def _ev_saw_animal(w: _StoryWriter) -> str:
    """Someone sees a coloured animal, which shows an emotion."""
    a = w.animal()
    return (
        f"{w.ref(w.someone())} saw {_article(w.colour() + ' ' + a)} near the "
        f"{w.place()}. The {a} was {w.emotion()}."
    )


def _ev_lost(w: _StoryWriter) -> str:
    """Someone loses or cannot find an object."""
    c = w.someone()
    return _choose(
        w,
        (
            lambda: f"{w.ref(c)} felt {w.sad()} because {c.he} lost {c.his} {w.obj()}.",
            lambda: f"{w.ref(c)} could not find {c.his} {w.obj()}, so {c.he} cried.",
            lambda: f'"Oh no, where is my {w.obj()}?" cried {c.name}.',
        ),
    )


def _ev_like_food(w: _StoryWriter) -> str:
    """Dialogue: someone likes a food (and the friend agrees)."""
    c = w.someone()
    line = f'"I like {plural(w.count_food())}!" said {c.name}.'
    if w.friend is not None:
        line += f' "Me too!" said {_other(w, c)}.'
    return line


def _ev_eat(w: _StoryWriter) -> str:
    """Someone eats (and drinks)."""
    c = w.someone()
    if w.rng.random() < 0.5:
        food = _article(w.count_food())
    else:
        food = "some " + w.mass_food()
    return _choose(
        w,
        (
            lambda: f"{w.ref(c)} ate {food} and drank some {w.rng.choice(_DRINKS)}.",
            lambda: f"{w.ref(c)} was hungry, so {c.he} ate {food}.",
            lambda: f"For dinner, they had {food}.",
        ),
    )


def _ev_count_words(w: _StoryWriter) -> str:
    """Someone counts things with number words: "one, two, three"."""
    r = w.rng
    n = r.randint(3, 6)
    start = 1 if r.random() < 0.6 else r.randint(1, 21 - n)
    seq = ", ".join(NUMBER_WORDS[start - 1 : start - 1 + n])
    return f"{w.ref(w.someone())} counted the {plural(w.countable())}: {seq}."


def _ev_count_digits(w: _StoryWriter) -> str:
    """Someone counts or writes a run of digits: "1 2 3 4"."""
    r = w.rng
    n = r.randint(3, 6)
    start = 1 if r.random() < 0.6 else r.randint(1, 21 - n)
    seq = " ".join(str(k) for k in range(start, start + n))
    if r.random() < 0.5:
        return f'"{seq}!" counted {w.someone().name}.'
    return f"{w.ref(w.someone())} wrote the numbers {seq}."


def _ev_plus_one(w: _StoryWriter) -> str:
    """A +1 fact: "had three apples ... one more ... had four apples"."""
    r = w.rng
    c = w.someone()
    n = r.randint(1, 19)
    digits = r.random() < 0.4
    thing = w.countable()
    before = thing if n == 1 else plural(thing)
    return (
        f"{w.ref(c)} had {_number(n, digits)} {before}. Then {c.he} found "
        f"{_number(1, digits)} more. Now {c.he} had {_number(n + 1, digits)} "
        f"{plural(thing)}."
    )


def _ev_count_animals(w: _StoryWriter) -> str:
    """Counting animals: "one cat, then two cats, then three cats"."""
    a = w.animal()
    p = plural(a)
    return f"{w.ref(w.someone())} saw one {a}, then two {p}, then three {p}."


def _ev_how_many(w: _StoryWriter) -> str:
    """Dialogue: how many things there are, with a number-word answer."""
    c = w.someone()
    n = w.rng.randint(2, 20)
    return (
        f'"How many {plural(w.countable())} are there?" asked {c.name}. '
        f'"There are {_number(n, False)}!" said {_other(w, c)}.'
    )


def _ev_there_were(w: _StoryWriter) -> str:
    """A quantity of things in a place."""
    n = w.rng.randint(2, 20)
    thing = plural(w.countable())
    return _choose(
        w,
        (
            lambda: f"There were {_number(n, w.rng.random() < 0.4)} {thing} in the {w.place()}.",
            lambda: f"The {w.place()} was full of {thing}.",
            lambda: f"{w.ref(w.someone())} saw a lot of {thing}.",
        ),
    )


def _ev_list(w: _StoryWriter) -> str:
    """A list of three or four things (not recalled later)."""
    c = w.someone()
    items = w.item_list(w.rng.randint(3, 4))
    return _choose(
        w,
        (
            lambda: f"{w.ref(c)} packed {items} in {c.his} bag.",
            lambda: f"In the {w.place()}, {w.ref(c)} found {items}.",
            lambda: f"{w.ref(c)} bought {items} at the shop.",
        ),
    )


def _ev_hug(w: _StoryWriter) -> str:
    """Someone feels an emotion and hugs the pet."""
    c = w.someone()
    return f"{w.ref(c)} was {w.emotion()}, so {c.he} hugged {c.his} {w.pet}."


def _ev_play(w: _StoryWriter) -> str:
    """The characters play together."""
    if w.friend is None:
        return f"{w.ref(w.hero)} played with {_article(w.obj())} in the {w.place()}."
    h, f = w.hero.name, w.friend.name
    return _choose(
        w,
        (
            lambda: f"{h} and {f} played with {_article(w.obj())} in the {w.place()}.",
            lambda: f"{h} and {f} played a fun game all day.",
            lambda: f"{h} and {f} took their {plural(w.obj())} to the {w.place()}.",
            lambda: f"{h} and {f} danced and sang a song.",
            lambda: f'"This is our {w.place()}!" said {h} and {f}.',
        ),
    )


def _ev_weather(w: _StoryWriter) -> str:
    """Weather, light and time of day."""
    c = w.someone()
    return _choose(
        w,
        (
            lambda: f"The sun shone and the sky was {w.rng.choice(('blue', 'pink', 'orange'))}.",
            lambda: f"It began to rain, so {w.ref(c)} ran into the {w.place()}.",
            lambda: "The wind was cold, but the sun was warm.",
            lambda: f"It was a sunny day, and {w.ref(c)} walked through the {w.place()}.",
            lambda: f"{w.ref(c)} got wet in the rain, but {c.he} was not {w.sad()}.",
            lambda: "Soon, it was night.",
            lambda: f"It was dark, so {w.ref(c)} turned on the lamp.",
        ),
    )


def _ev_help(w: _StoryWriter) -> str:
    """Someone helps someone."""
    c = w.someone()
    if w.friend is None:
        return f"{w.ref(c)} helped the {w.animal()} find its {w.obj()}."
    return _choose(
        w,
        (
            lambda: f"{w.ref(w.hero)} helped {w.friend.name} find {w.friend.his} {w.obj()}.",
            lambda: f"{w.ref(c)} needed help, so {_other(w, c)} came to help {c.him}.",
            lambda: f"{w.ref(c)} shared {c.his} {plural(w.count_food())} with {_other(w, c)}.",
        ),
    )


def _ev_pet(w: _StoryWriter) -> str:
    """The pet does something."""
    c = w.hero
    return _choose(
        w,
        (
            lambda: f"The {w.pet} jumped on the {w.obj()}.",
            lambda: f"The {w.pet} ran after {_article(w.colour() + ' ' + w.obj())}.",
            lambda: f"The {w.pet} was {w.sad()} and hid behind the {w.obj()}.",
            lambda: f"The {w.pet} followed {c.him} to the {w.place()}.",
            lambda: f"{w.ref(c)} gave the {w.pet} some water.",
            lambda: f"The {w.pet} wanted to eat {_article(w.count_food())}.",
            lambda: f'"I love my {w.pet}," said {c.name}.',
        ),
    )


def _ev_feel(w: _StoryWriter) -> str:
    """Emotions."""
    c = w.someone()
    return _choose(
        w,
        (
            lambda: f"{w.ref(c)} felt {w.emotion()}.",
            lambda: f"{w.ref(c)} was {w.sad()}, but then {c.he} smiled.",
            lambda: f'"Do not be {w.sad()}," said {_other(w, c)}.',
            lambda: f"{w.ref(c)} laughed and laughed.",
            lambda: f"When {w.ref(c)} saw the {w.animal()}, {c.he} felt {w.emotion()}.",
            lambda: f"It was a special day for {c.name}.",
            lambda: f"{w.ref(c)} was sleepy and went to bed.",
        ),
    )


def _ev_talk(w: _StoryWriter) -> str:
    """One line (or two) of quoted dialogue."""
    c = w.someone()
    o = _other(w, c)
    return _choose(
        w,
        (
            lambda: f'"Hello, {o}!" said {c.name}. "Hi, {c.name}!" said {o}.',
            lambda: (
                f'"Can I have {_article(w.count_food())}, please?" asked {c.name}. '
                f'"Yes, you can," said {o}.'
            ),
            lambda: f'"Wow, what a beautiful {w.obj()}!" shouted {c.name}.',
            lambda: f'"Let us go to the {w.place()}," said {c.name}.',
            lambda: f'"I want to see the {w.animal()}," whispered {c.name}.',
            lambda: f'"Thank you for the {w.obj()}!" said {c.name}.',
            lambda: f'"Who made this {w.obj()}?" asked {c.name}.',
            lambda: f'"We will make {_article(w.adj() + " " + w.obj())} together," said {c.name}.',
            lambda: f'"Your {w.obj()} is so {w.colour()}!" said {c.name}.',
            lambda: f'"Did you see that?" asked {c.name}.',
            lambda: f'"If we help the {w.animal()}, it will be {w.glad()}," said {c.name}.',
            lambda: f'"Is it {_article(w.animal())} or {_article(w.animal())}?" asked {c.name}.',
            lambda: f'"Look at the {w.colour()} {w.obj()}!" said {c.name}.',
            lambda: f'{c.name} said, "I am so {w.emotion()} today!"',
            lambda: f'"Can we play with the {w.animal()}?" asked {c.name}.',
            lambda: f'"Goodbye, {o}!" said {c.name}.',
            lambda: f'"Keep the {w.obj()}," said {c.name}.',
            lambda: f'"{o} has {_article(w.colour() + " " + w.obj())}!" said {c.name}.',
            lambda: f'"Run, {o}, run!" shouted {c.name}.',
        ),
    )


def _ev_do(w: _StoryWriter) -> str:
    """Miscellaneous actions."""
    c = w.someone()
    return _choose(
        w,
        (
            lambda: f"{w.ref(c)} found {_article(w.colour() + ' ' + w.obj())} under the {w.obj()}.",
            lambda: f"{w.ref(c)} climbed up the hill and looked around.",
            lambda: f"{w.ref(c)} painted a picture of {_article(w.animal())}.",
            lambda: f"{w.ref(c)} built a little house for the {w.animal()}.",
            lambda: f"{w.ref(c)} tried to fly, but {c.he} fell down.",
            lambda: f"{w.ref(c)} heard a loud sound.",
            lambda: f"{w.ref(c)} woke up and looked outside.",
            lambda: f"{w.ref(c)} kept the {w.obj()} in a box.",
            lambda: f"{w.ref(c)} knew what to do.",
            lambda: f"The {w.animal()} ran very fast, and {w.ref(c)} ran after it.",
            lambda: f"{w.ref(c)} left {c.his} {w.obj()} by the door.",
            lambda: f"The {w.obj()} was too heavy, so {w.ref(c)} pushed it.",
            lambda: f"The {w.animal()} was quiet.",
            lambda: f"{w.ref(c)} was {w.rng.choice(_TRAITS)} and {w.rng.choice(_TRAITS)}.",
            lambda: f"Every day, {w.ref(c)} went to the {w.place()}.",
            lambda: f"Next, they went inside the {w.place()}.",
            lambda: f"At last, {w.ref(c)} went on {c.his} way.",
            lambda: f"First, {w.ref(c)} jumped off the {w.obj()}.",
            lambda: f"{w.ref(c)} also liked {plural(w.countable())}.",
            lambda: f"The {w.animal()} was just too small to get the {w.obj()}.",
            lambda: f"The {plural(w.animal())} were {w.glad()}, and {w.ref(c)} played with them.",
            lambda: f"{w.ref(c)} put the {w.obj()} back before dinner.",
            lambda: f"The {w.obj()} was round and {w.colour()}.",
            lambda: f"{w.ref(c)} tried again and again.",
            lambda: f"{w.ref(c)} liked to sing.",
            lambda: f'"Let us dance!" said {c.name}.',
            lambda: f"{w.ref(c)} had {_article(w.adj() + ' ' + w.obj())}.",
            lambda: f"{w.ref(c)} held the {w.obj()} very still.",
            lambda: "They had a big party with cake and juice.",
        ),
    )


def _ev_day(w: _StoryWriter) -> str:
    """Days of the week, with arithmetic around the week's cycle ("the day after Sunday")."""
    r, c = w.rng, w.someone()
    d, k = r.randrange(7), r.randint(2, 3)

    def day(offset: int) -> str:
        return DAYS[(d + offset) % 7]

    return _choose(
        w,
        (
            lambda: f"On {day(0)}, {w.ref(c)} went to the {w.place()}. The next day was {day(1)}.",
            lambda: f"The day after {day(0)} is {day(1)}.",
            lambda: f"{w.ref(c)} played on {day(0)}, {day(1)} and {day(2)}.",
            lambda: f"Today is {day(0)}, so in {_number(k, False)} days it will be {day(k)}.",
            lambda: f'"What day is it?" asked {c.name}. "It is {day(0)}!" said {_other(w, c)}.',
            lambda: f"Every {day(0)}, {w.ref(c)} went to the {w.place()}.",
            lambda: f"It was {day(0)}, and tomorrow would be {day(1)}.",
        ),
    )


def _ev_month(w: _StoryWriter) -> str:
    """Months of the year, with arithmetic around the year's cycle ("after December")."""
    r, c = w.rng, w.someone()
    m, k = r.randrange(12), r.randint(2, 3)

    def month(offset: int) -> str:
        return MONTHS[(m + offset) % 12]

    return _choose(
        w,
        (
            lambda: f"{c.name}'s birthday is in {month(0)}.",
            lambda: f"After {month(0)} comes {month(1)}.",
            lambda: (
                f"In {month(0)}, {w.ref(c)} went to the {w.place()}. "
                f"The next month was {month(1)}."
            ),
            lambda: (
                f"The trip was in {month(0)}, and {_number(k, False)} months later "
                f"it was {month(k)}."
            ),
            lambda: f"{w.ref(c)} liked {month(0)}, {month(1)} and {month(2)}.",
            lambda: f"Every {month(0)}, {w.ref(c)} planted a flower in the garden.",
        ),
    )


def _ev_animal_act(w: _StoryWriter) -> str:
    """Something only an animal does, so the words after an animal depend on it being one."""
    a = w.animal()
    return _choose(
        w,
        (
            lambda: f"The {a} wagged its tail.",
            lambda: f"The {a} sniffed the {w.obj()} and wagged its tail.",
            lambda: f"{w.ref(w.someone())} fed the {a}, and the {a} wagged its tail.",
        ),
    )


def _ev_taste(w: _StoryWriter) -> str:
    """How a food tastes, so the words after a food depend on it being one."""
    c = w.someone()
    taste = w.rng.choice(("yummy", "sweet", "tasty"))
    return _choose(
        w,
        (
            lambda: f"The {w.count_food()} was {taste}.",
            lambda: f"{w.ref(c)} said the {w.mass_food()} was very {taste}.",
        ),
    )


def _ev_favourite(w: _StoryWriter) -> str:
    """A favourite colour, so the words after a colour depend on it being one."""
    c = w.someone()
    return _choose(
        w,
        (
            lambda: f"{c.name}'s favourite colour was {w.colour()}.",
            lambda: f'"My favourite colour is {w.colour()}," said {c.name}.',
        ),
    )


_EVENTS: tuple[_Event, ...] = (
    _ev_went, _ev_saw_animal, _ev_lost, _ev_like_food, _ev_eat,
    _ev_count_words, _ev_count_digits, _ev_plus_one, _ev_count_animals,
    _ev_how_many, _ev_there_were, _ev_list, _ev_hug, _ev_play, _ev_weather,
    _ev_help, _ev_pet, _ev_feel, _ev_feel, _ev_talk, _ev_talk, _ev_do, _ev_do,
    _ev_day, _ev_day, _ev_month, _ev_month, _ev_animal_act, _ev_taste, _ev_favourite,
)  # fmt: skip


# -- genre events --------------------------------------------------------------

_FAIRY_EVENTS: tuple[_Event, ...] = (
    lambda w: (
        f"The {w.rng.choice(('king', 'queen'))} gave {_c(w).name} {_article(w.colour())} crown."
    ),
    lambda w: f"{_article(w.adj() + ' ' + w.animal())} flew over the {w.place()}.",
    lambda w: f"The wizard waved his magic wand, and the {w.obj()} turned {w.colour()}.",
    lambda w: f"{w.ref(_c(w))} rode {_article(w.colour() + ' ' + w.animal())} to the tower.",
    lambda w: "A knight with a shiny sword came to the castle.",
    lambda w: f"The fairy gave {_c(w).name} a magic ring and a little mirror.",
)

_SPACE_EVENTS: tuple[_Event, ...] = (
    lambda w: f"The rocket flew past the moon and landed on {_article(w.colour())} planet.",
    lambda w: (lambda c: f"{w.ref(c)} put on {c.his} {w.colour()} helmet.")(_c(w)),
    lambda w: "An alien waved from the window of the rocket.",
    lambda w: f"{w.ref(_c(w))} looked at the stars with a telescope.",
    lambda w: f"The robot pressed a big button, and the lights turned {w.colour()}.",
    lambda w: "The captain and the crew flew into space.",
)

_SCHOOL_EVENTS: tuple[_Event, ...] = (
    lambda w: "The teacher read a book to the class.",
    lambda w: f"{w.ref(_c(w))} drew {_article(w.animal())} with {_article(w.colour())} crayon.",
    lambda w: f"At lunch, {w.ref(_c(w))} ate a sandwich and {_article(w.count_food())}.",
    lambda w: "The class learned to count in the classroom.",
    lambda w: (lambda c: f"{w.ref(c)} put {c.his} pencil and ruler in {c.his} backpack.")(_c(w)),
    lambda w: f"After the lesson, {_c(w).name} played on the playground.",
    lambda w: f"{_c(w).name} read a book about {plural(w.animal())} in the library.",
)

_FARM_EVENTS: tuple[_Event, ...] = (
    lambda w: f"The farmer fed the {plural(w.animal())} and the {plural(w.animal())}.",
    lambda w: f"{w.ref(_c(w))} picked {_number(w.rng.randint(2, 12), False)} eggs in the barn.",
    lambda w: "The tractor went into the field with a big wagon.",
    lambda w: f"The {w.animal()} ate hay in the barn.",
    lambda w: (
        lambda c: (
            f"{c.name} and {c.his} {w.rng.choice(('mom', 'dad'))} fixed the fence with a shovel."
        )
    )(_c(w)),
    lambda w: f"{w.ref(_c(w))} carried a bucket of milk to the {w.place()}.",
    lambda w: "They planted corn and carrots in the meadow near the pond.",
)

_SEA_EVENTS: tuple[_Event, ...] = (
    lambda w: "The ship sailed past a little island.",
    lambda w: f"{w.ref(_c(w))} caught {_article(w.animal())} with a net.",
    lambda w: f"{_article(w.colour() + ' ' + w.animal())} swam near the boat.",
    lambda w: "The captain looked at the map and the compass.",
    lambda w: f"{w.ref(_c(w))} found {_article(w.colour())} shell on the beach.",
    lambda w: f"The waves were big, but {w.ref(_c(w))} was not afraid.",
    lambda w: "The pirate put the anchor down in the harbour.",
    lambda w: "The pirate found a chest full of treasure.",
    lambda w: "The sea was deep and dark, and the waves were big.",
    lambda w: "The sailor pulled up the sail, and the wind took the boat far away.",
)

_GENRE_EVENTS: dict[str, tuple[_Event, ...]] = {
    "fairy": _FAIRY_EVENTS,
    "space": _SPACE_EVENTS,
    "school": _SCHOOL_EVENTS,
    "farm": _FARM_EVENTS,
    "sea": _SEA_EVENTS,
}


# -- public API ----------------------------------------------------------------


def generate_story(rng: random.Random) -> str:
    """Return one story drawn from the grammar with the random generator ``rng``."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    return _StoryWriter(rng).write()


def generate_stories(n_stories: int, seed: int) -> list[str]:
    """Return ``n_stories`` stories generated deterministically from ``seed``."""
    if not isinstance(n_stories, int) or isinstance(n_stories, bool):
        raise TypeError(f"n_stories must be an int, got {type(n_stories).__name__}")
    if n_stories < 0:
        raise ValueError(f"n_stories must be >= 0, got {n_stories}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n_stories)]
