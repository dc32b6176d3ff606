"""Profiles: which model, SAEs and data sizes a chapter runs on.

``load()`` reads ``SAEBOOK_PROFILE`` (default ``tiny``) and returns a :class:`Profile`: a
``HookedSAETransformer``, its SAELens SAEs by role, a width family of residual SAEs and a
token source. This module is the only place that knows model names, SAE releases and hooks.

- ``tiny``: the project's own 2-layer model and SAEs, shipped in the package (CPU, offline).
- ``gpt2``: gpt2-small with SAELens' pretrained releases (GPU or Colab, internet).
- ``gemma``: gemma-2-2b with Gemma Scope (a large GPU, internet).
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from dataclasses import replace as _replace
from typing import Any

import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.errors import HubUnavailableError, MissingArtifactError, UnknownProfileError
from saebook.hooks import hook_layer, reachable
from saebook.tasks import LogitDiffTask, ioi_task

__all__ = [
    "PROFILES",
    "Profile",
    "ProfileSpec",
    "Sizes",
    "load",
    "default_name",
    "available",
    "resolve_sae_id",
    "single_token_words",
    "HUB_CONCEPT_WORDS",
    "LazySAEs",
    "LazySAEList",
]

ENV_VAR = "SAEBOOK_PROFILE"


@dataclass(frozen=True)
class Sizes:
    """The heavy sizes a chapter reads from its profile instead of literals (positive ints)."""

    seq_len: int  # tokens per row (BOS included)
    n_seqs: int  # rows of a corpus sample (statistics, dashboards, training activations)
    batch_size: int  # rows per forward pass, and the base of small evaluation samples
    gen_tokens: int  # tokens to generate per prompt (steering)
    train_tokens: int  # activations an SAE sees during training (Part 4)
    dense_rows: int = 256  # rows of a dense latent Jacobian computed for timing (circuits/01)
    jacobian_seq: int = 32  # tokens of the text whose latent Jacobians circuits/01 computes

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Sizes.{f.name} must be a positive int, got {value!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The size names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes: int) -> Sizes:
        """A copy with ``changes`` applied; an unknown name or a non-positive value raises."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ValueError(f"sizes must be among {list(self.names())}, got {unknown}")
        return _replace(self, **changes)

    def __getitem__(self, name: object) -> int:
        raise TypeError(
            f"profile.sizes is a Sizes dataclass, not a dict: write sizes.{name} "
            f"instead of sizes[{name!r}]"
        )


@dataclass(frozen=True)
class ProfileSpec:
    """What a profile is made of, before anything is loaded."""

    name: str
    description: str
    model: str  # a TransformerLens model name, or "saebook-tiny"
    saes: dict[str, tuple[str, str]]  # role -> (SAELens release, sae_id or id prefix)
    width_family: tuple[str, tuple[str, ...]]  # (release, sae_ids narrow to wide)
    dataset: str | None  # Hugging Face dataset of text for .tokens(); None: the tiny world
    sizes: Sizes  # heavy sizes chapters use instead of literals
    needs: str  # hardware in words, for the landing page and errors
    task: str  # the logit-difference task the model solves: "code_recall" or "ioi"
    raw_weights: bool = False  # load with from_pretrained_no_processing
    #: attention-output (hook_z) SAEs at more layers, for the task's heads: layer -> source
    head_saes: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: heads of the task's circuit known from the literature: role -> ((layer, head), ...)
    task_heads: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    #: the instruction-tuned sibling of ``model`` (same architecture), or None
    instruct_model: str | None = None


#: Concept categories and common English words for them, for profiles whose model reads
#: ordinary text (gpt2, gemma). A word is used only where it is a single token for the
#: model's tokenizer (checked at load time by :meth:`Profile.concept_words`).
HUB_CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "name": (
        "Mary", "John", "Anna", "James", "Sarah", "David", "Laura", "Mark", "Paul", "Tom",
        "Emma", "Peter", "Lucy", "Jack", "Kate", "Michael", "Alice", "George", "Susan", "Robert",
        "Linda", "Daniel", "Helen", "Steve", "Rachel", "Chris", "Amy", "Brian", "Lisa", "Eric",
    ),
    "animal": (
        "dog", "cat", "horse", "cow", "pig", "sheep", "bird", "fish", "mouse", "rabbit", "lion",
        "tiger", "bear", "wolf", "fox", "deer", "duck", "snake", "frog", "monkey", "elephant",
        "whale", "shark", "eagle", "owl", "bee", "dogs", "cats", "horses", "birds",
    ),
    "colour": (
        "red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple", "orange",
        "grey", "gray", "silver", "gold",
    ),
    "number": (
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "twenty", "thirty", "hundred", "thousand", "million",
    ),
    "food": (
        "bread", "cheese", "rice", "meat", "chicken", "beef", "apple", "apples", "cake", "soup",
        "pizza", "egg", "eggs", "milk", "butter", "sugar", "salt", "fruit", "potatoes", "pasta",
        "coffee", "tea", "wine", "beer", "chocolate",
    ),
    "place": (
        "London", "Paris", "Berlin", "Tokyo", "China", "India", "France", "Germany", "Japan",
        "Canada", "Texas", "California", "Florida", "Boston", "Chicago", "Europe", "Africa",
        "Asia", "Russia", "Italy", "Spain", "Mexico", "Australia", "Brazil",
    ),
    "emotion": (
        "happy", "sad", "angry", "afraid", "scared", "proud", "excited", "nervous", "calm",
        "upset", "worried", "glad", "lonely", "jealous", "anxious", "joy", "fear", "anger",
        "love", "hate",
    ),
    "verb": (
        "go", "went", "run", "ran", "walk", "walked", "eat", "ate", "see", "saw", "make", "made",
        "take", "took", "give", "gave", "say", "said", "come", "came", "think", "thought",
        "know", "knew", "find", "found", "tell", "told", "write", "wrote",
    ),
    "object": (
        "table", "chair", "door", "window", "book", "books", "car", "cars", "phone", "box",
        "bottle", "cup", "bag", "key", "keys", "pen", "paper", "bed", "lamp", "clock", "shoe",
        "shoes", "hat", "ball", "knife", "computer", "camera", "wheel", "rope", "mirror",
    ),
}  # fmt: skip


#: The IOI circuit's heads in gpt2-small (Wang et al. 2022, "Interpretability in the Wild",
#: figure 2 and section 3): role -> (layer, head) pairs.
IOI_HEADS_GPT2: dict[str, tuple[tuple[int, int], ...]] = {
    "name mover": ((9, 9), (9, 6), (10, 0)),
    "negative name mover": ((10, 7), (11, 10)),
    "backup name mover": (
        (10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9),
    ),
    "S-inhibition": ((7, 3), (7, 9), (8, 6), (8, 10)),
    "induction": ((5, 5), (6, 9)),
    "duplicate token": ((0, 1), (3, 0)),
    "previous token": ((2, 2), (4, 11)),
}  # fmt: skip


PROFILES: dict[str, ProfileSpec] = {
    spec.name: spec
    for spec in (
        ProfileSpec(
            name="tiny",
            description="the saebook tiny world: a 2-layer model and SAEs on synthetic stories",
            model="saebook-tiny",
            saes={},  # read from the shipped files; see saebook.tinyworld.build.SAE_SPECS
            width_family=("saebook-tiny", ()),
            dataset=None,
            sizes=Sizes(
                seq_len=128,
                n_seqs=256,
                batch_size=64,
                gen_tokens=24,
                train_tokens=102_400,
                dense_rows=4096,  # more than any tiny SAE's width: the whole dense Jacobian
            ),
            needs="a CPU (2 cores), no network",
            task="code_recall",  # the tiny model does not learn IOI
        ),
        ProfileSpec(
            name="gpt2",
            description="gpt2-small with SAELens' pretrained SAEs",
            model="gpt2-small",
            saes={
                "resid": ("gpt2-small-res-jb", "blocks.8.hook_resid_pre"),
                "attn": ("gpt2-small-hook-z-kk", "blocks.5.hook_z"),
                "mlp": ("gpt2-small-mlp-tm", "blocks.8.hook_mlp_out"),
            },
            width_family=(
                "gpt2-small-res-jb-feature-splitting",
                tuple(f"blocks.8.hook_resid_pre_{w}" for w in (768, 1536, 3072, 6144, 12288)),
            ),
            dataset="NeelNanda/pile-10k",  # parquet; openwebtext ships a loading script
            sizes=Sizes(
                seq_len=128, n_seqs=1024, batch_size=32, gen_tokens=32, train_tokens=2_048_000
            ),
            needs="a GPU or Colab, internet",
            task="ioi",
            # Kissane et al.'s attention SAEs where Wang et al.'s IOI heads write
            head_saes={
                layer: ("gpt2-small-hook-z-kk", f"blocks.{layer}.hook_z") for layer in (8, 9)
            },
            task_heads=IOI_HEADS_GPT2,
        ),
        ProfileSpec(
            name="gemma",
            description="gemma-2-2b with Gemma Scope SAEs and transcoders",
            model="gemma-2-2b",
            saes={
                "resid": ("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"),
                "attn": ("gemma-scope-2b-pt-att-canonical", "layer_12/width_16k/canonical"),
                "mlp": ("gemma-scope-2b-pt-mlp-canonical", "layer_12/width_16k/canonical"),
                "transcoder": ("gemma-scope-2b-pt-transcoders", "layer_12/width_16k/"),
            },
            width_family=(
                "gemma-scope-2b-pt-res-canonical",
                tuple(f"layer_12/width_{w}/canonical" for w in ("16k", "65k", "262k")),
            ),
            dataset="monology/pile-uncopyrighted",
            sizes=Sizes(
                seq_len=128, n_seqs=512, batch_size=8, gen_tokens=32, train_tokens=2_048_000
            ),
            needs="a GPU with >= 24 GB, internet",
            task="ioi",
            raw_weights=True,  # Gemma Scope was trained on the unprocessed model
            instruct_model="gemma-2-2b-it",
        ),
    )
}


class LazySAEs(Mapping[str, SAE]):
    """SAEs by role, each loaded on first access and kept: a read-only mapping.

    A hub profile names several SAEs (on gemma several GB in all); a chapter that reads one
    role loads only that one. ``loaders`` maps role -> a function returning its ``SAE``.
    Iterating over roles loads nothing; ``items()``/``values()`` load every role they reach.
    ``sources`` (role -> (SAELens release, sae_id)) lets :meth:`Profile.describe_saes` describe
    a role without loading it.
    """

    def __init__(
        self,
        loaders: Mapping[str, Callable[[], SAE]],
        sources: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self._loaders = dict(loaders)
        self._loaded: dict[str, SAE] = {}
        self._sources = dict(sources or {})  # role -> (SAELens release, sae_id), if known

    def __getitem__(self, role: str) -> SAE:
        if role not in self._loaders:
            raise KeyError(role)
        if role not in self._loaded:
            self._loaded[role] = self._loaders[role]()
        return self._loaded[role]

    def __contains__(self, role: object) -> bool:  # Mapping's default would load the SAE
        return role in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def loaded(self) -> list[str]:
        """The roles loaded so far."""
        return list(self._loaded)

    def source(self, role: str) -> tuple[str, str] | None:
        """The (SAELens release, sae_id) ``role`` loads from, or None where not given."""
        return self._sources.get(role)

    def __repr__(self) -> str:
        return f"LazySAEs(roles={list(self._loaders)}, loaded={self.loaded()})"


class LazySAEList(Sequence[SAE]):
    """A sequence of SAEs (the width family), each loaded on first access and kept."""

    def __init__(
        self,
        loaders: Sequence[Callable[[], SAE]],
        sources: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self._saes = LazySAEs(
            {str(i): f for i, f in enumerate(loaders)},
            {str(i): s for i, s in enumerate(sources or ())},
        )

    def __getitem__(self, index):  # int -> SAE, slice -> list[SAE]
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        n = len(self)
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int or a slice, got {index!r}") from None
        if not -n <= i < n:
            raise IndexError(f"index must be in [{-n}, {n}), got {i}")
        return self._saes[str(i % n)]

    def __len__(self) -> int:
        return len(self._saes)

    def loaded(self) -> list[int]:
        """The indices loaded so far."""
        return [int(i) for i in self._saes.loaded()]

    def source(self, index: int) -> tuple[str, str] | None:
        """The (SAELens release, sae_id) SAE ``index`` loads from, or None where not given."""
        return self._saes.source(str(index))

    def __repr__(self) -> str:
        return f"LazySAEList(n={len(self)}, loaded={self.loaded()})"


@dataclass
class Profile:
    """A loaded profile: model, SAEs by role, width family, sizes and a token source."""

    name: str
    description: str
    model: HookedSAETransformer
    saes: Mapping[str, SAE]  # a dict on tiny; LazySAEs (load on first access) on hub profiles
    width_family: Sequence[SAE]  # narrow to wide; LazySAEList on hub profiles
    sizes: Sizes
    device: str
    task_name: str
    _token_source: Callable[[int, int, int], Tensor] = field(repr=False)
    #: (n_seqs, seq_len, seed) -> labels of the token source's rows; None: no ground truth
    _label_source: Callable[[int, int, int], dict[str, Tensor]] | None = field(
        default=None, repr=False
    )
    _concept_words: dict[str, tuple[str, ...]] | None = field(default=None, repr=False)
    #: layer -> extra hook_z SAE (lazy on hub profiles), beside the ``attn`` role
    _head_saes: Mapping[str, SAE] = field(default_factory=dict, repr=False)
    #: role -> (layer, head) pairs of the task's circuit known from the literature
    task_heads: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    _instruct: HookedSAETransformer | None = field(default=None, repr=False)

    @classmethod
    def from_spec(
        cls,
        spec: ProfileSpec,
        loaded: tuple[HookedSAETransformer, Mapping[str, SAE], Sequence[SAE]],
        device: str,
        token_source: Callable[[int, int, int], Tensor],
        label_source: Callable[[int, int, int], dict[str, Tensor]] | None = None,
        sizes: Sizes | None = None,
        head_saes: Mapping[str, SAE] | None = None,
        task_heads: dict[str, tuple[tuple[int, int], ...]] | None = None,
    ) -> Profile:
        """The profile ``spec`` describes, from its ``loaded`` (model, SAEs by role, family).

        ``sizes`` defaults to the spec's; the sources give the rows of :meth:`tokens` and
        the labels of :meth:`labeled_tokens`; ``head_saes`` (str(layer) -> SAE) are the extra
        attention SAEs and ``task_heads`` the known heads (default: the spec's).
        """
        model, saes, family = loaded
        return cls(
            name=spec.name,
            description=spec.description,
            model=model,
            saes=saes,
            width_family=family,
            sizes=spec.sizes if sizes is None else sizes,
            device=device,
            task_name=spec.task,
            _token_source=token_source,
            _label_source=label_source,
            _head_saes=head_saes if head_saes is not None else {},
            task_heads=dict(spec.task_heads if task_heads is None else task_heads),
        )

    def _rows_shape(self, n_seqs: object, seq_len: object) -> tuple[int, int]:
        seq_len = self.sizes.seq_len if seq_len is None else seq_len
        if isinstance(n_seqs, bool) or not isinstance(n_seqs, int) or n_seqs < 1:
            raise ValueError(f"n_seqs must be a positive int, got {n_seqs!r}")
        if not isinstance(seq_len, int) or not 2 <= seq_len <= self.model.cfg.n_ctx:
            raise ValueError(
                f"seq_len must be an int in [2, {self.model.cfg.n_ctx}], got {seq_len!r}"
            )
        return n_seqs, seq_len

    def tokens(
        self, n_seqs: int, seq_len: int | None = None, seed: int = 0
    ) -> Int[Tensor, "n_seqs seq"]:
        """``n_seqs`` rows of ``seq_len`` corpus tokens (default: the profile's), BOS first."""
        n_seqs, seq_len = self._rows_shape(n_seqs, seq_len)
        return self._token_source(n_seqs, seq_len, seed).to(self.device)

    def token_dataset(self, n_rows: int, seq_len: int | None = None, seed: int = 0) -> Any:
        """The rows of ``tokens(n_rows, seq_len, seed)`` as a ``datasets.Dataset``.

        One ``input_ids`` column of token lists, the form SAELens' training runner streams
        from (a pretokenized dataset). Offline on ``tiny``; on a hub profile the rows come
        from the profile's text dataset, as for :meth:`tokens`.
        """
        from datasets import Dataset

        rows = self.tokens(n_rows, seq_len, seed)
        return Dataset.from_dict({"input_ids": rows.cpu().tolist()})

    def labeled_tokens(
        self,
        n_seqs: int,
        seq_len: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> dict[str, Tensor] | None:
        """Ground-truth labels of exactly the rows ``tokens(n_seqs, seq_len, seed)`` returns.

        A dict from label name to a bool tensor shaped like those rows, on ``device`` (the
        CPU by default; pass ``profile.device`` to index them with masks of the tokens), or
        None on a profile without ground truth (only the tiny world has token labels).
        """
        n_seqs, seq_len = self._rows_shape(n_seqs, seq_len)
        if self._label_source is None:
            return None
        labels = self._label_source(n_seqs, seq_len, seed)
        return {name: flags.to(device) for name, flags in labels.items()}

    def task(self, n: int = 16, seed: int = 0) -> LogitDiffTask:
        """A logit-difference task this profile's model solves (clean/corrupted prompt pairs)."""
        if self.task_name == "code_recall":
            from saebook.tinyworld.tasks import code_recall_task

            task = code_recall_task(self.model, n=n, seed=seed)
        else:
            task = ioi_task(self.model, n=n, seed=seed)
        return task.to(self.device)

    def concept_words(self) -> dict[str, tuple[str, ...]]:
        """Concept category (``name``, ``animal``, ``colour``, ...) -> words of that category.

        The tiny profile gives its world's lexicon; hub profiles give
        :data:`HUB_CONCEPT_WORDS`. Only words that are one token for this model's tokenizer
        are kept (see :func:`single_token_words`); on a hub profile the others are dropped
        with a warning naming them (the tiny lexicon's inflected forms that its tokenizer
        splits, such as "doors", are dropped silently: no token could match them). Computed
        once per profile, on first call.
        """
        if self._concept_words is None:
            if self.name == "tiny":
                from saebook.tinyworld.labels import LEXICON

                raw = {c: tuple(sorted(LEXICON[c])) for c in HUB_CONCEPT_WORDS}
            else:
                raw = HUB_CONCEPT_WORDS
            out, dropped = {}, []
            for category, words in raw.items():
                kept = single_token_words(self.model.tokenizer, words)
                out[category] = kept
                dropped += [f"{category}:{w}" for w in words if w not in kept]
            if dropped and self.name != "tiny":
                warnings.warn(
                    f"profile {self.name!r}: {len(dropped)} concept words are not single tokens "
                    f"for {self.model.cfg.model_name} and were dropped: {', '.join(dropped)}",
                    stacklevel=2,
                )
            self._concept_words = out
        return self._concept_words

    def instruct_model(self) -> HookedSAETransformer | None:
        """The instruction-tuned sibling of :attr:`model` (gemma: gemma-2-2b-it), or None.

        Loaded on first call, processed as the profile's model is (so the profile's SAEs,
        trained on the base model, read and write its activations in the same basis), and
        kept. None on profiles without one (tiny, gpt2).
        """
        spec = PROFILES.get(self.name)
        if spec is None or spec.instruct_model is None:
            return None
        if self._instruct is None:
            self._instruct = _load_hub_model(spec, spec.instruct_model, self.device)
        return self._instruct

    def attn_saes(self) -> dict[int, SAE]:
        """Attention-output (``hook_z``) SAEs by layer, in layer order.

        The ``attn`` role's SAE and, on profiles that name them, SAEs at more layers where the
        task's heads write (gpt2: layers 8 and 9 for IOI's S-inhibition and name-mover
        heads). Loads each SAE on first call (about 150 MB each on gpt2).
        """
        out: dict[int, SAE] = {}
        if "attn" in self.saes:
            sae = self.saes["attn"]
            out[hook_layer(sae.cfg.metadata.hook_name)] = sae
        for layer in self._head_saes:
            out[int(layer)] = self._head_saes[layer]
        return dict(sorted(out.items()))

    def sae(self, role: str) -> SAE:
        """The SAE for ``role``, with a clear error naming the roles this profile has."""
        if role not in self.saes:
            raise KeyError(
                f"role must be one of {sorted(self.saes)} on profile {self.name!r}, got {role!r}"
            )
        return self.saes[role]

    def ev_floor(self, role: str, fraction: float = 0.8) -> float:
        """The explained variance a content check may demand of the SAE for ``role``.

        On a hub profile: ``fraction`` of the figure SAELens' registry publishes for that SAE
        (``expected_var_explained``; e.g. 0.13 for ``gpt2-small-hook-z-kk``, 0.46 for
        ``gpt2-small-mlp-tm``), measured on other text, hence the margin; 0.5 where the
        registry lists none and on ``tiny`` (whose SAEs the book trained, reaching more).
        SAELens fills a missing ``variance_explained`` with 1.0 (every Gemma Scope entry), and
        no entry publishes exactly 1.0, so 1.0 counts as none: demanding 0.8 of gemma's SAEs
        would test a default, not a measurement.
        """
        self.sae(role)  # a clear error for an unknown role
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        spec = PROFILES[self.name]
        if role not in spec.saes:
            return 0.5
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        release, sae_id = spec.saes[role]
        entry = get_pretrained_saes_directory()[release]
        published = (entry.expected_var_explained or {}).get(resolve_sae_id(release, sae_id))
        if published is None or float(published) >= 1.0:  # SAELens' default for "not given"
            return 0.5
        return fraction * float(published)

    def describe_saes(self) -> dict[str, str]:
        """role -> a short description (architecture, width, hook) of each SAE.

        Loads no SAE: one a hub profile has not loaded yet is described from its SAELens
        config (derived from the id for Gemma Scope, a small file otherwise), so the banner
        every chapter shows does not pull the whole width family (~7 GB on gemma) into memory.
        """
        out = {}
        for role in self.saes:
            arch, d_sae, hook, out_hook = _sae_facts(self.saes, role)
            where = f"{hook} -> {out_hook}" if out_hook else hook
            out[role] = f"{arch} x{d_sae} @ {where}"
        family = self.width_family
        widths = ", ".join(str(_sae_facts(family, i)[1]) for i in range(len(family)))
        out["width_family"] = f"{len(family)} widths ({widths})"
        if self._head_saes:
            layers = ", ".join(str(layer) for layer in sorted(map(int, self._head_saes)))
            out["head_saes"] = f"hook_z SAEs at layers {layers} (for the task's heads)"
        return out


def _sae_facts(saes: Any, key: Any) -> tuple[str, int, str, str | None]:
    """(architecture, d_sae, hook, output hook or None) of ``saes[key]``, without loading it
    when ``saes`` is lazy, has not loaded it yet and knows its SAELens source."""
    source = saes.source(key) if isinstance(saes, LazySAEs | LazySAEList) else None
    if source is not None and key not in saes.loaded():
        from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

        cfg = load_sae_config_from_huggingface(*source)
        meta = cfg.get("metadata") or {}
        hook = meta.get("hook_name", cfg.get("hook_name"))
        out_hook = meta.get("hook_name_out", cfg.get("hook_name_out"))
        return cfg.get("architecture", "standard"), int(cfg["d_sae"]), hook, out_hook or None
    sae = saes[key]
    meta = sae.cfg.metadata
    return sae.cfg.architecture(), sae.cfg.d_sae, meta.hook_name, meta.hook_name_out or None


def single_token_words(tokenizer: object, words: Iterable[str]) -> tuple[str, ...]:
    """The ``words`` (in order) that ``tokenizer`` encodes as one token in some form.

    The forms tried are the word with and without a leading space (inside text, and at the
    start of a line), each also with its first letter upper-cased; special tokens (BOS) are
    not added. A word that is a single token in no form could only be matched piecewise, so
    word sets leave it out.
    """
    if isinstance(words, str):
        raise TypeError(f"words must be a list of words, got the string {words!r}")
    kept = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"words must be non-empty strings, got {word!r}")
        upper = word[:1].upper() + word[1:]
        forms = {" " + word, " " + upper, word, upper}
        if any(len(tokenizer.encode(f, add_special_tokens=False)) == 1 for f in forms):
            kept.append(word)
    return tuple(kept)


def available() -> list[str]:
    """Names of the defined profiles."""
    return list(PROFILES)


def default_name() -> str:
    """The profile named by ``SAEBOOK_PROFILE``, or ``tiny``."""
    return os.environ.get(ENV_VAR, "").strip() or "tiny"


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


_CACHE: dict[tuple[str, str], Profile] = {}


def load(name: str | None = None, device: str | None = None) -> Profile:
    """Load profile ``name`` (default: ``SAEBOOK_PROFILE`` or ``tiny``) on ``device``.

    Loaded profiles are cached per process, so every chapter cell can call this cheaply.
    Raises :class:`UnknownProfileError` for an unknown name and :class:`HubUnavailableError`,
    in one sentence, when a hub profile cannot reach the Hugging Face hub.
    """
    name = default_name() if name is None else name
    if name not in PROFILES:
        raise UnknownProfileError(
            f"profile must be one of {available()} (argument or ${ENV_VAR}), got {name!r}"
        )
    device = device or _device()
    key = (name, device)
    if key not in _CACHE:
        _CACHE[key] = _load_tiny(device) if name == "tiny" else _load_hub(PROFILES[name], device)
    return _CACHE[key]


def _load_tiny(device: str) -> Profile:
    from saebook.tinyworld import corpus_rows, labeled_batch
    from saebook.tinyworld.shipped import load_model_card, load_shipped

    loaded = load_shipped(device=device)
    tokenizer = loaded[0].tokenizer
    # the head that copies the code (the model card's strongest induction head)
    best = load_model_card()[0]["language_model"]["induction"]["best_head"]
    return Profile.from_spec(
        PROFILES["tiny"],
        loaded,
        device,
        token_source=lambda n, s, seed: corpus_rows(n, s, seed=seed, tokenizer=tokenizer),
        label_source=lambda n, s, seed: labeled_batch(n, s, seed=seed, tokenizer=tokenizer)[1],
        task_heads={"induction": ((int(best["layer"]), int(best["head"])),)},
    )


HUB_HOST = ("huggingface.co", 443)


def _require_hub(profile: str, timeout: float = 3.0) -> None:
    """Fail fast, in one sentence, when the Hugging Face hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # the reader asked for the local cache only; loading will say what is missing
    if not reachable(HUB_HOST, timeout=timeout):
        raise HubUnavailableError(
            f"Profile {profile!r} downloads its model and SAEs from the Hugging Face hub, which "
            f"this machine cannot reach; set {ENV_VAR}=tiny (the default) to run offline."
        ) from None  # one sentence, no traceback of the refused connection


def resolve_sae_id(release: str, sae_id: str) -> str:
    """An exact id, or the first id of ``release`` that starts with a prefix ending in '/'."""
    if not sae_id.endswith("/"):
        return sae_id
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    ids = [i for i in get_pretrained_saes_directory()[release].saes_map if i.startswith(sae_id)]
    if not ids:
        raise MissingArtifactError(f"release {release!r} has no SAE id starting with {sae_id!r}")
    return sorted(ids)[0]


DATASET_ENV_VAR = "SAEBOOK_DATASET"


def _open_stream(dataset: str, seed: int):
    """``dataset``'s train split, streamed and shuffled, or an error that names the fix."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset, split="train", streaming=True).shuffle(
            seed=seed, buffer_size=10_000
        )
    except Exception as err:  # datasets raises many types (scripts, offline, missing codecs)
        raise MissingArtifactError(
            f"The token stream could not open the dataset {dataset!r} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); set "
            f"${DATASET_ENV_VAR} to a Hugging Face dataset with a 'text' column in parquet or "
            f"json format (no loading script), e.g. {PROFILES['gpt2'].dataset!r}, or check "
            f"that the hub is reachable and that 'zstandard' is installed for .zst files."
        ) from err


def _hub_token_source(
    model: HookedSAETransformer, dataset: str
) -> Callable[[int, int, int], Tensor]:
    """Rows of ``seq_len`` tokens from a streamed text dataset, shuffled by seed.

    Every row starts with exactly one BOS. Documents are tokenized without special tokens
    and joined by one EOS (the model's end-of-document token; on gpt2 the same id as BOS),
    so a separator always sits between two documents' tokens: never right after a row's
    BOS, never twice in a row. ``$SAEBOOK_DATASET`` overrides ``dataset``.
    """
    tokenizer = model.tokenizer

    def source(n_seqs: int, seq_len: int, seed: int) -> Tensor:
        stream = _open_stream(os.environ.get(DATASET_ENV_VAR, "").strip() or dataset, seed)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        rows: list[list[int]] = []
        buffer: list[int] = []
        for example in stream:
            ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
            if not ids:
                continue
            buffer += ids + [eos]
            while len(buffer) >= seq_len and len(rows) < n_seqs:
                if buffer[0] == eos:
                    del buffer[0]  # a row never opens on a separator (BOS then EOS)
                    continue
                rows.append([bos] + buffer[: seq_len - 1])
                del buffer[: seq_len - 1]
            if len(rows) == n_seqs:
                break
        if len(rows) < n_seqs:
            raise MissingArtifactError(
                f"dataset {dataset!r} gave {len(rows)} rows of {seq_len} tokens, "
                f"n_seqs asked for {n_seqs}"
            )
        return torch.tensor(rows, dtype=torch.long)

    return source


SIZES_ENV_VAR = "SAEBOOK_SIZES"


def _sizes(spec: ProfileSpec) -> Sizes:
    """The profile's sizes, with ``$SAEBOOK_SIZES`` (JSON, e.g. ``{"n_seqs": 64}``) applied.

    The override exists for rehearsals at reduced token counts (``scripts/rehearse.py``);
    only fields of :class:`Sizes` may be set, to positive ints.
    """
    raw = os.environ.get(SIZES_ENV_VAR, "").strip()
    if not raw:
        return spec.sizes
    import json

    try:
        override = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"${SIZES_ENV_VAR} must be a JSON object, got {raw!r}") from err
    if not isinstance(override, dict):
        raise ValueError(f"${SIZES_ENV_VAR} must be a JSON object, got {raw!r}")
    try:
        return spec.sizes.replace(**override)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"${SIZES_ENV_VAR} may set {list(Sizes.names())} to positive ints, got {raw!r} ({err})"
        ) from err


def _is_gated(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) says a hub repo is gated."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ == "GatedRepoError" or "gated repo" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sae_loader(release: str, sae_id: str, device: str) -> Callable[[], SAE]:
    """A function loading SAELens' SAE ``sae_id`` of ``release`` on ``device``.

    A file the hub or the local cache cannot give (``huggingface_hub`` says only "cannot find
    the requested files", naming neither) raises :class:`MissingArtifactError` naming the
    release and id, with the fix: offline (``HF_HUB_OFFLINE=1``), the SAE was never
    downloaded; online, the hub is unreachable or refused it.
    """
    from huggingface_hub.errors import EntryNotFoundError

    def load() -> SAE:
        try:
            return SAE.from_pretrained(release, sae_id, device=device)
        except (OSError, EntryNotFoundError) as err:
            reason = str(err).splitlines()[0] if str(err) else ""
            fix = (
                "HF_HUB_OFFLINE=1 is set and its files are not in the local Hugging Face "
                "cache: load it once with the hub reachable, or unset HF_HUB_OFFLINE"
                if os.environ.get("HF_HUB_OFFLINE") == "1"
                else "check that the Hugging Face hub is reachable from this machine"
            )
            raise MissingArtifactError(
                f"SAE {sae_id!r} of release {release!r} could not be loaded "
                f"({type(err).__name__}: {reason}); {fix}."
            ) from err

    return load


def _load_hub_model(spec: ProfileSpec, name: str, device: str) -> HookedSAETransformer:
    """The TransformerLens model ``name`` processed as ``spec`` says, with a clear error for a
    gated model."""
    loader = (
        HookedSAETransformer.from_pretrained_no_processing
        if spec.raw_weights
        else HookedSAETransformer.from_pretrained
    )
    try:
        return loader(name, device=device)
    except Exception as err:
        if _is_gated(err):
            raise MissingArtifactError(
                f"Profile {spec.name!r} needs {name!r}, a gated model on the Hugging Face "
                f"hub: accept its licence on the model's hub page with your account, then log "
                f"in on this machine (`hf auth login`, or set HF_TOKEN) and load again."
            ) from err
        raise


def _load_hub(spec: ProfileSpec, device: str) -> Profile:
    _require_hub(spec.name)
    model = _load_hub_model(spec, spec.model, device)

    # loaded on first access: gemma's SAEs and width family are several GB in all
    sources = {role: (rel, resolve_sae_id(rel, i)) for role, (rel, i) in spec.saes.items()}
    saes = LazySAEs({role: _sae_loader(*src, device) for role, src in sources.items()}, sources)
    heads = {str(layer): src for layer, src in spec.head_saes.items()}
    head_saes = LazySAEs({key: _sae_loader(*src, device) for key, src in heads.items()}, heads)
    release, ids = spec.width_family
    family = LazySAEList(
        [_sae_loader(release, i, device) for i in ids], [(release, i) for i in ids]
    )
    return Profile.from_spec(
        spec,
        (model, saes, family),
        device,
        token_source=_hub_token_source(model, spec.dataset),
        sizes=_sizes(spec),
        head_saes=head_saes,
    )
