"""The one-pass latent statistics engine against brute force, on the micro build."""

from __future__ import annotations

import math

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saebook.latent_stats import (
    _EMPTY,
    LatentStats,
    _batch_firings,
    _Buffer,
    _hist_bins,
    _merge_smallest,
    _serial,
    _sort_order,
    _value_key,
    latent_activations,
    latent_stats,
)


@pytest.fixture(scope="module")
def tokens(micro_model):
    model, _, _ = micro_model
    gen = torch.Generator().manual_seed(0)
    toks = torch.randint(1, model.cfg.d_vocab, (10, 16), generator=gen)
    toks[:, 0] = model.tokenizer.bos_token_id
    toks[3, 7] = model.tokenizer.bos_token_id  # a BOS in the middle of a row is skipped too
    return toks


def _brute(model, sae, tokens):
    acts = latent_activations(model, sae, tokens)
    keep = tokens != model.tokenizer.bos_token_id
    return acts * keep[..., None], keep


@pytest.mark.parametrize("role", ["resid", "attn", "transcoder", "mlp"])
def test_engine_equals_brute_force(micro_model, tokens, role):
    model, saes, _ = micro_model
    sae = saes[role]
    k, n_samples = 5, 6
    stats = latent_stats(model, sae, tokens, batch_size=3, k=k, n_samples=n_samples,
                         n_bins=12, progress=False)  # fmt: skip
    acts, keep = _brute(model, sae, tokens)
    flat = acts.flatten(0, 1)  # (positions, d_sae)
    fired = flat > 0
    assert stats.n_tokens == int(keep.sum())
    assert torch.equal(stats.count, fired.sum(0))
    assert torch.allclose(stats.sum, flat.double().sum(0), rtol=1e-5, atol=1e-4)
    assert torch.allclose(stats.max, flat.max(0).values, atol=1e-5)
    assert torch.equal(stats.hist.sum(1), stats.count)
    # the histogram, recomputed with the engine's own edges
    lat = fired.nonzero()[:, 1]
    bins = torch.bucketize(flat[fired].double(), stats.hist_edges[1:-1])
    expected = torch.zeros_like(stats.hist).view(-1)
    expected.index_add_(0, lat * stats.hist.shape[1] + bins, torch.ones_like(bins))
    assert torch.equal(stats.hist.view(-1), expected)
    live = stats.count > 0
    assert torch.allclose(stats.mean_activation[live],
                          (flat.double().sum(0) / fired.sum(0))[live], rtol=1e-5)  # fmt: skip
    assert stats.mean_activation[~live].isnan().all()
    # top-k: the same values as a sort of all activations, at positions that really hold them
    ref = flat.T.sort(dim=1, descending=True).values[:, :k]
    for latent in range(sae.cfg.d_sae):
        top = stats.top_examples(latent)
        n = min(k, int(stats.count[latent]))
        assert len(top) == n
        got = torch.tensor([e.value for e in top])
        assert torch.allclose(got, ref[latent, :n], atol=1e-5), latent
        for e in top:
            assert abs(float(acts[e.row, e.pos, latent]) - e.value) < 1e-5
        assert len({(e.row, e.pos) for e in top}) == n
        sample = stats.sample_examples(latent)
        assert len(sample) == min(n_samples, int(stats.count[latent]))
        assert len({(e.row, e.pos) for e in sample}) == len(sample)
        for e in sample:
            assert abs(float(acts[e.row, e.pos, latent]) - e.value) < 1e-5


def test_memory_does_not_grow_with_rows(micro_model):
    model, saes, _ = micro_model
    gen = torch.Generator().manual_seed(1)
    many = torch.randint(1, model.cfg.d_vocab, (32, 16), generator=gen)
    peaks = [
        latent_stats(model, saes["resid"], many[:n], batch_size=4, k=3, n_samples=4,
                     progress=False).peak_buffer_bytes
        for n in (8, 32)
    ]  # fmt: skip
    assert peaks[1] <= peaks[0] * 1.05, peaks


def test_reservoir_is_uniform():
    """Many independent groups receive the same 100 items in 10 batches; each item should be
    kept with probability m / 100."""
    groups, items, m = 3000, 100, 10
    gen = torch.Generator().manual_seed(0)
    keys = torch.full((groups, m), _EMPTY)
    kept = torch.full((groups, m), -1)
    for start in range(0, items, 10):
        ids = torch.arange(start, start + 10).repeat(groups)
        group = torch.arange(groups).repeat_interleave(10)
        rand = torch.randint(0, 1 << 31, (ids.numel(),), generator=gen)
        _merge_smallest(keys, [kept], group, rand, [ids])
    assert (kept >= 0).all()
    freq = torch.bincount(kept.flatten(), minlength=items).double()
    expected = groups * m / items  # 300
    sigma = (groups * (m / items) * (1 - m / items)) ** 0.5
    assert (freq - expected).abs().max() < 5 * sigma, freq
    # early and late items are equally likely (a biased reservoir favours one end)
    assert abs(freq[:50].mean() - freq[50:].mean()) < 2 * sigma


def test_top_merge_keeps_the_largest():
    gen = torch.Generator().manual_seed(2)
    values = torch.rand(7, 50, generator=gen)
    keys = torch.full((7, 4), _EMPTY)
    pos = torch.full((7, 4), -1)
    for start in range(0, 50, 6):
        chunk = values[:, start : start + 6]
        group = torch.arange(7).repeat_interleave(chunk.shape[1])
        idx = torch.arange(start, start + chunk.shape[1]).repeat(7)
        _merge_smallest(keys, [pos], group, _value_key(chunk.flatten()), [idx])
    ref = values.topk(4, dim=1)
    assert torch.equal(keys, _value_key(ref.values.flatten()).view(7, 4))
    assert torch.equal(pos, ref.indices)


def test_samples_are_seeded(micro_model, tokens):
    model, saes, _ = micro_model
    run = lambda seed: latent_stats(model, saes["resid"], tokens, k=2, n_samples=3,  # noqa: E731
                                    progress=False, seed=seed)  # fmt: skip
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.sample_rows, b.sample_rows) and torch.equal(a.sample_pos, b.sample_pos)
    same = torch.equal(a.sample_rows, c.sample_rows) and torch.equal(a.sample_pos, c.sample_pos)
    assert not same


def test_quantiles_dead_dense_and_table(micro_model, tokens):
    model, saes, _ = micro_model
    stats = latent_stats(model, saes["resid"], tokens, k=3, n_samples=9, progress=False)
    latent = int(stats.count.argmax())
    intervals = stats.quantile_examples(latent, 3)
    assert len(intervals) == 3
    assert intervals[0].q_lo == 0 and intervals[-1].q_hi == 1
    assert all(a.hi <= b.lo for a, b in zip(intervals, intervals[1:], strict=False))
    assert sum(len(i.examples) for i in intervals) == len(stats.sample_examples(latent))
    assert torch.equal(stats.dead(), torch.nonzero(stats.count == 0).flatten())
    assert set(stats.dense(0.0).tolist()) == set(torch.nonzero(stats.count > 0).flatten().tolist())
    table = stats.table()
    assert len(table) == stats.d_sae and table["count"].sum() == int(stats.count.sum())
    with pytest.raises(ValueError, match="n_intervals"):
        stats.quantile_examples(latent, 0)
    with pytest.raises(ValueError, match="threshold"):
        stats.dense(2.0)


def test_exclude_bos_false_counts_every_position(micro_model, tokens):
    model, saes, _ = micro_model
    stats = latent_stats(model, saes["resid"], tokens, exclude_bos=False, progress=False)
    assert stats.n_tokens == tokens.numel()


def _foreign_sae(d_in: int, hook: str) -> StandardSAE:
    cfg = StandardSAEConfig(d_in=d_in, d_sae=8, metadata=SAEMetadata(hook_name=hook))
    return StandardSAE(cfg)


def test_bad_inputs_raise_named_errors(micro_model, tokens):
    model, saes, _ = micro_model
    sae = saes["resid"]
    hook = sae.cfg.metadata.hook_name
    d_model = model.cfg.d_model
    cases = [
        (dict(sae=_foreign_sae(d_model, "blocks.7.hook_resid_pre")), ValueError, "hook_name"),
        (
            dict(sae=_foreign_sae(d_model + 3, hook)),
            ValueError,
            rf"d_in.*\({d_model}\).*{d_model + 3}",
        ),
        (dict(k=10_000), ValueError, "k must be at most"),
        (dict(k=0), ValueError, "k must be a positive int"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(n_samples=-1), ValueError, "n_samples"),
        (dict(tokens=torch.zeros((0, 5), dtype=torch.long)), ValueError, "non-empty"),
        (dict(tokens=tokens[0]), ValueError, "non-empty"),
        (dict(tokens=tokens.float()), TypeError, "integer dtype"),
        (dict(tokens=tokens.tolist()), TypeError, "torch.Tensor"),
        (dict(tokens=tokens + model.cfg.d_vocab), ValueError, "d_vocab"),
        (dict(tokens=torch.full((2, 4), model.tokenizer.bos_token_id)), ValueError, "BOS"),
        (dict(bin_range=(1.0, 0.5)), ValueError, "bin_range"),
        (dict(sae="resid"), TypeError, "sae must be"),
    ]
    for overrides, error, pattern in cases:
        kwargs = {"model": model, "sae": sae, "tokens": tokens, "progress": False, **overrides}
        with pytest.raises(error, match=pattern):
            latent_stats(**kwargs)
    stats = latent_stats(model, sae, tokens, progress=False)
    with pytest.raises(IndexError, match="latent must be in"):
        stats.top_examples(sae.cfg.d_sae)
    with pytest.raises(TypeError, match="latent must be an int"):
        stats.top_examples(1.5)
    with pytest.raises(IndexError, match="latents must be in"):
        latent_activations(model, sae, tokens, latents=[0, -1])


def test_nan_activations_are_refused(micro_model, tokens):
    model, saes, _ = micro_model
    with torch.no_grad():
        saved = model.W_E.clone()
        model.W_E[int(tokens[0, 1])] = float("nan")
    try:
        with pytest.raises(ValueError, match="finite"):
            latent_stats(model, saes["resid"], tokens, progress=False)
    finally:
        with torch.no_grad():
            model.W_E.copy_(saved)


def test_result_is_a_cpu_dataclass(micro_model, tokens):
    model, saes, _ = micro_model
    stats = latent_stats(model, saes["attn"], tokens, k=4, n_samples=5, progress=False)
    assert isinstance(stats, LatentStats)
    assert stats.top_values.shape == (saes["attn"].cfg.d_sae, 4)
    assert stats.sample_values.shape == (saes["attn"].cfg.d_sae, 5)
    assert stats.count.device.type == "cpu"


@pytest.mark.parametrize("role", ["resid", "attn"])
def test_kept_windows_equal_a_full_pass(micro_model, tokens, role):
    """window=(before, after): every buffered example carries its latent's activations around
    it, equal to a full pass (latent_activations); the statistics themselves do not change."""
    model, saes, _ = micro_model
    sae = saes[role]
    plain = latent_stats(model, sae, tokens, batch_size=3, k=5, n_samples=6, progress=False)
    kept = latent_stats(model, sae, tokens, batch_size=3, k=5, n_samples=6, progress=False,
                        window=(3, 2))  # fmt: skip
    for name in ("count", "sum", "max", "hist", "top_values", "top_rows", "top_pos",
                 "sample_values", "sample_rows", "sample_pos"):  # fmt: skip
        assert torch.equal(getattr(plain, name), getattr(kept, name)), name
    assert (
        plain.window is None
        and plain.windows_at(torch.zeros(1, 3, dtype=torch.long), (0, 0)) is None
    )
    full = latent_activations(model, sae, tokens)
    seq = tokens.shape[1]
    checked = 0
    for rows, pos, wins in ((kept.top_rows, kept.top_pos, kept.top_windows),
                            (kept.sample_rows, kept.sample_pos, kept.sample_windows)):  # fmt: skip
        assert wins.shape == (sae.cfg.d_sae, rows.shape[1], 6)
        for lat, slot in torch.nonzero(rows >= 0).tolist()[:300]:
            r, p = int(rows[lat, slot]), int(pos[lat, slot])
            expected = [
                float(full[r, q, lat]) if 0 <= q < seq else 0.0 for q in range(p - 3, p + 3)
            ]
            assert wins[lat, slot].tolist() == pytest.approx(expected, abs=1e-5)
            checked += 1
    assert checked > 100
    # lookup by (latent, row, pos), cut to a narrower context; None when it cannot answer
    lat, slot = torch.nonzero(kept.top_rows >= 0)[0].tolist()
    r, p = int(kept.top_rows[lat, slot]), int(kept.top_pos[lat, slot])
    got = kept.windows_at(torch.tensor([[lat, r, p]]), (1, 2))
    assert got.tolist()[0] == pytest.approx(kept.top_windows[lat, slot, 2:6].tolist())
    assert kept.windows_at(torch.tensor([[lat, r, p]]), (4, 2)) is None  # wider than kept
    held = {(int(a), int(b)) for a, b in zip(kept.top_rows[lat], kept.top_pos[lat], strict=True)}
    held |= {(int(a), int(b)) for a, b in zip(kept.sample_rows[lat], kept.sample_pos[lat],
                                              strict=True)}  # fmt: skip
    missing = next(q for q in range(seq) if (r, q) not in held)
    assert kept.windows_at(torch.tensor([[lat, r, p], [lat, r, missing]]), (1, 1)) is None
    for bad, err in (((3,), ValueError), ((-1, 2), ValueError), ((1.5, 2), TypeError)):
        with pytest.raises(err, match="window"):
            latent_stats(model, sae, tokens, progress=False, window=bad)


@pytest.mark.parametrize("role", ["resid", "attn"])
def test_engine_matches_a_dense_pass_with_sae_lens(micro_model, tokens, role, reference_row):
    """Density, mean, max and top-k against one dense pass written here: the whole model run
    with ``run_with_cache``, SAELens' own ``encode`` on the cached input (head axes flattened
    for hook_z by SAELens), every non-BOS position kept, then plain sums and a full sort."""
    model, saes, _ = micro_model
    sae = saes[role]
    k = 5
    stats = latent_stats(model, sae, tokens, batch_size=3, k=k, n_samples=4, progress=False)
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
        dense = sae.encode(cache[hook])  # (rows, seq, d_sae)
    keep = tokens != model.tokenizer.bos_token_id
    flat = dense[keep].double()  # (kept positions, d_sae)
    fired = flat > 0
    density = fired.double().mean(0)
    max_act = flat.max(0).values
    mean_act = flat.sum(0) / fired.sum(0)
    live = fired.any(0)
    top = flat.T.sort(dim=1, descending=True).values[:, :k]
    diffs = {
        "density": float((stats.density.double() - density).abs().max()),
        "max": float((stats.max.double() - max_act).abs().max()),
        "mean": float((stats.mean_activation.double() - mean_act)[live].abs().max()),
    }
    top_diff, positions_ok = 0.0, True
    for latent in range(sae.cfg.d_sae):
        found = stats.top_examples(latent)
        n = min(k, int(fired[:, latent].sum()))
        got = torch.tensor([e.value for e in found], dtype=torch.float64)
        positions_ok &= len(found) == n and len({(e.row, e.pos) for e in found}) == n
        positions_ok &= all(tokens[e.row, e.pos] != model.tokenizer.bos_token_id for e in found)
        if n:
            top_diff = max(top_diff, float((got - top[latent, :n]).abs().max()))
            held = torch.tensor([float(dense[e.row, e.pos, latent]) for e in found])
            top_diff = max(top_diff, float((held.double() - got).abs().max()))
    diffs["top-k"] = top_diff
    worst = max(diffs.values())
    ok = worst < 1e-5 and positions_ok and stats.n_tokens == int(keep.sum())
    reference_row(
        technique=f"latent statistics engine ({role} SAE)",
        reference="dense pass: run_with_cache + SAELens encode on every non-BOS token "
        "(micro world)",
        quantity="max abs difference (density, mean, max, top-k values at their positions)",
        measured=", ".join(f"{name} {value:.1e}" for name, value in diffs.items()),
        tolerance="1e-5, same top-k positions",
        ok=ok,
    )
    assert stats.n_tokens == int(keep.sum())
    assert positions_ok
    for name, value in diffs.items():
        assert value < 1e-5, name
    assert stats.mean_activation[~live].isnan().all()


def test_sort_order_is_a_stable_sort_on_rank_and_key():
    """The packed-int64 sort (and its fallback when the fields do not fit in 63 bits) equals
    a stable argsort on (rank, key), ties included."""
    gen = torch.Generator().manual_seed(4)
    for n, n_ranks, key_range in ((5000, 7, 30), (5000, 300, 1 << 31), (1, 1, 5), (40, 1, 3)):
        rank = torch.randint(0, n_ranks, (n,), generator=gen)
        keys = torch.randint(0, key_range, (n,), generator=gen)
        expected = torch.argsort((rank << 31) | keys, stable=True)
        assert torch.equal(_sort_order(rank, keys, n_ranks), expected)
        assert torch.equal(_sort_order(rank, keys, 1 << 40), expected)  # the fallback


def test_staged_buffer_equals_a_merge_per_batch():
    """Staging candidates and merging them in bulk keeps exactly what merging every batch
    keeps (same entries, same order, ties to the older), payload with trailing axes too."""
    gen = torch.Generator().manual_seed(5)
    groups, m = 50, 6
    plain_keys = torch.full((groups, m), _EMPTY)
    plain_pay = [torch.full((groups, m), -1), torch.zeros(groups, m, 3)]
    staged = _Buffer(plain_keys.clone(), [p.clone() for p in plain_pay])
    for batch in range(12):
        n = int(torch.randint(1, 200, (1,), generator=gen))
        group = torch.randint(0, groups, (n,), generator=gen)
        keys = torch.randint(0, 40, (n,), generator=gen)  # many ties
        ids = torch.arange(n) + 1000 * batch
        payload = [ids, torch.randn(n, 3, generator=gen)]
        _merge_smallest(plain_keys, plain_pay, group, keys, payload)
        staged.stage(group, keys, payload, staged.entering(group, keys))
    assert staged.n_pending > 0  # something was still pending before the last flush
    staged.flush()
    assert torch.equal(staged.keys, plain_keys)
    for got, want in zip(staged.payload, plain_pay, strict=True):
        assert torch.equal(got, want)
    assert (plain_pay[0] >= 0).all()


@pytest.mark.parametrize(
    ("lo", "hi", "n_bins"), [(1e-3, 8.0, 40), (0.02, 50.0, 7), (1.0, 1.0001, 40), (0.1, 9.0, 1)]
)
def test_hist_bins_equal_bucketize(lo, hi, n_bins):
    """The bins read from logarithms equal a binary search over the edges, for values spread
    over (and beyond) the range and for each edge and its float32 neighbours; narrow bins
    (third case) take the bucketize fallback, one bin (fourth) puts everything in bin 0."""
    gen = torch.Generator().manual_seed(8)
    edges = torch.logspace(math.log10(lo), math.log10(hi), n_bins + 1, dtype=torch.float64)
    spread = torch.exp(torch.empty(20000).uniform_(math.log(lo / 10), math.log(hi * 10),
                                                  generator=gen)).float()  # fmt: skip
    at = edges.float()
    near = [at, torch.nextafter(at, at + 1), torch.nextafter(at, at - 1)]
    values = torch.cat([spread, *near, torch.tensor([1e-30, 1e30])])
    got = _hist_bins(values, edges)
    assert torch.equal(got, torch.bucketize(values.double(), edges[1:-1]))
    assert got.dtype == torch.int64 and int(got.min()) >= 0 and int(got.max()) <= n_bins - 1


@pytest.mark.parametrize("width", [7, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_batch_firings_equal_nonzero(dtype, width):
    """The firings (> 0) of a batch, in row-major order, BOS positions left out, offset added;
    numpy reads the CPU floats, torch.nonzero the rest; a power-of-two width (8) splits flat
    indices by shift and mask, another (7) by division."""
    gen = torch.Generator().manual_seed(6)
    acts = torch.randn(3, 5, width, generator=gen).to(dtype)
    acts[acts.abs() < 0.8] = 0
    keep = torch.rand(40, generator=gen) > 0.3
    offset = 20
    where, lat, vals, _ = _batch_firings(acts, offset, keep)
    flat = acts.reshape(15, width)
    fired = (flat > 0) & keep[offset : offset + 15, None]
    pos, ref_lat = torch.nonzero(fired, as_tuple=True)
    assert torch.equal(where, pos + offset) and torch.equal(lat, ref_lat)
    assert torch.equal(vals, flat[pos, ref_lat].float()) and vals.dtype == torch.float32


def test_serial_block_runs_on_one_thread_and_restores():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _serial(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"), _serial(torch.device("cpu")):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        with _serial(torch.device("meta")):  # not the CPU: left alone
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
