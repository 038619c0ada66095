"""The training loop: AdamW with linear warm-up, gradient clipping, EMA, bf16 autocast on the GPU, label dropout,
atomic checkpoints in the official formats, exact resume, and DistributedDataParallel under torchrun.

Exactness: each step draws its batch indices, noise levels, noise and label dropout from generators seeded by
(recipe seed, step) over the whole global batch, and each rank takes its slice. So a resumed run repeats the
uninterrupted one bit for bit on the CPU (on the GPU some PyTorch kernels, e.g. index_add's and cuDNN's weight
gradients, are nondeterministic: equal up to their rounding), and N ranks compute the gradient of the same global
batch as one process (up to the order of the float reduction).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..configs import REGISTRY, ModelConfig, get_config
from ..diffusion.images import grid, save_png, viewable
from ..diffusion.losses import diffusion_loss, sample_levels
from ..diffusion.pipeline import sample
from ..diffusion.schedule import schedule_for
from ..errors import CheckpointError, InputError
from ..models import build_model
from ..models.checkpoint import embedded_weights, load_state, read_state_dict
from ..models.dim import resize_position_table
from ..runtime.denoiser import TorchDenoiser
from .data import load_dataset, sample_latents
from .encode import Progress, cached_features, needs_encoding
from .recipe import Recipe

LOG_NAME = "train_log.jsonl"
STATE_NAME = "train_state.pth"  # step, RNG states and the recipe (beside the official files)
# Recipe keys a resumed run may change without breaking exactness.
RESUME_FREE = {"name", "steps", "log_every", "ckpt_every", "sample_every", "keep", "shortened", "feature_cache"}


@dataclass
class Rank:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None) -> Rank:
    """torchrun sets WORLD_SIZE / RANK / LOCAL_RANK: NCCL on GPUs, gloo on the CPU; one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    if world == 1:
        return Rank(device=torch.device("cuda" if want_cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return Rank(dist.get_rank(), world, torch.device("cuda", local) if want_cuda else torch.device("cpu"))


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 8 + stream) % 2**63)


def lr_at(recipe: Recipe, step: int) -> float:
    """Linear warm-up, then constant: DiM's LambdaLR factor min(step / warmup, 1), so the first step has lr 0."""
    return recipe.lr * min(1.0, step / max(1, recipe.warmup))


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing: the folder is incomplete") from None


class Trainer:
    """One recipe's run in one output folder; `run()` trains to recipe.steps, resuming when asked."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, device: str | None = None,
                 progress: Callable[[dict], None] | None = None, encode_progress: Progress | None = None) -> None:
        self.recipe, self.out, self.progress = recipe, Path(out_dir), progress
        self.ctx = init_distributed(device)
        if recipe.batch % self.ctx.world:
            raise InputError(f"recipe batch {recipe.batch} does not split evenly over {self.ctx.world} processes")
        self.cfg: ModelConfig = get_config(recipe.model)
        self.resolution = recipe.resolution or self.cfg.resolution
        side = self.cfg.input_shape(1, self.resolution)[-1]
        spec, self.features_path = recipe.data, None
        if needs_encoding(spec, self.cfg, recipe.vae):
            self.features_path = self._encode(spec, side * self.cfg.latent_factor, encode_progress)
            spec = {"kind": "features", "path": str(self.features_path)}  # read as any features file
        data = load_dataset(spec, self.cfg, side)
        self.x, self.y, self.moments = data.x, data.y, data.moments
        self.schedule = schedule_for(self.cfg)
        self.model = build_model(self.cfg, self.resolution, seed=recipe.seed)
        if recipe.init_from:
            self._init_from(recipe.init_from)
        self.model = self.model.train().to(self.ctx.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                     betas=recipe.betas, eps=recipe.adam_eps)
        self.step = 0
        self.ddp = self.model
        if self.ctx.world > 1:
            ids = None if self.ctx.device.type == "cpu" else [self.ctx.device.index]
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _encode(self, spec: dict, size: int, progress: Progress | None) -> Path:
        """The image folder's cached features: rank 0 encodes them (or finds them cached) and sends the path to
        the others; its error reaches every rank, so none waits in a collective."""
        cache = Path(self.recipe.feature_cache) if self.recipe.feature_cache else self.out / "features"
        result: Path | Exception | None = None
        if self.ctx.main:
            try:
                result = cached_features(spec, self.cfg, size, self.recipe.vae, cache, self.ctx.device,
                                         progress=progress)
            except Exception as exc:
                if self.ctx.world == 1:
                    raise
                result = exc
        if self.ctx.world > 1:
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        if isinstance(result, Exception):
            raise result
        return result

    def _init_from(self, source: str) -> None:
        """Weak-to-strong: start from a lower resolution's weights (DiM's 512 fine-tune starts from the 256 model's
        non-EMA nnet.pth); a position table of another grid is resized bilinearly to this model's."""
        path = embedded_weights(REGISTRY[source]) if source in REGISTRY else Path(source)
        if path is None or not path.is_file():
            raise InputError(f"init_from {source!r} is neither a weights file nor a model id with embedded weights")
        state = {k: v.float() for k, v in read_state_dict(path).items()}  # trained in fp32 whatever the file holds
        table = state.get("additional_embed")
        if table is not None and table.shape != self.model.additional_embed.shape:
            state["additional_embed"] = resize_position_table(table, self.model.extra_len, self.cfg.grid())
        load_state(self.model, state, source=f"init_from {source!r}")

    # --- checkpoints: one folder per step, ckpts/<step>.ckpt, as U-ViT's TrainState names them; inside, DiM's
    # {nnet,nnet_ema,optimizer,step}.pth (TrainState's files) or DiS's <step:07d>.pt = {'model', 'ema', 'opt', 'args'}
    # (its train.py's file), and train_state.pth (step, RNG states, recipe) ---------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.out / "ckpts" / f"{step}.ckpt"

    def checkpoints(self) -> list[Path]:
        """The complete checkpoint folders, oldest first."""
        found = (self.out / "ckpts").glob("*.ckpt") if (self.out / "ckpts").is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split(".")[0]))

    def weights_path(self, step: int | None = None, ema: bool = True) -> Path:
        """The official weights file of a checkpoint, as `load_checkpoint` and `dimexport sample --checkpoint` take."""
        step = self.step if step is None else step
        folder = self.checkpoint_dir(step)
        if self.cfg.family == "dim":
            return folder / ("nnet_ema.pth" if ema else "nnet.pth")
        return folder / f"{step:07d}.pt"

    def save(self) -> Path:
        """Written into a temporary folder, then renamed (atomic); keeps the newest `recipe.keep`."""
        final = self.checkpoint_dir(self.step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model_state, ema_state = _cpu_state(self.model), _cpu_state(self.ema)
        if self.cfg.family == "dim":
            torch.save(model_state, tmp / "nnet.pth")
            torch.save(ema_state, tmp / "nnet_ema.pth")
            torch.save(self.opt.state_dict(), tmp / "optimizer.pth")
            torch.save(self.step, tmp / "step.pth")
        else:
            torch.save({"model": model_state, "ema": ema_state, "opt": self.opt.state_dict(),
                        "args": self.recipe.to_dict()}, tmp / f"{self.step:07d}.pt")
        rng = {"cpu": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        torch.save({"step": self.step, "recipe": self.recipe.to_dict(), "rng": rng}, tmp / STATE_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[: -self.recipe.keep]:
            shutil.rmtree(old)
        return final

    def resume(self) -> bool:
        """Load the newest complete checkpoint of the output folder; False when there is none."""
        folders = self.checkpoints()
        if not folders:
            return False
        folder = folders[-1]
        state = _load(folder / STATE_NAME)
        saved, now = state["recipe"], self.recipe.to_dict()
        changed = sorted(k for k in now if k not in RESUME_FREE and saved.get(k) != now[k])
        if changed:
            raise InputError(f"{folder} was trained with other {', '.join(changed)} than this recipe's: an exact "
                             "resume needs the same settings (only steps and the logging/checkpoint cadence may "
                             "change); use another -o to start a new run")
        step = int(state["step"])
        if self.cfg.family == "dim":
            model_state, ema_state = _load(folder / "nnet.pth"), _load(folder / "nnet_ema.pth")
            opt_state = _load(folder / "optimizer.pth")
        else:
            full = _load(folder / f"{step:07d}.pt")
            model_state, ema_state, opt_state = full["model"], full["ema"], full["opt"]
        self.model.load_state_dict(model_state)
        self.ema.load_state_dict(ema_state)
        self.opt.load_state_dict(opt_state)
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.ctx.device)
        self.step = step
        log = self.out / LOG_NAME
        if self.ctx.main and log.is_file():  # drop what was logged after this checkpoint: it is trained again
            log.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                                   if line.strip() and json.loads(line)["step"] <= step))
        return True

    # --- the loop ------------------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch of `step`: (x0, labels after dropout, levels, noise)."""
        r, total = self.recipe, self.recipe.batch
        idx = torch.randint(0, len(self.x), (total,), generator=_generator(r.seed, step, 0))
        levels = sample_levels(total, self.schedule.num_timesteps, _generator(r.seed, step, 1))
        x0 = self.x[idx]
        if self.moments:  # a fresh latent of each image every step, from this step's own generator
            x0 = sample_latents(x0, _generator(r.seed, step, 4))
        noise = torch.randn(x0.shape, generator=_generator(r.seed, step, 2))
        y = None
        if self.cfg.num_classes:
            drop = torch.rand(total, generator=_generator(r.seed, step, 3)) < r.p_uncond
            y = torch.where(drop, torch.full_like(self.y[idx], self.cfg.num_classes), self.y[idx])
        per = total // self.ctx.world
        part = slice(self.ctx.rank * per, (self.ctx.rank + 1) * per)
        dev = self.ctx.device
        return x0[part].to(dev), None if y is None else y[part].to(dev), levels[part].to(dev), noise[part].to(dev)

    def train_step(self) -> dict:
        r = self.recipe
        lr = lr_at(r, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x0, y, levels, noise = self.batch(self.step)
        with torch.autocast("cuda", torch.bfloat16, enabled=self.ctx.device.type == "cuda" and r.bf16):
            loss = diffusion_loss(self.ddp, self.schedule, x0, y, levels, noise, self.cfg.learn_sigma)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - r.ema)
        self.step += 1
        value = loss.detach()
        if self.ctx.world > 1:
            dist.all_reduce(value)
            value /= self.ctx.world
        return {"step": self.step, "loss": float(value), "grad_norm": float(grad_norm), "lr": lr}

    def sample_grid(self, path: Path, per_class: int = 8, seed: int = 0) -> Path:
        """A grid from the EMA weights with the model's default sampler: one row per class (or 8 x 8 samples)."""
        den = TorchDenoiser(self.ema, self.resolution, str(self.ctx.device))
        classes = self.cfg.num_classes
        labels = torch.arange(classes).repeat_interleave(per_class) if classes else None
        result = sample(den, labels, n=None if classes else 64, seed=seed)
        return save_png(grid(viewable(result.samples, self.cfg), rows=classes or 8), path)

    def run(self, resume: bool = False, max_steps: int | None = None) -> Path | None:
        """Train to recipe.steps (or at most `max_steps` more); returns the last checkpoint folder."""
        if resume:
            self.resume()
        elif self.checkpoints():  # every rank raises, so none waits in a collective
            raise InputError(f"{self.out} already holds checkpoints: pass --resume to continue them, or another -o")
        self.out.mkdir(parents=True, exist_ok=True)
        r = self.recipe
        end = r.steps if max_steps is None else min(r.steps, self.step + max_steps)
        log = (self.out / LOG_NAME).open("a") if self.ctx.main else None
        last: Path | None = None
        window_t, window_step, losses = time.perf_counter(), self.step, []
        try:
            while self.step < end:
                rec = self.train_step()
                if not math.isfinite(rec["loss"]):
                    raise InputError(f"the loss became {rec['loss']} at step {self.step}: lower lr or grad_clip")
                losses.append(rec["loss"])
                if self.step % r.log_every == 0 or self.step == end:
                    now = time.perf_counter()
                    rec = dict(rec, loss=sum(losses) / len(losses),
                               steps_per_s=(self.step - window_step) / max(now - window_t, 1e-9))
                    window_t, window_step, losses = now, self.step, []
                    if log:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                    if self.progress and self.ctx.main:
                        self.progress(rec)
                if self.step % r.ckpt_every == 0 or self.step == end:
                    if self.ctx.main:
                        last = self.save()
                        plot_loss(self.out / LOG_NAME, self.out / "loss.png", r.name)
                    if self.ctx.world > 1:
                        dist.barrier()
                if self.ctx.main and r.sample_every and (self.step % r.sample_every == 0 or self.step == end):
                    self.sample_grid(self.out / f"samples_{self.step:07d}.png")
        finally:
            if log:
                log.close()
        return last


    def close(self, ok: bool = True) -> None:
        """Leave the process group cleanly: every rank done (after a failure no barrier, which could wait on ranks
        inside a collective), the DDP wrapper (whose reducer holds the group) released before the group is
        destroyed, so no rank aborts at exit."""
        if self.ctx.world > 1 and dist.is_initialized():
            if ok:
                dist.barrier()
            self.ddp = self.model
            gc.collect()
            dist.destroy_process_group()


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(log_path: Path, png: Path, title: str) -> None:
    """The run's loss curve (log scale), redrawn from its log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean per log window)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
