"""The ignite engine: training, bit-identical resume, DDP evaluation, files it writes."""

from __future__ import annotations

import json

import ignite.distributed as idist
import pytest
import torch
from conftest import free_port
from ignite.engine import Events
from torch import nn
from torch.utils.data import Dataset

from effvid.config import ConfigError, RunConfig, load_config, option
from effvid.draws import seeded, split_item
from effvid.engine import (
    EngineConfig,
    NonFiniteError,
    RuntimeConfig,
    attach_validation,
    autocast,
    evaluate,
    find_latest_checkpoint,
    make_dataloader,
    read_training_checkpoint,
    run_trainer,
    seed_everything,
    setup_evaluator,
    setup_trainer,
)
from effvid.metrics import HitAt1, topk_accuracy


class Blobs(Dataset):
    """Two Gaussian blobs in 8-d, as dict samples like the video datasets return.

    With ``augment``, each sample gets random noise drawn inside :func:`seeded` from the seed the
    training sampler hands over - the pattern of the video datasets' augmentation.
    """

    def __init__(self, n: int = 40, seed: int = 0, augment: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 8, generator=g) + 2.0 * self.y[:, None]
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, item) -> dict:
        i, seed = split_item(item)
        x = self.x[i]
        if self.augment:
            with seeded(seed):
                x = x + 0.5 * torch.randn(8)
        return {"video": x, "label": self.y[i], "key": f"v{i}"}


def make_model(dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


class Objective(nn.Module):
    """A training module: the loss is computed in forward, so DDP's hooks fire."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        logits = self.model(batch["video"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return loss, {"acc": float((logits.argmax(1) == batch["label"]).float().mean())}


def train(run_dir, *, epochs=3, stop_at=None, lr=0.1, workers=0, augment=True, dropout=0.2, **cfg_kw):
    seed_everything(0)  # before the model is built: the initialisation is part of the run
    cfg = EngineConfig(epochs=epochs, checkpoint_every=3, progress=False, **cfg_kw)
    model = make_model(dropout)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    trainer = setup_trainer(
        module=Objective(model), optimizer=optimizer, cfg=cfg, run_dir=run_dir, lr_scheduler=scheduler
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    if stop_at is not None:

        @trainer.on(Events.ITERATION_COMPLETED(once=stop_at))
        def crash(_):
            raise KeyboardInterrupt("simulated kill")

    loader = make_dataloader(
        Blobs(augment=augment), batch_size=8, train=True, seed=cfg.seed, num_workers=workers
    )
    run_trainer(trainer, loader, epochs=cfg.epochs)
    return model, losses, trainer


def test_tiny_model_trains_and_writes_checkpoints_and_tensorboard(tmp_path):
    model, losses, trainer = train(tmp_path)
    assert trainer.state.iteration == 15 and len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert ckpts == ["checkpoint_12.pt", "checkpoint_15.pt"]  # keep_checkpoints=2, epoch ends and every 3
    state = read_training_checkpoint(tmp_path / "checkpoints" / "checkpoint_15.pt")
    assert {"model", "optimizer", "trainer", "lr_scheduler"} <= set(state)
    assert state["trainer"]["iteration"] == 15
    assert any((tmp_path / "tb").iterdir())


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_seed_makes_fresh_runs_identical(tmp_path):
    one, _, _ = train(tmp_path / "a", epochs=1)
    two, _, _ = train(tmp_path / "b", epochs=1)
    assert_same_weights(one, two)


def test_killed_run_with_augmentation_and_workers_resumes_bit_identical(tmp_path):
    straight, _, _ = train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", stop_at=8, workers=2)  # last checkpoint at iteration 6
    assert find_latest_checkpoint(tmp_path / "resumed").name == "checkpoint_6.pt"
    resumed, losses, trainer = train(tmp_path / "resumed", workers=1)
    assert trainer.state.iteration == 15 and len(losses) == 9  # iterations 7..15 only
    assert_same_weights(straight, resumed)  # augmentation, dropout and order all replayed


def test_augmentation_draws_do_not_depend_on_worker_count():
    batches = {}
    for workers in (0, 2):
        loader = make_dataloader(Blobs(augment=True), batch_size=8, train=True, seed=3, num_workers=workers)
        loader.sampler.set_epoch(2)
        batches[workers] = torch.cat([b["video"] for b in loader])
    assert torch.equal(batches[0], batches[2])
    loader.sampler.set_epoch(3)
    assert not torch.equal(torch.cat([b["video"] for b in loader]), batches[2])


def test_finished_run_is_not_trained_again(tmp_path):
    first, _, _ = train(tmp_path, epochs=2)
    again, losses, trainer = train(tmp_path, epochs=2)
    assert losses == [] and trainer.state.epoch == 2
    assert_same_weights(first, again)
    more, losses, trainer = train(tmp_path, epochs=3)  # asking for more epochs continues the run
    assert len(losses) == 5 and trainer.state.epoch == 3


def test_nonfinite_loss_stops_without_saving_it(tmp_path):
    with pytest.raises(NonFiniteError, match=r"training loss is (nan|inf) at iteration \d+ \(epoch \d\)"):
        train(tmp_path, lr=1e30)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        state = read_training_checkpoint(path)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path.name


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    train(tmp_path, epochs=2)  # checkpoints 9 and 10
    latest = find_latest_checkpoint(tmp_path)
    latest.write_bytes(latest.read_bytes()[:100])
    _, losses, trainer = train(tmp_path, epochs=2)
    out = capsys.readouterr().out
    assert f"{latest.name}: truncated or corrupt" in out and "falling back" in out
    assert trainer.state.iteration == 10 and len(losses) == 1  # resumed from iteration 9


def test_validation_keeps_the_best_checkpoint(tmp_path):
    seed_everything(0)
    cfg = EngineConfig(epochs=3, progress=False)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = setup_trainer(module=Objective(model), optimizer=optimizer, cfg=cfg, run_dir=tmp_path)
    scores = iter([0.5, 0.9, 0.7])
    attach_validation(
        trainer, lambda: {"top1": next(scores)}, tmp_path, every=1, to_save={"model": model}, metric="top1"
    )
    run_trainer(trainer, make_dataloader(Blobs(), batch_size=8, train=True), epochs=3)
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["best_model_2_top1=0.9000.pt"]
    assert json.loads((tmp_path / "metrics_val_epoch3.json").read_text()) == {"top1": 0.7}


def test_evaluate_writes_metrics_json(tmp_path):
    model, _, _ = train(tmp_path / "t")
    evaluator = setup_evaluator(
        model=model,
        eval_step=lambda b: (model(b["video"]), b["label"]),
        metrics={"top1": topk_accuracy(1), "hit1": HitAt1()},
        cfg=RuntimeConfig(progress=False),
    )
    loader = make_dataloader(Blobs(seed=1), batch_size=16, train=False)
    results = evaluate(evaluator, loader, tmp_path, name="val")
    saved = json.loads((tmp_path / "metrics_val.json").read_text())
    assert saved == results and results["top1"] == results["hit1"] > 0.8


def _ddp_eval(local_rank, weights_path, out_path):
    model = make_model()
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    evaluator = setup_evaluator(
        model=model,
        eval_step=lambda b: (model(b["video"]), b["label"]),
        metrics={"top1": topk_accuracy(1), "hit1": HitAt1()},
        cfg=RuntimeConfig(progress=False),
    )
    loader = make_dataloader(Blobs(n=40, seed=3), batch_size=6, train=False)
    results = evaluate(evaluator, loader, out_path, name="ddp")
    results["world"] = idist.get_world_size()
    results["local_samples"] = len(loader.sampler)
    if idist.get_rank() == 0:
        with open(f"{out_path}/result.json", "w") as f:
            json.dump(results, f)


def test_two_process_gloo_evaluation_equals_one_process(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(make_model().state_dict(), weights)
    one = tmp_path / "one"
    one.mkdir()
    _ddp_eval(0, str(weights), str(one))
    two = tmp_path / "two"
    two.mkdir()
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=free_port()) as parallel:
        parallel.run(_ddp_eval, str(weights), str(two))
    a = json.loads((one / "result.json").read_text())
    b = json.loads((two / "result.json").read_text())
    assert (a.pop("world"), b.pop("world")) == (1, 2)
    assert (a.pop("local_samples"), b.pop("local_samples")) == (40, 20)  # the data really was split
    assert a == b


def test_config_validation_and_amp_errors():
    @__import__("dataclasses").dataclass
    class Cmd(RunConfig):
        engine: EngineConfig = option(doc="engine", default_factory=EngineConfig)

    with pytest.raises(ConfigError, match="engine.amp must be one of none, bf16, fp16; got 'fp8'"):
        load_config(Cmd, [], {"engine.amp": "fp8"})
    assert load_config(Cmd, [], {"engine.amp": "bf16"}).engine.amp == "bf16"
    with pytest.raises(RuntimeError, match="fp16 AMP needs a CUDA device"):
        with autocast(torch.device("cpu"), "fp16"):
            pass
    with autocast(torch.device("cpu"), "bf16"):
        assert nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="empty dataset"):
        make_dataloader(Blobs(n=0), batch_size=4, train=True)


def test_resumable_sampler_order_shards_and_skip():
    from effvid.engine import ResumableSampler

    a = ResumableSampler(10, shuffle=True, seed=5)
    a.set_epoch(2)
    first = list(a)
    b = ResumableSampler(10, shuffle=True, seed=5)
    b.set_epoch(2)
    b.skip(4)
    assert list(b) == first[4:] and list(b) == first  # skip applies to one pass only
    a.set_epoch(3)
    assert list(a) != first and sorted(a) == list(range(10))
    shards = [list(ResumableSampler(5, shuffle=False, num_replicas=2, rank=r, pad=False)) for r in (0, 1)]
    assert shards == [[0, 2, 4], [1, 3]]
    padded = [list(ResumableSampler(5, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert padded == [[0, 2, 4], [1, 3, 0]]
    with pytest.raises(ValueError, match="empty dataset"):
        ResumableSampler(0, shuffle=True)


def test_run_distributed_under_torchrun(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import json, sys
        import ignite.distributed as idist
        import torch
        from effvid.engine import run_distributed

        def job(local_rank, out):
            total = idist.all_reduce(torch.tensor([float(idist.get_rank() + 1)]))
            if idist.get_rank() == 0:
                with open(out, "w") as f:
                    json.dump({"world": idist.get_world_size(), "backend": idist.backend(), "sum": float(total)}, f)

        run_distributed(job, sys.argv[1], backend="gloo")
    """)
    )
    port = free_port()
    out = tmp_path / "out.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            str(script),
            str(out),
        ],
        check=True,
        timeout=180,
        capture_output=True,
    )
    assert json.loads(out.read_text()) == {"world": 2, "backend": "gloo", "sum": 3.0}


def _ddp_train(local_rank, run_dir, out_path):
    model, _, _ = train(run_dir, epochs=2, dropout=0.0)  # dropout masks of a split batch differ
    if idist.get_rank() == 0:
        torch.save(model.state_dict(), out_path)


def test_two_process_training_equals_one_process_on_the_total_batch(tmp_path):
    single, _, _ = train(tmp_path / "one", epochs=2, dropout=0.0)  # augmentation on: per-sample draws
    out = tmp_path / "ddp.pt"
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=free_port()) as parallel:
        parallel.run(_ddp_train, str(tmp_path / "two"), str(out))
    ddp = torch.load(out, weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_fit_follows_lr_lambda_and_calls_attach(tmp_path):
    """engine.fit: the learning rate follows lr_lambda(iteration, total) per iteration (here a step
    decay at half the run), and attach(trainer) runs before training."""
    from effvid.engine import fit

    seed_everything(0)
    model = make_model(0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rates, attached = [], []

    def attach(trainer):
        attached.append(trainer)
        trainer.add_event_handler(
            Events.ITERATION_STARTED, lambda e: rates.append(optimizer.param_groups[0]["lr"])
        )

    cfg = EngineConfig(epochs=2, checkpoint_every=100, progress=False)
    done = fit(
        Objective(model),
        optimizer,
        Blobs(),
        cfg,
        tmp_path / "run",
        batch_size=8,
        lr_lambda=lambda it, total: 1.0 if it < total // 2 else 0.1,
        attach=attach,
    )
    assert done and len(attached) == 1
    assert len(rates) == 10  # 40 samples / 8 per batch x 2 epochs
    assert rates[:5] == pytest.approx([0.1] * 5) and rates[5:] == pytest.approx([0.01] * 5)
