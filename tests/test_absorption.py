"""Probes, first-letter labels and absorption counts (saebook.absorption)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saebook import absorption


def _planted(seed=0, n=400, d=8):
    """Activations with a parent direction; latent 0 = parent, 1 = absorbing child, 2 = noise.

    The child fires on the first quarter of the positives and there the parent is silent.
    """
    g = torch.Generator().manual_seed(seed)
    label = torch.rand(n, generator=g) < 0.4
    child = label & (torch.rand(n, generator=g) < 0.25)
    direction = torch.zeros(d)
    direction[0] = 1.0
    x = torch.randn(n, d, generator=g) * 0.3 + 2.0 * label[:, None].float() * direction
    acts = torch.zeros(n, 3)
    acts[:, 0] = (label & ~child).float()
    acts[:, 1] = child.float() * 2
    acts[:, 2] = (torch.rand(n, generator=g) < 0.3).float()
    decoder = torch.stack([direction, direction + 0.2 * torch.eye(d)[1], torch.eye(d)[2]])
    return x, label, child, acts, decoder, direction


def test_train_probe_finds_the_direction():
    x, label, *_, direction = _planted()
    probe = absorption.train_probe(x, label)
    assert probe.test_accuracy > 0.95
    assert float(probe.direction @ direction) > 0.9
    assert probe.direction.norm() == pytest.approx(1.0, abs=1e-5)
    assert (probe.predict(x) == label).float().mean() > 0.95
    with pytest.raises(ValueError, match="both classes"):
        absorption.train_probe(x, torch.zeros(len(x), dtype=torch.bool))
    with pytest.raises(ValueError, match="label must be a tensor of shape"):
        absorption.train_probe(x, label[:-1])


def test_absorption_rate_counts():
    main = torch.tensor([1, 0, 0, 0, 1]).bool()
    label = torch.tensor([1, 1, 1, 0, 0]).bool()
    kids = torch.tensor([[0], [1], [0], [1], [1]]).bool()
    assert absorption.absorption_rate(main, label, kids) == pytest.approx(1 / 3)
    assert absorption.absorption_rate(main, label, kids[:, :0]) == 0.0
    assert np.isnan(absorption.absorption_rate(main, torch.zeros(5).bool(), kids))
    with pytest.raises(ValueError, match="absorber_fires must be"):
        absorption.absorption_rate(main, label, kids[:3])


def test_measure_absorption_finds_the_planted_child():
    x, label, child, acts, decoder, direction = _planted()
    res = absorption.measure_absorption(acts, label, [0], decoder, direction, min_cosine=0.5)
    assert res.n_positive == int(label.sum())
    assert res.n_missed == int(child.sum())
    assert res.n_absorbed == int(child.sum())
    assert res.absorbers["latent"].tolist() == [1]  # latent 2 points elsewhere
    assert res.rate == pytest.approx(float(child.sum() / label.sum()))
    # a reference orthogonal to the child's decoder: nothing counts as absorbed
    other = torch.eye(decoder.shape[1])[5]
    assert absorption.measure_absorption(acts, label, [0], decoder, other, 0.5).n_absorbed == 0
    # requiring precision: latent 2 is noise, the child is precise
    res_p = absorption.measure_absorption(acts, label, [0], decoder, direction, 0.0, 0.9)
    assert res_p.absorbers["latent"].tolist() == [1]
    # restricting positions halves the positives
    half = torch.arange(len(label)) % 2 == 0
    res_h = absorption.measure_absorption(acts, label, [0], decoder, direction, 0.5, positions=half)
    assert res_h.n_positive == int((label & half).sum())
    with pytest.raises(ValueError, match="main_latents must be"):
        absorption.measure_absorption(acts, label, [7], decoder, direction)
    with pytest.raises(ValueError, match="reference must have shape"):
        absorption.measure_absorption(acts, label, [0], decoder, direction[:3])


def test_sublabel_shares():
    label = torch.tensor([1, 1, 1, 1, 0]).bool()
    missed = torch.tensor([1, 1, 0, 0, 0]).bool()
    sub = torch.tensor([1, 1, 0, 0, 0]).bool()
    table = absorption.sublabel_shares(label, missed, {"child": sub})
    row = table.iloc[0]
    assert row["share of positives"] == pytest.approx(0.5)
    assert row["share of misses"] == pytest.approx(1.0)


def test_first_letter_labels(micro_model):
    model, _, _ = micro_model
    ids = model.tokenizer.encode(" lily likes cats and Lemons")
    tokens = torch.tensor([ids])
    mask = absorption.first_letter_labels(model, tokens, "L")
    texts = [model.tokenizer.decode([i]).lstrip().lower() for i in ids]
    assert mask[0].tolist() == [t[:1] == "l" for t in texts]
    assert mask.any()
    with pytest.raises(ValueError, match="single letter"):
        absorption.first_letter_labels(model, tokens, "ab")


def test_checker_accepts_reference_and_rejects_miss_rate():
    from saebook import checks

    checks.check_absorption_rate(absorption.absorption_rate)

    def miss_rate(main_fires, label, absorber_fires):
        n = int(label.sum())
        return float((label & ~main_fires).sum()) / n if n else float("nan")

    with pytest.raises(AssertionError, match="case 'random'"):
        checks.check_absorption_rate(miss_rate)
