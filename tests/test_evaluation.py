"""SAELens run_evals on given tokens agrees with our metrics; ground-truth correlation scores."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from saebook.evaluation import compare_with_saelens, max_correlations, pareto_front, saelens_evals
from saebook.metrics import kl_divergence, l2_ratio, reconstruction_metrics


@pytest.fixture(scope="module")
def tokens(micro_model):
    model, _, _ = micro_model
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(1, model.cfg.d_vocab, (4, 12), generator=g)
    toks[:, 0] = model.tokenizer.bos_token_id
    return toks


@pytest.mark.parametrize("role", ["resid", "attn"])
def test_saelens_evals_agree_with_ours(micro_model, tokens, role, reference_row):
    model, saes, _ = micro_model
    sae = saes[role]
    ours = reconstruction_metrics(model, sae, tokens)
    theirs = saelens_evals(model, sae, tokens)
    table = compare_with_saelens(ours, theirs).set_index("metric")
    metrics = ("explained_variance", "mse", "l0", "l2_ratio", "kl_div_with_sae")
    rel = {m: table.loc[m, "abs_diff"] / max(1, abs(table.loc[m, "sae_lens"])) for m in metrics}
    # the CE conventions differ (SAELens drops the prediction made at BOS), the SAE's cost not
    ours_cost = ours.ce_with_sae - ours.ce_clean
    theirs_cost = theirs["ce_loss_with_sae"] - theirs["ce_loss_without_sae"]
    cost_ok = abs(ours_cost - theirs_cost) <= 0.05 + 0.2 * abs(theirs_cost)
    ok = max(rel.values()) < 1e-4 and cost_ok
    reference_row(
        technique=f"reconstruction metrics ({role} SAE)",
        reference="sae_lens.evals.run_evals on the same tokens (micro world)",
        quantity="relative difference (EV, MSE, L0, L2 ratio, KL); CE cost",
        measured=f"max {max(rel.values()):.1e}; CE cost {ours_cost:.3f} vs {theirs_cost:.3f}",
        tolerance="1e-4 x max(1, |value|); CE cost within 0.05 + 20%",
        ok=ok,
        note="CE conventions differ (SAELens drops the prediction made at BOS)",
    )
    for metric in metrics:
        assert table.loc[metric, "abs_diff"] < 1e-4 * max(1, abs(table.loc[metric, "sae_lens"]))
    assert ours_cost == pytest.approx(theirs_cost, abs=0.05 + 0.2 * abs(theirs_cost))


@pytest.mark.parametrize("role", ["resid", "attn"])
def test_reconstruction_metrics_do_not_depend_on_chunking(micro_model, tokens, role):
    """Row chunks bound memory at real widths (issue 15); every metric stays the same."""
    model, saes, _ = micro_model
    whole = reconstruction_metrics(model, saes[role], tokens, batch_size=len(tokens))
    one_by_one = reconstruction_metrics(model, saes[role], tokens, batch_size=1)
    for name, value in vars(whole).items():
        assert getattr(one_by_one, name) == pytest.approx(value, rel=1e-4, abs=1e-6), name
    with pytest.raises(ValueError, match="batch_size"):
        reconstruction_metrics(model, saes[role], tokens, batch_size=0)


def test_saelens_evals_rejects_bad_tokens(micro_model, tokens):
    model, saes, _ = micro_model
    with pytest.raises(ValueError, match="BOS"):
        saelens_evals(model, saes["resid"], tokens[:, 1:])
    with pytest.raises(ValueError, match="tokens"):
        saelens_evals(model, saes["resid"], tokens[0])
    with pytest.raises(KeyError, match="theirs"):
        compare_with_saelens(reconstruction_metrics(model, saes["resid"], tokens), {})


def test_max_correlations_finds_the_copy():
    g = torch.Generator().manual_seed(1)
    features = (torch.rand(500, 3, generator=g) < 0.2).float()
    latents = torch.rand(500, 5, generator=g)
    latents[:, 4] = 2 * features[:, 1] + 0.01 * torch.rand(500, generator=g)
    latents[:, 0] = 0.0  # a dead latent correlates 0, not NaN
    best, idx = max_correlations(latents, features)
    assert idx[1] == 4 and best[1] > 0.99
    assert torch.isfinite(best).all() and (best[[0, 2]] < 0.3).all()
    with pytest.raises(ValueError, match="rows"):
        max_correlations(latents, features[:10])


def test_pareto_front():
    t = pd.DataFrame({"l0": [5, 10, 10, 20], "ev": [0.7, 0.8, 0.75, 0.79]})
    assert pareto_front(t, "l0", "ev").tolist() == [True, True, False, False]
    with pytest.raises(KeyError, match="column"):
        pareto_front(t, "l0", "nope")


def test_l2_ratio_and_kl():
    x = torch.randn(6, 4)
    assert l2_ratio(x, 0.5 * x) == pytest.approx(0.5)
    assert l2_ratio(torch.zeros(2, 4), torch.ones(2, 4)) == pytest.approx(2.0)
    logits = torch.randn(3, 7)
    assert torch.allclose(kl_divergence(logits, logits), torch.zeros(3), atol=1e-6)
    other = torch.randn(3, 7)
    ref = torch.nn.functional.kl_div(
        other.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    assert torch.allclose(kl_divergence(logits, other), ref, atol=1e-5)
    with pytest.raises(ValueError, match="must be equal"):
        l2_ratio(x, x[:2])


def test_activation_metrics_on_a_hand_made_batch() -> None:
    import torch

    from saebook.metrics import activation_metrics

    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    acts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    out = activation_metrics(x, 0.5 * x, acts)
    assert out["explained_variance"] == pytest.approx(0.75)  # error 0.5 of spread 2
    assert out["mse"] == pytest.approx(0.25)
    assert out["l0"] == pytest.approx(1.0)
    assert out["dead_fraction"] == pytest.approx(1 / 3)
    assert out["l2_ratio"] == pytest.approx(0.5)
