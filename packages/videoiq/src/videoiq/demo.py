"""The main job: VideoIQ's four stages end to end on the synthetic benchmark, on a laptop CPU.

1. generate the benchmark (reused when already there); in its late videos most frames show a
   grey object and carry no class evidence (``meta.json`` records which frames do);
2. train the four stages, each from the previous one's ``model.pt``: the float network (fp), the
   any-precision network distilled from it (ap), the policy's MobileNetV2 (policy_backbone) and,
   for each efficiency weight, the policy on the frozen any-precision network (policy);
3. evaluate on the held-out videos: the float network, the any-precision network at each fixed
   bit width, VideoIQ at each efficiency weight (each frame run only at its chosen precision);
4. print the table (accuracy, BitOPs, GMACs, measured videos/s) and how often the policy skips
   or lowers the precision on evidence-free vs evidence frames; write ``results.txt`` (with the
   verdict), ``results.json`` (core ``ResultRow`` s) and ``tradeoff.png``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from effvid.cli import RESUME_SAFE, RunDirError, changed_keys
from effvid.config import config_to_yaml
from effvid.data import SyntheticSpec, VideoClassificationDataset, build_dataset, generate
from effvid.engine import EngineConfig, resolve_device, seed_everything
from effvid.io import atomic_write_json, atomic_write_text
from effvid.model_files import save_model
from effvid.plots import Point, Series, plot_tradeoff
from effvid.reports import ResultRow, StageClock, write_results
from videoiq.build import (
    build_any_precision,
    build_videoiq,
    load_any_precision,
    load_model_file,
    load_teacher,
)
from videoiq.config import CheckpointConfig, DemoConfig, LossConfig, TrainConfig
from videoiq.evaluation import (
    Evaluation,
    action_names,
    cached_batches,
    evaluate_static,
    evaluate_videoiq,
    formula_constants,
)
from videoiq.losses import efficiency_codebook
from videoiq.training import train

__all__ = ["evidence_rates", "format_table", "run_demo"]

METHOD = "VideoIQ"


def evidence_rates(
    actions: list[list[str]], evidence: np.ndarray, *, lowest: str, costs: Mapping[str, float]
) -> dict[str, float]:
    """How the policy treats evidence-free vs evidence frames: the share skipped, run at the lowest
    bit width (``lowest``, e.g. ``"2bit"``), either, and the mean relative cost (``costs``: the
    paper's ``min(b, 8)^2 / 64`` per action name). ``actions``: names per video and frame;
    ``evidence`` (N, T) bool: the frame shows the class."""
    names = np.array(actions)
    skip = np.char.startswith(names, "skip")
    low = names == lowest
    cost = np.vectorize(lambda a: costs[a], otypes=[float])(names)
    out: dict[str, float] = {}
    for group, mask in (("evidence_free", ~evidence), ("evidence", evidence)):
        n = max(int(mask.sum()), 1)
        out[f"{group}_frames"] = int(mask.sum())
        out[f"{group}_skip"] = float(skip[mask].sum() / n)
        out[f"{group}_lowest_bits"] = float(low[mask].sum() / n)
        out[f"{group}_skip_or_lowest"] = float((skip | low)[mask].sum() / n)
        out[f"{group}_relative_cost"] = float(cost[mask].sum() / n)
    return out


def _row(method: str, setting: str, ev: Evaluation, frames: float, **extra: object) -> ResultRow:
    m = ev.metrics
    return ResultRow(
        method=method,
        setting=setting,
        metrics={"top1": m["top1"], "map": m["map"]},
        gmacs_per_video=m["mean_gmacs"],
        frames_per_video=frames,
        videos_per_s=m["num_videos"] / max(ev.seconds, 1e-9),
        extra={"gbitops_per_video": m["mean_gbitops"], "gflops_paper": m.get("mean_gflops_paper"), **extra},
    )


def format_table(rows: list[ResultRow], reference: ResultRow) -> str:
    """Accuracy, frames run, GBitOPs (and their share of ``reference``'s), GMACs, videos/s."""
    width = max(len(r.label) for r in rows)
    ref_bitops = reference.extra["gbitops_per_video"]
    lines = [
        f"{'method':<{width}}  {'top-1 (%)':>9}  {'frames':>6}  {'GBitOPs':>9}  {'vs FP':>6}  "
        f"{'GMACs':>7}  {'videos/s':>8}"
    ]
    for r in rows:
        bitops = r.extra["gbitops_per_video"]
        lines.append(
            f"{r.label:<{width}}  {100 * r.metrics['top1']:>9.2f}  {r.frames_per_video:>6.2f}  {bitops:>9.3f}  "
            f"{bitops / ref_bitops:>6.1%}  {r.gmacs_per_video:>7.4f}  {r.videos_per_s:>8.1f}"
        )
    return "\n".join(lines)


def _evidence(info_root: Path, dataset: VideoClassificationDataset) -> np.ndarray:
    """(N, T) bool: which sampled frame of each video carries the class (the generator's meta.json)."""
    meta = json.loads((info_root / "meta.json").read_text())
    frames = {v["key"]: set(v["evidence_frames"]) for v in meta["videos"]}
    return np.array(
        [[f in frames[r.key] for f in dataset.frame_indices(i)] for i, r in enumerate(dataset.records)]
    )


def run_demo(cfg: DemoConfig, run_dir: Path) -> None:
    clock = StageClock()
    k = cfg.model.num_class
    spec = SyntheticSpec(
        storage=cfg.data.storage,
        num_videos=cfg.num_videos,
        num_classes=k,
        size=cfg.data.transform.resize,
        val_fraction=cfg.val_fraction,
    )
    info = generate(cfg.root, spec, progress=True)
    data = replace(
        cfg.data,
        format="list",
        path_frame=str(info.storage_path),
        path_classid=str(info.classes),
        path_label=str(info.train_list),
    )
    val_ds = build_dataset(replace(data, path_label=str(info.val_list)), num_classes=k)
    print(f"data: {info.storage_path} ({spec.num_videos} videos, {len(val_ds)} held out)")
    clock.lap("data")

    def stage(name: str, engine: EngineConfig, folder: str, loss: LossConfig = cfg.loss, **paths: str) -> str:
        """Train one stage into run_dir/folder; a finished run of the same settings there is reused."""
        tcfg = TrainConfig(
            stage=name,
            data=data,
            model=cfg.model,
            checkpoint=CheckpointConfig(**paths),
            loss=loss,
            optim=cfg.optim,
            engine=engine,
            output_dir=str(run_dir / folder),
        )
        text = config_to_yaml(tcfg)
        previous = run_dir / folder / "config.yaml"
        changed = changed_keys(previous.read_text(), text, ignore=RESUME_SAFE) if previous.is_file() else []
        if changed:
            raise RunDirError(
                f"{run_dir / folder} holds a stage run with other settings ({', '.join(changed)} changed); "
                "choose another --output_dir"
            )
        atomic_write_text(previous, text)
        print(f"stage {name} ({folder}): {engine.epochs} epoch(s)", flush=True)
        seed_everything(engine.seed, deterministic=engine.deterministic)  # before the model's init
        trained = train(tcfg, run_dir / folder)
        path = run_dir / folder / "model.pt"
        if trained is not None:
            save_model(trained.model, path, kind=trained.kind, config=text)
        clock.lap(f"stage {name} ({folder})")
        return str(path)

    fp = stage("fp", cfg.fp, "fp")
    ap = stage("ap", cfg.ap, "ap", init=fp, teacher=fp)
    pb = stage("policy_backbone", cfg.policy_backbone, "policy_backbone")
    policies = {
        w: stage(
            "policy",
            cfg.policy,
            f"policy-w{w:g}",
            replace(cfg.loss, efficient_w=w),
            init=ap,
            teacher=fp,
            policy_backbone=pb,
        )
        for w in cfg.efficient_ws
    }

    # evaluation on the held-out videos, decoded once
    device = resolve_device(cfg.fp.device)
    batches = cached_batches(val_ds, batch_size=data.train_batch_size)
    t = data.num_frames
    probe = build_videoiq(cfg.model)
    constants = formula_constants(probe, tuple(batches[0]["video"].shape[2:]), t)
    teacher = load_teacher(fp, cfg.model, "the fp stage's model")
    reference = _row(
        "full precision",
        f"float {cfg.model.arch}",
        evaluate_static(teacher, batches, device=device, constants=constants),
        t,
    )
    rows = [reference]
    anyp = build_any_precision(cfg.model)
    load_any_precision(anyp, ap, "the ap stage's model")
    for bits in cfg.model.bit_width_family:
        ev = evaluate_static(anyp, batches, device=device, bits=bits, constants=constants)
        rows.append(_row("any-precision", f"{bits} bits", ev, t))
    evidence = _evidence(Path(info.root), val_ds)
    lowest = f"{min(cfg.model.bit_width_family)}bit"
    rates = {}
    for w, path in policies.items():
        model = build_videoiq(cfg.model)
        load_model_file(model, path)
        ev = evaluate_videoiq(model, batches, device=device)
        ev.write(run_dir / f"policy-w{w:g}")
        codebook = efficiency_codebook(model.precision_bits, len(model.skip_list)).tolist()
        costs = dict(zip(action_names(model), codebook))
        rates[w] = evidence_rates([r["actions"] for r in ev.rows], evidence, lowest=lowest, costs=costs)
        kept = float(np.mean([sum(b > 0 for b in r["bits"]) for r in ev.rows]))
        rows.append(
            _row(
                METHOD,
                f"efficient_w={w:g}",
                ev,
                kept,
                policy_distribution=ev.metrics["policy_distribution"],
                **rates[w],
            )
        )
    clock.lap("evaluation")

    table = format_table(rows, reference)
    lines = [table, "GBitOPs, GMACs per video, measured; frames: frames run through the recogniser.", ""]
    lines.append(
        f"Frames skipped or run at {lowest[:-3]} bits, on evidence-free vs evidence frames "
        "(skipped / at the lowest bit width; mean relative cost per frame, min(b, 8)^2 / 64):"
    )
    for w, r in rates.items():
        parts = [
            f"{name} {r[f'{g}_skip_or_lowest']:.1%} ({r[f'{g}_skip']:.1%} / {r[f'{g}_lowest_bits']:.1%}; "
            f"cost {r[f'{g}_relative_cost']:.3f})"
            for name, g in (("evidence-free frames", "evidence_free"), ("evidence frames", "evidence"))
        ]
        lines.append(f"  efficient_w={w:g}: {parts[0]} vs {parts[1]}")
    verdict = _verdict(rows, reference, rates)
    lines += ["", verdict]
    text = "\n".join(lines)
    print("\n" + text)
    atomic_write_text(run_dir / "results.txt", text + "\n")
    write_results(run_dir / "results.json", rows)
    _plot(rows, reference, run_dir / "tradeoff.png")
    total = clock.total
    atomic_write_json(run_dir / "timing.json", {"seconds": total, "stages": clock.stages})
    print(
        f"wrote {run_dir / 'results.txt'}, {run_dir / 'results.json'}, {run_dir / 'tradeoff.png'}; "
        f"total time {total:.0f} s"
    )


def _verdict(rows: list[ResultRow], reference: ResultRow, rates: dict[float, dict[str, float]]) -> str:
    ref_acc, ref_bitops = reference.metrics["top1"], reference.extra["gbitops_per_video"]
    ours = [r for r in rows if r.method == METHOD]
    passing = [
        (r, w)
        for r, w in zip(ours, rates)
        if r.metrics["top1"] >= ref_acc - 0.01
        and r.extra["gbitops_per_video"] <= 0.5 * ref_bitops
        and rates[w]["evidence_free_skip_or_lowest"] > rates[w]["evidence_skip_or_lowest"]
    ]
    if not passing:
        return (
            "Target NOT met: no efficiency weight gives VideoIQ within 1 point of the full-precision model "
            "at <= 50% of its BitOPs with more evidence-free than evidence frames skipped or at the lowest bit width."
        )
    best, w = min(passing, key=lambda p: p[0].extra["gbitops_per_video"])
    return (
        f"Target met by VideoIQ with {best.setting}: top-1 {100 * best.metrics['top1']:.2f} vs "
        f"{100 * ref_acc:.2f} for the full-precision model, at "
        f"{best.extra['gbitops_per_video'] / ref_bitops:.1%} of its BitOPs; it skips or runs at the lowest "
        f"bit width {rates[w]['evidence_free_skip_or_lowest']:.1%} of the evidence-free frames vs "
        f"{rates[w]['evidence_skip_or_lowest']:.1%} of the evidence frames."
    )


def _plot(rows: list[ResultRow], reference: ResultRow, path: Path) -> None:
    def series(method: str, name: str) -> Series:
        group = [r for r in rows if r.method == method]
        return Series(
            name,
            [r.extra["gbitops_per_video"] for r in group],
            [100 * r.metrics["top1"] for r in group],
            labels=[r.setting for r in group],
        )

    plot_tradeoff(
        [series(METHOD, METHOD), series("any-precision", "any-precision, every frame at one bit width")],
        path,
        baselines=[
            Point(reference.label, reference.extra["gbitops_per_video"], 100 * reference.metrics["top1"])
        ],
        title="VideoIQ on the synthetic benchmark",
        xlabel="GBitOPs per video",
        ylabel="top-1 (%)",
    )
