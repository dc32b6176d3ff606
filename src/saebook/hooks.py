"""Plumbing every technique needs once: an SAE's hooks, where to stop the model, BOS, hook_z.

Techniques take a ``HookedSAETransformer`` and SAELens SAEs, and each of them needs the same
few facts about the pair; this module is the one place that answers them:

* :func:`sae_hooks` / :func:`check_sae_hooks`: the hook an SAE (or transcoder) reads and the one
  it writes (``cfg.metadata.hook_name`` and ``hook_name_out``);
* :func:`hook_layer` and :func:`stop_layer`: the block a hook lives in and the smallest
  ``stop_at_layer`` that still runs it (SAELens' own layer parser for block hooks; 0 for the
  embedding hooks, which run before block 0; None where the whole model must run);
* :func:`bos_token_id`, :func:`bos_mask` and :func:`starts_with_bos`: the BOS token and the
  positions to keep when BOS is left out (column 0 when the model has no BOS token);
* :func:`flatten_heads` and :func:`encode`: a head-indexed activation (``hook_z``:
  ``(..., n_heads, d_head)``) flattened to the SAE's ``d_in`` unless the SAE reshapes it itself;
* :func:`reachable`: whether a network address answers (Neuronpedia, an explainer endpoint,
  the Hugging Face hub) before a technique tries to use it.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterable

import torch
from jaxtyping import Bool, Int
from sae_lens import SAE, HookedSAETransformer
from sae_lens.util import extract_layer_from_tlens_hook_name
from torch import Tensor

__all__ = [
    "EMBED_HOOKS",
    "sae_hooks",
    "check_sae_hooks",
    "hook_layer",
    "stop_layer",
    "bos_token_id",
    "bos_mask",
    "exclude_special_tokens",
    "starts_with_bos",
    "flatten_heads",
    "encode",
    "reachable",
]

#: Hooks that run before block 0: ``stop_at_layer=0`` still runs them.
EMBED_HOOKS = ("hook_embed", "hook_pos_embed", "hook_tokens")


def sae_hooks(sae: SAE) -> tuple[str, str]:
    """``(input hook, output hook)`` of an SAE or transcoder, as strings.

    An SAE reads and writes ``cfg.metadata.hook_name``; a transcoder writes
    ``cfg.metadata.hook_name_out``.
    """
    metadata = getattr(getattr(sae, "cfg", None), "metadata", None)
    if metadata is None:
        raise TypeError(f"sae must be a sae_lens SAE (with cfg.metadata), got {type(sae).__name__}")
    hook_in = metadata.hook_name
    if not hook_in:
        raise ValueError(f"sae.cfg.metadata.hook_name must name a hook, got {hook_in!r}")
    hook_in = str(hook_in)
    return hook_in, str(getattr(metadata, "hook_name_out", None) or hook_in)


def check_sae_hooks(model: HookedSAETransformer, sae: SAE) -> tuple[str, str]:
    """The SAE's input and output hook names, after checking the model has both."""
    hook_in, hook_out = sae_hooks(sae)
    for arg, hook in (
        ("sae.cfg.metadata.hook_name", hook_in),
        ("sae.cfg.metadata.hook_name_out", hook_out),
    ):
        if hook not in model.hook_dict:
            suffix = hook.split(".")[-1]
            near = [h for h in model.hook_dict if h.split(".")[-1] == suffix][:4]
            hint = f" (hooks with that suffix: {near})" if near else ""
            raise ValueError(f"{arg} must be a hook of the model, got {hook!r}{hint}")
    return hook_in, hook_out


def hook_layer(hook: str) -> int | None:
    """The block ``blocks.<layer>.…`` that ``hook`` lives in, or None for any other hook.

    Uses SAELens' parser (``sae_lens.util.extract_layer_from_tlens_hook_name``), restricted to
    TransformerLens block hooks so that e.g. ``ln_final.hook_scale`` has no layer.
    """
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name (str), got {type(hook).__name__}")
    if not hook.startswith("blocks."):
        return None
    return extract_layer_from_tlens_hook_name(hook)


def stop_layer(*hooks: str) -> int | None:
    """The smallest ``stop_at_layer`` whose forward pass still runs every one of ``hooks``.

    ``stop_at_layer=n`` runs the embeddings and blocks ``0..n-1`` (TransformerLens), so a
    block hook of layer ``L`` needs ``L + 1`` and an embedding hook needs 0. Any other hook
    (``ln_final.*``, ``unembed.*``) needs the whole model: None. SAELens'
    ``extract_stop_at_layer_from_tlens_hook_name`` agrees on block hooks but runs the whole
    model for the embedding hooks.
    """
    if not hooks:
        raise ValueError("hooks must name at least one hook, got none")
    stops = []
    for hook in hooks:
        layer = hook_layer(hook)
        if layer is not None:
            stops.append(layer + 1)
        elif hook in EMBED_HOOKS:
            stops.append(0)
        else:
            return None
    return max(stops)


def bos_token_id(model: HookedSAETransformer) -> int | None:
    """The model tokenizer's BOS token id, or None when there is no tokenizer or no BOS."""
    tokenizer = getattr(model, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    return None if bos is None else int(bos)


def bos_mask(
    model: HookedSAETransformer, tokens: Int[Tensor, "batch seq"], exclude_bos: bool = True
) -> Bool[Tensor, "batch seq"]:
    """True at the positions to keep: all of them, or all but the BOS tokens.

    With ``exclude_bos`` a position is left out when it holds the tokenizer's BOS token; a
    model without a BOS token leaves out column 0 instead (where a BOS would be).
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a (batch, seq) tensor, got {shape}")
    keep = torch.ones_like(tokens, dtype=torch.bool)
    if not exclude_bos:
        return keep
    bos = bos_token_id(model)
    if bos is None:
        keep[:, 0] = False
    else:
        keep &= tokens != bos
    return keep


def exclude_special_tokens(model: HookedSAETransformer) -> list[int] | bool:
    """The ``exclude_special_tokens`` argument of ``model.run_with_saes`` that bypasses the
    SAEs at BOS positions (as they were trained): ``[bos]``, or False without a BOS token."""
    bos = bos_token_id(model)
    return [bos] if bos is not None else False


def starts_with_bos(model: HookedSAETransformer, tokens: Int[Tensor, "... seq"]) -> bool:
    """Whether the (first) sequence of ``tokens`` starts with the model's BOS token.

    ``tokens`` is one prompt, ``(seq,)`` or ``(1, seq)``. False when the model has no BOS.
    """
    if not isinstance(tokens, Tensor) or tokens.numel() == 0:
        raise ValueError(f"tokens must be a non-empty tensor, got {tokens!r}")
    bos = bos_token_id(model)
    first = tokens.reshape(-1, tokens.shape[-1])[0, 0]
    return bos is not None and int(first) == bos


def flatten_heads(sae: SAE, x: Tensor, batched: bool = True) -> Tensor:
    """``x`` shaped for ``sae.encode``: head-indexed activations flattened to ``n_heads * d_head``.

    A head-indexed activation (``hook_z``) is ``(batch, seq, n_heads, d_head)``, or
    ``(seq, n_heads, d_head)`` with ``batched=False``. Its last two axes are merged unless the
    SAE reshapes ``hook_z`` itself (``cfg.reshape_activations == "hook_z"``); any other
    activation comes back as it is.
    """
    head_ndim = 4 if batched else 3
    if x.ndim == head_ndim and sae.cfg.reshape_activations != "hook_z":
        return x.flatten(-2)
    return x


def encode(sae: SAE, x: Tensor, batched: bool = True) -> Tensor:
    """``sae.encode`` on an activation cached at the SAE's hook (see :func:`flatten_heads`)."""
    return sae.encode(flatten_heads(sae, x, batched=batched))


def reachable(address: str | tuple[str, int], timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``address`` opens within ``timeout`` seconds.

    ``address`` is ``(host, port)`` or a URL (``https://host[:port]/…``; the port defaults
    to 443 for https, else 80). Never raises for a network failure: False.
    """
    if isinstance(address, str):
        parts = urllib.parse.urlsplit(address)
        if not parts.hostname:
            raise ValueError(f"address must be a URL with a host or (host, port), got {address!r}")
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    elif isinstance(address, Iterable) and len(tuple(address)) == 2:
        host, port = tuple(address)
    else:
        raise ValueError(f"address must be a URL or (host, port), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True
