"""Checkers for the book's exercises, one module per part of the book.

An exercise asks the reader to write a function; its checker runs the reader's function and
the reference implementation on the same named cases (ordinary inputs and edge cases) and
compares the outputs. On the first case where they differ it raises ``AssertionError`` naming
the case, the largest absolute difference and both shapes; when every case matches it prints
one line, ``✓ all N cases match``.

:func:`~saebook.checks.core.check_function` is the general tool. Each exercise of the book has
a named checker (``check_<exercise>(fn)``) in the module of its part (:mod:`.toy_models`,
:mod:`.intro`, :mod:`.deeper`, :mod:`.training`, :mod:`.circuits`), re-exported here so
``saebook.checks.check_<exercise>`` works from any chapter.
"""

from __future__ import annotations

from saebook.checks.circuits import (  # noqa: F401
    check_de_embedding,
    check_finite_difference,
    check_influence_matrix,
    check_latent_jacobian,
    check_logit_influence,
    check_salient_logits,
    check_spliced_logits,
    check_token_attribution,
    reference_de_embedding,
    reference_latent_jacobian,
)
from saebook.checks.core import (  # noqa: F401
    Case,
    check_function,
)
from saebook.checks.deeper import (  # noqa: F401
    check_absorption_rate,
    check_cosine_neighbours,
    check_detection_scores,
    check_entropy,
    check_hypergeometric_p,
    check_latent_labels,
    check_latent_logit_weights,
    check_leaf_counts,
    check_max_cosine_matches,
    check_meta_groups,
    check_pair_agreement,
    check_patch_scope,
    check_set_probability,
    check_skew_kurtosis,
    check_split_coverage,
    check_variance_explained,
    check_within_label_cosine,
    reference_detection_scores,
    reference_hypergeometric_p,
)
from saebook.checks.intro import (  # noqa: F401
    check_head_norms,
    check_jumprelu_encode,
    check_steering_hook,
    check_top_logits,
    reference_head_norms,
    reference_jumprelu_encode,
    reference_steering_hook,
)
from saebook.checks.toy_models import (  # noqa: F401
    check_feature_dimensionality,
    check_jumprelu_function,
    check_max_cosine_similarity,
    check_sae_loss,
    check_topk_activation,
    check_toy_forward,
    reference_max_cosine_similarity,
    reference_sae_loss,
    reference_toy_forward,
)
from saebook.checks.training import (  # noqa: F401
    DIAGNOSIS_RUNS,
    check_activation_metrics,
    check_ce_loss_recovered,
    check_diagnosis,
    check_kl_divergence,
    check_l2_ratio,
    check_largest_mean_active,
    check_most_frequent_sparse,
    check_most_selective,
    check_standard_sae_loss,
    check_top_k_by_mean_difference,
    check_topk_sae_loss,
    check_topk_training_loop,
    reference_l2_ratio,
)

__all__ = [
    "Case",
    "check_function",
    "check_toy_forward",
    "check_feature_dimensionality",
    "check_sae_loss",
    "check_max_cosine_similarity",
    "check_topk_activation",
    "check_jumprelu_function",
    "reference_toy_forward",
    "reference_sae_loss",
    "reference_max_cosine_similarity",
    "check_top_logits",
    "check_head_norms",
    "reference_head_norms",
    "check_steering_hook",
    "reference_steering_hook",
    "check_jumprelu_encode",
    "reference_jumprelu_encode",
    "check_max_cosine_matches",
    "check_within_label_cosine",
    "check_absorption_rate",
    "check_variance_explained",
    "check_hypergeometric_p",
    "check_detection_scores",
    "check_set_probability",
    "reference_hypergeometric_p",
    "reference_detection_scores",
    "check_diagnosis",
    "reference_l2_ratio",
    "check_l2_ratio",
    "check_top_k_by_mean_difference",
    "check_standard_sae_loss",
    "DIAGNOSIS_RUNS",
    "reference_latent_jacobian",
    "check_latent_jacobian",
    "reference_de_embedding",
    "check_de_embedding",
    "check_influence_matrix",
    "check_token_attribution",
    "check_finite_difference",
    "check_spliced_logits",
    "check_salient_logits",
    "check_logit_influence",
    "check_split_coverage",
    "check_leaf_counts",
    "check_latent_labels",
    "check_cosine_neighbours",
    "check_meta_groups",
    "check_pair_agreement",
    "check_latent_logit_weights",
    "check_skew_kurtosis",
    "check_patch_scope",
    "check_entropy",
    "check_topk_sae_loss",
    "check_topk_training_loop",
    "check_ce_loss_recovered",
    "check_activation_metrics",
    "check_kl_divergence",
    "check_most_frequent_sparse",
    "check_largest_mean_active",
    "check_most_selective",
]
