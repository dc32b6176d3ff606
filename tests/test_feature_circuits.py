"""Sparse feature circuits on the micro world: splice exactness, node and edge attributions
against forward-only finite differences and SAELens' own splice, circuit ablations against
plain hooks."""

from __future__ import annotations

import pytest
import torch

from saebook import feature_circuits as fc
from saebook.attribution import node_gradients, splice_site, spliced_logits
from saebook.hooks import sae_hooks
from saebook.tinyworld.tasks import code_recall_task


@pytest.fixture(scope="module")
def world(micro_model):
    model, saes, _ = micro_model
    roles, skipped = fc.order_sites(model, saes)
    sites = [saes[r] for r in roles]
    return model, saes, roles, skipped, sites, code_recall_task(model, n=4, seed=1)


def _site_index(sites, node):
    sizes = [s.cfg.d_sae + 1 for s in sites]
    for k, size in enumerate(sizes):
        if node < size:
            return k, node
        node -= size
    raise IndexError(node)


def test_order_sites_keeps_sae_hooks_in_forward_order(world):
    model, saes, roles, skipped, sites, _ = world
    assert "transcoder" in skipped and "transcoder" not in roles
    layers = [int(sae_hooks(s)[0].split(".")[1]) for s in sites]
    assert layers == sorted(layers)
    with pytest.raises(ValueError, match="saes must hold"):
        fc.order_sites(model, {})


def test_splice_is_exact_and_refuses_transcoders(world):
    model, saes, _, _, sites, task = world
    with torch.no_grad():
        plain = model(task.clean)
        spliced = spliced_logits(model, sites, task.clean)
    assert torch.allclose(plain, spliced, atol=1e-4)
    with pytest.raises(ValueError, match="same hook"):
        spliced_logits(model, [saes["transcoder"]], task.clean)
    with pytest.raises(ValueError, match="shares hook"):
        spliced_logits(model, [sites[0], sites[0]], task.clean)


def test_splice_site_gradients(world):
    _, _, _, _, sites, _ = world
    sae = sites[0]
    x = torch.randn(2, 3, sae.cfg.d_in, requires_grad=True)
    v = torch.randn(2, 3, sae.cfg.d_in)
    acts, error, out = splice_site(sae, x)
    assert torch.allclose(out, x, atol=1e-5)
    g_acts, g_x = torch.autograd.grad((out * v).sum(), (acts, x))
    assert torch.allclose(g_x, v, atol=1e-5)  # identity through the error
    assert torch.allclose(g_acts, v @ sae.W_dec.T, atol=1e-5)  # the decoder alone


def test_node_names_and_values(world):
    model, _, roles, _, sites, task = world
    names = fc.node_names(sites, roles)
    assert len(names) == sum(s.cfg.d_sae + 1 for s in sites)
    assert names[sites[0].cfg.d_sae] == f"{roles[0]}/error"
    values = fc.node_values(model, sites, task.clean)
    means = fc.mean_nodes(model, sites, task.clean)
    for v, m in zip(values, means, strict=True):
        assert torch.allclose(v.acts.mean(0, keepdim=True), m.acts)
        assert m.error.shape[0] == 1
    with pytest.raises(ValueError, match="roles"):
        fc.node_names(sites, roles[:-1])


def test_site_attribution_formula():
    g = torch.randn(2, 3, 4)
    d = torch.randn(2, 3, 4)
    ge, de = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    out = fc.site_attribution(g, ge, d, de)
    assert out.shape == (5,)
    assert torch.allclose(out[:4], torch.einsum("bpi,bpi->i", g, d) / 2)
    assert torch.allclose(out[4], (ge * de).sum() / 2)
    with pytest.raises(ValueError, match="equal shapes"):
        fc.site_attribution(g, ge, d[:1], de)


def _partial_patch(model, sites, task, node, eps):
    """Mean LD with one node moved ``eps`` of the way to its corrupted value (forward only)."""
    k, i = _site_index(sites, node)
    clean = fc.node_values(model, sites, task.clean)[k]
    corrupt = fc.node_values(model, sites, task.corrupted)[k]

    def edit(s, acts, error):
        if s != k:
            return acts, error
        acts, error = acts.clone(), error.clone()
        if i < sites[k].cfg.d_sae:
            acts[..., i] += eps * (corrupt.acts[..., i] - clean.acts[..., i])
        else:
            error += eps * (corrupt.error - clean.error)
        return acts, error

    with torch.no_grad():
        return float(task.logit_diff(spliced_logits(model, sites, task.clean, edit)).mean())


def test_attribution_patching_is_the_derivative(world, reference_row):
    model, _, _, _, sites, task = world
    atp = fc.node_attributions(model, sites, task, method="atp")
    nodes = atp.abs().argsort(descending=True)[:3].tolist()
    worst = 0.0
    for node in nodes:
        eps = 1e-2
        fd = (_partial_patch(model, sites, task, node, eps)
              - _partial_patch(model, sites, task, node, -eps)) / (2 * eps)  # fmt: skip
        worst = max(worst, abs(fd - float(atp[node])) / max(abs(fd), 1e-3))
    reference_row(technique="sparse feature circuits: attribution patching of nodes",
                  reference="central finite differences of a partial patch (forward passes)",
                  quantity="relative error", measured=f"{worst:.2e} over 3 nodes",
                  tolerance="< 5%", ok=worst < 0.05)  # fmt: skip
    assert worst < 0.05


def test_integrated_gradients_add_up_to_patching_a_whole_site(world):
    model, _, _, _, sites, task = world
    ig = fc.node_attributions(model, sites, task, method="ig", steps=32)
    k = len(sites) - 1
    corrupt = fc.node_values(model, sites, task.corrupted)[k]
    with torch.no_grad():
        base = task.logit_diff(spliced_logits(model, sites, task.clean)).mean()

        def to_corrupt(s, a, e):
            return (corrupt.acts, corrupt.error) if s == k else (a, e)

        whole = task.logit_diff(spliced_logits(model, sites, task.clean, to_corrupt)).mean()
    start = sum(s.cfg.d_sae + 1 for s in sites[:k])
    total = float(ig[start:].sum())
    assert abs(total - float(whole - base)) < 0.05 * abs(float(whole - base)) + 1e-3
    with pytest.raises(ValueError, match="method"):
        fc.node_attributions(model, sites, task, method="x")


def test_patching_effects_match_saelens_splice(world):
    model, _, _, _, sites, task = world
    atp = fc.node_attributions(model, sites, task)
    node = int(atp.abs().argmax())
    err_node = sites[0].cfg.d_sae
    effects = fc.patching_effects(model, sites, task, torch.tensor([node, err_node]), chunk=1)
    for node_, effect in zip([node, err_node], effects.tolist(), strict=True):
        k, i = _site_index(sites, node_)
        hook = sae_hooks(sites[k])[0]
        with torch.no_grad(), model.saes(saes=sites, use_error_term=True):
            _, cache = model.run_with_cache(task.corrupted)
            base = task.logit_diff(model(task.clean)).mean()
            if i < sites[k].cfg.d_sae:
                name = f"{hook}.hook_sae_acts_post"

                def put(a, hook, i=i, name=name, cache=cache):
                    a = a.clone()
                    a[..., i] = cache[name][..., i]
                    return a
            else:
                name = f"{hook}.hook_sae_error"

                def put(e, hook, name=name, cache=cache):
                    return cache[name]

            ld = task.logit_diff(model.run_with_hooks(task.clean, fwd_hooks=[(name, put)])).mean()
        assert abs(float(ld - base) - effect) < 1e-4 * max(1.0, abs(effect))


def test_circuit_metrics_full_and_empty_match_plain_hooks(world):
    model, _, _, _, sites, task = world
    n = sum(s.cfg.d_sae + 1 for s in sites)
    means = fc.mean_nodes(model, sites, task.clean)
    keep = torch.stack([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    full, empty = fc.circuit_metrics(model, sites, task, keep, means, chunk=1)
    hooks = [sae_hooks(s)[0] for s in sites]
    with torch.no_grad():
        plain_logits, cache = model.run_with_cache(task.clean, names_filter=hooks)
        fwd = [(h, lambda x, hook: cache[hook.name].mean(0, keepdim=True).expand_as(x))
               for h in hooks]  # fmt: skip
        ablated = task.logit_diff(model.run_with_hooks(task.clean, fwd_hooks=fwd)).mean()
    assert abs(float(full) - float(task.logit_diff(plain_logits).mean())) < 1e-4
    assert abs(float(empty) - float(ablated)) < 1e-3
    with pytest.raises(ValueError, match="keep"):
        fc.circuit_metrics(model, sites, task, keep[:, :-1], means)


def test_faithfulness_and_circuit_choice():
    f = fc.faithfulness(torch.tensor([1.0, 3.0]), 3.0, 1.0)
    assert torch.allclose(f, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="differ"):
        fc.faithfulness(torch.tensor([1.0]), 2.0, 2.0)
    keep = fc.top_circuits(torch.tensor([0.1, -3.0, 2.0, 0.0]), [0, 1, 2])
    assert keep.tolist() == [[False] * 4, [False, True, False, False],
                             [False, True, True, False]]  # fmt: skip
    with pytest.raises(ValueError, match="sizes"):
        fc.top_circuits(torch.zeros(3), [4])
    rand = fc.random_circuits(torch.tensor([1, 3, 5]), 6, [1, 2], draws=4, seed=0)
    assert rand.shape == (8, 6)
    assert rand.sum(1).tolist() == [1] * 4 + [2] * 4
    assert not rand[:, [0, 2, 4]].any()


def test_edge_attributions_add_up_to_the_derivative(world):
    model, _, _, _, sites, task = world
    if len(sites) < 2:
        pytest.skip("needs two sites")
    k = len(sites) - 1
    ig = fc.node_attributions(model, sites, task)
    start = sum(s.cfg.d_sae + 1 for s in sites[:k])
    d = start + int(ig[start:-1].abs().argmax())
    row = fc.edge_attributions(model, sites, task, torch.tensor([d]), upstream_site=k - 1)[0]
    assert row.shape == (sites[k - 1].cfg.d_sae + 1,)
    grads = node_gradients(model, sites, task.clean, lambda lg: task.logit_diff(lg).sum())[k]
    c = fc.node_values(model, sites, task.clean)[k - 1]
    x = fc.node_values(model, sites, task.corrupted)[k - 1]
    i = d - start

    def value(eps):
        seen = [None] * len(sites)

        def edit(s, a, e):
            if s == k - 1:
                return a + eps * (x.acts - c.acts), e + eps * (x.error - c.error)
            return a, e

        with torch.no_grad():
            spliced_logits(model, sites, task.clean, edit, nodes=seen)
        return float((seen[k][0][..., i] * grads.acts_grad[..., i]).sum()) / task.clean.shape[0]

    eps = 1e-2
    fd = (value(eps) - value(-eps)) / (2 * eps)
    assert abs(fd - float(row.sum())) < 0.05 * abs(fd) + 1e-4
    with pytest.raises(ValueError, match="after upstream_site"):
        fc.edge_attributions(model, sites, task, torch.tensor([0]), upstream_site=0)
