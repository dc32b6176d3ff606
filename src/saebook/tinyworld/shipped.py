"""Loading the tiny world's shipped model and SAEs (package data written by the build)."""

from __future__ import annotations

import json
from pathlib import Path

from sae_lens import SAE, HookedSAETransformer

from saebook.errors import MissingArtifactError
from saebook.tinyworld.build import DATA_DIR, SAE_SPECS
from saebook.tinyworld.model import load_model

__all__ = ["ROLES", "load_shipped", "load_model_card"]

#: The roles every profile offers; the other shipped SAEs are width-family members.
ROLES = ("resid", "attn", "mlp", "transcoder")


def load_shipped(
    data_dir: Path = DATA_DIR, device: str = "cpu"
) -> tuple[HookedSAETransformer, dict[str, SAE], list[SAE]]:
    """The model, the SAEs by role, and the residual width family (narrow to wide).

    Raises :class:`~saebook.errors.MissingArtifactError` naming the missing or unreadable
    file and the command that rebuilds it.
    """
    data_dir = Path(data_dir)
    rebuild = "rebuild it with `python -m saebook.tinyworld build`"
    if not (data_dir / "tokenizer" / "tokenizer.json").is_file():
        raise MissingArtifactError(
            f"the tiny world's tokenizer is missing under {data_dir}; {rebuild}"
        )
    try:
        model = load_model(data_dir / "model", data_dir / "tokenizer", device=device)
    except FileNotFoundError as err:
        raise MissingArtifactError(str(err)) from None
    saes: dict[str, SAE] = {}
    for role in SAE_SPECS:
        path = data_dir / "saes" / role
        try:
            saes[role] = SAE.load_from_disk(path, device=device)
        except Exception as err:  # a missing file, or a corrupt one (safetensors, JSON)
            raise MissingArtifactError(
                f"cannot load the tiny world's {role!r} SAE from {path} "
                f"({type(err).__name__}: {err}); {rebuild}"
            ) from None
    hook = SAE_SPECS["resid"]["hook"]
    family = sorted(
        (
            s
            for s in saes.values()
            if s.cfg.metadata.hook_name == hook and s.cfg.architecture() != "transcoder"
        ),
        key=lambda s: s.cfg.d_sae,
    )
    return model, {role: saes[role] for role in ROLES}, family


def load_model_card(data_dir: Path = DATA_DIR) -> tuple[dict, list[dict]]:
    """The metrics the build recorded (``model_card.json``) and the language-model loss curve."""
    data_dir = Path(data_dir)
    paths = [data_dir / "model_card.json", data_dir / "training_curve.json"]
    for path in paths:
        if not path.is_file():
            raise MissingArtifactError(
                f"{path} is missing; rebuild it with `python -m saebook.tinyworld build`"
            )
    return json.loads(paths[0].read_text()), json.loads(paths[1].read_text())
