"""The tiny synthetic world: a story grammar, its tokenizer and ground-truth labels.

Stories come from a seeded probabilistic grammar (:mod:`.grammar`), are cut
into tokens by a small byte-level BPE tokenizer (:mod:`.tokenizer`), packed
into fixed-length rows (:mod:`.corpus`) and labelled token by token
(:mod:`.labels`).
"""

from .corpus import corpus_rows, labeled_batch
from .labels import LABELS, WORD_CATEGORIES, label_tokens

__all__ = ["LABELS", "WORD_CATEGORIES", "corpus_rows", "label_tokens", "labeled_batch"]
