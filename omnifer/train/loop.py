"""The training loop: a teacher on ground truth, a student on ground truth + soft labels.

Reads top to bottom: split, model config, image cache, (teacher soft labels), then per
ensemble member the epochs (sample, augment, forward under autocast, masked multitask loss,
clip, step), validation, best checkpoint, resumable state, and finally calibration.

Run directory layout::

    split.json                    validation sample ids
    teacher_targets.pt            student only: the teacher's soft labels per training sample
    members/<k>/model/            best checkpoint (model.json + model.safetensors), calibrated
    members/<k>/state.pt          last epoch's training state (``--resume``)
    members/<k>/history.json      per-epoch losses, validation metrics, timings
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnifer.allocator import keep_freed_memory
from omnifer.artifacts import atomic_path, atomic_write_json, read_json
from omnifer.data.batches import BatchMaker
from omnifer.data.cache import decoded_images
from omnifer.data.samplers import balance_report, balance_weights, source_shares
from omnifer.data.table import LabeledSet
from omnifer.errors import OmniferError, one_line
from omnifer.labels import TASKS
from omnifer.models import (ModelConfig, MultitaskModel, build_model, load_checkpoint,
                            load_models, resolve_device, save_checkpoint)
from omnifer.train import evaluate as E
from omnifer.train.calibration import fit_temperature
from omnifer.train.config import TrainConfig, check_processes
from omnifer.train.distributed import Ranks, gather_parts
from omnifer.train.losses import LossConfig, au_pos_weight, multitask_loss, soft_targets
from omnifer.train.relabel import Relabeler, relabeler_for
from omnifer.train.split import split_validation
from omnifer.train.stopping import should_stop

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
LABEL_KEYS = ("expression", "expression_mask", "va", "va_mask", "au", "au_mask", "weight")


@dataclass
class TrainResult:
    run_dir: Path
    members: list[Path]
    model_config: ModelConfig
    validation: list[dict[str, Any]]  #: per member, after calibration
    #: the members' mean on the validation rows, with calibration and uncertainty
    ensemble_validation: dict[str, Any]
    history: list[list[dict[str, Any]]]
    counts: dict[str, Any]
    balance: dict[str, Any] | None
    seconds: float


def model_config_for(labeled: LabeledSet, config: TrainConfig,
                     teacher: ModelConfig | None = None) -> ModelConfig:
    """The label spaces and heads of the model ``config`` trains on ``labeled``."""
    m = labeled.masks()
    present = {"expression": m["expression"].any(), "va": m["va"].any(), "au": m["au"].any()}
    if teacher is None:
        tasks = config.tasks or tuple(t for t in TASKS if present[t])
        if not any(present[t] for t in tasks):
            raise OmniferError(
                f"the training data ({len(labeled)} samples from {', '.join(labeled.sources)}) "
                f"has no label for any of the tasks {', '.join(tasks)}; point --data at labeled "
                "data (`omnifer data check` shows what each source labels)"
            )
        aus = labeled.aus if "au" in tasks else ()
        expressions, va_head, va_bins = labeled.expressions, config.va_head, config.va_bins
    else:
        E.check_expressions(labeled, teacher.expressions, "teacher")
        E.check_aus(labeled.aus, teacher.aus)
        tasks, aus, expressions = teacher.tasks, teacher.aus, teacher.expressions
        va_head, va_bins = teacher.va_head, teacher.va_bins
        if config.tasks is not None and set(config.tasks) != set(tasks):
            raise OmniferError(
                f"the student's tasks ({', '.join(config.tasks)}) differ from the teacher's "
                f"({', '.join(tasks)}); drop --tasks or pick a teacher with the same tasks"
            )
        if (config.va_head, config.va_bins) != (va_head, va_bins) and "va" in tasks:
            raise OmniferError(
                f"the teacher's valence/arousal head is {va_head} ({va_bins} bins) but the "
                f"student asks for {config.va_head} ({config.va_bins} bins); use --va-head "
                f"{va_head} for this teacher"
            )
    return ModelConfig(backbone=config.backbone, expressions=expressions, aus=aus,
                       tasks=tuple(tasks), va_head=va_head, va_bins=va_bins, joint=config.joint,
                       input_size=config.input_size, dropout=config.dropout)


def teacher_soft_targets(teachers: Sequence[MultitaskModel], maker: BatchMaker, n: int, *,
                         temperature: float, embeddings: bool = False, batch_size: int = 256
                         ) -> dict[str, torch.Tensor]:
    """The ensemble's soft labels for every row, computed once on un-augmented images (with
    ``embeddings``, each member's embedding too, for the structural distillation)."""
    parts: dict[str, list[torch.Tensor]] = {}
    for t in teachers:
        t.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = maker(np.arange(start, min(n, start + batch_size)))
            targets = soft_targets([t(x) for t in teachers], temperature,
                                   embeddings=embeddings)
            for k, v in targets.items():
                parts.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def train(labeled: LabeledSet, out_dir: str | Path, *, config: TrainConfig,
          cache_dir: str | Path, teachers: Sequence[MultitaskModel] = (),
          soft_targets: dict[str, torch.Tensor] | None = None,
          progress: Progress | None = None, generation: int = 0,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          ranks: Ranks = Ranks(), val_sources: Sequence[str] | None = None) -> TrainResult:
    """Train ``config.ensemble`` models on ``labeled`` into ``out_dir``; resume what is there.

    ``soft_targets``: precomputed per-row targets in the form of :func:`teacher_soft_targets`
    (e.g. ``{"expression": probs [N, C]}`` at ``config.temperature``), used instead of
    ``teachers`` in the distillation terms of the loss. ``generation`` gives the members of
    each generation their own seeds (the validation split stays the same). ``ranks``: this
    process's place in data-parallel training (:mod:`omnifer.train.distributed`); only rank 0
    writes, and only its result carries validation metrics. ``val_sources``: the sources that
    give validation rows (None: every source); ``config.val_from="data"`` needs them, as only
    the caller knows which sources are the labeled data (:func:`omnifer.pipeline.train` does)."""
    keep_freed_memory()  # each step reuses the last one's buffers
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    device = ranks.device(resolve_device(config.device))
    check_processes(config.batch_size, ranks.world)
    if config.val_from == "data" and val_sources is None:
        raise OmniferError("val_from='data' needs the names of the labeled data's sources; pass "
                           "val_sources=labeled_set.sources, or train with omnifer.pipeline.train")
    if len(labeled) < 2:
        raise OmniferError(f"the training data has {len(labeled)} sample(s); it needs at least 2")
    if teachers and soft_targets is not None:
        raise OmniferError("train() got both teachers and soft_targets; pass one source of soft "
                           "labels")
    mcfg = model_config_for(labeled, config, teachers[0].config if teachers else None)
    relabeler = relabeler_for(labeled, config, [t.to(device) for t in teachers], mcfg)

    train_rows, val_rows = split_validation(labeled, config.val_fraction, config.seed,
                                           val_sources)
    if ranks.main:
        atomic_write_json(out_dir / "split.json", {
            "val_sample_ids": labeled.table["sample_id"].to_numpy()[val_rows].tolist()})
    arrays = E.align_aus(labeled.arrays(), labeled.aus, mcfg.aus)
    labels = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in LABEL_KEYS}
    images = decoded_images(labeled, mcfg.input_size, cache_dir)
    maker = BatchMaker(images, mean=mcfg.mean, std=mcfg.std, device=device)

    targets = None if soft_targets is None else _check_targets(soft_targets, len(labeled), mcfg)
    if teachers:
        path = out_dir / "teacher_targets.pt"  # computed once, by rank 0, read by all
        if ranks.main and not path.is_file():
            tcfg = teachers[0].config  # the teachers see images at their own input size
            teacher_maker = maker if tcfg.input_size == mcfg.input_size else BatchMaker(
                decoded_images(labeled, tcfg.input_size, cache_dir), mean=tcfg.mean,
                std=tcfg.std, device=device)
            targets = teacher_soft_targets([t.to(device) for t in teachers], teacher_maker,
                                           len(labeled), temperature=config.temperature,
                                           embeddings="structural" in config.kd)
            save_torch(targets, path)
        ranks.barrier()
        targets = torch.load(path, weights_only=True)

    sub = {k: v[train_rows] for k, v in arrays.items()}
    weights, balance = None, None
    if config.balance:
        weights = balance_weights(sub, strategies=config.balance,
                                  max_ratio=config.balance_max_ratio)
    draws = len(train_rows)  # samples drawn per epoch
    if config.source_share:
        shares = dict(config.source_share)
        sources = labeled.table["source"].to_numpy(object)[train_rows]
        weights = source_shares(weights, sources, shares)
        others = int((~np.isin(sources, list(shares))).sum())
        if others:  # the other sources keep their draws per epoch; the epoch grows
            draws = round(others / (1 - sum(shares.values())))
    if weights is not None:
        balance = balance_report(sub, weights, mcfg.expressions)
    pos_weight = au_pos_weight(torch.from_numpy(sub["au"]), torch.from_numpy(sub["au_mask"])
                               ).to(device) if mcfg.aus else None
    loss_cfg = LossConfig(
        expression=config.expression_weight, va=config.va_weight, au=config.au_weight,
        joint=config.joint_weight, gt=config.gt_weight, kd=config.kd_weight,
        temperature=config.temperature, va_loss=config.va_loss,
        output_kd="output" in config.kd,
        structural=config.structural_weight if "structural" in config.kd else 0.0,
        anchors=config.anchors, anchor_rule=config.anchor_rule,
        epsilon=config.sinkhorn_epsilon, iterations=config.sinkhorn_iterations)

    steps = max(1, draws // config.batch_size)
    total_steps = steps * config.epochs * config.ensemble
    members, histories, validation = [], [], []
    for k in range(config.ensemble):
        member_dir = out_dir / "members" / str(k)
        history, val = _train_member(
            k, member_dir, seed=config.seed + 1009 * k + 7919 * generation, mcfg=mcfg, config=config, device=device, maker=maker, labels=labels,
            targets=targets, relabeler=relabeler, train_rows=train_rows, val_rows=val_rows,
            arrays=arrays, weights=weights, draws=draws, loss_cfg=loss_cfg, pos_weight=pos_weight,
            steps=steps,
            progress=(lambda done, _t, k=k: progress(k * steps * config.epochs + done,
                                                     total_steps)) if progress else None,
            on_epoch=on_epoch, ranks=ranks)
        members.append(member_dir / "model")
        histories.append(history)
        validation.append(val)
    val_src = labeled.table["source"].to_numpy(object)[val_rows]
    counts = {"samples": len(labeled), "train": len(train_rows), "val": len(val_rows),
              "val_by_source": {s: int((val_src == s).sum()) for s in labeled.sources
                                if (val_src == s).any()},
              "draws_per_epoch": draws,
              "members": config.ensemble, **{f"labeled_{t}": int(m.any(axis=-1).sum()
                                             if m.ndim > 1 else m.sum())
                                             for t, m in labeled.masks().items()}}
    ensemble_val = _ensemble_validation(members, maker, val_rows, arrays, device) \
        if ranks.main else {}
    return TrainResult(out_dir, members, mcfg, validation, ensemble_val, histories, counts,
                       balance, time.perf_counter() - t_start)


def _ensemble_validation(members: Sequence[Path], maker: BatchMaker, val_rows: np.ndarray,
                         arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, Any]:
    """Metrics of the calibrated members' mean on the validation rows (``{}`` without any)."""
    if not len(val_rows):
        return {}
    models = [load_checkpoint(p, device=device) for p in members]
    preds = [E.predict(m, maker, val_rows) for m in models]
    return E.task_metrics(E.ensemble(models, preds), _rows(arrays, val_rows),
                          expressions=models[0].config.expressions, aus=models[0].config.aus)


def _check_targets(targets: dict[str, torch.Tensor], n: int, mcfg: ModelConfig
                   ) -> dict[str, torch.Tensor]:
    """Precomputed soft targets as float tensors, one row per sample; else one line."""
    shapes = {"expression": (n, len(mcfg.expressions))}
    out = {}
    for key, value in targets.items():
        t = torch.as_tensor(value).float().cpu()
        want = shapes.get(key, (n, *t.shape[1:]))
        if tuple(t.shape) != want:
            raise OmniferError(f"soft_targets[{key!r}] has shape {tuple(t.shape)}; expected "
                               f"{want} (one row per sample, one column per class)")
        out[key] = t
    return out


def _lr_lambda(config: TrainConfig, steps: int) -> Callable[[int], float]:
    warmup = max(1, int(config.warmup_epochs * steps))
    total = max(warmup + 1, config.epochs * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
    return factor


def _train_member(k: int, member_dir: Path, *, seed: int, mcfg: ModelConfig,
                  config: TrainConfig, device: torch.device, maker: BatchMaker,
                  labels: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None,
                  relabeler: Relabeler | None, train_rows: np.ndarray, val_rows: np.ndarray,
                  arrays: dict[str, np.ndarray], weights: np.ndarray | None,
                  draws: int, loss_cfg: LossConfig, pos_weight: torch.Tensor | None, steps: int,
                  progress: Progress | None, on_epoch: Callable[[dict[str, Any]], None] | None,
                  ranks: Ranks) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    state_path, ckpt_dir = member_dir / "state.pt", member_dir / "model"
    model = build_model(mcfg, weights=config.weights, seed=seed).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = ranks.wrap(model, device)  # before the optimizer: it may replace batch norms
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, steps))
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    gen = torch.Generator().manual_seed(seed)
    st: dict[str, Any] = {"epoch": 0, "best": -math.inf, "bad_epochs": 0, "done": False,
                          "history": []}
    if state_path.is_file():
        try:
            saved = torch.load(state_path, weights_only=True, map_location=device)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generator"])
            st = saved["state"]
        except Exception as exc:  # any damage: truncated, foreign or from another model
            raise OmniferError(
                f"training state {state_path} is damaged ({one_line(exc)}); run again with "
                "--fresh to start a new run (or delete the file to restart this member)"
            ) from None
        log.info("member %d: resuming after epoch %d", k, st["epoch"])
    if progress:
        progress(st["epoch"] * steps, 0)

    train_t = torch.from_numpy(train_rows)
    sample_w = torch.from_numpy(weights) if weights is not None else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        while not st["done"] and st["epoch"] < config.epochs:
            torch.manual_seed(seed + st["epoch"])  # dropout: the same after a resume
            net.train()
            if sample_w is not None:
                order = train_t[torch.multinomial(sample_w, draws, True, generator=gen)]
            else:
                order = train_t[torch.randperm(len(train_t), generator=gen)]
            sums: dict[str, torch.Tensor] = {}
            t0 = time.perf_counter()
            for step in range(steps):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                part = ranks.part(len(idx)) if ranks.world > 1 else None
                x = maker(idx.numpy(), generator=gen if config.augment else None, part=part)
                batch = {key: v[idx].to(device, non_blocking=True) for key, v in labels.items()}
                teacher = ({key: v[idx].to(device, non_blocking=True) for key, v in targets.items()}
                           if targets is not None else None)
                if relabeler is not None and teacher is not None:
                    x, teacher = relabeler(idx, x, teacher, gen, part)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    out = net(x)
                out = gather_parts({key: v.float() for key, v in out.items()})
                losses = multitask_loss(out, batch, config=loss_cfg, au_pos_weight=pos_weight,
                                        teacher=teacher)
                opt.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
                if config.clip_grad > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                scaler.step(opt)
                scaler.update()
                sched.step()
                for key, v in losses.items():
                    sums[key] = sums.get(key, 0.0) + v.detach()
                if progress:
                    progress(st["epoch"] * steps + step + 1, 0)
            train_seconds = time.perf_counter() - t0
            losses_mean = {key: float(v) / steps for key, v in sums.items()}
            st["epoch"] += 1
            entry = {"member": k, "epoch": st["epoch"], "loss": losses_mean,
                     "train_seconds": train_seconds, "train_samples": steps * config.batch_size,
                     "lr": sched.get_last_lr()[0]}
            if len(val_rows):
                pred = ranks.gather_rows(lambda rows: E.predict(model, maker, rows), val_rows)
                val = E.task_metrics(E.ensemble([model], [pred]), _rows(arrays, val_rows),
                                     expressions=mcfg.expressions, aus=mcfg.aus)
                entry["val_score"] = E.score(val)
                entry["val"] = _brief(val)
            else:
                entry["val_score"] = -losses_mean["total"]
            entry["best"] = entry["val_score"] > st["best"]
            if entry["best"]:
                st["best"], st["bad_epochs"] = entry["val_score"], 0
                if ranks.main:
                    save_checkpoint(model, ckpt_dir)
            else:
                st["bad_epochs"] += 1
            st["history"].append(entry)
            if should_stop(k, st, config, sched.get_last_lr()[0] / config.lr):
                st["done"] = True
            if ranks.main:
                _save_state(state_path, model, opt, sched, gen, st)
                atomic_write_json(member_dir / "history.json", st["history"])
            if on_epoch:
                on_epoch(entry)

    val: dict[str, Any] = {}
    if ranks.main:
        model = load_checkpoint(ckpt_dir, device=device)
        val = _calibrate(model, maker, val_rows, arrays)
        save_checkpoint(model, ckpt_dir)
        if not st["done"]:
            st["done"] = True
            _save_state(state_path, model, opt, sched, gen, st)
    ranks.barrier()  # the member's checkpoint is written before any rank goes on
    return st["history"], val


def _calibrate(model: MultitaskModel, maker: BatchMaker, val_rows: np.ndarray,
               arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit the temperature and AU thresholds on validation; return validation metrics."""
    from omnifer.metrics import tune_thresholds

    if not len(val_rows):
        return {}
    pred, a = E.predict(model, maker, val_rows), _rows(arrays, val_rows)
    m = a["expression_mask"]
    temperature = fit_temperature(pred["expression"][m], a["expression"][m]) \
        if "expression" in pred and m.sum() >= 10 else None
    thresholds = tuple(tune_thresholds(a["au"], 1 / (1 + np.exp(-pred["au"])), a["au_mask"])) \
        if "au" in pred else None
    model.calibrated(temperature=temperature, au_thresholds=thresholds)
    return E.task_metrics(E.ensemble([model], [pred]), a, expressions=model.config.expressions,
                          aus=model.config.aus)


def _rows(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in arrays.items()}


def _brief(result: dict[str, Any]) -> dict[str, float]:
    keys = {"expression": ("accuracy", "macro_f1"), "va": ("ccc_mean",), "au": ("f1_mean",)}
    return {f"{t}_{k}": result[t][k] for t, ks in keys.items() if t in result for k in ks}


def _save_state(path: Path, model: torch.nn.Module, opt: Any, sched: Any,
                gen: torch.Generator, st: dict[str, Any]) -> None:
    save_torch({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(), "state": st}, path)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through an ordinary atomic write, so that a full disk is one line
    (torch's own file writer reports it as a bare RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def history_of(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every member's per-epoch history of a train run."""
    out = []
    for p in sorted(Path(run_dir).glob("members/*/history.json")):
        out.extend(read_json(p))
    return out
