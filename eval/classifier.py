"""Real-vs-generated classifier test as CaloChallenge 2022 runs it: a small DNN, a train/validation/test
split, isotonic calibration, and AUC and JSD on the test split.

CaloChallenge's evaluation (CaloChallenge/homepage code/evaluate.py) trains a fully connected
network with LeakyReLU activations on equal numbers of real and generated showers (60/20/20 %
train/test/validation split), keeps the epoch that does best on a held-out split, calibrates the
output with isotonic regression on a held-out split and reports the AUC and
JSD = (ln 2 - BCE) / ln 2 on the remaining one. The inputs are either high-level features with
log10 of the incident energy, or the voxels divided by the incident energy. The same procedure is
written here in numpy: deterministic for a seed (no framework thread pools, one seeded
Generator for the split, initialisation and shuffling) and fast on two CPU cores, which a
PyTorch or Keras network of CaloChallenge's size (3 x 512 units, 50 epochs) is not. The network
is smaller (2 x 64 by default) and stops early on the validation loss.

A logistic regression on features and their squares, which this module replaces, cannot see a
changed correlation: flipping the correlation of two features from +0.8 to -0.8 left it at
AUC 0.51 where the best possible is 0.90 (tests/test_calochallenge.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

LN2 = math.log(2.0)
PROB_CLIP = 1e-6  # CaloChallenge's isotonic regression clips probabilities to [1e-6, 1 - 1e-6]


@dataclass(frozen=True)
class ClassifierConfig:
    """Network, training and split settings of the classifier test.

    Attributes:
        hidden: Units of each hidden layer (LeakyReLU, slope 0.01).
        learning_rate: Adam step size.
        batch_size: Events per gradient step.
        max_epochs: Upper limit on passes over the training split.
        patience: Stop after this many epochs without a lower validation loss; the best epoch's
            weights are kept.
        weight_decay: L2 penalty on the weights (not the biases), per event.
        train_fraction: Share of each class used for training.
        validation_fraction: Share used for early stopping and calibration; the rest is the test
            split that the reported figures come from.
    """

    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 15
    weight_decay: float = 1e-4
    train_fraction: float = 0.6
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden layers must have >= 1 unit each, got {self.hidden!r}")
        if not (self.learning_rate > 0 and self.batch_size >= 1 and self.max_epochs >= 1 and self.patience >= 1):
            raise ValueError("learning_rate must be > 0 and batch_size, max_epochs, patience >= 1")
        if not (0 < self.train_fraction and 0 < self.validation_fraction and self.train_fraction + self.validation_fraction < 1):
            raise ValueError(
                f"train_fraction and validation_fraction must be > 0 with a sum below 1, got "
                f"{self.train_fraction} and {self.validation_fraction}"
            )


@dataclass
class ClassifierResult:
    """Performance of a real-vs-generated classifier on its test split.

    Attributes:
        auc: Area under the ROC curve of the calibrated output on the test split (0.5 =
            indistinguishable), as CaloChallenge reports it.
        bce: Binary cross-entropy of the calibrated output on the test split, in nats.
        jsd: (ln 2 - bce) / ln 2, an estimate of the Jensen-Shannon divergence in bits; ~0 when
            the samples cannot be told apart (slightly negative from calibration noise).
        auc_uncalibrated: AUC of the raw network output on the test split.
        n_train: Events per class used for training.
        n_validation: Events per class used for early stopping and calibration.
        n_test: Events per class in the test split.
        epochs: Epochs trained (the best one's weights are used).
        roc_fpr, roc_tpr: The ROC curve of the calibrated output on the test split (false and
            true positive rates, "real" the positive class), at most ``ROC_POINTS`` points: what
            the report draws; its area is ``auc``.
    """

    auc: float
    bce: float
    jsd: float
    auc_uncalibrated: float
    n_train: int
    n_validation: int
    n_test: int
    epochs: int
    roc_fpr: tuple[float, ...] = ()
    roc_tpr: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from the Mann-Whitney rank statistic, ties counted as one half."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty_like(scores)
    # Average ranks over ties so a constant classifier scores exactly 0.5.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


ROC_POINTS = 201


def roc_curve(labels: np.ndarray, scores: np.ndarray, max_points: int = ROC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold, thinned to ``max_points``.

    The curve starts at (0, 0) and ends at (1, 1); tied scores form one step, so the trapezoid
    area under the full curve equals ``roc_auc`` (ties counted as one half). Thinning keeps the
    end points and an even spread of thresholds: the report draws it, the AUC is computed exactly.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_curve needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tpr = np.r_[0.0, np.cumsum(y)[last_of_tie] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last_of_tie] / n_neg]
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def auc_null_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUC of an uninformative classifier (Mann-Whitney, no ties).

    sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)); ties (a calibrated output has plateaus) only
    make the spread smaller, so thresholds built on it are conservative.
    """
    if n_pos < 1 or n_neg < 1:
        return float("nan")
    return math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


# --------------------------------------------------------------------------- isotonic calibration
@dataclass
class IsotonicCalibration:
    """Monotone map from raw scores to probabilities, fitted by pool-adjacent-violators.

    Prediction interpolates linearly between the fitted points and clips outside them, as
    scikit-learn's ``IsotonicRegression(out_of_bounds='clip', y_min=1e-6, y_max=1 - 1e-6)``
    that CaloChallenge uses.
    """

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> "IsotonicCalibration":
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        xs, inverse, weights = np.unique(scores, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=labels, minlength=xs.size)
        # Pool adjacent violators: a stack of blocks (sum, weight, number of distinct scores).
        block_sum: list[float] = []
        block_w: list[float] = []
        block_len: list[int] = []
        for s, w in zip(sums, weights):
            block_sum.append(float(s))
            block_w.append(float(w))
            block_len.append(1)
            while len(block_sum) > 1 and block_sum[-2] / block_w[-2] >= block_sum[-1] / block_w[-1]:
                s_last, w_last, n_last = block_sum.pop(), block_w.pop(), block_len.pop()
                block_sum[-1] += s_last
                block_w[-1] += w_last
                block_len[-1] += n_last
        fitted = np.repeat(np.array(block_sum) / np.array(block_w), block_len)
        return cls(xs, np.clip(fitted, PROB_CLIP, 1.0 - PROB_CLIP))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        if self.x.size == 1:
            return np.full(np.shape(scores), self.y[0])
        return np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)


# --------------------------------------------------------------------------- BLAS threads
# OpenBLAS runs every matrix product above ~2.6e5 multiply-adds on all cores. The network's
# products are just above that size and there are tens of thousands of them: with two threads
# on a busy two-core machine, most of the time went to threads waiting for each other (13 s
# instead of 0.2 s for 2,000 events per class, measured). Training therefore runs with one
# OpenBLAS thread, set through OpenBLAS's own C function when numpy's OpenBLAS exports it
# (what threadpoolctl does); elsewhere nothing changes. One thread also makes the results
# independent of the machine's core count.
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@functools.lru_cache(maxsize=1)
def _openblas_thread_controls():
    """(get, set) of the OpenBLAS numpy loaded, or None where it cannot be found (then a no-op)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:  # the shared libraries loaded (Linux)
            fields = [line.split() for line in maps]
    except OSError:
        return None
    paths = {f[-1] for f in fields if len(f) >= 6 and "openblas" in f[-1].rsplit("/", 1)[-1].lower()}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                getter, setter = getattr(lib, get_name), getattr(lib, set_name)
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                return getter, setter
    return None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's OpenBLAS on one thread, then restore its thread count."""
    controls = _openblas_thread_controls()
    if controls is None:
        yield
        return
    getter, setter = controls
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)


# --------------------------------------------------------------------------- the network
class _MLP:
    """Fully connected network with LeakyReLU hidden layers and one logit output, trained by Adam."""

    SLOPE = 0.01

    def __init__(self, n_in: int, hidden: tuple[int, ...], rng: np.random.Generator):
        sizes = [n_in, *[int(h) for h in hidden], 1]
        shapes = [(a, b) for a, b in zip(sizes[:-1], sizes[1:])] + [(b,) for b in sizes[1:]]
        # All parameters are views into one flat buffer, so that Adam updates them in a few
        # vectorised operations instead of a few per layer (the step is otherwise overhead-bound).
        self.flat = np.zeros(sum(int(np.prod(s)) for s in shapes), dtype=np.float32)
        views, offset = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            views.append(self.flat[offset : offset + size].reshape(shape))
            offset += size
        n_layers = len(sizes) - 1
        self.weights, self.biases = views[:n_layers], views[n_layers:]
        # He initialisation for the LeakyReLU layers (the output layer too, which is harmless).
        for w in self.weights:
            w[...] = rng.standard_normal(w.shape) * math.sqrt(2.0 / w.shape[0])
        self._grad = np.zeros_like(self.flat)
        self._grad_views, offset = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            self._grad_views.append(self._grad[offset : offset + size].reshape(shape))
            offset += size

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            z = h @ w + b
            h = np.where(z > 0, z, self.SLOPE * z)
        return (h @ self.weights[-1] + self.biases[-1])[:, 0]

    def gradients(self, x: np.ndarray, y: np.ndarray, weight_decay: float) -> np.ndarray:
        """Gradient of the mean BCE-with-logits (+ L2 on weights) for one batch, laid out like ``flat``."""
        acts, pres = [x], []
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            z = h @ w + b
            pres.append(z)
            h = np.where(z > 0, z, self.SLOPE * z)
            acts.append(h)
        z_out = (h @ self.weights[-1] + self.biases[-1])[:, 0]
        delta = (_sigmoid(z_out) - y)[:, None].astype(np.float32) / len(y)
        n_layers = len(self.weights)
        grad_w, grad_b = self._grad_views[:n_layers], self._grad_views[n_layers:]
        for layer in range(n_layers - 1, -1, -1):
            np.matmul(acts[layer].T, delta, out=grad_w[layer])
            grad_w[layer] += weight_decay * self.weights[layer]
            grad_b[layer][...] = delta.sum(axis=0)
            if layer:
                delta = (delta @ self.weights[layer].T) * np.where(pres[layer - 1] > 0, 1.0, self.SLOPE).astype(np.float32)
        return self._grad


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -30.0, 30.0)))


def _bce_with_logits(z: np.ndarray, y: np.ndarray) -> float:
    z = z.astype(np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _train(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
    cfg: ClassifierConfig, rng: np.random.Generator,
) -> tuple[_MLP, int]:
    """Adam with early stopping on the validation loss; returns the best epoch's network."""
    net = _MLP(x_train.shape[1], cfg.hidden, rng)
    m = np.zeros_like(net.flat)
    v = np.zeros_like(net.flat)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    best_loss, best_flat, best_epoch, epochs = math.inf, net.flat.copy(), 0, 0
    n = len(x_train)
    for epoch in range(1, cfg.max_epochs + 1):
        epochs = epoch
        order = rng.permutation(n)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            g = net.gradients(x_train[idx], y_train[idx], cfg.weight_decay)
            step += 1
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * g * g
            denom = np.sqrt(v / (1.0 - beta2**step))
            denom += eps
            net.flat -= (cfg.learning_rate / (1.0 - beta1**step)) * m / denom
        loss = _bce_with_logits(net.logits(x_val), y_val)
        if loss < best_loss - 1e-7:
            best_loss, best_epoch = loss, epoch
            best_flat = net.flat.copy()
        elif epoch - best_epoch >= cfg.patience:
            break
    net.flat[...] = best_flat
    return net, epochs


def _finite_rows(x: np.ndarray) -> np.ndarray:
    """The rows of x without a non-finite value (x itself, not a copy, when every row is finite)."""
    finite = np.all(np.isfinite(x), axis=1)
    return x if finite.all() else x[finite]


def classifier_test(
    real: np.ndarray,
    generated: np.ndarray,
    seed: int = 0,
    config: ClassifierConfig | None = None,
) -> ClassifierResult:
    """Train a DNN to tell real from generated events and report its calibrated test AUC and JSD.

    Both classes are cut to the same size (so chance-level BCE is ln 2) and each is split into
    train / validation / test shares. Inputs are standardised with the training split's
    statistics. The network is trained on the training split with early stopping on the
    validation loss, its output calibrated by isotonic regression on the validation split, and
    AUC, BCE and JSD computed on the test split, which played no part in training or calibration.
    Callers include the conditions (incident energy, angle) as columns, as CaloChallenge does:
    they are distributed alike in both samples, and let the network judge each shower against
    what its conditions imply.

    Args:
        real: Feature table of real events, (n, d); rows with non-finite values are dropped.
            Float tables are used in their own type until each split is gathered in float64.
        generated: Feature table of generated events, (m, d).
        seed: Seed of the subsampling, split, initialisation and batch order.
        config: Network and training settings (defaults: ClassifierConfig()).

    Returns:
        ClassifierResult.

    Raises:
        ValueError: if feature dimensions differ or too few events remain for three splits.
    """
    cfg = config or ClassifierConfig()
    # Float tables are kept in their type (the voxel tables come in float32) and each split is
    # gathered and standardised in float64; anything else is converted.
    real, generated = (x if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x, dtype=np.float64)
                       for x in (np.asarray(real), np.asarray(generated)))
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature tables must be 2-D with equal widths, got {real.shape} and {generated.shape}")
    real, generated = _finite_rows(real), _finite_rows(generated)
    n = min(len(real), len(generated))
    n_train = int(n * cfg.train_fraction)
    n_val = int(n * cfg.validation_fraction)
    n_test = n - n_train - n_val
    if min(n_train, n_val, n_test) < 5:
        raise ValueError(
            f"classifier_test needs >= 5 finite events per class in each of train/validation/test, "
            f"got {len(real)} and {len(generated)} events"
        )
    rng = np.random.default_rng(seed)
    real_rows = rng.permutation(len(real))[:n]
    generated_rows = rng.permutation(len(generated))[:n]
    bounds = ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, n))

    def part(k: int) -> tuple[np.ndarray, np.ndarray]:
        # One split at a time, gathered from the inputs (no shuffled copy of the whole tables):
        # the voxel classifier's tables are the largest arrays of an evaluation.
        lo, hi = bounds[k]
        x = np.empty((2 * (hi - lo), real.shape[1]))
        x[: hi - lo] = real[real_rows[lo:hi]]
        x[hi - lo :] = generated[generated_rows[lo:hi]]
        return x, np.concatenate([np.ones(hi - lo), np.zeros(hi - lo)])

    def standardised(x: np.ndarray) -> np.ndarray:
        x -= mu
        x /= sd
        return x.astype(np.float32)

    x_train, y_train = part(0)
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    x_train = standardised(x_train)
    x_val, y_val = part(1)
    x_val = standardised(x_val)
    x_test, y_test = part(2)
    x_test = standardised(x_test)
    with one_blas_thread():
        net, epochs = _train(x_train, y_train, x_val, y_val, cfg, rng)
        z_val, z_test = net.logits(x_val).astype(np.float64), net.logits(x_test).astype(np.float64)
    calibration = IsotonicCalibration.fit(_sigmoid(z_val), y_val)
    p_test = calibration.predict(_sigmoid(z_test))
    bce = float(-np.mean(y_test * np.log(p_test) + (1 - y_test) * np.log(1 - p_test)))
    fpr, tpr = roc_curve(y_test, p_test)
    return ClassifierResult(
        auc=roc_auc(y_test, p_test),
        bce=bce,
        jsd=(LN2 - bce) / LN2,
        auc_uncalibrated=roc_auc(y_test, z_test),
        n_train=n_train,
        n_validation=n_val,
        n_test=n_test,
        epochs=epochs,
        roc_fpr=tuple(float(v) for v in fpr),
        roc_tpr=tuple(float(v) for v in tpr),
    )
