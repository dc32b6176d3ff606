"""Rebuild saebook's offline Neuronpedia fixtures from the tiny profile's model and SAE.

    PYTHONPATH=src python scripts/make_neuronpedia_fixtures.py [--out DIR]

The answers are generated here (see :func:`saebook.neuronpedia.build_fixtures`), never
downloaded; tests/test_neuronpedia.py rebuilds them and checks they equal the shipped ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from saebook import neuronpedia, profiles

#: The fixtures' sample: rows, tokens per row, seeds (fixed so the files cannot drift).
N_ROWS, SEQ_LEN, SEED, TEXT_SEED = 256, 32, 11, 12
#: The id the fixtures give the tiny SAE: not a Neuronpedia id (the tiny SAE is not hosted).
OFFLINE_ID = "saebook-tiny/1-res-offline"


def build() -> dict[str, dict]:
    """The fixtures of the tiny profile's residual SAE."""
    torch.manual_seed(0)
    profile = profiles.load("tiny")
    tokens = profile.tokens(N_ROWS, SEQ_LEN, seed=SEED)
    text = profile.tokens(1, SEQ_LEN, seed=TEXT_SEED)[0]
    return neuronpedia.build_fixtures(profile.model, profile.sae("resid"), OFFLINE_ID, tokens, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=neuronpedia.FIXTURE_DIR)
    args = parser.parse_args()
    for path in neuronpedia.write_fixtures(build(), args.out):
        print(path)


if __name__ == "__main__":
    main()
