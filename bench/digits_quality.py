"""Recognised rate of generated digits (issues "Train and ship a default model", "Beyond the trained resolution"):
100 samples (10 per class) of a digits checkpoint per (guidance, steps) setting, read by the 8x8 logistic-regression
classifier of dimexport.train.quality, with the time per sample. Picks the defaults recorded in the model registry,
and compares a weak-to-strong fine-tune with training-free upsampling on the same seeds (same initial noise):

  python3 bench/digits_quality.py --checkpoint runs/dim-tiny-digits/ckpts/12000.ckpt/nnet_ema.pth \\
      --guidance 0,0.5,1,2 --steps 10,20,50 --device cuda --json out/quality.json --grid out/digits.png
  python3 bench/digits_quality.py --model dim-tiny-digits-64 --checkpoint runs/digits-64/ckpts/3000.ckpt/nnet_ema.pth
  python3 bench/digits_quality.py --upsample 2 --guidance 3      # dim-tiny-digits at 64x64, Upsample Guidance
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dimexport.diffusion.images import grid, save_png, viewable  # noqa: E402
from dimexport.diffusion.pipeline import sample  # noqa: E402
from dimexport.models.checkpoint import load_model  # noqa: E402
from dimexport.runtime.denoiser import TorchDenoiser  # noqa: E402
from dimexport.train.quality import recognised_rate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dim-tiny-digits", help="a digits model id")
    ap.add_argument("--checkpoint", help="nnet_ema.pth (default: the model's embedded weights)")
    ap.add_argument("--upsample", type=int, default=1, help="sample at m x the model's resolution (Upsample Guidance)")
    ap.add_argument("--guidance", default="1.0", help="comma-separated DiM guidance scales s")
    ap.add_argument("--steps", default="20", help="comma-separated DPM-Solver step counts")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--grid", type=Path, help="grid PNG of the first setting")
    args = ap.parse_args()
    den = TorchDenoiser(load_model(args.model, args.checkpoint), device=args.device)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        for g in (float(v) for v in args.guidance.split(",")):
            res = sample(den, labels, steps=steps, guidance=g, seed=args.seed, upsample=args.upsample)
            rows.append(dict(steps=steps, guidance=g, recognised=recognised_rate(res.samples, labels),
                             seconds=res.total_s))
            print(json.dumps(rows[-1]), flush=True)
            if args.grid and len(rows) == 1:
                save_png(grid(viewable(res.samples, den.cfg), rows=10), args.grid)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(model=args.model, checkpoint=args.checkpoint, upsample=args.upsample,
                                                  resolution=den.resolution * args.upsample, device=args.device,
                                                  rows=rows), indent=1))


if __name__ == "__main__":
    main()
