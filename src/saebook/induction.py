"""Induction: repeated-token sequences, the loss drop on their second copy, and head scores.

An induction head attends from a token to the token that followed its previous occurrence,
so on a sequence ``BOS, x_1..x_L, x_1..x_L`` it looks back ``L - 1`` positions in the second
copy. These functions work on any HookedTransformer.

Chapters: intro/05, circuits/01
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

__all__ = ["InductionReport", "repeated_tokens", "induction_report"]


def repeated_tokens(
    n_seqs: int,
    half_len: int,
    token_pool: Int[Tensor, " pool"],
    bos_token_id: int,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "n_seqs seq"]:
    """Sequences ``BOS, x, x`` with ``x`` drawn uniformly from ``token_pool``.

    Returns an int64 tensor of shape ``(n_seqs, 1 + 2 * half_len)``.
    """
    if n_seqs < 1:
        raise ValueError(f"n_seqs must be >= 1, got {n_seqs}")
    if half_len < 2:
        raise ValueError(f"half_len must be >= 2, got {half_len}")
    if token_pool.ndim != 1 or token_pool.numel() == 0:
        raise ValueError(
            f"token_pool must be a non-empty 1-D tensor, got shape {tuple(token_pool.shape)}"
        )
    idx = torch.randint(0, token_pool.numel(), (n_seqs, half_len), generator=generator)
    half = token_pool[idx].long()
    bos = torch.full((n_seqs, 1), bos_token_id, dtype=torch.long)
    return torch.cat([bos, half, half], dim=1)


@dataclass
class InductionReport:
    """Loss on the first and second copy of repeated random tokens, and per-head scores."""

    loss_first_half: float
    loss_second_half: float
    head_scores: Float[Tensor, "n_layers n_heads"]

    @property
    def loss_ratio(self) -> float:
        """Second-copy loss over first-copy loss: far below 1 when the model copies."""
        return self.loss_second_half / self.loss_first_half

    def best_head(self) -> tuple[int, int, float]:
        """(layer, head, score) of the head with the highest induction score."""
        flat = int(self.head_scores.argmax())
        layer, head = divmod(flat, self.head_scores.shape[1])
        return layer, head, float(self.head_scores[layer, head])


@torch.no_grad()
def induction_report(
    model: HookedTransformer, tokens: Int[Tensor, "n_seqs seq"]
) -> InductionReport:
    """Measure copying on ``tokens`` made by :func:`repeated_tokens`.

    The loss is the mean next-token cross-entropy (nats) predicting each half's tokens after
    the first; a head's score is its mean attention, over second-copy destinations, to the
    source ``half_len - 1`` positions back (the token after the earlier occurrence).
    """
    if tokens.ndim != 2 or tokens.shape[1] % 2 != 1 or tokens.shape[1] < 5:
        raise ValueError(
            "tokens must have shape (n_seqs, 1 + 2 * half_len) from repeated_tokens, "
            f"got {tuple(tokens.shape)}"
        )
    half = (tokens.shape[1] - 1) // 2
    patterns = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in patterns)
    logprobs = logits[:, :-1].log_softmax(-1)
    token_lp = logprobs.gather(-1, tokens[:, 1:, None])[..., 0]  # predicts position i + 1
    # first copy occupies positions 1..half, second copy half+1..2*half
    first = -token_lp[:, 1:half].mean()
    second = -token_lp[:, half + 1 :].mean()
    # diagonal entry i is (dest i + half - 1, src i); second-copy destinations are i >= 2
    scores = torch.stack(
        [
            cache[name].diagonal(offset=-(half - 1), dim1=-2, dim2=-1)[..., 2:].mean(dim=(0, -1))
            for name in patterns
        ]
    )
    return InductionReport(float(first), float(second), scores.cpu())
