"""One trial of the sweep: logistic regression trained by gradient descent with CuPy, on a
synthetic dataset made here, with the learning rate from the command line.

    python trial.py --lr 0.5 [--steps 50] [--samples 1024] [--seed 0]

The last line printed is the metric, the final training loss, computed on the GPU:

    loss 0.123456

Everything on the GPU is elementwise kernels and reductions: no `@`, `dot` or `matmul`, because
the emulated GPU has no cuBLAS or CUB. A step is a handful of kernels: the logits (a weighted
sum over features), the loss terms, the gradient (a weighted sum over samples), the update.
Defaults take about a second on a one-thread emulated member.
"""
import argparse

import cupy as cp
import numpy as np

FEATURES = 4
# The true separating plane: labels are drawn from sigmoid(TRUE_W . x + TRUE_B).
TRUE_W = (2.0, -1.5, 1.0, 0.5)
TRUE_B = -0.25

# sum over axis 0 of x * w[:, None]: the logits, without a temporary (CuPy's own reduction
# kernel, not cuBLAS).
weighted_sum = cp.ReductionKernel(
    "T x, T w", "T z", "x * w", "a + b", "z = a", "0", "weighted_sum"
)
# The loss (cross-entropy from the logit, stable for large |z|) and d loss / d z, in one pass.
loss_terms = cp.ElementwiseKernel(
    "T z, T y",
    "T loss, T err",
    "loss = max(z, (T)0) - z * y + log1p(exp(-fabs(z))); err = 1 / (1 + exp(-z)) - y",
    "loss_terms",
)


def make_data(samples, seed):
    """Features with a row of ones (the bias) on top, and 0/1 labels, on the GPU."""
    # Drawn with NumPy on the host (CuPy's random numbers need cuRAND, which the emulated GPU
    # lacks), then copied to the GPU once.
    rng = np.random.default_rng(seed)
    x = np.ones((FEATURES + 1, samples), np.float32)
    x[1:] = rng.standard_normal((FEATURES, samples))
    p = 1 / (1 + np.exp(-(np.asarray((TRUE_B, *TRUE_W), np.float32) @ x)))
    y = (rng.random(samples) < p).astype(np.float32)
    return cp.asarray(x), cp.asarray(y)


def train(lr, steps, samples, seed):
    """Full-batch gradient descent; returns the final mean loss (reduced on the GPU)."""
    x, y = make_data(samples, seed)
    w = cp.zeros((FEATURES + 1, 1), dtype=cp.float32)
    for _ in range(steps):
        _, err = loss_terms(weighted_sum(x, w, axis=0), y)
        w -= lr * weighted_sum(x, err, axis=1, keepdims=True) / samples
    loss, _ = loss_terms(weighted_sum(x, w, axis=0), y)
    return float(loss.mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    loss = train(a.lr, a.steps, a.samples, a.seed)
    dev = cp.cuda.Device()
    print(f"trial lr={a.lr} device={dev.id} steps={a.steps}")
    print(f"loss {loss:.6f}")


if __name__ == "__main__":
    main()
