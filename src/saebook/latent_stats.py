"""Statistics of every latent of an SAE, gathered in one streaming pass over a token sample.

A dashboard needs, for each latent, how often it fires, how strongly, the shape of its
activation distribution, the contexts where it fires hardest and a fair sample of ordinary
contexts. Computing these one latent at a time means one pass of the model per latent;
:func:`latent_stats` gets all of them for all latents from a single pass:

* the model runs only up to the SAE's input hook (a hook on it stops the forward pass),
  one batch of rows at a time, and the batch's latent activations are encoded once;
* only the non-zero activations of a batch are touched after that (an SAE is sparse), so
  counts, sums, maxima and histograms are scatter-adds over a few entries per token;
* per-latent top-k and per-latent uniform samples (each firing gets a random key; the
  smallest keys win, which makes a reservoir sample) are kept in fixed ``(d_sae, k)``
  buffers; a candidate that cannot enter a buffer (below the current k-th value, or a key
  above the current n-th key) is dropped at once, the others are staged and merged in bulk
  once they outnumber the buffer's slots ``_PENDING`` times, so each buffer row is sorted
  once per many batches and late batches cost little beyond the forward pass;
* histogram bins come from float32 logarithms, checked against the edges on either side;
* the firings are read from the dense activations by numpy (a boolean mask and its
  ``flatnonzero``), and the bookkeeping runs on one torch thread: its arrays are small.

Memory is that of one batch plus the fixed-size outputs: it does not grow with the number of
rows. The result, :class:`LatentStats`, knows how to turn its buffers into examples.

Chapters: intro/03, intro/06, intro/08, deeper/01, deeper/02, deeper/03, deeper/04, deeper/05,
deeper/06, deeper/07, training/02, training/03, training/04, circuits/02
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from saebook.hooks import bos_mask, check_sae_hooks, stop_layer
from saebook.validate import check_int, check_sae_input, check_tokens

__all__ = [
    "Example",
    "Interval",
    "LatentStats",
    "latent_stats",
    "decoder_scaled",
    "latent_activations",
    "encode_at_hook",
]


@dataclass(frozen=True)
class Example:
    """One token position of the token sample and a latent's activation there."""

    row: int
    pos: int
    value: float


@dataclass(frozen=True)
class Interval:
    """A slice of a latent's activation distribution and sampled examples from it.

    ``q_lo``/``q_hi`` are the quantiles of the latent's non-zero activations that bound the
    slice (estimated from the uniform sample), ``lo``/``hi`` the activation values there.
    """

    q_lo: float
    q_hi: float
    lo: float
    hi: float
    examples: list[Example]


@dataclass
class LatentStats:
    """Per-latent statistics of one SAE on one token sample (see :func:`latent_stats`).

    All tensors live on the CPU and have ``d_sae`` as their first axis. ``top_*`` rows are
    sorted by activation, largest first; ``sample_*`` rows hold a uniform random sample of
    the positions where the latent fired, in random order. Unused slots (a latent that fired
    fewer times than the buffer holds) have row ``-1``.
    """

    hook_name: str
    n_tokens: int  # positions counted (BOS excluded when asked)
    n_rows: int
    seq_len: int
    count: Int[Tensor, " d_sae"]  # positions where the activation is > 0
    sum: Float[Tensor, " d_sae"]  # float64 sum of activations
    max: Float[Tensor, " d_sae"]
    hist: Int[Tensor, "d_sae n_bins"]  # non-zero activations per log-spaced bin
    hist_edges: Float[Tensor, " n_bins_plus_1"]
    top_values: Float[Tensor, "d_sae k"]
    top_rows: Int[Tensor, "d_sae k"]
    top_pos: Int[Tensor, "d_sae k"]
    sample_values: Float[Tensor, "d_sae n_samples"]
    sample_rows: Int[Tensor, "d_sae n_samples"]
    sample_pos: Int[Tensor, "d_sae n_samples"]
    peak_buffer_bytes: int  # largest working set of the pass (batch buffers + state)
    #: ``(before, after)`` of the activation windows kept with every buffered example
    #: (``latent_stats(window=...)``), or None when none were kept
    window: tuple[int, int] | None = None
    #: the latent's activations at ``pos - before .. pos + after`` of each top example's row
    #: (0 outside the sequence); None without ``window``
    top_windows: Float[Tensor, "d_sae k width"] | None = None
    sample_windows: Float[Tensor, "d_sae n_samples width"] | None = None

    @property
    def d_sae(self) -> int:
        return int(self.count.shape[0])

    @property
    def density(self) -> Float[Tensor, " d_sae"]:
        """Share of counted positions where each latent fires."""
        return self.count.double() / self.n_tokens

    @property
    def mean_activation(self) -> Float[Tensor, " d_sae"]:
        """Mean activation over the positions where the latent fires (NaN if it never does)."""
        return torch.where(
            self.count > 0, self.sum / self.count.clamp(min=1).double(), float("nan")
        )

    def dead(self) -> Int[Tensor, " n"]:
        """Indices of latents that never fired on the sample."""
        return torch.nonzero(self.count == 0).flatten()

    def dense(self, threshold: float = 0.1) -> Int[Tensor, " n"]:
        """Indices of latents that fire on more than ``threshold`` of the positions."""
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a share in [0, 1], got {threshold!r}")
        return torch.nonzero(self.density > threshold).flatten()

    def _check_latent(self, latent: int) -> int:
        if isinstance(latent, Tensor):
            latent = int(latent)
        if isinstance(latent, bool) or not isinstance(latent, int):
            raise TypeError(f"latent must be an int, got {type(latent).__name__}")
        if not 0 <= latent < self.d_sae:
            raise IndexError(f"latent must be in [0, {self.d_sae}), got {latent}")
        return latent

    def top_examples(self, latent: int, n: int | None = None) -> list[Example]:
        """The positions where ``latent`` fired hardest, largest first (at most ``n``)."""
        latent = self._check_latent(latent)
        rows = self.top_rows[latent]
        used = int((rows >= 0).sum())
        used = used if n is None else min(used, n)
        rows, pos = self.top_rows[latent, :used].tolist(), self.top_pos[latent, :used].tolist()
        values = self.top_values[latent, :used].tolist()
        return [Example(r, p, v) for r, p, v in zip(rows, pos, values, strict=True)]

    def sample_examples(self, latent: int) -> list[Example]:
        """The uniform sample of firing positions of ``latent``, by activation, largest first."""
        latent = self._check_latent(latent)
        used = self.sample_rows[latent] >= 0
        vals = self.sample_values[latent][used]
        order = vals.argsort(descending=True, stable=True)
        rows, pos = self.sample_rows[latent][used][order], self.sample_pos[latent][used][order]
        return [
            Example(r, p, v)
            for r, p, v in zip(rows.tolist(), pos.tolist(), vals[order].tolist(), strict=True)
        ]

    def quantile_examples(self, latent: int, n_intervals: int = 4) -> list[Interval]:
        """Split the sampled firings of ``latent`` into ``n_intervals`` equal-count slices.

        Slices run from the weakest to the strongest activations; each holds the sampled
        examples whose activation falls in it (largest first). Fewer slices come back when
        the latent fired fewer times than ``n_intervals``.
        """
        if isinstance(n_intervals, bool) or not isinstance(n_intervals, int) or n_intervals < 1:
            raise ValueError(f"n_intervals must be a positive int, got {n_intervals!r}")
        ordered = self.sample_examples(latent)[::-1]  # ascending
        if not ordered:
            return []
        chunks = [c for c in _split_even(ordered, n_intervals) if c]
        out, done = [], 0
        for chunk in chunks:
            q_lo, done = done / len(ordered), done + len(chunk)
            out.append(
                Interval(
                    q_lo=q_lo,
                    q_hi=done / len(ordered),
                    lo=chunk[0].value,
                    hi=chunk[-1].value,
                    examples=chunk[::-1],
                )
            )
        return out

    def latent_hist(self, latent: int) -> tuple[Int[Tensor, " n_bins"], Tensor]:
        """Counts of ``latent``'s non-zero activations per bin, and the bin edges."""
        latent = self._check_latent(latent)
        return self.hist[latent], self.hist_edges

    def windows_at(
        self, wanted: Int[Tensor, "n 3"], context: tuple[int, int]
    ) -> Float[Tensor, "n window"] | None:
        """The kept activation windows of ``wanted`` rows ``(latent, row, pos)``, cut to
        ``context = (before, after)``; None unless every one is a buffered example and the
        kept windows cover ``context``."""
        if self.window is None or self.top_windows is None or self.sample_windows is None:
            return None
        before, after = context
        if before > self.window[0] or after > self.window[1]:
            return None
        wanted = torch.as_tensor(wanted, dtype=torch.long).view(-1, 3)
        lat = wanted[:, 0].unique()
        rows = torch.cat([self.top_rows[lat], self.sample_rows[lat]], 1)
        pos = torch.cat([self.top_pos[lat], self.sample_pos[lat]], 1)
        wins = torch.cat([self.top_windows[lat], self.sample_windows[lat]], 1)
        used = rows >= 0
        span = self.n_rows * self.seq_len
        keys = (lat[:, None] * span + rows * self.seq_len + pos)[used]
        keys, order = keys.sort()
        wins = wins[used][order]
        asked = (wanted[:, 0] * span + wanted[:, 1] * self.seq_len + wanted[:, 2]).contiguous()
        at = torch.searchsorted(keys, asked).clamp(max=max(len(keys) - 1, 0))
        if len(keys) == 0 or not bool((keys[at] == asked).all()):
            return None
        cut = slice(self.window[0] - before, self.window[0] + after + 1)
        return wins[at][:, cut]

    def table(self) -> pd.DataFrame:
        """One row per latent: count, density, mean activation (when firing) and maximum."""
        return pd.DataFrame(
            {
                "latent": range(self.d_sae),
                "count": self.count.numpy(),
                "density": self.density.numpy(),
                "mean_activation": self.mean_activation.numpy(),
                "max_activation": self.max.numpy(),
            }
        )


def _split_even(items: list, n: int) -> list[list]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_hook(model: HookedSAETransformer, sae: SAE) -> str:
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a sae_lens SAE, got {type(sae).__name__}")
    return check_sae_hooks(model, sae)[0]


class _Captured(Exception):
    """Raised by the capture hook: the SAE's input is known, the rest of the model can stop."""


def _activation_at(model: HookedSAETransformer, batch: Tensor, hook: str) -> Tensor:
    """The activation at ``hook`` on ``batch``, running the model no further than that hook."""
    box: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: object) -> None:
        box["x"] = act
        raise _Captured

    try:
        model.run_with_hooks(batch, fwd_hooks=[(hook, grab)], stop_at_layer=stop_layer(hook))
    except _Captured:
        pass
    if "x" not in box:
        raise ValueError(f"sae.cfg.metadata.hook_name {hook!r} never ran in the model's forward")
    return box["x"]


@torch.no_grad()
def encode_at_hook(
    model: HookedSAETransformer, sae: SAE, batch: Int[Tensor, "rows seq"]
) -> Float[Tensor, "rows seq d_sae"]:
    """The SAE's latents on ``batch``; the model stops as soon as the SAE's input hook ran.

    This is the bare cost that every statistic needs; :func:`latent_stats` calls it once per
    batch and the benchmarks use it as the baseline.
    """
    hook = _check_hook(model, sae)
    x = check_sae_input(sae, _activation_at(model, batch, hook), hook)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"the activations at hook {hook!r} must be finite, got NaN or inf "
            f"(rows {batch.shape[0]}, check the model's weights and the tokens)"
        )
    acts = sae.encode(x)
    return acts.to_dense() if acts.is_sparse else acts


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


#: Key of an empty buffer slot: larger than every real key (real keys are below 2**31).
_EMPTY = (1 << 32) - 1


def _value_key(values: Tensor) -> Tensor:
    """int64 keys in ``[0, 2**31)`` that sort non-negative float32 ``values`` largest first.

    The bit pattern of a non-negative IEEE float, read as an integer, grows with the value.
    """
    bits = values.float().contiguous().view(torch.int32).long()
    return 0x7FFFFFFF - bits


def _sort_order(rank: Tensor, keys: Tensor, n_ranks: int) -> Tensor:
    """Indices that sort entries by ``(rank, key, index)``: a stable sort on ``(rank, key)``.

    When ``rank``, ``key`` (below ``2**31``) and the entry's index fit in 63 bits together,
    they are packed into one int64 that is unique, so an unstable sort of the packed values
    is stable and the index comes back in the low bits (numpy's sort of int64 is several
    times faster than ``torch.argsort``); otherwise a stable argsort.
    """
    n = keys.numel()
    index_bits = max(1, (n - 1).bit_length())
    rank_bits = max(1, (n_ranks - 1).bit_length())
    if rank_bits + 31 + index_bits > 63:
        return torch.argsort((rank << 31) | keys, stable=True)
    index = torch.arange(n, device=keys.device)
    packed = (rank << (31 + index_bits)) | (keys << index_bits) | index
    if packed.device.type == "cpu":
        packed = torch.from_numpy(np.sort(packed.numpy()))
    else:
        packed = torch.sort(packed).values
    return packed & ((1 << index_bits) - 1)


def _merge_smallest(
    state_keys: Tensor,
    state_payload: list[Tensor],
    group: Tensor,
    keys: Tensor,
    payload: list[Tensor],
) -> int:
    """Keep, per group, the ``m`` entries with the smallest keys among state and candidates.

    ``state_keys`` is an int64 ``(n_groups, m)`` buffer, each row sorted ascending, with
    :data:`_EMPTY` in unused slots (and the unused slots' payload left as it is); candidates
    come flat, with their ``group`` ids and int64 ``keys`` in ``[0, 2**31)``. Candidates that
    cannot enter (key not below their group's current worst) are dropped first, so once the
    buffers are full a batch costs little. A payload entry may have trailing axes (state
    ``(n_groups, m, *trail)``, candidates ``(n, *trail)``). The filled state slots of the
    touched groups and the candidates are sorted together on ``(group, key)``, stably: ties
    keep the older entry, and candidates keep their order. Returns the number of candidates merged.
    """
    n_groups, m = state_keys.shape
    if keys.numel() == 0:
        return 0
    can = keys < state_keys[:, -1].index_select(0, group)
    if not bool(can.all()):  # (all enter while the buffers fill: nothing to select)
        enter = torch.nonzero(can).squeeze(1)
        if enter.numel() == 0:
            return 0
        group, keys = group.index_select(0, enter), keys.index_select(0, enter)
        payload = [p.index_select(0, enter) for p in payload]
    mask = torch.zeros(n_groups, dtype=torch.bool, device=keys.device)
    mask.index_fill_(0, group, True)
    touched = torch.nonzero(mask).squeeze(1)  # ascending
    # when most groups are touched, merge all (an untouched row is rewritten unchanged) and
    # skip the gathers and scatters of whole buffers
    every = 2 * touched.numel() >= n_groups
    if every:
        touched = torch.arange(n_groups, device=keys.device)
    t = touched.numel()

    def rows(state: Tensor) -> Tensor:
        return state if every else state.index_select(0, touched)

    old = rows(state_keys)  # (t, m)
    filled = None if bool(old[:, -1].ne(_EMPTY).all()) else torch.nonzero(old.view(-1) != _EMPTY)
    state_rank = torch.arange(t, device=keys.device).repeat_interleave(m)
    state_keys_flat = old.reshape(-1)
    if filled is not None:  # leave out the unused slots (a suffix of each row)
        filled = filled.squeeze(1)
        state_rank, state_keys_flat = filled // m, state_keys_flat.index_select(0, filled)
    cand_rank = group if every else (mask.cumsum(0) - 1).index_select(0, group)
    all_rank = torch.cat([state_rank, cand_rank])
    all_keys = torch.cat([state_keys_flat, keys])
    order = _sort_order(all_rank, all_keys, t)
    sizes = torch.bincount(all_rank, minlength=t)
    slot = torch.arange(m, device=keys.device)
    valid = slot < sizes[:, None]  # (t, m): slots that get an entry, the rest stay unused
    at = (sizes.cumsum(0) - sizes)[:, None] + slot
    chosen = order.index_select(0, at.view(-1).clamp(max=all_keys.numel() - 1))
    every_valid = bool(valid.all())

    def put(state: Tensor, prev: Tensor, picked: Tensor) -> None:
        if not every_valid:
            picked = torch.where(valid.view(t, m, *[1] * (picked.dim() - 2)), picked, prev)
        if every:
            state.copy_(picked)
        else:
            state[touched] = picked

    put(state_keys, old, all_keys.index_select(0, chosen).view(t, m))
    for state, new in zip(state_payload, payload, strict=True):
        trail = state.shape[2:]
        prev = rows(state)
        flat = prev.reshape(-1, *trail)
        merged = torch.cat([flat if filled is None else flat.index_select(0, filled), new])
        put(state, prev, merged.index_select(0, chosen).view(t, m, *trail))
    return int(group.numel())


def _hist_bins(values: Tensor, edges: Tensor) -> Tensor:
    """The histogram bin of each positive ``values`` entry for the log-spaced float64 ``edges``
    (``n_bins + 1`` of them): ``torch.bucketize(values.double(), edges[1:-1])``, exactly.

    The bin is read from the value's logarithm (float32: a few cheap passes instead of a
    binary search per value), which can be one bin off next to an edge; one comparison with
    the edge on each side, in float64, puts it right. With very narrow bins (where float32
    logarithms are too coarse for one step to suffice) it falls back to ``bucketize``.
    """
    n_bins = edges.numel() - 1
    lo, hi = math.log10(float(edges[0])), math.log10(float(edges[-1]))
    step = (hi - lo) / n_bins
    wide = values.float()
    if n_bins < 2 or not step >= 1e-3:
        return torch.bucketize(wide.double(), edges[1:-1])
    inf = edges.new_tensor([math.inf])
    padded = torch.cat([-inf, edges[1:-1], inf])  # padded[i] = edges[i], -inf/inf at the ends
    guess = ((wide.log10() - lo) * (1 / step)).floor_().clamp_(0, n_bins - 1).long()
    exact = wide.double()
    guess -= (exact <= padded.index_select(0, guess)).long()
    guess += (exact > padded.index_select(0, guess + 1)).long()
    return guess


def _log_edges(values: Tensor, n_bins: int) -> Tensor:
    """Log-spaced edges from the 0.5% quantile of ``values`` to twice their maximum."""
    v = values.float()
    rank = max(1, math.ceil(0.005 * v.numel()))
    lo = float(v.kthvalue(rank).values)
    hi = 2 * float(v.max())
    lo = min(max(lo, hi * 1e-6), hi / 4)
    return torch.logspace(math.log10(lo), math.log10(hi), n_bins + 1, dtype=torch.float64)


#: Candidates are staged until they outnumber a buffer's slots this many times, then merged:
#: one merge of many candidates costs less than several small ones (each pass over the
#: state and each sort has a fixed part), and the result does not depend on when merges run.
_PENDING = 4


class _Buffer:
    """A per-group buffer of the ``m`` smallest keys (:func:`_merge_smallest`) whose
    candidates are staged and merged in bulk: each row is sorted once per many batches.

    A staged candidate passed the group's threshold at staging time; thresholds only fall,
    so a stale one lets through a few candidates the merge then drops, never loses one.
    Pending candidates are merged once they outnumber the buffer's slots :data:`_PENDING`
    times (memory stays bounded by ``1 + _PENDING`` buffers and a batch), and by :meth:`flush`.
    """

    def __init__(self, keys: Tensor, payload: list[Tensor]) -> None:
        self.keys, self.payload = keys, payload
        self.pending: list[tuple[Tensor, Tensor, list[Tensor]]] = []
        self.n_pending = 0

    def entering(self, group: Tensor, keys: Tensor) -> Tensor:
        """Which candidates can enter: key below their group's current worst (a bool mask)."""
        return keys < self.keys[:, -1].index_select(0, group)

    def stage(self, group: Tensor, keys: Tensor, payload: list[Tensor], enter: Tensor) -> None:
        """Keep the candidates where the bool mask ``enter`` is set."""
        if not bool(enter.all()):
            index = torch.nonzero(enter).squeeze(1)
            if index.numel() == 0:
                return
            group, keys = group.index_select(0, index), keys.index_select(0, index)
            payload = [p.index_select(0, index) for p in payload]
        self.pending.append((group, keys, payload))
        self.n_pending += keys.numel()
        if self.n_pending >= _PENDING * self.keys.numel():
            self.flush()

    def flush(self) -> None:
        """Merge every pending candidate, in the order they were staged."""
        if not self.pending:
            return
        groups, keys, payloads = zip(*self.pending, strict=True)
        self.pending, self.n_pending = [], 0
        cat = [torch.cat(p) for p in zip(*payloads, strict=True)]
        _merge_smallest(self.keys, self.payload, torch.cat(groups), torch.cat(keys), cat)


class _Accumulator:
    """The running state of :func:`latent_stats`: per-latent sum, histogram (whose rows sum
    to the counts), top-k buffer (whose first column is the maximum) and reservoir sample,
    updated from each batch's firings."""

    def __init__(self, d: int, k: int, n_samples: int, n_bins: int, edges: Tensor | None,
                 device: torch.device, seed: int,
                 window: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.d, self.n_bins, self.edges, self.device = d, n_bins, edges, device
        self.window = window
        width = 0 if window is None else window[0] + window[1] + 1
        self.total = torch.zeros(d, dtype=torch.float64, device=device)
        self.hist = torch.zeros(d * n_bins, dtype=torch.int64, device=device)
        # Top-k and sample buffers hold flat positions (row * seq + pos), -1 when unused, and
        # with a window the latent's activations around them.
        self.top_vals = torch.zeros((d, k), device=device)
        self.top_at = torch.full((d, k), -1, dtype=torch.int64, device=device)
        self.top_win = torch.zeros((d, k, width), device=device)
        self.smp_vals = torch.zeros((d, n_samples), device=device)
        self.smp_at = torch.full((d, n_samples), -1, dtype=torch.int64, device=device)
        self.smp_win = torch.zeros((d, n_samples, width), device=device)
        wins = ([self.top_win], [self.smp_win]) if width else ([], [])
        self.top = _Buffer(torch.full((d, k), _EMPTY, dtype=torch.int64, device=device),
                           [self.top_vals, self.top_at, *wins[0]])  # fmt: skip
        self.smp = _Buffer(torch.full((d, n_samples), _EMPTY, dtype=torch.int64, device=device),
                           [self.smp_vals, self.smp_at, *wins[1]])  # fmt: skip
        self.generator = torch.Generator(device=device).manual_seed(seed)

    @property
    def state_bytes(self) -> int:
        state = [self.total, self.hist, self.top.keys, self.top_vals, self.top_at, self.smp.keys,
                 self.smp_vals, self.smp_at, self.top_win, self.smp_win]  # fmt: skip
        # pending candidates: up to _PENDING times as much again
        return (1 + _PENDING) * sum(t.numel() * t.element_size() for t in state)

    def _windows(self, acts: Tensor, where: Tensor, lat: Tensor, offset: int) -> Tensor:
        """Each firing's latent's activations at ``pos - before .. pos + after`` of its row
        (0 outside the row), read from the batch's ``acts`` by one flat gather; only the
        firings near a row's ends need the outside masked."""
        before, after = self.window
        seq, d = acts.shape[1], acts.shape[-1]
        flat = acts.reshape(-1)
        local = where - offset
        steps = torch.arange(-before, after + 1, device=where.device)
        index = (local * d + lat)[:, None] + steps * d
        got = flat.take(index.clamp_(0, flat.numel() - 1)).float()
        pos = local % seq
        edge = torch.nonzero((pos < before) | (pos >= seq - after)).squeeze(1)
        if edge.numel():
            cols = pos.index_select(0, edge)[:, None] + steps
            got[edge] = got.index_select(0, edge) * ((cols >= 0) & (cols < seq))
        return got

    def add(self, where: Tensor, lat: Tensor, vals: Tensor, acts: Tensor | None = None,
            offset: int = 0) -> None:  # fmt: skip
        """Fold in firings: flat positions ``where``, latents ``lat``, values ``vals`` > 0;
        ``acts`` (the batch's activations, its first row at flat position ``offset``) is
        needed for the activation windows when the accumulator keeps them."""
        if lat.numel() == 0:
            return
        d = self.d
        self.total += torch.bincount(lat, weights=vals.double(), minlength=d)
        if self.edges is None:
            self.edges = _log_edges(vals, self.n_bins).to(self.device)
        bins = _hist_bins(vals, self.edges)
        self.hist += torch.bincount(lat * self.n_bins + bins, minlength=self.hist.numel())
        top_keys = _value_key(vals)
        rand = torch.randint(0, 1 << 31, (lat.numel(),), generator=self.generator,
                             device=self.device)  # fmt: skip
        top_in, smp_in = self.top.entering(lat, top_keys), self.smp.entering(lat, rand)
        payload = [vals, where]
        if self.window is not None:
            if acts is None:
                raise ValueError("acts must be given when the accumulator keeps windows")
            need = top_in | smp_in  # windows are built once, for these only
            if not bool(need.all()):
                index = torch.nonzero(need).squeeze(1)
                lat, top_keys, rand, top_in, smp_in, vals, where = (
                    t.index_select(0, index)
                    for t in (lat, top_keys, rand, top_in, smp_in, vals, where)
                )
            payload = [vals, where, self._windows(acts, where, lat, offset)]
        self.top.stage(lat, top_keys, payload, top_in)
        self.smp.stage(lat, rand, payload, smp_in)

    def result(self, hook: str, n_positions: int, tokens: Tensor, working: int) -> LatentStats:
        """The :class:`LatentStats` on the CPU."""
        self.top.flush()
        self.smp.flush()
        seq = int(tokens.shape[1])
        edges = self.edges
        if edges is None:  # nothing fired at all: any edges will do
            edges = torch.logspace(-3, 3, self.n_bins + 1, dtype=torch.float64)

        def split(at: Tensor) -> tuple[Tensor, Tensor]:
            at = at.cpu()
            used = at >= 0
            return torch.where(used, at // seq, -1), torch.where(used, at % seq, -1)

        top_rows, top_pos = split(self.top_at)
        smp_rows, smp_pos = split(self.smp_at)
        return LatentStats(
            hook_name=hook,
            n_tokens=n_positions,
            n_rows=int(tokens.shape[0]),
            seq_len=seq,
            count=self.hist.view(self.d, self.n_bins).sum(1).cpu(),
            sum=self.total.cpu(),
            max=self.top_vals[:, 0].contiguous().cpu(),  # 0 where nothing fired
            hist=self.hist.view(self.d, self.n_bins).cpu(),
            hist_edges=edges.cpu(),
            top_values=self.top_vals.cpu(),
            top_rows=top_rows,
            top_pos=top_pos,
            sample_values=self.smp_vals.cpu(),
            sample_rows=smp_rows,
            sample_pos=smp_pos,
            peak_buffer_bytes=int(working + self.state_bytes),
            window=self.window,
            top_windows=None if self.window is None else self.top_win.cpu(),
            sample_windows=None if self.window is None else self.smp_win.cpu(),
        )


def _batch_firings(
    acts: Tensor, offset: int, keep_flat: Tensor
) -> tuple[Tensor, Tensor, Tensor, int]:
    """The firings (activation > 0) of one batch's activations: flat positions (``offset``
    added), latents and values, in row-major order, leaving out positions not kept; and the
    bytes the dense activations took.

    The mask of positions not kept is applied to the dense ``acts > 0`` before the indices are
    read, so nothing is filtered afterwards; on the CPU numpy reads them (``flatnonzero`` of a
    boolean array is several times faster than ``torch.nonzero`` of the floats)."""
    flat = acts.reshape(-1, acts.shape[-1])
    n, d = flat.shape
    drop = torch.nonzero(~keep_flat[offset : offset + n]).squeeze(1)
    if flat.device.type == "cpu" and flat.dtype in (torch.float16, torch.float32, torch.float64):
        values = flat.detach().numpy()
        mask = values > 0
        mask[drop.cpu().numpy()] = False
        index = np.flatnonzero(mask)
        if d & (d - 1) == 0:  # a power of two: a shift and a mask instead of a division
            shift = d.bit_length() - 1
            where, lat = torch.from_numpy(index >> shift), torch.from_numpy(index & (d - 1))
        else:
            where, lat = (torch.from_numpy(a) for a in np.divmod(index, d))
        vals = torch.from_numpy(values.reshape(-1).take(index)).float()
    else:
        mask = flat > 0
        mask[drop] = False
        where, lat = torch.nonzero(mask, as_tuple=True)
        vals = flat[where, lat].float()
    working = acts.numel() * acts.element_size() + lat.numel() * 48
    return where + offset, lat, vals, working


def _check_options(tokens: Tensor, keep: Tensor, batch_size: int, k: int, n_samples: int,
                   n_bins: int, bin_range: tuple[float, float] | None) -> int:  # fmt: skip
    """Check :func:`latent_stats`'s sizes; return the number of positions counted."""
    for name, value in (("batch_size", batch_size), ("k", k), ("n_samples", n_samples),
                        ("n_bins", n_bins)):  # fmt: skip
        check_int(name, value)
    if bin_range is not None and not (0 < bin_range[0] < bin_range[1]):
        raise ValueError(f"bin_range must be (lo, hi) with 0 < lo < hi, got {bin_range!r}")
    n_positions = int(keep.sum())
    if n_positions == 0:
        raise ValueError(
            "tokens must contain at least one non-BOS position to count, got only BOS tokens "
            f"(shape {tuple(tokens.shape)}); pass exclude_bos=False to count them"
        )
    if k > n_positions:
        raise ValueError(
            f"k must be at most the number of positions counted ({n_positions}), got {k}"
        )
    return n_positions


@contextmanager
def _serial(device: torch.device) -> Iterator[None]:
    """On the CPU, torch runs on one thread inside the block (then as many as before): the
    bookkeeping's arrays are small, and a barrier of every thread per small operation costs
    more than it saves, most of all on a shared machine."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def latent_stats(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    batch_size: int = 32,
    k: int = 20,
    n_samples: int = 40,
    n_bins: int = 40,
    exclude_bos: bool = True,
    progress: bool = True,
    seed: int = 0,
    bin_range: tuple[float, float] | None = None,
    window: tuple[int, int] | None = None,
) -> LatentStats:
    """Statistics of every latent of ``sae`` over ``tokens``, in one pass of the model.

    Args:
        model: the model the SAE reads from.
        sae: a SAELens SAE (or transcoder); its ``cfg.metadata.hook_name`` is the input hook.
        tokens: ``(rows, seq)`` token ids; positions are reported as ``(row, pos)`` into it.
        batch_size: rows per forward pass; the working memory scales with it, not with rows.
        k: top activating positions kept per latent.
        n_samples: size of each latent's uniform random sample of firing positions, from
            which :meth:`LatentStats.quantile_examples` draws.
        n_bins: bins of the per-latent activation histograms.
        exclude_bos: leave out BOS positions (the tokenizer's ``bos_token_id``, or column 0
            when there is none), where SAEs are not meant to be read.
        progress: show a progress bar.
        seed: seed of the random keys behind the uniform samples.
        bin_range: ``(lo, hi)`` of the log-spaced histogram edges. By default they are fixed
            after the first batch with a firing: from the 0.5% quantile of its non-zero
            activations to twice its maximum. Values outside fall into the end bins.
        window: ``(before, after)``: keep, with every top and sampled example, the latent's
            activations at ``pos - before .. pos + after`` of its row (what a dashboard shows
            around it), so dashboards need no second pass of the model
            (:meth:`LatentStats.windows_at`); None keeps none.

    Returns:
        A :class:`LatentStats` on the CPU.
    """
    from tqdm import tqdm

    hook = _check_hook(model, sae)
    tokens = check_tokens(tokens, model)
    device = torch.device(model.cfg.device) if model.cfg.device is not None else tokens.device
    tokens = tokens.to(device)
    keep = bos_mask(model, tokens, exclude_bos)
    n_positions = _check_options(tokens, keep, batch_size, k, n_samples, n_bins, bin_range)
    edges = (
        torch.logspace(math.log10(bin_range[0]), math.log10(bin_range[1]), n_bins + 1,
                       dtype=torch.float64).to(device)
        if bin_range is not None else None
    )  # fmt: skip
    if window is not None:
        window = tuple(window)
        if len(window) != 2:
            raise ValueError(f"window must be (before, after), got {window!r}")
        for name, value in zip(("window[0]", "window[1]"), window, strict=True):
            check_int(name, value, minimum=0)
    acc = _Accumulator(sae.cfg.d_sae, k, n_samples, n_bins, edges, device, seed, window)
    keep_flat, seq, working = keep.flatten(), int(tokens.shape[1]), 0
    bar = tqdm(total=tokens.shape[0], unit="row", desc=f"latent stats @ {hook}",
               disable=not progress, leave=False)  # fmt: skip
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        acts = encode_at_hook(model, sae, batch)
        with _serial(device):
            where, lat, vals, used = _batch_firings(acts, start * seq, keep_flat)
            working = max(working, used)
            acc.add(where, lat, vals, acts, start * seq)
        del where, lat, vals, acts
        bar.update(batch.shape[0])
    bar.close()
    return acc.result(hook, n_positions, tokens, working)


def decoder_scaled(sae: SAE, latent_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
    """``latent_acts`` times each latent's decoder-row norm: the length of what each latent
    writes. SAEBench folds these norms into an SAE's activations (``fold_W_dec_norm``) before
    its evaluations; this gives the same activations for an SAE whose norms cannot be folded
    (a TopK SAE that does not rescale by them), and leaves unit-norm SAEs unchanged."""
    if latent_acts.shape[-1] != sae.cfg.d_sae:
        raise ValueError(
            f"latent_acts must end in d_sae={sae.cfg.d_sae}, got {tuple(latent_acts.shape)}"
        )
    return latent_acts * sae.W_dec.detach().norm(dim=-1).to(latent_acts)


@torch.no_grad()
def latent_activations(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "rows seq"],
    latents: list[int] | Tensor | None = None,
    batch_size: int = 32,
) -> Float[Tensor, "rows seq n_latents"]:
    """Activations of ``latents`` (default: all) at every position of ``tokens``, on the CPU.

    Used to shade the context of an example; for statistics over many tokens use
    :func:`latent_stats`, which does not keep every activation.
    """
    _check_hook(model, sae)
    tokens = check_tokens(tokens, model)
    batch_size = check_int("batch_size", batch_size)
    index = None
    if latents is not None:
        index = torch.as_tensor(latents, dtype=torch.long).flatten()
        if index.numel() == 0:
            raise ValueError("latents must name at least one latent, got an empty list")
        bad = index[(index < 0) | (index >= sae.cfg.d_sae)]
        if bad.numel():
            raise IndexError(f"latents must be in [0, {sae.cfg.d_sae}), got {bad.tolist()}")
    device = torch.device(model.cfg.device) if model.cfg.device is not None else tokens.device
    tokens = tokens.to(device)
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        acts = encode_at_hook(model, sae, tokens[start : start + batch_size])
        out.append((acts if index is None else acts[..., index.to(acts.device)]).float().cpu())
    return torch.cat(out)
