"""The training engine: a generator of progress records, resumable, scalable with torchrun.

Phases (ADL paper section III-C): the denoiser warms up on its multiscale loss, the discriminator
warms up against the denoiser's outputs, then both train alternately, the denoiser receiving the
adversarial term. Any :class:`~napari_adl_denoise.models.Denoiser` trains here; the adaptive
CNN's clean-to-clean phase comes first when asked for (``phases.clean_to_clean``). Validation
PSNR (on fixed noisy patches) drives ReduceLROnPlateau in "max" mode and picks the best weights,
which are kept in the core weights format at all times (with ``keep: last``, for IDGAN's detail
loss, the latest validated weights instead, at constant learning rates).

Run under ``torchrun --nproc_per_node=K`` the same entry point trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); ``batch_size`` is per process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import pickle
import platform
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .. import __version__
from .._device import resolve_device
from .._files import atomic_path
from ..metrics import psnr as psnr_metric
from ..metrics import ssim as ssim_metric
from ..models import build_discriminator, build_model
from ..weights import save_model
from .config import TrainingConfig
from .data import Batch, make_sampler
from .features import content_loss, load_feature_network
from .losses import adversarial_loss, denoiser_loss, discriminator_loss
from .self_supervised import blind_spot_loss, neighbor2neighbor_loss, neighbour_pair, neighbour_score
from .surgery import inflate_weights

__all__ = ["TrainProgress", "train"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
STOP = "stop"
"""Sent into a single-process run (``run.send(STOP)``): it scores the latest weights if the step
was not a validation one, checkpoints and returns the model file as it stands (the best weights
so far), as if it had finished; closing the generator instead stops it without a return value."""


@dataclass(frozen=True)
class TrainProgress:
    """One record per training step; ``validation`` is set on the steps that validated.

    A run that starts from ``init`` weights first yields a step-0 record (phase ``"init"``) with
    their validation scores; they are the best weights until a step beats them.
    """

    phase: str
    step: int
    """Steps completed so far."""
    total: int
    losses: dict[str, float]
    lr: float
    elapsed: float
    """Seconds of training, summed over resumed sessions."""
    validation: dict[str, float] | None = None
    rank: int = 0

    @property
    def fraction(self) -> float:
        return self.step / self.total


@dataclass
class _State:
    step: int = 0
    best_psnr: float = -math.inf
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class _Distributed:
    """Process-group bookkeeping; a single process when not launched by torchrun."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owns_group = False
        if self.world > 1:
            use_cuda = torch.cuda.is_available() and device != "cpu"
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            if not dist.is_initialized():
                dist.init_process_group("nccl" if use_cuda else "gloo")
                self.owns_group = True
            self.device = (
                torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
            )
        else:
            self.device = resolve_device(device)

    def broadcast(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, 0)
        return float(tensor.item())

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _frozen_norm_statistics(module: torch.nn.Module) -> Iterator[None]:
    """Batch norm normalises by the batch as in training, but its running statistics stay as
    they are: a fake-only batch (the denoiser's adversarial term) must not shift them."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


class _Trainer:
    def __init__(
        self, config: TrainingConfig, resume: bool, device: str, images: Mapping[str, list] | None = None
    ) -> None:
        self.config = config
        self.dist = _Distributed(device)
        self.device = self.dist.device
        self.out = config.output_dir
        self.model_path = self.out / f"{config.name}.safetensors"
        torch.manual_seed(config.seed)
        self.generator = build_model(config.model).to(self.device)
        self.discriminator = build_discriminator(config.discriminator).to(self.device)
        self.features = (  # the content loss's frozen feature network (IDGAN), checked up front
            load_feature_network(
                config.loss.feature_net, config.model.in_channels, config.model.spatial_dims
            ).to(self.device)
            if config.loss.content
            else None
        )
        o = config.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=o.lr, betas=o.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=o.discriminator_lr, betas=o.betas)
        plateau = {
            "mode": "max",
            "factor": o.plateau_factor,
            "patience": o.plateau_patience,
            "min_lr": o.min_lr,
        }
        self.sched_g = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt_g, **plateau)
        self.sched_d = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt_d, **plateau)

        sd, channels = config.model.spatial_dims, config.model.in_channels
        data = config.data
        sources = {
            "train": data.train,
            "val": data.val,
            "train_targets": data.train_targets,
            "val_targets": data.val_targets,
            **(images or {}),
        }
        self.sampler = make_sampler(
            sources["train"],
            sources["train_targets"],
            sd,
            channels,
            data,
            config.noise,
            np.random.default_rng([config.seed, self.dist.rank]),
            guide=getattr(config.model, "guide", None),
        )
        self.self_supervised = data.mode == "noisy"
        self.torch_rng = torch.Generator().manual_seed(config.seed + self.dist.rank)
        self.val = None
        if self.dist.rank == 0:
            val_sampler = make_sampler(
                sources["val"],
                sources["val_targets"],
                sd,
                channels,
                data.model_copy(update={"augment": False}),
                config.noise,
                np.random.default_rng([config.seed, 2**31]),
                guide=getattr(config.model, "guide", None),
            )
            self.val = val_sampler.batch(data.val_patches)
            if self.self_supervised:  # one fixed choice of neighbours: scores comparable over steps
                self.val_pairs = neighbour_pair(
                    self.val.noisy.shape, torch.Generator().manual_seed(config.seed)
                )
            # (a guided network's input also holds its guide's channels)
            self.noisy_scores = self._scores(self.val.noisy, lambda x: x[:, :channels])

        self.state = _State()
        checkpoint = self.out / CHECKPOINT
        if config.init and not (resume and checkpoint.is_file()):
            self.generator.load_state_dict(inflate_weights(config.init, self.generator))
        if resume and checkpoint.is_file():
            self._load(checkpoint)
        elif resume:
            raise FileNotFoundError(f"no checkpoint to resume in {self.out}; start the run without resume")
        elif checkpoint.exists() or self.model_path.exists():
            raise FileExistsError(f"{self.out} already holds a run; resume it or choose another output")
        if self.dist.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        self.g_train = self._wrap(self.generator)
        self.d_train = self._wrap(self.discriminator)
        self.checkpointed_at = self.state.step

    # -- steps ---------------------------------------------------------------------------------
    def _self_supervised_step(self, batch: Batch) -> dict[str, float]:
        w = self.config.loss
        self.generator.train()
        with _autocast(self.device, self.config.amp):
            if w.self_supervised == "blind_spot":
                loss, parts = blind_spot_loss(self.g_train, batch.noisy, generator=self.torch_rng)
            else:
                loss, parts = neighbor2neighbor_loss(self.g_train, batch.noisy, w.gamma, self.torch_rng)
        return self._update_denoiser(loss.float(), parts)

    def _generator_step(self, batch: Batch, phase: str) -> dict[str, float]:
        if self.self_supervised:
            return self._self_supervised_step(batch)
        w = self.config.loss
        self.generator.train()
        source = batch.target if phase == "clean" else batch.noisy  # clean-to-clean: x -> x
        with _autocast(self.device, self.config.amp):
            outputs = self.g_train(source, multiscale=True)
        outputs = tuple(o.float() for o in outputs)
        loss, parts = denoiser_loss(
            outputs,
            batch.target,
            l1=w.l1,
            mse=w.mse,
            atw=w.atw,
            histogram=w.histogram,
            atw_levels=w.atw_levels,
            histogram_bins=w.histogram_bins,
        )
        if w.lp and phase != "clean":
            penalty = self.generator.regulariser()
            loss = loss + w.lp * penalty
            parts["lp"] = float(penalty.detach())
        if w.stage:  # a two-stage network's first stage, on its own objective
            stage = self.generator.stage_loss(source, batch.target)
            loss = loss + w.stage * stage
            parts["stage"] = float(stage.detach())
        if self.features is not None and phase != "clean":
            content = content_loss(self.features, outputs[0], batch.target)
            loss = loss + w.content * content
            parts["content"] = float(content.detach())
        if phase == "adversarial" and w.adversarial:
            self.discriminator.requires_grad_(False)
            with _autocast(self.device, self.config.amp), _frozen_norm_statistics(self.discriminator):
                fake_maps = self.discriminator(outputs[0])  # the fake is G(y), and G gets the gradient
            adv = adversarial_loss(tuple(m.float() for m in fake_maps), w.gan)
            self.discriminator.requires_grad_(True)
            phases = self.config.phases
            ramp = 1 + w.adversarial_ramp * (self.state.step - phases.adversarial_start) / phases.adversarial
            loss = loss + w.adversarial * ramp * adv
            parts["adversarial"] = float(adv.detach())
        return self._update_denoiser(loss, parts)

    def _update_denoiser(self, loss: torch.Tensor, parts: dict[str, float]) -> dict[str, float]:
        if not torch.isfinite(loss):
            raise ValueError(f"training diverged at step {self.state.step + 1}; lower the learning rate")
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return {**parts, "denoiser": float(loss.detach())}

    def _discriminator_step(self, batch: Batch) -> dict[str, float]:
        self.generator.eval()  # no batch-norm statistics updates from this pass
        with torch.no_grad(), _autocast(self.device, self.config.amp):
            fake = self.generator(batch.noisy).float()
        self.discriminator.train()
        n = batch.target.shape[0]
        with _autocast(self.device, self.config.amp):
            maps = self.d_train(torch.cat([batch.target, fake]))  # one pass: DDP allows one forward
        maps = tuple(m.float() for m in maps)
        loss = discriminator_loss(
            tuple(m[:n] for m in maps), tuple(m[n:] for m in maps), self.config.loss.gan
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"discriminator": float(loss.detach())}

    # -- validation ----------------------------------------------------------------------------
    def _scores(self, noisy: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Scores of ``model`` on the validation patches, on the images' [0, 1] scale: PSNR/SSIM
        against the clean patches, or without clean data (mode noisy) the neighbour score, which
        is also the run's ``score`` (the objective that picks the kept weights)."""
        val = self.val
        size = self.config.data.batch_size
        if self.self_supervised:
            first, second = self.val_pairs
            scores = [
                neighbour_score(
                    model,
                    noisy[i : i + size],
                    (first[i : i + size], second[i : i + size]),
                    val.scale[i : i + size],
                )
                for i in range(0, len(noisy), size)
            ]
            return {"score": float(np.mean(scores))}
        restored = torch.cat([model(noisy[i : i + size]) for i in range(0, len(noisy), size)])
        if not torch.isfinite(restored).all():
            raise ValueError(f"training diverged by step {self.state.step}; lower the learning rate")
        expand = (slice(None),) + (None,) * (restored.ndim - 1)
        restored = (restored * val.scale[expand] + val.lo[expand]).numpy()
        clean = val.clean.numpy()
        channel_axis = 0 if clean.shape[1] > 1 else None
        psnrs, ssims = [], []
        for r, c in zip(restored, clean, strict=True):
            r, c = (r, c) if channel_axis == 0 else (r[0], c[0])
            psnrs.append(psnr_metric(c, r, data_range=1.0))
            ssims.append(ssim_metric(c, r, data_range=1.0, channel_axis=channel_axis))
        psnr = float(np.mean(psnrs))
        return {"psnr": psnr, "ssim": float(np.mean(ssims)), "score": psnr}

    def _validate(self) -> dict[str, float] | None:
        """Scores on the fixed validation patches (on rank 0; other ranks get None)."""
        if self.dist.rank != 0:
            return None
        self.generator.eval()

        def model(x: torch.Tensor) -> torch.Tensor:  # scored on the CPU, where the patches are
            with _autocast(self.device, self.config.amp):
                return self.generator(x.to(self.device)).float().cpu()

        with torch.no_grad():
            scores = self._scores(self.val.noisy, model)
        if not math.isfinite(scores["score"]):
            raise ValueError(f"training diverged by step {self.state.step}; lower the learning rate")
        return scores | {f"noisy_{k}": v for k, v in self.noisy_scores.items()}

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel over several processes, else the module itself."""
        return torch.nn.parallel.DistributedDataParallel(module) if self.dist.world > 1 else module

    def _enter(self, phase: str) -> None:
        """Adapt the denoiser to ``phase``; the adversarial phase may start at its own rate."""
        trainable = [p.requires_grad for p in self.generator.parameters()]
        self.generator.set_training_phase(phase, learnt_features=self.config.phases.clean_to_clean > 0)
        if trainable != [p.requires_grad for p in self.generator.parameters()]:
            self.g_train = self._wrap(self.generator)  # DDP syncs the parameters trainable when wrapped
        lr = self.config.optim.adversarial_lr
        if phase == "adversarial" and lr and self.state.step == self.config.phases.adversarial_start:
            for group in self.opt_g.param_groups:
                group["lr"] = lr

    # -- persistence ---------------------------------------------------------------------------
    def _keep_if_best(self, phase: str, validation: dict[str, float] | None) -> None:
        """Record the scores (rank 0) and save the denoiser if it is the best so far (with
        ``keep: last``, always)."""
        if self.dist.rank != 0:
            return
        self.state.history.append({"step": self.state.step, "phase": phase, **validation})
        best = validation["score"] > self.state.best_psnr
        if best:
            self.state.best_psnr = validation["score"]
        if best or self.config.keep == "last":
            dtype = getattr(torch, self.config.weights_dtype)
            save_model(self.generator, self.model_path, self._card(validation), dtype=dtype)

    def _card(self, scores: dict[str, float]) -> dict[str, Any]:
        c = self.config
        hardware = (
            torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        )
        return {
            "description": c.description or f"{c.model.kind} trained by napari-adl-denoise ({c.name})",
            "training_data": sorted(str(p) for p in c.data.train),
            "validation_data": sorted(str(p) for p in c.data.val),
            "noise": [spec.model_dump() for spec in c.noise],
            "steps": self.state.step,
            "phases": c.phases.model_dump(),
            "validation": scores,
            "wall_time_s": round(self.state.elapsed, 1),
            "hardware": f"{hardware} x{self.dist.world}, torch {torch.__version__}",
            "parameters": sum(p.numel() for p in self.generator.parameters()),
            "training_config": c.model_dump(mode="json"),
        }

    def _save_checkpoint(self) -> None:
        rng = self.dist.gather(self.sampler.rng.bit_generator.state)
        if self.dist.rank != 0:
            return
        payload = {
            "format": "napari-adl-denoise-checkpoint/1",
            "package_version": __version__,
            "model_config": self.config.model.model_dump(mode="json"),
            "discriminator_config": self.config.discriminator.model_dump(mode="json"),
            "world_size": self.dist.world,
            "step": self.state.step,
            "best_psnr": self.state.best_psnr,
            "elapsed": self.state.elapsed,
            "history": self.state.history,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "rng": rng,
            "torch_rng": torch.get_rng_state(),
            "self_supervised_rng": self.torch_rng.get_state(),
        }
        with atomic_path(self.out / CHECKPOINT) as tmp:
            torch.save(payload, tmp)
        self.checkpointed_at = self.state.step

    def _load(self, path: Path) -> None:
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)  # no code from pickle
        except pickle.UnpicklingError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "unsafe content"
            raise ValueError(f"{path} was refused by the safe loader ({first[:200]})") from None
        except (RuntimeError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is truncated or not a checkpoint; delete it to start over") from exc
        if payload.get("model_config") != self.config.model.model_dump(mode="json"):
            raise ValueError(
                f"{path} was trained with another model config; it cannot be resumed with this one"
            )
        saved = payload.get("discriminator_config")  # absent in checkpoints before IDGAN
        if saved is not None and saved != self.config.discriminator.model_dump(mode="json"):
            raise ValueError(
                f"{path} was trained with another discriminator config; it cannot be resumed with this one"
            )
        if payload["world_size"] != self.dist.world:
            raise ValueError(
                f"{path} was written by {payload['world_size']} processes, not {self.dist.world}"
            )
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])
        self.sched_g.load_state_dict(payload["sched_g"])
        self.sched_d.load_state_dict(payload["sched_d"])
        self.sampler.rng.bit_generator.state = payload["rng"][self.dist.rank]
        torch.set_rng_state(payload["torch_rng"].cpu())
        if "self_supervised_rng" in payload:  # absent in checkpoints before noisy-only training
            self.torch_rng.set_state(payload["self_supervised_rng"].cpu())
        self.state = _State(payload["step"], payload["best_psnr"], payload["elapsed"], payload["history"])

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Generator[TrainProgress, None, Path]:
        c = self.config
        total = c.phases.total
        try:
            if c.init and self.state.step == 0:  # the starting weights are the best so far
                validation = self._validate()
                self._keep_if_best("init", validation)
                lr = self.opt_g.param_groups[0]["lr"]
                command = yield TrainProgress("init", 0, total, {}, lr, 0.0, validation, self.dist.rank)
            else:
                command = validation = None
            phase = None
            while self.state.step < total and command != STOP:
                start = time.perf_counter()
                if phase != (phase := c.phases.phase_at(self.state.step)):
                    self._enter(phase)
                batch = self.sampler.batch().to(self.device)
                losses: dict[str, float] = {}
                if phase in ("discriminator", "adversarial"):
                    for _ in range(c.phases.discriminator_steps if phase == "adversarial" else 1):
                        losses |= self._discriminator_step(batch)
                if phase != "discriminator":
                    losses |= self._generator_step(batch, phase)
                self.state.step += 1
                step = self.state.step
                validation = None
                if step % c.validate_every == 0 or step == total:
                    validation = self._validate()
                    if phase == "clean":  # a network with bypassed layers: logged, never kept
                        if validation is not None:
                            self.state.history.append({"step": step, "phase": phase, **validation})
                    else:
                        psnr = self.dist.broadcast(validation["score"] if validation else 0.0)
                        if c.keep == "best":  # PSNR is the objective: cut the rates on its plateaus
                            self.sched_g.step(psnr)
                            self.sched_d.step(psnr)
                        self._keep_if_best(phase, validation)
                self.state.elapsed += time.perf_counter() - start
                if step % c.checkpoint_every == 0 or step == total:
                    self._save_checkpoint()
                command = yield TrainProgress(
                    phase,
                    step,
                    total,
                    losses,
                    self.opt_g.param_groups[0]["lr"],
                    self.state.elapsed,
                    validation,
                    self.dist.rank,
                )
            if command == STOP and validation is None and self.state.step > 0 and phase != "clean":
                # the steps since the last validation count too: score them before stopping
                self._keep_if_best(phase, self._validate())
            if command == STOP and self.state.step > self.checkpointed_at:
                self._save_checkpoint()
            self.dist.barrier()  # no rank tears the group down while another is still in it
        except GeneratorExit:
            # Stopped by the caller: keep the progress made since the last checkpoint.
            if self.dist.world == 1 and self.state.step > self.checkpointed_at:
                self._save_checkpoint()
            raise
        finally:
            self._release()
        return self.model_path

    def _release(self) -> None:
        """Tear the process group down for good: DistributedDataParallel's wrappers hold it,
        and a group that outlives ``destroy_process_group`` in them is only freed as Python
        exits, where gloo's threads can abort the process (SIGABRT) after the work is saved."""
        if self.dist.world > 1:
            self.g_train, self.d_train = self.generator, self.discriminator
            gc.collect()  # the wrappers' hooks refer back to them
        self.dist.close()


def train(
    config: TrainingConfig,
    *,
    resume: bool = False,
    device: str = "auto",
    images: Mapping[str, list[np.ndarray]] | None = None,
) -> Generator[TrainProgress, None, Path]:
    """Train a denoiser (any family); a generator yielding one :class:`TrainProgress` per step.

    Parameters
    ----------
    config : TrainingConfig
        The run; its ``output`` folder receives ``checkpoint.pt`` (resume state, written
        atomically every ``checkpoint_every`` steps and when stopped) and ``<name>.safetensors``
        (the best denoiser by validation PSNR so far, or the latest with ``keep: last``, in the
        core weights format).
    resume : bool
        Continue from ``checkpoint.pt``: the weights, optimisers, schedulers and random state
        are restored, so the run continues exactly as if it had not stopped.
    device : str
        As for :func:`napari_adl_denoise.denoise`; under torchrun, each process's GPU or the CPU.
    images : dict, optional
        In-memory images instead of ``config.data``'s files: ``"train"`` and/or ``"val"`` lists of
        arrays laid out like a file's data (spatial axes last; RGB with a last axis of 3). The
        config's file lists then only name the images in the model card.

    Returns
    -------
    pathlib.Path
        The model file (the generator's return value).

    Examples
    --------
    >>> from napari_adl_denoise.training import load_config, train
    >>> for record in train(load_config("training/configs/adl-2d-gray.yaml")):  # doctest: +SKIP
    ...     if record.validation:
    ...         print(record.step, record.validation["psnr"])
    """
    return _Trainer(config, resume, device, images).run()
