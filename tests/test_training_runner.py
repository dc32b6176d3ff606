"""Unit tests of the runner-based training path and the offline W&B reader."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from datasets import Dataset
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

from saebook.training import (
    _log_schedule,
    dead_fraction_curve,
    join_log_chunks,
    read_wandb_history,
    topk_aux_loss,
    train_sae_with_runner,
    training_sae_config,
)


def test_train_sae_with_runner_logs_offline_and_reads_back(micro_model, tmp_path):
    model, saes, _ = micro_model
    hook = saes["resid"].cfg.metadata.hook_name
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, model.cfg.d_vocab, (32, 8), generator=g)
    rows[:, 0] = model.tokenizer.bos_token_id
    dataset = Dataset.from_dict({"input_ids": rows.tolist()})
    config = training_sae_config("topk", model.cfg.d_model, 32, 4)
    run = train_sae_with_runner(
        model, dataset, config, hook, 640, 64, dead_feature_window=2,
        wandb_dir=tmp_path / "wb", log_every=2, eval_every=2, output_path=tmp_path / "out",
        progress=False,
    )  # fmt: skip
    assert len(run.curves) == 10 and (run.curves["l0"] <= 4).all()
    assert (tmp_path / "out" / "cfg.json").is_file()
    assert run.sae.cfg.metadata.hook_name == hook
    history = read_wandb_history(run.extra["wandb_file"])
    logged = history.dropna(subset=["metrics/explained_variance"])
    rec = run.curves.set_index("step")
    assert list(logged.index) == [1, 3, 5, 7, 9]
    for step, row in logged.iterrows():
        assert row["metrics/explained_variance"] == pytest.approx(
            rec.loc[step, "explained_variance"], abs=1e-5
        )
    with pytest.raises(KeyError, match="hook_name"):
        train_sae_with_runner(model, dataset, config, "no.such.hook", 640, 64)
    with pytest.raises(ValueError, match="input_ids"):
        train_sae_with_runner(model, Dataset.from_dict({"x": [1]}), config, hook, 640, 64)


def test_log_schedule_logs_three_times_and_evaluates_once_on_short_runs():
    # the gpt2 rehearsal's 4-step run of training/06 logged nothing at (5, 4): KeyError there
    assert _log_schedule(25) == _log_schedule(500) == (5, 4)  # what the tiny book ran with
    for steps in range(3, 300):
        log_every, eval_every = _log_schedule(steps)
        logs = steps // log_every  # SAELens logs when (step + 1) % log_every == 0
        assert logs >= 3 and logs // eval_every >= 1, (steps, log_every, eval_every)
        assert 1 <= log_every <= 5 and 1 <= eval_every <= 4


def _chunk(kind: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([kind])))
    return struct.pack("<IHB", crc, len(payload), kind) + payload


def test_read_wandb_history_checks_header_and_crc(tmp_path):
    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()
    item = record.history.item.add()
    item.key, item.value_json = "_step", "3"
    item = record.history.item.add()
    item.key, item.value_json = "loss", "0.5"
    raw = record.SerializeToString()
    body = _chunk(2, raw[:5]) + _chunk(4, raw[5:])
    good = tmp_path / "run-a.wandb"
    good.write_bytes(struct.pack("<4sHB", b":W&B", 0xBEE1, 0) + body)
    history = read_wandb_history(good)
    assert history.loc[3, "loss"] == 0.5
    bad = tmp_path / "run-b.wandb"
    bad.write_bytes(struct.pack("<4sHB", b":W&B", 0xBEE1, 0) + body[:-1] + b"X")
    with pytest.raises(ValueError, match="checksum"):
        read_wandb_history(bad)
    (tmp_path / "run-c.wandb").write_bytes(b"nothing here")
    with pytest.raises(ValueError, match="not a wandb run file"):
        read_wandb_history(tmp_path / "run-c.wandb")
    with pytest.raises(FileNotFoundError, match="run_file"):
        read_wandb_history(tmp_path / "missing.wandb")


def test_join_log_chunks():
    assert join_log_chunks([(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]) == [b"a", b"bcd"]
    with pytest.raises(ValueError, match="chunks\\[0\\]"):
        join_log_chunks([(4, b"x")])
    with pytest.raises(ValueError, match="LAST"):
        join_log_chunks([(2, b"x")])


def test_dead_fraction_curve_matches_saelens_counter():
    g = torch.Generator().manual_seed(3)
    fired = torch.rand(30, 7, generator=g) < 0.2
    since = torch.zeros(7)
    expected = []
    for row in fired:  # SAELens' trainer: += 1, then reset where fired; dead: > window
        since += 1
        since[row] = 0
        expected.append(float((since > 3).float().mean()))
    assert torch.allclose(dead_fraction_curve(fired, 3), torch.tensor(expected))
    with pytest.raises(ValueError, match="fired"):
        dead_fraction_curve(fired.float(), 3)


def test_topk_aux_loss_matches_a_direct_formula():
    g = torch.Generator().manual_seed(4)
    x, out = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    pre, W = torch.randn(5, 10, generator=g), torch.randn(10, 6, generator=g)
    dead = torch.zeros(10, dtype=torch.bool)
    dead[[0, 2]] = True  # two dead, k_aux = 3: both used, scale 2/3
    acts = torch.zeros_like(pre)
    acts[:, [0, 2]] = pre[:, [0, 2]]
    direct = (2 / 3) * (acts @ W - (x - out)).pow(2).sum(-1).mean()
    assert torch.allclose(topk_aux_loss(x, out, pre, dead, W), direct, atol=1e-5)
    assert float(topk_aux_loss(x, out, pre, torch.zeros(10, dtype=torch.bool), W)) == 0
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=6, d_sae=10, k=2))
    assert sae.cfg.aux_loss_coefficient == 1.0  # the default our reference assumes
    with pytest.raises(ValueError, match="dead_mask"):
        topk_aux_loss(x, out, pre, dead.float(), W)
