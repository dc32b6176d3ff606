"""The latent-selection rules pick the right latent and refuse when none qualifies."""

from __future__ import annotations

import pytest
import torch

from saebook.latent_selection import largest_mean_active, most_frequent_sparse, most_selective


def test_most_frequent_sparse_skips_dense_and_dead_latents() -> None:
    density = torch.tensor([0.5, 0.0, 0.05, 0.08, 0.08])
    assert most_frequent_sparse(density, limit=0.1) == 3  # the first of the tied ones
    with pytest.raises(ValueError, match="no latent qualifies"):
        most_frequent_sparse(torch.tensor([0.0, 0.5]), limit=0.1)
    with pytest.raises(ValueError, match="limit must be in"):
        most_frequent_sparse(density, limit=0.0)


def test_largest_mean_active_uses_the_mean_over_active_positions() -> None:
    sums, counts = torch.tensor([100.0, 60.0, 500.0]), torch.tensor([50, 20, 5])
    assert largest_mean_active(sums, counts, min_count=10) == 1  # 3.0 beats 2.0; 100.0 too rare
    with pytest.raises(ValueError, match="counts must have 3 entries"):
        largest_mean_active(sums, counts[:2], min_count=1)


def test_most_selective_treats_a_dead_latent_as_excluded() -> None:
    mx = torch.tensor([4.0, 9.0, 0.0])
    mean = torch.tensor([1.0, 3.0, float("nan")])
    density = torch.tensor([0.1, 0.1, 0.0])
    assert most_selective(mx, mean, density, min_density=1e-3) == 0
    with pytest.raises(ValueError, match="max_act must be a non-empty 1-D tensor"):
        most_selective(torch.zeros(0), mean, density)
