"""Attribution graphs on the micro world: exactness, influence, pruning, edits."""

from __future__ import annotations

import pytest
import torch

from saebook import attribution_graphs as ag
from saebook import checks
from saebook.tinyworld.tasks import code_recall_task


@pytest.fixture(scope="module")
def graph(micro_model):
    model, saes, _ = micro_model
    task = code_recall_task(model, n=1, seed=0)
    tokens = task.clean[0][:12]
    return (
        model,
        saes["transcoder"],
        tokens,
        ag.attribution_graph(
            model, [saes["transcoder"]], tokens, max_logits=3, prob_mass=0.99, progress=False
        ),
    )


def test_replacement_is_exact(graph, reference_row):
    _, _, _, g = graph
    targets = torch.cat([g.index_of("latent"), g.index_of("logit")])
    total = g.adjacency[targets].sum(1) + g.bias[targets]
    logit_err = float((g.replacement_logits - g.model_logits).abs().max())
    edge_err = float((total - g.target_values[targets]).abs().max())
    reference_row(
        technique="attribution graph",
        reference="the model's own logits, reproduced by the exact replacement model "
        "(errors and attention frozen), micro world",
        quantity="max |difference| of logits; of edges + bias vs node values",
        measured=f"{logit_err:.1e} (logits), {edge_err:.1e} (edges)",
        tolerance="1e-4 (logits), 1e-3 (edges)",
        ok=logit_err <= 1e-4 and edge_err <= 1e-3,
        note="circuit-tracer itself is not run: it needs transcoders at every layer",
    )
    assert torch.allclose(g.replacement_logits, g.model_logits, atol=1e-4)
    assert torch.allclose(total, g.target_values[targets], atol=1e-3)
    # only latents and logits receive edges; nothing feeds a node from a later position
    others = torch.cat([g.index_of("embedding"), g.index_of("error"), g.index_of("mlp")])
    assert g.adjacency[others].abs().max() == 0
    pos = torch.tensor(g.nodes["pos"].to_numpy())
    assert g.adjacency[pos[:, None] < pos[None, :]].abs().max() == 0


def test_latent_edges_match_the_encoder(graph):
    model, tc, tokens, g = graph
    # a layer-0 latent reads only embeddings (through frozen attention 0)
    lat = g.index_of("latent")
    assert g.adjacency[lat][:, lat].abs().max() == 0
    assert g.adjacency[lat][:, g.index_of("embedding")].abs().sum() > 0


def test_influence_matrix_and_pruning(graph):
    _, _, _, g = graph
    chain = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0, -3.0, 0]])
    b = ag.influence_matrix(chain)
    assert torch.allclose(b, torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0]]))
    with pytest.raises(ValueError, match="square"):
        ag.influence_matrix(torch.zeros(2, 3))
    full = ag.prune_graph(g, 1.0, 1.0)
    assert full.kept_influence == pytest.approx(1.0, abs=1e-6)
    pruned = ag.prune_graph(g, 0.5, 0.9)
    assert pruned.node_mask.sum() <= full.node_mask.sum()
    assert 0 < pruned.kept_influence <= 1.0 + 1e-6
    assert 0 <= pruned.error_share <= 1
    fig = ag.plot_graph(pruned)
    assert len(fig.data) >= 3
    with pytest.raises(ValueError, match="node_threshold"):
        ag.prune_graph(g, 0.0)


def test_salient_logits():
    logits = torch.tensor([0.0, 5.0, 4.0, -3.0])
    ids, probs = ag.salient_logits(logits, max_n=3, prob_mass=0.9)
    assert ids.tolist() == [1, 2] and probs.sum() < 1
    ids, _ = ag.salient_logits(logits, max_n=1)
    assert ids.tolist() == [1]


def test_edit_latents(graph):
    model, tc, tokens, g = graph
    with torch.no_grad():
        clean = model(tokens[None])
    assert torch.allclose(ag.edit_latents(model, tc, tokens, []), clean, atol=1e-4)
    row = g.nodes[g.nodes["kind"] == "latent"].iloc[0]
    edited = ag.edit_latents(model, tc, tokens, [(int(row.pos), int(row.feature), None, 0.0)])
    assert not torch.allclose(edited, clean, atol=1e-6)
    assert torch.allclose(edited[0, : int(row.pos)], clean[0, : int(row.pos)], atol=1e-4)
    with pytest.raises(IndexError):
        ag.edit_latents(model, tc, tokens, [(1, tc.cfg.d_sae, None, 0.0)])


def test_checker(graph):
    checks.check_influence_matrix(ag.influence_matrix)
    with pytest.raises(AssertionError, match="case"):
        checks.check_influence_matrix(lambda a: a.abs())
