"""How recognisable generated digits are: a logistic-regression classifier fitted on scikit-learn's 8x8 digits reads
samples average-pooled back to 8x8. Real digits upsampled to 32x32 and pooled back are recognised at ~98.6 %."""

from __future__ import annotations

import functools

import numpy as np
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """Logistic regression on all 1797 digits (pixel values 0..16), fitted once per process (~1 s)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    bunch = load_digits()
    return LogisticRegression(max_iter=5000).fit(bunch.data, bunch.target)


def to_8x8(samples: Tensor) -> np.ndarray:
    """(N, 1, H, W) samples in [-1, 1] -> (N, 64) in the dataset's 0..16 scale, average-pooled to 8x8."""
    pooled = F.adaptive_avg_pool2d(samples.float().clamp(-1, 1), 8)
    return ((pooled + 1) * 8).reshape(len(samples), 64).cpu().numpy()


def recognised_rate(samples: Tensor, labels: Tensor) -> float:
    """Fraction of samples the classifier reads as the class they were conditioned on."""
    predicted = digit_classifier().predict(to_8x8(samples))
    return float((predicted == labels.cpu().numpy()).mean())
