"""Cross-width matching, split trees, coverage and the Sankey figure (saebook.splitting)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from saebook import splitting
from saebook.top_tokens import context_snippet, top_tokens


def _with_decoder(sae, w_dec: torch.Tensor):
    """A copy of ``sae`` whose decoder rows are ``w_dec`` (d_sae must match)."""
    out = copy.deepcopy(sae)
    out.W_dec.data = w_dec.clone()
    return out


@pytest.fixture(scope="module")
def planted_family(micro_model):
    """Three SAEs on one hook: narrow latent 0 splits into 3 children, which split again."""
    _, _, family = micro_model
    base = family[0]
    d, d_in = base.cfg.d_sae, base.W_dec.shape[1]
    g = torch.Generator().manual_seed(123)  # not random_max_cosines' default seed
    narrow = torch.randn(d, d_in, generator=g)
    mid = torch.randn(d, d_in, generator=g)
    wide = torch.randn(d, d_in, generator=g)
    unit0 = narrow[0] / narrow[0].norm()
    for j in range(3):  # children 0..2 of narrow latent 0
        mid[j] = unit0 * 3 + 0.8 * torch.randn(d_in, generator=g) / d_in**0.5 * 3
    for j in range(3):  # grandchildren: two per child
        for t in range(2):
            wide[2 * j + t] = (
                mid[j] / mid[j].norm() * 2 + 0.5 * torch.randn(d_in, generator=g) / d_in**0.5 * 2
            )
    return [_with_decoder(base, w) for w in (narrow, mid, wide)]


def test_max_cosine_matches_finds_planted_parents():
    g = torch.Generator().manual_seed(1)
    narrow = torch.randn(5, 8, generator=g)
    wide = torch.cat([narrow[[3]] * 2 + 0.01 * torch.randn(2, 8, generator=g), -narrow[[1]]])
    values, index = splitting.max_cosine_matches(narrow, wide)
    assert index[:2].tolist() == [3, 3]
    assert (values[:2] > 0.99).all()
    assert values[2] < 0.99  # the opposite of a row is not a match
    with pytest.raises(ValueError, match="same d_in"):
        splitting.max_cosine_matches(narrow, torch.randn(2, 7))
    with pytest.raises(ValueError, match="2-D"):
        splitting.max_cosine_matches(narrow[0], wide)


def test_random_baseline_is_far_below_real_children(planted_family):
    random_best = splitting.random_max_cosines(planted_family[0], n=500)
    values, _ = splitting.max_cosine_matches(
        splitting.unit_decoder(planted_family[0]), splitting.unit_decoder(planted_family[1])
    )
    assert random_best.shape == (500,)
    assert values[:3].min() > random_best.quantile(0.99)
    assert values[:3].min() > random_best.median() + 0.3
    with pytest.raises(ValueError, match="n must be a positive int"):
        splitting.random_max_cosines(planted_family[0], n=0)


def test_decoder_cosines_shape(micro_model):
    _, _, family = micro_model
    cos = splitting.decoder_cosines(family[0], family[-1])
    assert cos.shape == (family[0].cfg.d_sae, family[-1].cfg.d_sae)
    assert cos.abs().max() <= 1 + 1e-5


def test_split_tree_recovers_the_planted_tree(planted_family):
    tree = splitting.split_tree(planted_family, 0, threshold=0.5)
    level0 = tree[tree["level"] == 0]
    level1 = tree[tree["level"] == 1]
    assert sorted(level0["child"]) == [0, 1, 2]
    assert sorted(level1["child"]) == [0, 1, 2, 3, 4, 5]
    assert (tree["cosine"] >= 0.5).all()
    capped = splitting.split_tree(planted_family, 0, threshold=0.5, max_children=1)
    assert len(capped[capped["level"] == 0]) == 1
    # a latent with no planted children has (almost surely) no tree at a high threshold
    assert splitting.split_tree(planted_family, 7, threshold=0.9).empty
    with pytest.raises(ValueError, match="threshold must be a cosine"):
        splitting.split_tree(planted_family, 0, threshold=1.5)
    with pytest.raises(ValueError, match="latent must be an int"):
        splitting.split_tree(planted_family, 10**6)
    with pytest.raises(ValueError, match="at least two SAEs"):
        splitting.split_tree(planted_family[:1], 0)


def test_most_split_picks_the_planted_latent(planted_family):
    latent, tree = splitting.most_split(planted_family, threshold=0.5)
    assert latent == 0
    assert (tree["level"] == 1).sum() == 6
    latent, _ = splitting.most_split(planted_family, threshold=0.5, candidates=[3, 4])
    assert latent in (3, 4)
    # the bottom-up count and the per-candidate trees agree (a cap larger than any fan-out)
    looped, looped_tree = splitting.most_split(
        planted_family, threshold=0.3, max_children=10**6, progress=False
    )
    counted, counted_tree = splitting.most_split(planted_family, threshold=0.3)
    assert looped == counted
    assert looped_tree.equals(counted_tree)
    with pytest.raises(ValueError, match="candidates"):
        splitting.most_split(planted_family, candidates=[])


def test_split_coverage_union_beats_single_child():
    parent = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool)
    kids = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0], [0, 1], [0, 0]], dtype=torch.bool)
    cov = splitting.split_coverage(parent, kids)
    assert cov["per_child"] == pytest.approx([0.5, 0.25])
    assert cov["best_single"] == pytest.approx(0.5)
    assert cov["union"] == pytest.approx(0.75)
    assert cov["union_precision"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="never fires"):
        splitting.split_coverage(torch.zeros(6, dtype=torch.bool), kids)
    with pytest.raises(ValueError, match="child_fires must be"):
        splitting.split_coverage(parent, kids[:3])


def test_split_sankey_has_one_link_per_edge(planted_family):
    tree = splitting.split_tree(planted_family, 0, threshold=0.5)
    d0 = planted_family[0].cfg.d_sae
    fig = splitting.split_sankey(tree, (d0, 0), names={(d0, 0): "root"})
    sankey = fig.data[0]
    assert len(sankey.link.source) == len(tree)
    assert sankey.node.label[0].endswith(": root")


def test_top_tokens_and_context(micro_model):
    from saebook.latent_stats import latent_stats

    model, saes, _ = micro_model
    sae = saes["resid"]
    tokens = torch.randint(
        0, model.cfg.d_vocab, (4, 16), generator=torch.Generator().manual_seed(0)
    )
    stats = latent_stats(model, sae, tokens, progress=False)
    alive = int(stats.count.argmax())
    summary = top_tokens(model, tokens, stats, [alive])
    assert "×" in summary[alive]
    dead = stats.dead()
    if len(dead):
        assert top_tokens(model, tokens, stats, [int(dead[0])])[int(dead[0])] == "(dead)"
    example = stats.top_examples(alive, 1)[0]
    snippet = context_snippet(model, tokens, example)
    assert "[[" in snippet and "]]" in snippet
    with pytest.raises(ValueError, match="stats must be computed on tokens"):
        top_tokens(model, tokens[:2], stats, [alive])


def test_checker_accepts_reference_and_rejects_unnormalised():
    from saebook import checks

    checks.check_max_cosine_matches(splitting.max_cosine_matches)

    def dot_not_cosine(narrow, wide):
        best = (wide @ narrow.T).max(dim=-1)
        return best.values, best.indices

    with pytest.raises(AssertionError, match="case 'random'"):
        checks.check_max_cosine_matches(dot_not_cosine)


def test_leaf_counts_counts_the_widest_latents_under_each_narrow_one() -> None:
    from saebook.splitting import leaf_counts

    narrow = torch.eye(3)
    wide = torch.tensor([[1.0, 0.1, 0], [1.0, -0.1, 0], [0, 1.0, 0], [0, 0, -1.0]])
    # latent 0 has two children, latent 1 one, latent 2 none (its best match has cosine -1 < 0.5)
    assert leaf_counts([narrow, wide], threshold=0.5).tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="at least two matrices"):
        leaf_counts([narrow])


def test_cross_width_matches_agree_with_sklearn(micro_model, reference_row):
    """decoder_cosines and max_cosine_matches (in chunks) on every adjacent pair of the micro
    world's width family, against sklearn.metrics.pairwise.cosine_similarity of the raw
    decoder rows and numpy's argmax over it."""
    from sklearn.metrics.pairwise import cosine_similarity

    _, _, family = micro_model
    worst, parents_equal, n_pairs = 0.0, True, 0
    for narrow, wide in zip(family[:-1], family[1:], strict=True):
        ref = cosine_similarity(narrow.W_dec.detach().numpy(), wide.W_dec.detach().numpy())
        cos = splitting.decoder_cosines(narrow, wide).numpy()
        values, parents = splitting.max_cosine_matches(narrow.W_dec.detach(), wide.W_dec.detach())
        worst = max(worst, float(np.abs(cos - ref).max()))
        worst = max(worst, float(np.abs(values.numpy() - ref.max(0)).max()))
        parents_equal &= bool((parents.numpy() == ref.argmax(0)).all())
        n_pairs += 1
    ok = worst < 1e-5 and parents_equal
    reference_row(
        technique="feature splitting: decoder cosines and parents across widths",
        reference="sklearn.metrics.pairwise.cosine_similarity + numpy argmax (micro width family)",
        quantity="max abs difference of cosines and best cosines; parents equal",
        measured=f"{worst:.1e} over {n_pairs} width pairs; parents equal: {parents_equal}",
        tolerance="1e-5, equal parents",
        ok=ok,
    )
    assert worst < 1e-5
    assert parents_equal


def test_precise_cover_matches_a_dense_count(micro_model):
    """Batched over rows, the precise latents and their cover equal a direct count over the
    dense activation matrix; a parent made of one latent's firing finds that latent."""
    from saebook.latent_stats import latent_activations

    model, saes, _ = micro_model
    sae = saes["resid"]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.cfg.d_vocab, (8, 12), generator=g)
    fires = latent_activations(model, sae, tokens).flatten(0, 1) > 0
    counts = fires.sum(0)
    busy = int(counts.argmax())  # the most active latent plays the parent
    parent = fires[:, busy]
    hits = (fires & parent[:, None]).sum(0)
    expected = ((counts >= 5) & (hits >= 0.8 * counts)).nonzero().squeeze(-1).tolist()
    assert busy in expected
    union = fires[:, expected].any(-1)
    for batch_size in (3, tokens.shape[0]):
        cover = splitting.precise_cover(model, sae, tokens, parent, batch_size=batch_size)
        assert cover["latents"] == expected and cover["n_precise"] == len(expected)
        assert cover["union"] == pytest.approx(float((union & parent).sum() / parent.sum()))
        assert cover["best_single"] == pytest.approx(1.0)  # the parent latent itself
    with pytest.raises(ValueError, match=r"parent_fires must have shape \(96,\)"):
        splitting.precise_cover(model, sae, tokens, parent[:5])
    with pytest.raises(ValueError, match="never fires"):
        splitting.precise_cover(model, sae, tokens, torch.zeros_like(parent))
    with pytest.raises(ValueError, match="min_precision"):
        splitting.precise_cover(model, sae, tokens, parent, min_precision=0)
