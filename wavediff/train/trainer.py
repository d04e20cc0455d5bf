"""The training loop: Adam(W), clipping, EMA, AMP on GPU, atomic checkpoints, exact resume.

``Trainer(config, train_dir, dev_dir, outdir).run()`` trains until ``train.max_steps``.
Every ``save_interval`` steps it writes ``checkpoint-<N>steps.pt`` (pruned to the newest
``keep_checkpoints``); ``resume=True`` continues from the newest one exactly as if the run
had never stopped (same batches, same noise). SIGTERM (preemption) writes a checkpoint at
the end of the current step and exits.

Under torchrun the model is wrapped in DistributedDataParallel: every process takes its
slices of the same global batch (see :mod:`wavediff.distributed`), the diffusion steps
and noise of each sample are drawn for the whole global batch from one stream shared by all
ranks (so a sample's noise depends on its place in the global batch, never on the rank or
the number of processes), and only rank 0 logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from wavediff.audio.mel import MelSpectrogram
from wavediff.config import Config
from wavediff.diffusion import GaussianDiffusion
from wavediff.diffusion.process import randn as _randn
from wavediff.errors import WavediffError
from wavediff.evaluation.spectral import multi_resolution_stft_loss
from wavediff.hardware import pick_device, resolve_precision
from wavediff.inference.decode import WaveConditioned, griffin_lim
from wavediff.model import build_model, count_parameters
from wavediff import checkpoint as ckpt
from wavediff import distributed as distrib
from wavediff.audio.dump import (
    DumpError, load_record, open_dump,
)
from wavediff.train.data import (
    CropDataset, RecordFailure, StepBatchSampler, collate_or_fail, crop_frames_for, guarded,
    read_utt2spk,
)

log = logging.getLogger("wavediff.train")


class TrainingError(WavediffError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""


class Trainer:
    def __init__(self, config: Config, train_dir: str, dev_dir: Optional[str], outdir: str, *,
                 resume: bool = False, device: Optional[str] = None,
                 progress: bool = True, dist: Optional[distrib.DistInfo] = None) -> None:
        self.config = config
        self.outdir = Path(outdir)
        self.dist = dist or distrib.DistInfo()
        self.device = pick_device(self.dist.device if self.dist.enabled else device)
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        tc = config.train
        self.batch_plan = distrib.BatchPlan(tc.batch_size, self.dist.world_size, tc.grad_accum)
        self.train_dir = Path(train_dir)
        self.train_records, self.dev_records = self._open_dumps(train_dir, dev_dir)
        self.train_groups = (read_utt2spk(self.train_dir / "utt2spk", self.train_records)
                             if config.train.balance_speakers else None)
        torch.manual_seed(tc.seed)
        self._build_model_and_optimizer()
        self.noise_gen = torch.Generator(self.device).manual_seed(tc.seed)
        self.diffusion: Optional[GaussianDiffusion] = None  # after resume: it may hold the prior
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.train_seconds = 0.0  # training time so far (evaluation and saving excluded)
        self._budget_spent = False  # agreed by every rank: train.max_minutes is used up
        self._stop_requested = False  # agreed by every rank: stop after this step
        self._sigterm = False  # this process received SIGTERM
        self.stopped_by_signal = False
        self._start_or_resume(resume)
        if self.diffusion is None:
            self.diffusion = self._build_diffusion(config)
        self.outdir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            config.save(self.outdir / "config.yaml")
        self.ddp_model = self._wrap_distributed()
        if self.is_main:
            log.info("%s; %s", self.dist.describe(), self.batch_plan.describe())

    # ------------------------------------------------------------------ setup
    def _open_dumps(self, train_dir: str, dev_dir: Optional[str]) -> tuple[list[Path], list[Path]]:
        """The records of the training and dev dumps, checked against the mel convention."""
        train = open_dump(train_dir, self.config.audio)
        dev = open_dump(dev_dir, self.config.audio, inspect=False) if dev_dir is not None else []
        return train, dev

    def _build_model_and_optimizer(self) -> None:
        tc = self.config.train
        self.model = build_model(self.config).to(self.device)
        self.ema = None
        if tc.ema_decay is not None:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=tc.learning_rate,
                                 betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay)
        self.objective = None
        if tc.objective == "few_step":
            from wavediff.train.objectives import FewStepObjective, uses_discriminators

            if uses_discriminators(tc) and (self.dist.enabled or tc.grad_accum > 1):
                raise WavediffError(
                    "train.adversarial_weight and train.feature_matching_weight train "
                    "discriminators in one process without accumulation: run without torchrun "
                    "and with train.grad_accum 1, or set both weights to 0")
            self.objective = FewStepObjective(self.config, self.device)
        self.last_terms: dict[str, float] = {}
        self.amp_dtype, self.amp_reason = resolve_precision(tc.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

    def _start_or_resume(self, resume: bool) -> None:
        """Resume from the newest checkpoint of the output folder (with ``resume``), or
        refuse to overwrite one; every rank must see the same one."""
        if self.is_main and self.outdir.exists():
            for tmp in ckpt.remove_stale_temporaries(self.outdir):
                log.warning("removed %s, left by a checkpoint write that was interrupted", tmp.name)
        distrib.barrier(self.dist)
        existing = ckpt.latest_checkpoint(self.outdir) if self.outdir.exists() else None
        if self.dist.enabled:
            seen = distrib.gather_objects(self.dist, existing.name if existing else None)
            if len(set(seen)) > 1:
                raise WavediffError(
                    f"the processes see different checkpoints in {self.outdir} "
                    f"({', '.join(f'rank {r}: {n}' for r, n in enumerate(seen))}); put --outdir "
                    f"on a filesystem that every node shares"
                )
        if resume and existing is not None:
            self._restore(existing)
        elif existing is not None:
            raise WavediffError(
                f"{self.outdir} already holds {existing.name}; pass --resume to continue it "
                f"or choose another --outdir"
            )
        elif resume:
            log.info("no checkpoint in %s: starting from scratch", self.outdir)

    def _wrap_distributed(self) -> torch.nn.Module:
        """The model as the training step calls it: DDP-wrapped across processes."""
        if not self.dist.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        seed = self.config.train.seed
        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(self.model, device_ids=ids)
        # Per-rank seeds for anything random outside the shared noise stream.
        torch.manual_seed(seed + 1_000_003 * self.dist.rank + self.step)
        np.random.seed((seed + 7_919 * self.dist.rank + self.step) % 2**32)
        return wrapped

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "noise": self.noise_gen.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "nonfinite_steps": self.nonfinite_total,
            "train_seconds": self.train_seconds,
            "objective": self.objective.state_dict() if self.objective is not None else None,
        }

    def _build_diffusion(self, config: Config) -> GaussianDiffusion:
        """The diffusion process; PriorGrad's energy range is measured on the training set
        when the config does not carry it yet (and then stored in the config)."""
        d = config.diffusion
        if d.prior != "none" and d.prior_energy is None:
            from wavediff.diffusion.prior import energy_range

            lo, hi = energy_range((load_record(p)[1] for p in self.train_records), config.audio)
            d.prior_energy = [lo, hi]
            if self.is_main:
                log.info("%s prior: frame energy %.4g..%.4g over %d training records, "
                         "std floor %g", d.prior, lo, hi, len(self.train_records), d.prior_floor)
        return GaussianDiffusion.from_config(d, config.audio)

    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        stored: Config = state["config"]
        if (self.config.diffusion.prior_energy is None
                and stored.diffusion.prior == self.config.diffusion.prior):
            # the statistics were measured when the run started: keep them
            self.config.diffusion.prior_energy = stored.diffusion.prior_energy
        section = ckpt.incompatible_section(stored, self.config)
        if section is not None:
            raise WavediffError(
                f"cannot resume {path}: its '{section}' config differs from the given one; "
                f"use the experiment's config.yaml or a new --outdir"
            )
        ckpt.load_weights(state, self.model, self.ema)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.objective is not None:
            self.objective.load_state_dict(state.get("objective"))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "noise" in rng:  # generator states are CPU byte tensors whatever the device
            self.noise_gen.set_state(rng["noise"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("nonfinite_steps", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> Path:
        """Write ``checkpoint-<step>steps.pt`` (rank 0) and prune old ones; every rank waits.

        A failed write (e.g. a full disk) stops every rank with the message of rank 0.
        """
        path = self.outdir / ckpt.checkpoint_name(self.step)
        error: Optional[str] = None
        if self.is_main:
            try:
                ckpt.save_checkpoint(path, self.state())
                for old in ckpt.prune_checkpoints(self.outdir, self.config.train.keep_checkpoints):
                    log.debug("removed %s", old)
            except ckpt.CheckpointError as e:
                if not self.dist.enabled:
                    raise
                error = str(e)
        if self.dist.enabled:
            error = distrib.gather_objects(self.dist, error)[0]
            if error is not None:
                raise ckpt.CheckpointError(error)
        return path

    # ------------------------------------------------------------------ one step
    def _lr(self) -> float:
        tc = self.config.train
        if tc.warmup_steps > 0 and self.step < tc.warmup_steps:
            return tc.learning_rate * (self.step + 1) / tc.warmup_steps
        if tc.lr_decay == 1.0:
            return tc.learning_rate
        decayed = tc.learning_rate * tc.lr_decay ** (self.step / tc.lr_decay_steps)
        return max(tc.lr_min, decayed)

    def train_step(self, wave: torch.Tensor, mel: torch.Tensor) -> dict[str, float]:
        """One optimisation step on one batch: ``wave`` (B, T_wav), ``mel`` (B, n_mels, F)."""
        return self.train_accumulated([(wave, mel)])

    def train_accumulated(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        """One optimisation step on this rank's micro-batches of one global batch.

        ``micro``: ``grad_accum`` pairs ``(wave (b, T_wav), mel (b, n_mels, F))``. The
        diffusion steps and noise are drawn for the whole global batch from the shared
        stream and sliced, and each micro-batch's loss is weighted by its share of the
        global batch, so the update equals one step on the whole batch in one process.
        A non-finite loss or gradient on any rank skips the update on every rank.
        """
        draws, total = self._slice_shared_draws(micro)
        self._prepare_step()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for a, ((wave, mel), (t, noise)) in enumerate(zip(micro, draws)):
            loss_sum += self._micro_backward(wave, mel, t, noise, total,
                                             last=a == len(micro) - 1)
        loss_value = self._agree_across_ranks(loss_sum) / total
        grad_norm, finite = self._apply_update(loss_value)
        if finite:
            self._update_ema()
        self.step += 1
        return {"loss": loss_value, "grad_norm": grad_norm, "lr": self._lr(), "finite": finite}

    def _slice_shared_draws(self, micro: list[tuple[torch.Tensor, torch.Tensor]]
                            ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """The diffusion steps and noise ``(t, noise)`` of each of this rank's micro-batches,
        and the size of the global batch.

        Both are drawn for the whole global batch from the stream shared by every rank, then
        sliced at this rank's offsets: a sample's draws depend on its place in the global
        batch, never on the rank or the number of processes.
        """
        sizes = [int(w.shape[0]) for w, _ in micro]
        if self.dist.enabled:
            total, offsets = self.batch_plan.global_batch, self.batch_plan.offsets(self.dist.rank)
            if sizes != self.batch_plan.sizes(self.dist.rank):
                raise ValueError(f"micro-batch sizes {sizes} differ from the plan "
                                 f"{self.batch_plan.sizes(self.dist.rank)}")
        else:
            total, offsets = sum(sizes), [sum(sizes[:i]) for i in range(len(sizes))]
        length, dtype = micro[0][0].shape[-1], micro[0][0].dtype
        t_all = self.diffusion.draw_steps(total, self.noise_gen, self.device)
        noise_all = _randn((total, length), self.noise_gen, self.device, dtype)
        draws = [(t_all[off:off + n], noise_all[off:off + n]) for off, n in zip(offsets, sizes)]
        return draws, total

    def _prepare_step(self) -> None:
        """This step's learning rate, training mode and cleared gradients."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)

    def _micro_backward(self, wave: torch.Tensor, mel: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor, total: int, *, last: bool) -> torch.Tensor:
        """Forward (under autocast) and backward of one micro-batch of ``total`` samples in
        the global batch; returns its loss times its size (float64, detached), its share of
        the global batch's summed loss.

        DDP reduces the gradients across ranks only on the ``last`` micro-batch of the step.
        """
        n = int(wave.shape[0])
        wave = wave.to(self.device, non_blocking=True)
        mel = mel.to(self.device, non_blocking=True)
        sync = contextlib.nullcontext()
        if self.dist.enabled and not last:  # gradients are reduced once per step
            sync = self.ddp_model.no_sync()  # type: ignore[operator]
        with sync:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                loss = self._loss(wave, mel, t, noise)
            # DDP averages gradients over ranks: weight n * world / total makes the sum
            # over ranks and micro-steps the mean over the global batch.
            weight = n * self.dist.world_size / total
            scaled = loss if weight == 1.0 else loss * weight
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        return loss.detach().double() * n

    def _time_budget_spent(self) -> bool:
        """This process's training time has used up ``train.max_minutes``."""
        tc = self.config.train
        return tc.max_minutes is not None and self.train_seconds >= 60.0 * tc.max_minutes

    def _agree_across_ranks(self, loss_sum: torch.Tensor) -> float:
        """The global batch's summed loss; also records whether every rank stops after this
        step (any rank's SIGTERM) and whether the time budget is spent (on any rank).

        Under torchrun all three travel in one all-reduce, so every rank decides alike.
        """
        budget = self._time_budget_spent()
        if self.dist.enabled:  # one collective: the global loss, any rank's SIGTERM or budget
            import torch.distributed as tdist

            flags = torch.tensor([float(self._sigterm), float(budget)], dtype=torch.float64,
                                 device=self.device)
            reduced = torch.cat([loss_sum.reshape(1), flags])
            tdist.all_reduce(reduced)
            loss_sum = reduced[0]
            if float(reduced[1]) > 0:
                self._stop_requested = True
            budget = float(reduced[2]) > 0
        self._budget_spent = budget
        return float(loss_sum)

    def _apply_update(self, loss_value: float) -> tuple[float, bool]:
        """Unscale (under float16) and clip the gradients, then step the optimiser, through
        the GradScaler when there is one; a non-finite step is skipped and counted
        (:meth:`_skip_nonfinite`). Returns the gradient norm before clipping and whether
        the step counts as finite (then the EMA follows).
        """
        tc = self.config.train
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
        if self.scaler is not None:
            if math.isfinite(loss_value):
                self.scaler.step(self.optimizer)  # skips by itself on inf/nan gradients
            self.scaler.update()
            finite = math.isfinite(loss_value)
        elif finite:
            self.optimizer.step()
        if finite:
            self.nonfinite_run = 0
        else:
            self._skip_nonfinite(loss_value, grad_norm)
        return grad_norm, finite

    def _skip_nonfinite(self, loss_value: float, grad_norm: float) -> None:
        """Drop this step's gradients, count and report the skipped step, and stop the run
        after ``train.max_nonfinite_steps`` of them in a row."""
        tc = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        if self.is_main:
            log.warning("step %d: non-finite loss %.4g or gradient norm %.4g; update skipped "
                        "(%d in a row, %d in all; the run stops after %d in a row)",
                        self.step, loss_value, grad_norm, self.nonfinite_run,
                        self.nonfinite_total, tc.max_nonfinite_steps)
        if self.nonfinite_run >= tc.max_nonfinite_steps:
            raise TrainingError(
                f"{self.nonfinite_run} non-finite steps in a row at step {self.step}; "
                f"lower the learning rate, check the features for NaN, or set train.amp=none"
            )

    def _loss(self, wave: torch.Tensor, mel: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
        """The training objective on one micro-batch (``train.objective``)."""
        tc = self.config.train
        denoiser = self._conditioned(self.ddp_model, mel, self.noise_gen)
        if self.objective is None:
            return self.diffusion.loss(denoiser, wave, mel, loss_type=tc.loss,
                                       generator=self.noise_gen, t=t, noise=noise,
                                       aux_loss=multi_resolution_stft_loss,
                                       aux_weight=tc.aux_loss_weight,
                                       aux_target=tc.aux_loss_target)
        terms = self.objective.losses(denoiser, self.diffusion, wave, mel, t=t,
                                      noise=noise, generator=self.noise_gen, loss_type=tc.loss)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items() if k != "total"}
        return terms["total"]

    def _conditioned(self, model: Any, mel: torch.Tensor,
                     generator: Optional[torch.Generator]) -> Any:
        """``model`` as the losses' denoiser for ``mel``: with ``model.gl_condition`` it is
        also given the mel's Griffin-Lim waveform (from ``diffusion.gl_init``: noise drawn
        from ``generator``, or the phase-vocoder phase)."""
        iters = self.config.model.gl_condition
        if iters <= 0:
            return model
        with torch.no_grad():
            gl = griffin_lim(self.config.audio, mel.float(), iters, generator=generator,
                             init=self.config.diffusion.gl_init)
        return WaveConditioned(model, gl)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.config.train.ema_decay, (1 + self.step) / (10 + self.step))
        ema_params = list(self.ema.parameters())
        params = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)

    # ------------------------------------------------------------------ loop
    def _loader(self) -> DataLoader:
        tc, hop = self.config.train, self.config.audio.hop_length
        # Without worker processes the records are read once and kept in memory (a corpus
        # of an hour is about 0.3 GB), so the step never waits for the disk.
        dataset = CropDataset(self.train_records, crop_frames_for(tc.crop_samples, hop), hop,
                              pad_value=self.config.audio.floor, cache=tc.num_workers == 0)
        groups = self.train_groups
        if groups is not None:
            log.info("every speaker drawn equally often: %d speakers (utt2spk of %s)",
                     len(set(groups)), self.train_dir)
        sampler = distrib.RankBatchSampler(
            StepBatchSampler(len(dataset), tc.batch_size, tc.seed, self.step, tc.max_steps,
                             groups=groups),
            self.batch_plan, self.dist.rank)
        return DataLoader(guarded(dataset), batch_sampler=sampler, num_workers=tc.num_workers,
                          collate_fn=collate_or_fail, pin_memory=self.device.type == "cuda",
                          persistent_workers=tc.num_workers > 0)

    def run(self) -> Path:
        """Train to ``train.max_steps`` (or ``train.max_minutes`` of training time); returns
        the last checkpoint written."""
        tc = self.config.train
        from torch.utils.tensorboard import SummaryWriter

        writer = (SummaryWriter(str(self.outdir / "logs"), purge_step=self.step or None)
                  if self.is_main else _NullWriter())
        file_log = _attach_file_log(self.outdir / "train.log") if self.is_main else None
        if self.is_main:
            log.info("%s with %.2fM parameters on %s; step %d of %d", self.config.model.architecture,
                     count_parameters(self.model) / 1e6, self.device, self.step, tc.max_steps)
            log.info("precision: %s", self.amp_reason)
            if self.diffusion.prior is not None or self.diffusion.continuous or tc.aux_loss_weight:
                log.info("diffusion: %s, prior %s, %s conditioning; aux STFT loss weight %g on %s",
                         self.diffusion, self.config.diffusion.prior,
                         self.config.diffusion.conditioning, tc.aux_loss_weight,
                         tc.aux_loss_target)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        last = None
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not self.progress,
                   desc="train", unit="step", dynamic_ncols=True)
        redirect = _tqdm_logging() if self.progress else contextlib.nullcontext()
        try:
            with redirect:
                last = self._loop(writer, bar)
        finally:
            bar.close()
            writer.close()
            if file_log is not None:
                logger = logging.getLogger("wavediff")
                logger.removeHandler(file_log)
                logger.setLevel(getattr(file_log, "previous_level", logger.level))
                file_log.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if last is None:
            last = ckpt.latest_checkpoint(self.outdir) or self.save()
        return last

    def _loop(self, writer: Any, bar: Any) -> Optional[Path]:
        tc = self.config.train
        if self._time_budget_spent():
            if self.is_main:
                log.info("the training time budget (train.max_minutes %g) was used up at step "
                         "%d; raise it to train on", tc.max_minutes, self.step)
            return None
        last = None
        speed = _SpeedMeter()
        for micro in self._step_batches():
            speed.batch_ready()
            out = self.train_accumulated(micro)
            self.train_seconds += speed.step_done(self._samples_in(micro))
            bar.update(1)
            done = self.step >= tc.max_steps or self._budget_spent
            if self.is_main and (self.step % tc.log_interval == 0 or done):
                self._log_progress(writer, bar, out, speed)
                speed.restart()
            with speed.paused():  # speed and train_seconds count training time only
                if (self.is_main and self.dev_records
                        and (self.step % tc.eval_interval == 0 or done)):
                    self.evaluate(writer)
                if self.step % tc.save_interval == 0 or done:
                    last = self.save()
            if self._budget_spent and self.is_main:
                log.info("training time budget of %g min reached at step %d; saved %s",
                         tc.max_minutes, self.step, last.name if last else "")
            if self._stop_requested:
                return self._save_for_sigterm(last)
            if done:
                break
        return last

    def _samples_in(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """The audio samples one step trains on, over all ranks (for samples/s)."""
        if self.dist.enabled:
            return self.batch_plan.global_batch * micro[0][0].shape[-1]
        return sum(w.numel() for w, _ in micro)

    def _log_progress(self, writer: Any, bar: Any, out: dict[str, Any],
                      speed: _SpeedMeter) -> None:
        """The log line, TensorBoard scalars and progress-bar postfix of this step (rank 0)."""
        tc = self.config.train
        steps_done = tc.log_interval if self.step % tc.log_interval == 0 else \
            self.step % tc.log_interval
        rate = speed.rates(steps_done)
        log.info("(steps: %d) train/loss = %.4f%s, grad_norm = %.3g, %.2f steps/s, "
                 "%.0f samples/s, data wait %.1f%%, %.1f min of training", self.step,
                 out["loss"], "".join(f", {k} {v:.4f}" for k, v in self.last_terms.items()),
                 out["grad_norm"], rate.steps_per_second, rate.samples_per_second,
                 rate.data_wait_percent, self.train_seconds / 60)
        writer.add_scalar("speed/data_wait_fraction", rate.data_wait_fraction, self.step)
        writer.add_scalar("train/loss", out["loss"], self.step)
        for name, value in self.last_terms.items():
            writer.add_scalar(f"train/{name}", value, self.step)
        writer.add_scalar("train/grad_norm", out["grad_norm"], self.step)
        writer.add_scalar("train/learning_rate", out["lr"], self.step)
        writer.add_scalar("train/nonfinite_steps", self.nonfinite_total, self.step)
        writer.add_scalar("speed/steps_per_second", rate.steps_per_second, self.step)
        writer.add_scalar("speed/samples_per_second", rate.samples_per_second, self.step)
        bar.set_postfix(loss=f"{out['loss']:.4f}", gnorm=f"{out['grad_norm']:.2f}")

    def _save_for_sigterm(self, last: Optional[Path]) -> Path:
        """The checkpoint of this step (written unless ``last`` is it) after a SIGTERM."""
        if last is None or last.name != ckpt.checkpoint_name(self.step):
            last = self.save()
        self.stopped_by_signal = True
        if self.is_main:
            log.warning("SIGTERM: saved %s at step %d; exiting", last.name, self.step)
        return last

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm = True
        if not self.dist.enabled:
            self._stop_requested = True

    def _step_batches(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """This rank's ``grad_accum`` micro-batches of each step, grouped."""
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        batches = iter(self._loader())
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            if isinstance(batch, RecordFailure):
                raise DumpError(batch.message)
            wave, mel = batch
            group.append((wave, mel))
            if len(group) == self.batch_plan.grad_accum:
                yield group
                group = []

    # ------------------------------------------------------------------ dev set
    @torch.no_grad()
    def evaluate(self, writer: Any) -> dict[str, float]:
        """Dev loss (fixed noise) and fast-sampler decodes of a few dev utterances."""
        from wavediff.diffusion.schedule import plan
        from wavediff.evaluation.spectral import (
            log_mel_l1, multi_resolution_phase_loss, multi_resolution_stft_distance,
        )
        from wavediff.inference.decode import decode_mel
        from wavediff.train.plots import mel_figure

        tc, audio_cfg = self.config.train, self.config.audio
        model = self.ema if self.ema is not None else self.model
        model.eval()
        gen = torch.Generator(self.device).manual_seed(tc.seed + 1)
        losses = []
        for path in self.dev_records[:32]:
            wave, mel = load_record(path)
            if tc.dev_crop_samples:
                frames = crop_frames_for(tc.dev_crop_samples, audio_cfg.hop_length)
                mel, wave = mel[:, :frames], wave[:frames * audio_cfg.hop_length]
            w = torch.from_numpy(wave).to(self.device)[None]
            m = torch.from_numpy(mel).to(self.device)[None]
            losses.append(float(self.diffusion.loss(self._conditioned(model, m, gen), w, m,
                                                    loss_type=tc.loss, generator=gen)))
        metrics = {"dev/loss": float(np.mean(losses)), "time/train_minutes": self.train_seconds / 60}
        mel_fn = MelSpectrogram(audio_cfg)
        # the network alone (no consistency projection), decoded as wavediff vocode decodes
        # with the fast sampler's configured schedule, so the curve follows the training
        fast = plan("fast", self.config.diffusion)
        l1s, mr_stft, phase = [], [], []
        for i, path in enumerate(self.dev_records[:tc.num_dev_utterances]):
            wave, mel = load_record(path)
            m = torch.from_numpy(mel).to(self.device)[None]
            gen_wave = decode_mel(model, self.diffusion, m, fast, audio=audio_cfg,
                                  generator=torch.Generator(self.device).manual_seed(tc.seed + i),
                                  start_iters=self.config.diffusion.start_iters,
                                  gl_init=self.config.diffusion.gl_init)
            gen = gen_wave[0].float().cpu()
            n = min(gen.shape[-1], wave.shape[-1])
            ref = torch.from_numpy(wave[:n])
            l1s.append(log_mel_l1(ref, gen[:n], mel_fn))
            mr_stft.append(multi_resolution_stft_distance(ref, gen[:n]))
            phase.append(float(multi_resolution_phase_loss(ref, gen[:n])))
            gen_mel = mel_fn(gen[None, :n])
            name = path.stem
            writer.add_audio(f"dev/{name}/generated", gen_wave[0].float().cpu().clamp(-1, 1),
                             self.step, sample_rate=audio_cfg.sample_rate)
            if self.step <= tc.eval_interval:
                writer.add_audio(f"dev/{name}/reference", torch.from_numpy(wave), self.step,
                                 sample_rate=audio_cfg.sample_rate)
            writer.add_figure(f"dev/{name}/mel", mel_figure(
                mel, gen_mel[0].cpu().numpy(), titles=("reference", f"generated, step {self.step}")),
                self.step)
        if l1s:
            metrics["dev/log_mel_l1"] = float(np.mean(l1s))
            metrics["dev/mr_stft"] = float(np.mean(mr_stft))
            metrics["dev/phase"] = float(np.mean(phase))
        for k, v in metrics.items():
            writer.add_scalar(k, v, self.step)
        log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics


class _Rates(NamedTuple):
    """The speed over the steps of one log interval."""

    steps_per_second: float
    samples_per_second: float
    data_wait_fraction: float
    data_wait_percent: float


class _SpeedMeter:
    """The training loop's clock: each step's training time, and the speed (steps/s,
    samples/s, data-wait fraction) over the steps since the last ``restart``.

    A step's training time runs from the end of the previous ``paused()`` block (evaluation,
    saving) to ``step_done``, the wait for its batch included; time inside ``paused()``
    counts neither there nor in the speed.
    """

    def __init__(self) -> None:
        self._start, self._samples, self._waited = time.perf_counter(), 0, 0.0
        self._clock = time.perf_counter()  # training time since the last pause
        self._now = self._clock

    def batch_ready(self) -> None:
        """The step's batch is here: the time since the last look was spent waiting for it."""
        self._waited += time.perf_counter() - self._clock

    def step_done(self, samples: int) -> float:
        """The step (of ``samples`` audio samples) finished: its training time in seconds."""
        self._samples += samples
        self._now = time.perf_counter()
        return self._now - self._clock

    def rates(self, steps: int) -> _Rates:
        """Speed of the window's ``steps`` steps, up to the end of the last one."""
        elapsed = max(self._now - self._start, 1e-9)
        return _Rates(steps / elapsed, self._samples / elapsed, self._waited / elapsed,
                      100.0 * self._waited / elapsed)

    def restart(self) -> None:
        """Start a new window for the rates (after a log line)."""
        self._start, self._samples, self._waited = time.perf_counter(), 0, 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent in the block is not training time."""
        paused = time.perf_counter()
        yield
        self._clock = time.perf_counter()
        self._start += self._clock - paused


class _NullWriter:
    """Stands in for the TensorBoard writer on ranks other than 0."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _attach_file_log(path: Path) -> logging.Handler:
    """Copy wavediff's log records, with timestamps, into ``path`` (appending)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("wavediff")
    handler.previous_level = logger.level  # type: ignore[attr-defined]  # restored on detach
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # --quiet: the file still gets INFO lines
        logger.setLevel(logging.INFO)
        for h in logging.getLogger().handlers:
            h.setLevel(max(h.level, logging.WARNING))
    return handler


def _tqdm_logging() -> Any:
    """Log lines printed above the progress bar instead of through it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger()])

