"""Gradients between SAE latents: latent-to-latent Jacobians, token -> latent, latent -> logit.

How does an earlier latent change a later one? With the earlier SAE spliced in with its error
term, the later SAE's latents are a differentiable function of the earlier latents' values,
and the Jacobian of that function answers the question to first order.

The cost comes from the sizes of the two sides. A naive ("dense") Jacobian differentiates
with respect to every earlier latent at every position, ``seq * d_sae`` inputs, almost all of
them zero. The sparse version differentiates a function of the **active** earlier latents'
values only:

* the earlier SAE's output at its hook is ``base + sum_i v_i * d_i`` over the active latents
  ``i`` (position ``p_i``, decoder vector ``d_i``), where ``base`` holds the decoder bias, the
  SAE's error term and nothing else (inactive latents are zero); SAELens decoders are affine,
  so this is exact;
* the later SAE reads the model at its own hook and only its active latents are returned.

So the Jacobian is ``(n_active_later, n_active_earlier)`` and costs one pass per row (reverse
mode, backward passes of :func:`torch.func.vjp`) or per column (forward mode,
:func:`torch.func.jvp`), whichever side is smaller, vectorised with :func:`torch.func.vmap` a
chunk at a time (:func:`auto_chunk_size`), so memory is bounded by the chunk, not the passes.
Entries are exact derivatives: on the active set a TopK, JumpReLU or ReLU activation has
slope 1, so they are the derivatives of the later latents' pre-activations, which finite
differences confirm.

Chapters: circuits/01
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from torch.func import jvp, vjp, vmap

from saebook.directions import check_latent, check_latents
from saebook.hooks import (
    check_sae_hooks,
    encode,
    flatten_heads,
    sae_hooks,
    starts_with_bos,
    stop_layer,
)
from saebook.validate import check_prompt

__all__ = [
    "ActiveLatents",
    "LatentMap",
    "LatentJacobian",
    "hook_order",
    "ordered_pairs",
    "latent_map",
    "latent_jacobian",
    "dense_jacobian_sample",
    "auto_chunk_size",
    "finite_difference",
    "token_attribution",
    "latent_logit_jacobian",
    "virtual_weights",
    "pre_activations",
    "residual_connected",
]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# Order of the hooks inside one transformer block (the residual stream flows top to bottom).
_STAGES = (
    "hook_resid_pre",
    "ln1.",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.",
    "hook_mlp_in",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)


def hook_order(hook: str) -> tuple[int, int]:
    """A sort key ``(layer, stage)`` that orders hook names as the forward pass runs them.

    Embedding hooks come first (layer -1), ``ln_final``/``unembed`` last. Raises
    ``ValueError`` for a name that is not a TransformerLens residual-model hook.
    """
    if hook in ("hook_embed", "hook_pos_embed", "hook_tokens"):
        return (-1, 0)
    if hook.startswith(("ln_final.", "unembed.")):
        return (10**6, 0)
    match = _BLOCK.match(hook)
    if match:
        rest = match.group(2)
        for stage, prefix in enumerate(_STAGES):
            if rest.startswith(prefix):
                return (int(match.group(1)), stage)
    raise ValueError(
        f"hook must be a TransformerLens hook name like 'blocks.0.hook_mlp_out', got {hook!r}"
    )


def ordered_pairs(saes: dict[str, SAE]) -> list[tuple[str, str]]:
    """``(earlier, later)`` role pairs where the earlier SAE writes before the later one reads.

    The earlier SAE's output hook must run strictly before the later SAE's input hook, so the
    later latents are a function of the earlier ones. Pairs are sorted by the later hook, then
    by the earlier hook (latest first: the shortest path first).
    """
    pairs = []
    for up_role, up in saes.items():
        for down_role, down in saes.items():
            writes, reads = sae_hooks(up)[1], sae_hooks(down)[0]
            if up_role != down_role and hook_order(writes) < hook_order(reads):
                pairs.append((up_role, down_role))
    return sorted(
        pairs,
        key=lambda p: (
            hook_order(sae_hooks(saes[p[1]])[0]),
            [-x for x in hook_order(sae_hooks(saes[p[0]])[1])],
        ),
    )


@dataclass
class ActiveLatents:
    """Active latents of one SAE on one sequence: position, latent index and value of each."""

    pos: Int[Tensor, " n"]
    latent: Int[Tensor, " n"]
    value: Float[Tensor, " n"]

    def __len__(self) -> int:
        return int(self.pos.numel())

    def labels(self) -> list[str]:
        """``"p<pos>:<latent>"`` for each active latent."""
        return [f"p{p}:{i}" for p, i in zip(self.pos.tolist(), self.latent.tolist(), strict=True)]


def _positions(arg: str, positions: object, seq: int, skip: set[int]) -> Tensor:
    if positions is None:
        return torch.tensor([p for p in range(seq) if p not in skip], dtype=torch.long)
    raw = torch.as_tensor(positions, dtype=torch.long).flatten()
    if raw.numel() == 0:
        raise ValueError(f"{arg} must name at least one position, got an empty list")
    if raw.min() < -seq or raw.max() >= seq:
        raise IndexError(f"{arg} must be positions in [-{seq}, {seq}), got {positions!r}")
    return (raw % seq).unique()


_SMOOTH = {
    "standard",
    "topk",
    "batchtopk",
    "matryoshka_batchtopk",
    "jumprelu",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
}


def pre_activations(
    sae: SAE,
    x: Tensor,
    pos: Tensor | None = None,
    lat: Tensor | None = None,
    columns: Tensor | None = None,
) -> Tensor:
    """The value each latent has when it is active, before the activation function.

    For ReLU, TopK and JumpReLU SAEs an active latent's activation equals this value, and its
    derivative too, but it stays smooth where the activation function jumps (a latent at the
    TopK boundary, or at a JumpReLU threshold). With ``pos``/``lat``: only those entries
    (cost proportional to their number); with ``columns`` (latent indices): every position's
    value of those latents, ``(seq, n)`` from their encoder columns alone; otherwise
    ``(seq, d_sae)``.
    """
    arch = sae.cfg.architecture()
    if arch not in _SMOOTH:
        raise ValueError(f"sae architecture must be one of {sorted(_SMOOTH)}, got {arch!r}")
    # (seq, d_in) after SAELens' reshape, normalisation and b_dec
    sae_in = sae.process_sae_in(flatten_heads(sae, x, batched=False))
    rescale = getattr(sae.cfg, "rescale_acts_by_decoder_norm", False)
    if pos is None:
        idx = slice(None) if columns is None else check_latents(sae, columns, "columns")
        pre = sae_in @ sae.W_enc[:, idx] + sae.b_enc[idx]
        return pre * sae.W_dec[idx].norm(dim=-1) if rescale else pre
    w = sae.W_enc[:, lat].T  # (n, d_in)
    pre = (sae_in[pos] * w).sum(-1) + sae.b_enc[lat]
    return pre * sae.W_dec[lat].norm(dim=-1) if rescale else pre


def _decoder_columns(sae: SAE, latents: Tensor) -> Tensor:
    """``decode(e_i) - decode(0)`` for each latent: what one unit of it adds at the hook."""
    eye = torch.zeros(
        latents.numel(), sae.cfg.d_sae, device=sae.W_dec.device, dtype=sae.W_dec.dtype
    )
    eye[torch.arange(latents.numel()), latents.to(eye.device)] = 1.0
    zero = torch.zeros(1, sae.cfg.d_sae, device=eye.device, dtype=eye.dtype)
    return (sae.decode(eye) - sae.decode(zero)).detach()


@dataclass
class LatentMap:
    """The later SAE's active latents as a function of the earlier SAE's active latents.

    ``fn(values)`` takes the ``(n_up,)`` values of ``up``'s active latents (all other latents
    of that SAE stay zero, its error term stays at its clean value) and returns the ``(n_down,)``
    pre-activations of ``down``'s active latents (see :func:`pre_activations`: equal to their
    activations at the clean point, with the same derivative); ``fn(up.value)`` reproduces
    the clean activations.
    With ``dense=True`` the map takes the full ``(n_up_positions * d_sae_up,)`` latent vector
    and returns the full ``(n_down_positions * d_sae_down,)`` one; ``up_index``/``down_index``
    then locate the active latents inside those vectors.
    """

    fn: Callable[[Tensor], Tensor]
    inputs: Float[Tensor, " n_in"]
    up: ActiveLatents
    down: ActiveLatents
    up_index: Int[Tensor, " n_up"]
    down_index: Int[Tensor, " n_down"]
    up_hook: str
    down_hook: str
    dense: bool


def latent_map(
    model: HookedSAETransformer,
    up_sae: SAE,
    down_sae: SAE,
    tokens: Int[Tensor, " seq"],
    *,
    up_positions: list[int] | Tensor | None = None,
    down_positions: list[int] | Tensor | None = None,
    skip_bos: bool = True,
    dense: bool = False,
) -> LatentMap:
    """Build the differentiable map from ``up_sae``'s active latents to ``down_sae``'s.

    Args:
        tokens: one sequence, ``(seq,)`` or ``(1, seq)``.
        up_positions, down_positions: positions whose latents are inputs / outputs (default:
            every position; negative positions count from the end).
        skip_bos: leave out position 0 when it holds the BOS token (SAEs are not read there).
        dense: make the map take and return every latent at those positions (for comparison
            with the sparse map; see :func:`latent_jacobian`).
    """
    up_in, up_out = check_sae_hooks(model, up_sae)
    down_in, _ = check_sae_hooks(model, down_sae)
    if hook_order(up_out) >= hook_order(down_in):
        raise ValueError(
            f"up_sae must write before down_sae reads: up_sae writes at {up_out!r}, "
            f"down_sae reads at {down_in!r}"
        )
    tokens = check_prompt(tokens, model)[None]
    seq = tokens.shape[1]
    skip = {0} if skip_bos and starts_with_bos(model, tokens) else set()
    up_pos = _positions("up_positions", up_positions, seq, skip)
    down_pos = _positions("down_positions", down_positions, seq, skip)

    with torch.no_grad():
        names = {up_in, up_out, down_in}
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        x_out = cache[up_out][0]  # where up_sae's reconstruction is patched in
        up_acts = encode(up_sae, cache[up_in][0], batched=False).detach()  # (seq, d_up)
        down_acts = encode(down_sae, cache[down_in][0], batched=False).detach()  # (seq, d_down)
    up = _active(up_acts, up_pos)
    down = _active(down_acts, down_pos)
    run = _patched_run(model, tokens, up_out, down_in)
    if dense:
        fn, inputs, up_index, down_index = _dense_map(
            up_sae, down_sae, run, x_out, up_acts, down_acts.shape[-1], up, down, up_pos, down_pos
        )
    else:
        fn, inputs = _sparse_map(up_sae, down_sae, run, x_out, up, down)
        up_index, down_index = torch.arange(len(up)), torch.arange(len(down))
    return LatentMap(fn, inputs, up, down, up_index, down_index, up_out, down_in, dense)


def _active(acts: Float[Tensor, "seq d_sae"], positions: Tensor) -> ActiveLatents:
    """The non-zero entries of ``acts`` at ``positions``, in (position, latent) order."""
    mask = torch.zeros_like(acts, dtype=torch.bool)
    mask[positions.to(mask.device)] = acts[positions.to(acts.device)] != 0
    pos, lat = torch.nonzero(mask, as_tuple=True)
    return ActiveLatents(pos.cpu(), lat.cpu(), acts[pos, lat].cpu())


def _patched_run(
    model: HookedSAETransformer, tokens: Tensor, up_out: str, down_in: str
) -> Callable[[Tensor], Tensor]:
    """A function: ``x_patched`` at ``up_out`` -> the activation at ``down_in`` (every position).

    The model stops as soon as ``down_in`` ran.
    """

    def run(x_patched: Tensor) -> Tensor:
        box: dict[str, Tensor] = {}

        def patch(act: Tensor, hook: object) -> Tensor:
            return x_patched[None]

        def capture(act: Tensor, hook: object) -> None:
            box["x"] = act

        model.run_with_hooks(
            tokens,
            fwd_hooks=[(up_out, patch), (down_in, capture)],
            stop_at_layer=stop_layer(down_in),
        )
        return box["x"][0]

    return run


def _dense_map(
    up_sae: SAE,
    down_sae: SAE,
    run: Callable[[Tensor], Tensor],
    x_out: Tensor,
    up_acts: Tensor,
    d_down: int,
    up: ActiveLatents,
    down: ActiveLatents,
    up_pos: Tensor,
    down_pos: Tensor,
) -> tuple[Callable[[Tensor], Tensor], Tensor, Tensor, Tensor]:
    """The map on every latent at the chosen positions: ``(fn, inputs, up_index, down_index)``.

    ``up_index``/``down_index`` locate the active latents in the flattened full vectors.
    """
    d_up = up_acts.shape[-1]
    up_row = {p: i for i, p in enumerate(up_pos.tolist())}
    down_row = {p: i for i, p in enumerate(down_pos.tolist())}
    up_index = torch.tensor(
        [up_row[p] * d_up + i for p, i in zip(up.pos.tolist(), up.latent.tolist(), strict=True)],
        dtype=torch.long,
    )
    down_index = torch.tensor(
        [
            down_row[p] * d_down + i
            for p, i in zip(down.pos.tolist(), down.latent.tolist(), strict=True)
        ],
        dtype=torch.long,
    )
    up_pos_d, down_pos_d = up_pos.to(x_out.device), down_pos.to(x_out.device)
    clean_full = up_acts[up_pos_d]
    recon_clean = up_sae.decode(clean_full).detach()

    def fn(latents: Tensor) -> Tensor:
        full = latents.view(len(up_pos_d), d_up)
        delta = up_sae.decode(full) - recon_clean  # changes at the up positions only
        x = x_out.index_add(0, up_pos_d, delta.reshape(len(up_pos_d), *x_out.shape[1:]))
        return pre_activations(down_sae, run(x))[down_pos_d].reshape(-1)

    return fn, clean_full.reshape(-1), up_index, down_index


def _sparse_map(
    up_sae: SAE,
    down_sae: SAE,
    run: Callable[[Tensor], Tensor],
    x_out: Tensor,
    up: ActiveLatents,
    down: ActiveLatents,
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The map on the active latents' values only: ``(fn, inputs)`` (see the module doc)."""
    pos, lat = up.pos.to(x_out.device), up.latent.to(x_out.device)
    columns = _decoder_columns(up_sae, lat)  # (n_up, *hook shape per position)
    columns = columns.reshape(len(up), *x_out.shape[1:])
    shape = [1] * (columns.ndim - 1)
    base = x_out - torch.zeros_like(x_out).index_add(
        0, pos, up.value.to(columns.device).view(-1, *shape) * columns
    )
    dpos_d, dlat_d = down.pos.to(x_out.device), down.latent.to(x_out.device)

    def fn(values: Tensor) -> Tensor:
        x = base.index_add(0, pos, values.view(-1, *shape) * columns)
        return pre_activations(down_sae, run(x), dpos_d, dlat_d)

    return fn, up.value.to(x_out.device)


@dataclass
class LatentJacobian:
    """``jacobian[j, i]`` = d(down latent j) / d(up latent i), both active on the sequence."""

    jacobian: Float[Tensor, "n_down n_up"]
    up: ActiveLatents
    down: ActiveLatents
    up_hook: str
    down_hook: str

    def position_matrix(self, seq: int) -> Float[Tensor, "seq seq"]:
        """Sum of ``|jacobian|`` by (later position, earlier position): who reads from where."""
        out = torch.zeros(seq, seq)
        flat = self.down.pos[:, None] * seq + self.up.pos[None, :]
        out.view(-1).index_add_(0, flat.flatten(), self.jacobian.abs().flatten().cpu())
        return out

    def top_edges(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` largest entries by absolute value, with positions, latents and values."""
        flat = self.jacobian.abs().flatten()
        k = min(k, flat.numel())
        rows = []
        for idx in flat.topk(k).indices.tolist():
            j, i = divmod(idx, self.jacobian.shape[1])
            rows.append(
                {
                    "up pos": int(self.up.pos[i]),
                    "up latent": int(self.up.latent[i]),
                    "down pos": int(self.down.pos[j]),
                    "down latent": int(self.down.latent[j]),
                    "gradient": float(self.jacobian[j, i]),
                    "up value": float(self.up.value[i]),
                    "value x gradient": float(self.jacobian[j, i] * self.up.value[i]),
                }
            )
        return pd.DataFrame(rows)


JACOBIAN_BUDGET = 1 << 24  # vectorised passes x (inputs + outputs) held at once, in floats


def auto_chunk_size(n_passes: int, per_pass: int, budget: int = JACOBIAN_BUDGET) -> int:
    """How many of ``n_passes`` Jacobian passes to vectorise at once within ``budget`` floats.

    Each vectorised pass carries tensors at least the size of the map's inputs plus outputs
    (``per_pass``) through the model, so the chunk is ``budget // per_pass`` (at least 1, at
    most ``n_passes``): all at once for small maps, bounded memory for wide SAEs (on gpt2 the
    dense map of a 24576-latent SAE would otherwise vectorise 24576 backward passes).
    """
    if n_passes < 1 or per_pass < 1 or budget < 1:
        raise ValueError(
            f"n_passes, per_pass and budget must be >= 1, got {n_passes}, {per_pass}, {budget}"
        )
    return max(1, min(n_passes, budget // per_pass))


def _one_hot(start: int, stop: int, n: int, like: Tensor) -> Tensor:
    """Rows ``start..stop-1`` of the ``(n, n)`` identity, built for that block only."""
    basis = torch.zeros(stop - start, n, device=like.device, dtype=like.dtype)
    basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    return basis


def _jacobian(
    fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    n_out: int,
    mode: str,
    chunk_size: int | None,
    per_pass: int | None = None,
) -> Tensor:
    """The ``(n_out, n_in)`` Jacobian of ``fn`` at ``inputs``, ``chunk_size`` passes at a time.

    Reverse mode runs the forward pass once (:func:`torch.func.vjp`) and then one vectorised
    block of backward passes per chunk; forward mode one vectorised block of
    :func:`torch.func.jvp` per chunk of input columns. Both run the passes without building
    a graph of their own (``create_graph=False``, ``torch.no_grad``) and copy each block into
    the result before the next: a block that kept its graph (the model's parameters require
    gradients) would hold every pass's activations until the end, memory proportional to
    the number of passes instead of the chunk (issue 15: 12 GB on gpt2 shapes).
    """
    if mode not in ("auto", "rev", "fwd"):
        raise ValueError(f"mode must be 'auto', 'rev' or 'fwd', got {mode!r}")
    if mode == "auto":
        mode = "rev" if n_out <= inputs.numel() else "fwd"
    n_in = inputs.numel()
    out = torch.zeros(n_out, n_in, device=inputs.device, dtype=inputs.dtype)
    if n_out == 0 or n_in == 0:
        return out
    n_passes = n_out if mode == "rev" else n_in
    if chunk_size is None:
        per_pass = max(per_pass or 0, n_in + n_out)
        chunk_size = auto_chunk_size(n_passes, per_pass, JACOBIAN_BUDGET)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if mode == "rev":
        with torch.enable_grad():
            _, vjp_fn = vjp(fn, inputs)
        rows = vmap(lambda c: vjp_fn(c, create_graph=False)[0])
    else:
        rows = vmap(lambda t: jvp(fn, (inputs,), (t,))[1])
    for start in range(0, n_passes, chunk_size):
        stop = min(start + chunk_size, n_passes)
        with torch.no_grad():
            block = rows(_one_hot(start, stop, n_out if mode == "rev" else n_in, inputs))
        if mode == "rev":
            out[start:stop] = block
        else:
            out[:, start:stop] = block.T
    return out


def _floats_per_pass(
    model: HookedSAETransformer, up_sae: SAE, down_sae: SAE, tokens: Tensor
) -> int:
    """What one vectorised Jacobian pass carries, in floats: both SAEs' latents and the model's
    activations, per position of ``tokens``."""
    n_pos = int(torch.as_tensor(tokens).shape[-1])
    width = up_sae.cfg.d_sae + down_sae.cfg.d_sae + 4 * model.cfg.n_layers * model.cfg.d_model
    return n_pos * width


def latent_jacobian(
    model: HookedSAETransformer,
    up_sae: SAE,
    down_sae: SAE,
    tokens: Int[Tensor, " seq"],
    *,
    up_positions: list[int] | Tensor | None = None,
    down_positions: list[int] | Tensor | None = None,
    skip_bos: bool = True,
    dense: bool = False,
    mode: str = "auto",
    chunk_size: int | None = None,
) -> LatentJacobian:
    """Jacobian of ``down_sae``'s active latents with respect to ``up_sae``'s active latents.

    See :func:`latent_map` for the arguments. ``dense=False`` (default) differentiates a
    function of the active values only, so the cost grows with the active sets; ``dense=True``
    differentiates the full latent vectors (``positions * d_sae`` on each side) and keeps the
    active rows and columns afterwards: the same numbers at a far higher cost. ``mode``:
    ``"rev"`` (one forward pass, then one backward pass per output, :func:`torch.func.vjp`),
    ``"fwd"`` (one forward-mode pass per input, :func:`torch.func.jvp`) or ``"auto"`` (the
    smaller side).
    ``chunk_size`` bounds how many passes are vectorised at once (memory); ``None`` picks
    :func:`auto_chunk_size`.
    """
    lmap = latent_map(
        model, up_sae, down_sae, tokens, up_positions=up_positions,
        down_positions=down_positions, skip_bos=skip_bos, dense=dense,
    )  # fmt: skip
    with torch.no_grad():
        n_out = int(lmap.fn(lmap.inputs).numel())
    per_pass = _floats_per_pass(model, up_sae, down_sae, tokens)
    full = _jacobian(lmap.fn, lmap.inputs, n_out, mode, chunk_size, per_pass=per_pass)
    jac = full[lmap.down_index.to(full.device)][:, lmap.up_index.to(full.device)]
    return LatentJacobian(jac.cpu(), lmap.up, lmap.down, lmap.up_hook, lmap.down_hook)


def dense_jacobian_sample(
    model: HookedSAETransformer,
    up_sae: SAE,
    down_sae: SAE,
    tokens: Int[Tensor, " seq"],
    n_rows: int,
    *,
    up_positions: list[int] | Tensor | None = None,
    down_positions: list[int] | Tensor | None = None,
    skip_bos: bool = True,
    seed: int = 0,
) -> tuple[LatentJacobian, int]:
    """The dense method of :func:`latent_jacobian` on ``n_rows`` of its output rows only.

    The dense map's outputs are every later latent at ``down_positions``; this differentiates
    (reverse mode, one backward pass per row) the rows of the active later latents plus
    inactive ones drawn at random (``seed``) up to ``n_rows`` in all, at the dense cost per
    row. Returns ``(jacobian, n_total)``: the active block (the same numbers as
    ``latent_jacobian(..., dense=True)``) and the number of rows the full dense Jacobian has,
    so a timing can be scaled by ``n_total / n_rows`` where computing all rows is too slow.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    lmap = latent_map(
        model, up_sae, down_sae, tokens, up_positions=up_positions,
        down_positions=down_positions, skip_bos=skip_bos, dense=True,
    )  # fmt: skip
    with torch.no_grad():
        n_total = int(lmap.fn(lmap.inputs).numel())
    active = lmap.down_index
    if n_rows < len(active):
        raise ValueError(f"n_rows must be >= the {len(active)} active later latents, got {n_rows}")
    others = torch.ones(n_total, dtype=torch.bool)
    others[active] = False
    pool = torch.nonzero(others).flatten()
    gen = torch.Generator().manual_seed(seed)
    drawn = pool[torch.randperm(len(pool), generator=gen)[: min(n_rows, n_total) - len(active)]]
    rows = torch.cat([active, drawn]).to(lmap.inputs.device)
    per_pass = _floats_per_pass(model, up_sae, down_sae, tokens)
    full = _jacobian(lambda v: lmap.fn(v)[rows], lmap.inputs, len(rows), "rev", None, per_pass)
    jac = full[: len(active)][:, lmap.up_index.to(full.device)]
    return LatentJacobian(jac.cpu(), lmap.up, lmap.down, lmap.up_hook, lmap.down_hook), n_total


@torch.no_grad()
def finite_difference(
    lmap: LatentMap, columns: list[int] | Tensor, eps: float = 1e-2
) -> Float[Tensor, "n_down n_columns"]:
    """Central finite differences of ``lmap`` for the chosen input ``columns`` (sparse map).

    Column ``c`` of the result is ``(fn(v + eps e_c) - fn(v - eps e_c)) / (2 eps)``: it
    should equal column ``c`` of the Jacobian up to ``O(eps^2)`` (and float32 rounding).
    """
    if lmap.dense:
        raise ValueError("lmap must be a sparse map (dense=False), got a dense one")
    index = torch.as_tensor(columns, dtype=torch.long).flatten()
    if index.numel() == 0 or index.min() < 0 or index.max() >= lmap.inputs.numel():
        raise IndexError(f"columns must be in [0, {lmap.inputs.numel()}), got {index.tolist()}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    out = []
    for c in index.tolist():
        step = torch.zeros_like(lmap.inputs)
        step[c] = eps
        out.append((lmap.fn(lmap.inputs + step) - lmap.fn(lmap.inputs - step)) / (2 * eps))
    return torch.stack(out, dim=1).cpu()


def token_attribution(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, " seq"],
    pos: int,
    latent: int,
) -> Float[Tensor, " seq"]:
    """Gradient x input of one latent with respect to each token's embedding.

    Entry ``p`` is ``W_E[t_p] . d(activation of latent at pos)/d(hook_embed[p])``: the first-order
    estimate of how much the latent would lose if the embedding of token ``p`` were removed.
    The gradient is exact (full model, no frozen parts); positions after ``pos`` get 0.
    """
    hook_in, _ = check_sae_hooks(model, sae)
    tokens = check_prompt(tokens, model)[None]
    seq = tokens.shape[1]
    if not -seq <= pos < seq:
        raise IndexError(f"pos must be in [-{seq}, {seq}), got {pos}")
    latent = check_latent(sae, latent)
    box: dict[str, Tensor] = {}

    def keep_embed(act: Tensor, hook: object) -> Tensor:
        act = act.detach().requires_grad_(True)
        box["embed"] = act
        return act

    def capture(act: Tensor, hook: object) -> None:
        box["x"] = act

    with torch.enable_grad():
        model.run_with_hooks(
            tokens,
            fwd_hooks=[("hook_embed", keep_embed), (hook_in, capture)],
            stop_at_layer=stop_layer(hook_in),
        )
        value = encode(sae, box["x"][0], batched=False)[pos, latent]
        (grad,) = torch.autograd.grad(value, box["embed"], allow_unused=True)
    if grad is None:
        return torch.zeros(seq)
    return (grad[0] * box["embed"][0]).sum(-1).detach().cpu()


def latent_logit_jacobian(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, " seq"],
    token_ids: list[int] | Tensor,
    *,
    pos: int = -1,
    skip_bos: bool = True,
) -> tuple[Float[Tensor, "n_tokens n_active"], ActiveLatents]:
    """d(logit of each of ``token_ids`` at ``pos``) / d(each active latent of ``sae``).

    The SAE is spliced in with its error term (as in :func:`latent_map`); the gradient runs
    through every later layer, attention and LayerNorm included. Returns the Jacobian and the
    active latents (columns). Multiply a column by the latent's value for a value x gradient
    attribution of the logit.
    """
    _, hook_out = check_sae_hooks(model, sae)
    tokens = check_prompt(tokens, model)[None]
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten().to(model.cfg.device)
    if ids.numel() == 0 or ids.min() < 0 or ids.max() >= model.cfg.d_vocab:
        raise IndexError(
            f"token_ids must be in [0, {model.cfg.d_vocab}) (d_vocab), got {ids.tolist()}"
        )
    seq = tokens.shape[1]
    if not -seq <= pos < seq:
        raise IndexError(f"pos must be in [-{seq}, {seq}), got {pos}")
    # Reuse the latent map machinery with "the logits" as the later side.
    hook_in, _ = sae_hooks(sae)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (hook_in, hook_out))
        acts = encode(sae, cache[hook_in][0], batched=False).detach()
        x_out = cache[hook_out][0]
    if skip_bos and starts_with_bos(model, tokens):
        acts[0] = 0
    acts[pos % seq + 1 :] = 0  # later positions cannot affect the logits at pos
    p_idx, l_idx = torch.nonzero(acts, as_tuple=True)
    active = ActiveLatents(p_idx.cpu(), l_idx.cpu(), acts[p_idx, l_idx].cpu())
    columns = _decoder_columns(sae, l_idx).reshape(len(active), *x_out.shape[1:])
    shape = [1] * (columns.ndim - 1)
    base = x_out - torch.zeros_like(x_out).index_add(
        0, p_idx, acts[p_idx, l_idx].view(-1, *shape) * columns
    )

    def fn(values: Tensor) -> Tensor:
        x = base.index_add(0, p_idx, values.view(-1, *shape) * columns)
        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_out, lambda act, hook: x[None])])
        return logits[0, pos, ids]

    jac = _jacobian(fn, acts[p_idx, l_idx], ids.numel(), "rev", None)
    return jac.cpu(), active


_RESID_WRITE = re.compile(
    r"^blocks\.(\d+)\.(hook_mlp_out|hook_attn_out|hook_resid_mid|hook_resid_post)$"
)


def residual_connected(up_sae: SAE, down_sae: SAE) -> bool:
    """True when only the residual stream (a sum) lies between ``up_sae``'s output hook and
    ``down_sae``'s input hook, so :func:`virtual_weights` is the exact Jacobian.

    That is the case for an output written in layer ``L`` (``hook_mlp_out``,
    ``hook_resid_post``; ``hook_attn_out`` and ``hook_resid_mid`` only if no MLP follows)
    read at ``blocks.{L+1}.hook_resid_pre`` or ``blocks.{L}.hook_resid_post``.
    """
    _, up_out = sae_hooks(up_sae)
    down_in, _ = sae_hooks(down_sae)
    match = _RESID_WRITE.match(up_out)
    if not match:
        return False
    layer, kind = int(match.group(1)), match.group(2)
    if kind in ("hook_attn_out", "hook_resid_mid"):
        return False  # the MLP of the same layer reads it nonlinearly before the next hook
    return down_in in (f"blocks.{layer + 1}.hook_resid_pre", f"blocks.{layer}.hook_resid_post")


@torch.no_grad()
def virtual_weights(
    model: HookedSAETransformer, up_sae: SAE, down_sae: SAE
) -> Float[Tensor, "d_sae_up d_sae_down"]:
    """Input-independent latent-to-latent weights through the residual stream.

    For an earlier SAE that writes to the residual stream and a later one that reads a
    residual-stream hook with nothing nonlinear in between (e.g. ``hook_mlp_out`` of layer 0
    into ``hook_resid_pre`` of layer 1), a unit of latent ``i`` moves the later SAE's
    pre-activation of latent ``j`` by ``(decode(e_i) - decode(0)) . W_enc[:, j]`` (times the
    later SAE's decoder-norm rescaling when it has one). On the active set this *is* the
    Jacobian; :func:`latent_jacobian` must agree with it there.
    """
    _, up_out = check_sae_hooks(model, up_sae)
    down_in, _ = check_sae_hooks(model, down_sae)
    for arg, hook in (("up_sae output hook", up_out), ("down_sae input hook", down_in)):
        if not re.search(r"(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out)$", hook):
            raise ValueError(
                f"{arg} must be a residual-stream hook (resid/mlp_out/attn_out), got {hook!r}"
            )
    cols = _decoder_columns(up_sae, torch.arange(up_sae.cfg.d_sae))
    w = cols @ down_sae.W_enc
    if getattr(down_sae.cfg, "rescale_acts_by_decoder_norm", False):
        w = w * down_sae.W_dec.norm(dim=-1)
    return w
