"""Argument checks shared by saebook's public functions.

Every check raises with one message format, ``<argument> must be <expected>, got <actual>``,
so a reader sees which argument is wrong, what was wanted and what was passed. Checks that
need an SAE live beside the code that reads it: :func:`saebook.directions.check_latent`
(a latent index) and :func:`saebook.hooks.check_sae_hooks` (an SAE's hooks in a model).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saebook.hooks import flatten_heads

__all__ = ["check_int", "check_prompt", "check_sae_input", "check_tensor", "check_tokens"]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` after checking it is an int (not a bool) of at least ``minimum``.

    Raises TypeError for a value that is not an int and ValueError for one below
    ``minimum``; both messages name ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return value


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def check_tensor(
    name: str,
    value: object,
    ndim: int | None = None,
    floating: bool = False,
    finite: bool = False,
    non_empty: bool = True,
) -> Tensor:
    """``value`` after checking it is a tensor with ``ndim`` axes (and optionally more).

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        ndim: the number of axes required (None: any).
        floating: require a floating-point dtype.
        finite: require every entry to be finite (no NaN or inf).
        non_empty: require at least one entry.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {_shape(value)}")
    if non_empty and value.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {_shape(value)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or inf entries")
    return value


def check_tokens(tokens: object, model: object, name: str = "tokens") -> Tensor:
    """``tokens`` as int64 after checking they are a non-empty ``(rows, seq)`` tensor of ids
    that ``model`` (anything with ``cfg.n_ctx`` and ``cfg.d_vocab``) accepts."""
    if not isinstance(tokens, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of shape (rows, seq), "
            f"got {type(tokens).__name__}"
        )
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must have an integer dtype (e.g. torch.long), got {tokens.dtype}")
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty (rows, seq) tensor, got shape {tuple(tokens.shape)}"
        )
    if tokens.is_meta:
        raise ValueError(f"{name} must hold values (a cpu or cuda tensor), got device meta")
    n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
    if tokens.shape[1] > n_ctx:
        raise ValueError(
            f"{name} must have at most the model's n_ctx={n_ctx} columns, got {tokens.shape[1]}"
        )
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        raise ValueError(
            f"{name} must be ids in [0, {d_vocab}) (the model's d_vocab), "
            f"got values in [{lo}, {hi}]"
        )
    return tokens.long()


def check_prompt(tokens: object, model: object, min_len: int = 1, name: str = "tokens") -> Tensor:
    """One prompt of integer ids, given as ``(seq,)`` or ``(1, seq)`` with
    ``min_len <= seq <= model.cfg.n_ctx``; returned as ``(seq,)`` on the model's device."""
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor, got {type(tokens).__name__}")
    if tokens.ndim == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    n_ctx = model.cfg.n_ctx
    if tokens.ndim != 1 or not min_len <= tokens.numel() <= n_ctx:
        raise ValueError(
            f"{name} must be one sequence, shape (seq,) or (1, seq) with seq in "
            f"[{min_len}, {n_ctx}], got shape {tuple(tokens.shape)}"
        )
    return tokens.to(model.cfg.device)


def check_sae_input(sae: object, x: Tensor, hook: str) -> Tensor:
    """The activation ``x`` cached at ``hook``, shaped the way ``sae.encode`` expects, after
    checking its width is the SAE's ``cfg.d_in``.

    A ``(batch, seq, heads, d_head)`` activation (``hook_z`` and friends) counts
    ``heads * d_head`` wide; it is flattened unless the SAE reshapes ``hook_z`` itself.
    """
    width = x.shape[-2] * x.shape[-1] if x.ndim == 4 else x.shape[-1]
    x = flatten_heads(sae, x)
    if width != sae.cfg.d_in:
        raise ValueError(
            f"sae.cfg.d_in must equal the width of hook {hook!r} ({width}), got {sae.cfg.d_in}"
        )
    return x
