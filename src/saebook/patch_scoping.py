"""Patchscopes for latents: let the model itself say what a decoder direction means.

A *patchscope* takes a representation from one place and patches it into another forward pass
built to make the model verbalise it. For an SAE latent the representation is its decoder
direction (:func:`saebook.directions.decoder_directions`), scaled to a chosen norm. The target
is an *identity prompt*, a few ``x -> x`` pairs ending in a placeholder (``cat -> cat; 135 ->
135; hello -> hello; ? ->``): a capable model continues it by repeating whatever the
placeholder stands for, so replacing the placeholder's residual stream with the latent's
direction asks the model "what is this?".

This module builds identity prompts, finds the placeholder, runs the patched prompt for many
directions and scales in one batch (returning next-token log-probabilities at the last
position), generates patched continuations, and measures how much probability a token set
gets, so that a latent's direction can be compared with random directions of the same norm.

Chapters: deeper/07
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import HookedSAETransformer
from torch import Tensor

__all__ = [
    "instruct_prompt",
    "identity_prompt",
    "placeholder_position",
    "residual_norm",
    "patch_scope",
    "patched_generate",
    "set_probability",
    "entropy",
    "random_directions_like",
]

_MODES = ("replace", "add")


def identity_prompt(
    examples: Sequence[str] = ("cat", "135", "hello"),
    placeholder: str = "?",
    arrow: str = " ->",
    sep: str = "; ",
) -> str:
    """``"cat -> cat; 135 -> 135; hello -> hello; ? ->"`` for the default arguments."""
    if isinstance(examples, str) or not examples:
        raise ValueError(f"examples must be a non-empty list of strings, got {examples!r}")
    if not placeholder:
        raise ValueError("placeholder must be a non-empty string, got ''")
    pairs = [f"{x}{arrow} {x}" for x in examples]
    return sep.join([*pairs, f"{placeholder}{arrow}"])


def instruct_prompt(
    model: HookedSAETransformer,
    placeholder: str = "X",
    question: str = 'What is the meaning of the word "{x}"?',
    answer: str = "That word means",
) -> str:
    """A self-explanation prompt for an instruction-tuned model, in its own chat format.

    The user turn asks ``question`` about ``placeholder`` (the position to patch); the
    model's turn is opened by the tokenizer's chat template and started with ``answer``, so
    the continuation is the model's description. A leading BOS that the template writes is
    dropped (``model.to_tokens`` adds one). Raises ``ValueError`` when the tokenizer has no
    chat template (a base model) or ``answer`` repeats the placeholder.
    """
    tok = model.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise ValueError(
            f"model must have a tokenizer with a chat template (an instruction-tuned model), "
            f"got {model.cfg.model_name!r} without one"
        )
    if placeholder in answer:
        raise ValueError(f"answer must not contain the placeholder {placeholder!r}, got {answer!r}")
    turn = [{"role": "user", "content": question.format(x=placeholder)}]
    text = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    if tok.bos_token and text.startswith(tok.bos_token):
        text = text[len(tok.bos_token) :]
    return text + answer


def placeholder_position(model: HookedSAETransformer, prompt: str, placeholder: str = "?") -> int:
    """Index, in ``model.to_tokens(prompt)`` (BOS included), of the placeholder's last token.

    The placeholder is the last occurrence of ``placeholder`` in ``prompt``; its position is
    that of the last token that overlaps it.
    """
    start = prompt.rfind(placeholder)
    if start < 0:
        raise ValueError(f"placeholder {placeholder!r} must occur in prompt, got {prompt!r}")
    end = start + len(placeholder)
    tokens = model.to_tokens(prompt)[0]
    strs = model.to_str_tokens(tokens)
    has_bos = bool(model.cfg.default_prepend_bos)
    text_pos = 0
    found = None
    for i, s in enumerate(strs):
        if i == 0 and has_bos:
            continue
        nxt = text_pos + len(s)
        if text_pos < end and nxt > start:
            found = i
        text_pos = nxt
    if found is None:
        raise ValueError(f"could not align placeholder {placeholder!r} with tokens {strs}")
    return found


@torch.no_grad()
def residual_norm(model: HookedSAETransformer, tokens: Int[Tensor, "rows seq"], hook: str) -> float:
    """Median L2 norm of the activations at ``hook`` over non-BOS positions of ``tokens``."""
    if hook not in model.hook_dict:
        raise KeyError(f"hook must be a hook of model, got {hook!r}")
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return float(cache[hook][:, 1:].norm(dim=-1).median())


def _check_directions(directions: Tensor, d_model: int) -> Tensor:
    if not isinstance(directions, Tensor) or directions.ndim != 2 or directions.shape[1] != d_model:
        shape = tuple(directions.shape) if isinstance(directions, Tensor) else type(directions)
        raise ValueError(f"directions must have shape (n, {d_model}) (d_model), got {shape}")
    norms = directions.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("directions must be non-zero vectors, got a zero row")
    return directions / norms


def _patch_hook(unit: Tensor, scales: Tensor, position: int, mode: str):
    vectors = (unit[:, None, :] * scales[None, :, None]).flatten(0, 1)  # (n * s, d)

    def hook(act: Tensor, hook) -> Tensor:  # noqa: ARG001 (TransformerLens passes the hook)
        v = vectors.to(act.device, act.dtype)
        if mode == "replace":
            act[: len(v), position] = v
        else:
            act[: len(v), position] = act[: len(v), position] + v
        return act

    return hook


@torch.no_grad()
def patch_scope(
    model: HookedSAETransformer,
    prompt: str | Int[Tensor, " seq"],
    directions: Float[Tensor, "n d_model"],
    scales: Sequence[float] | Float[Tensor, " s"],
    hook: str,
    position: int,
    mode: str = "replace",
    batch_size: int = 64,
) -> Float[Tensor, "n s d_vocab"]:
    """Next-token log-probabilities at the last position after patching each direction.

    Each direction is normalised to unit length and multiplied by each scale; the result
    replaces (``mode="replace"``) or is added to (``mode="add"``) the activation at ``hook``
    and token ``position`` of ``prompt`` (a string, tokenized with BOS, or a 1-D token tensor).
    Returns float32 log-probabilities on the CPU.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if hook not in model.hook_dict:
        raise KeyError(f"hook must be a hook of model, got {hook!r}")
    tokens = model.to_tokens(prompt)[0] if isinstance(prompt, str) else prompt.flatten()
    seq = int(tokens.shape[0])
    if not -seq <= position < seq:
        raise IndexError(f"position must be in [{-seq}, {seq}) (prompt length), got {position}")
    unit = _check_directions(directions.float(), model.cfg.d_model)
    scales = torch.as_tensor(scales, dtype=torch.float32).flatten()
    if scales.numel() == 0:
        raise ValueError("scales must hold at least one scale, got none")
    device = model.W_U.device
    tokens = tokens.to(device)
    out = []
    for start in range(0, unit.shape[0], max(1, batch_size // scales.numel())):
        chunk = unit[start : start + max(1, batch_size // scales.numel())]
        batch = tokens[None].expand(chunk.shape[0] * scales.numel(), seq)
        logits = model.run_with_hooks(
            batch, fwd_hooks=[(hook, _patch_hook(chunk, scales, position, mode))]
        )[:, -1]
        out.append(logits.float().log_softmax(-1).view(chunk.shape[0], scales.numel(), -1).cpu())
    return torch.cat(out)


@torch.no_grad()
def patched_generate(
    model: HookedSAETransformer,
    prompt: str,
    direction: Float[Tensor, " d_model"],
    scale: float,
    hook: str,
    position: int,
    max_new_tokens: int = 8,
    mode: str = "replace",
) -> str:
    """Greedy continuation of ``prompt`` with the scaled direction patched at ``position``.

    The patch is applied to the prompt's position at every step (no cache is kept), so
    generated tokens can attend to it. Returns only the generated text.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    unit = _check_directions(direction.float().reshape(1, -1), model.cfg.d_model)
    tokens = model.to_tokens(prompt).to(model.W_U.device)
    n_prompt = tokens.shape[1]
    hook_fn = _patch_hook(unit, torch.tensor([float(scale)]), position, mode)
    for _ in range(max_new_tokens):
        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, hook_fn)])[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return model.to_string(tokens[0, n_prompt:])


def set_probability(
    log_probs: Float[Tensor, "*batch d_vocab"], in_set: Bool[Tensor, " d_vocab"]
) -> Float[Tensor, " *batch"]:
    """Total probability that ``log_probs`` put on the tokens of ``in_set``."""
    if not isinstance(in_set, Tensor) or in_set.dtype != torch.bool:
        raise TypeError(f"in_set must be a bool tensor over the vocabulary, got {in_set!r:.60}")
    if in_set.shape != (log_probs.shape[-1],):
        raise ValueError(
            f"in_set must have shape ({log_probs.shape[-1]},) (d_vocab), got {tuple(in_set.shape)}"
        )
    return log_probs.exp()[..., in_set.to(log_probs.device)].sum(-1)


def entropy(log_probs: Float[Tensor, "*batch d_vocab"]) -> Float[Tensor, " *batch"]:
    """Entropy (nats) of the distributions given as log-probabilities."""
    return -(log_probs.exp() * log_probs).nan_to_num().sum(-1)


def random_directions_like(
    directions: Float[Tensor, "n d_model"], seed: int = 0
) -> Float[Tensor, "n d_model"]:
    """Gaussian random directions with the same norms as ``directions`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(directions.shape, generator=gen)
    rand = rand / rand.norm(dim=-1, keepdim=True)
    return (rand * directions.float().norm(dim=-1, keepdim=True).cpu()).to(directions.device)
