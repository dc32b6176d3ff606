"""The tiny world's tokenizer: a small byte-level BPE trained on the story grammar.

The tokenizer is a Hugging Face ``tokenizers`` byte-level BPE wrapped in a
``transformers.PreTrainedTokenizerFast``, so the saved folder loads with
``AutoTokenizer.from_pretrained`` (which TransformerLens needs).  The single
special token ``<|endoftext|>`` has id 0 and serves as BOS, EOS, UNK and PAD.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saebook.files import atomic_write_dir

from .labels import EOT

DEFAULT_VOCAB_SIZE = 2048
"""Vocabulary size of the shipped tokenizer (special token and 256 bytes included)."""

DEFAULT_TOKENIZER_DIR = Path(__file__).parent / "data" / "tokenizer"
"""Where the shipped tokenizer lives."""

_MIN_VOCAB = 257 + 1  # special token + 256 byte symbols + at least one merge


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a backend tokenizer as a ``PreTrainedTokenizerFast`` with the special tokens set."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: Path
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``, save it to ``out_dir`` and return it.

    ``out_dir`` is written atomically: it is replaced as a whole once every file is saved.

    The vocabulary has ``vocab_size`` entries: ``<|endoftext|>`` (id 0), the
    256 byte symbols and the learned merges.  The saved folder loads with
    ``transformers.AutoTokenizer.from_pretrained(out_dir)``.
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {_MIN_VOCAB}, got {vocab_size}")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of str, got a single str")
    out_dir = Path(out_dir)

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_checked_texts(texts), trainer=trainer)
    if backend.token_to_id(EOT) != 0:  # pragma: no cover - guaranteed by the trainer
        raise RuntimeError(f"{EOT} should have id 0, got {backend.token_to_id(EOT)}")
    tokenizer = _wrap(backend)
    with atomic_write_dir(out_dir) as tmp:  # out_dir is replaced whole, or left as it was
        tokenizer.save_pretrained(str(tmp))
        _name_portable_class(tmp)
    return tokenizer


def _name_portable_class(out_dir: Path) -> None:
    """Record ``PreTrainedTokenizerFast`` as the class in ``out_dir``'s tokenizer config.

    transformers 5 writes its own class name (``TokenizersBackend``), which
    transformers 4 cannot load; both versions load ``PreTrainedTokenizerFast``.
    """
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _checked_texts(texts: Iterable[str]) -> Iterable[str]:
    """Yield ``texts``, raising TypeError on an item that is not a str."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        yield text


def load_tokenizer(path: Path | None = None) -> PreTrainedTokenizerFast:
    """Load the tokenizer saved in ``path`` (default: the package's shipped tokenizer).

    Raises FileNotFoundError, with the command that rebuilds it, when the
    folder holds no tokenizer.
    """
    directory = DEFAULT_TOKENIZER_DIR if path is None else Path(path)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer found in {directory} (tokenizer.json is missing); "
            "build it with `python -m saebook.tinyworld build`"
        )
    return AutoTokenizer.from_pretrained(str(directory))
