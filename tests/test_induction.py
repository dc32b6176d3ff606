"""saebook.induction against TransformerLens' own induction-head detector and per-token loss."""

from __future__ import annotations

import torch
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    get_induction_head_detection_pattern,
)

from saebook.induction import induction_report, repeated_tokens


def test_induction_report_matches_transformer_lens(micro_model, reference_row):
    """Head scores against TransformerLens' head detector (its induction pattern, built from
    the tokens themselves, and its "mul" score: attention on the pattern over all attention,
    i.e. over every position) and both halves' losses against ``loss_per_token``. On rows
    whose half holds no repeated token, the detector's pattern is exactly the book's
    diagonal, so the book's score is the detector's times (2L + 1) / L."""
    model, _, _ = micro_model
    bos = model.tokenizer.bos_token_id
    pool = torch.tensor([t for t in range(model.cfg.d_vocab) if t != bos])
    half = 8
    rows = repeated_tokens(12, half, pool, bos, generator=torch.Generator().manual_seed(6))
    distinct = torch.tensor([len(set(r[1 : half + 1].tolist())) == half for r in rows])
    tokens = rows[distinct]
    assert len(tokens) >= 6
    report = induction_report(model, tokens)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        loss, cache = model.run_with_cache(
            tokens, return_type="loss", loss_per_token=True, names_filter=names
        )
    detector = torch.zeros(len(tokens), model.cfg.n_layers, model.cfg.n_heads)
    for row in range(len(tokens)):
        pattern = get_induction_head_detection_pattern(tokens[row : row + 1])
        for layer, name in enumerate(names):
            for head in range(model.cfg.n_heads):
                detector[row, layer, head] = compute_head_attention_similarity_score(
                    cache[name][row, head], pattern, exclude_bos=False,
                    exclude_current_token=False, error_measure="mul",
                )  # fmt: skip
    converted = detector.mean(0) * (2 * half + 1) / half
    score_gap = float((report.head_scores - converted).abs().max())
    # loss_per_token[:, i] predicts token i + 1: the first copy's tokens 2..L, the second's
    first, second = loss[:, 1:half].mean(), loss[:, half + 1 :].mean()
    loss_gap = max(
        abs(report.loss_first_half - float(first)), abs(report.loss_second_half - float(second))
    )
    ok = score_gap < 1e-5 and loss_gap < 1e-5
    reference_row(
        technique="induction: head scores and repeated-token losses",
        reference="TransformerLens head_detector (induction pattern, 'mul' score) and "
        "loss_per_token (micro world)",
        quantity="max abs difference (head scores x (2L+1)/L; both halves' losses)",
        measured=f"scores {score_gap:.1e}, losses {loss_gap:.1e} on {len(tokens)} rows",
        tolerance="1e-5",
        ok=ok,
    )
    assert float(report.head_scores.max()) > 0  # some head attends there: not zeros
    assert score_gap < 1e-5
    assert loss_gap < 1e-5
