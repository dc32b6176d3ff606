"""The first call of every chapter: seeds, threads, warnings, plotting, profile and banner."""

from __future__ import annotations

import os
import random
import warnings

# Two notices are printed when sae_lens is imported, before any chapter code runs, so they are
# filtered here, before saebook.profiles imports it: TransformerLens 3 deprecating its `utils`
# module (sae_lens imports it; the book pins TransformerLens < 4 on purpose), and tqdm's
# "IProgress not found" (without ipywidgets, tqdm.auto draws text bars, which is what the
# book's kernels want; Colab has ipywidgets and draws widgets).
warnings.filterwarnings(
    "ignore", message=r"The 'utils' module has been deprecated", category=DeprecationWarning
)
warnings.filterwarnings("ignore", message=r"IProgress not found")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from saebook import display, profiles  # noqa: E402

__all__ = ["setup", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _threads() -> int:
    value = os.environ.get("SAEBOOK_THREADS", "")
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SAEBOOK_THREADS must be a positive integer, got {value!r}")
    return int(value)


def setup(profile: str | None = None, seed: int = 0, show: bool = True) -> profiles.Profile:
    """Prepare a chapter and return its loaded :class:`~saebook.profiles.Profile`.

    Uses one torch thread per core (``SAEBOOK_THREADS`` overrides it), silences the
    TransformerLens deprecation notice (the book pins TransformerLens < 4 on purpose), selects
    a plotly renderer that works in this environment, loads the profile (``SAEBOOK_PROFILE``
    by default), then seeds every generator (so a chapter's random draws do not depend on
    whether the profile was already cached) and, with ``show``, displays a banner naming
    profile, model, SAEs and device.
    """
    torch.set_num_threads(_threads())
    warnings.filterwarnings("ignore", message=r".*HookedTransformer is deprecated.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformer_lens.*")
    display.configure_plotly()
    loaded = profiles.load(profile)
    seed_everything(seed)  # after loading: building a model draws from the generators
    if show:
        display.banner(
            profile=loaded.name,
            model=loaded.model.cfg.model_name,
            saes=loaded.describe_saes(),
            device=loaded.device,
        )
    return loaded
