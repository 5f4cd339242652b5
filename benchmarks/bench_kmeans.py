#!/usr/bin/env python3
"""k-means with model selection (k = 2..10) over DeepLesion-sized FC7 features.

The target: `select_k` over 33,000 x 4,096 float32 features in under 60 s on the
2-core CPU machine. The features are synthetic but shaped like ReLU FC7 outputs:
clusters of unequal sizes (28% down to 8% of the items, like the paper's four
lesion categories plus a mixed class) whose means and spreads live in a
`--latent_dim`-dimensional subspace, mapped into 4,096 dims by a random linear
layer, plus isotropic noise, then rectified (about half the entries are zero, as
in FC7). `select_k` is timed end to end (normalisation, PCA, k-means and the three
scores for every k, the centers) over `--repeats` runs on the same features; the
median is reported with the chosen k and its purity and NMI against the planted
labels.

    python benchmarks/bench_kmeans.py [--repeats 3] [--pca_dims 64|none] [--n_init 2]
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from deeplesion_tf.categorize import agreement  # noqa: E402
from deeplesion_tf.categorize import kmeans  # noqa: E402

# Cluster sizes as fractions of the items; unequal on purpose.
PROPORTIONS = (0.28, 0.22, 0.18, 0.14, 0.10, 0.08)


def make_features(num_items: int, num_features: int, *, latent_dim: int = 32,
                  separation: float = 1.5, noise: float = 1.0, seed: int = 0):
    """Synthetic FC7-like features with planted clusters.

    Args:
        num_items: rows to make.
        num_features: feature dimension (4,096 for FC7).
        latent_dim: dimension of the subspace holding the cluster structure.
        separation: scale of the cluster means in the latent space, against
            within-cluster spreads of 0.6 to 1.4; 1.5 makes neighbouring clusters
            overlap a little (silhouettes around 0.2, as for real CNN features).
        noise: standard deviation of the isotropic noise added in feature space.
        seed: seeds everything.

    Returns:
        `features` `[num_items, num_features]` float32, non-negative, and `labels`
        `[num_items]` int64, the planted cluster of each row.
    """
    rng = np.random.default_rng(seed)
    fractions = np.asarray(PROPORTIONS)
    sizes = np.floor(fractions / fractions.sum() * num_items).astype(np.int64)
    sizes[0] += num_items - sizes.sum()
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    # Everything stays float32: a float64 scalar would silently promote the
    # 540 MB feature matrix (NumPy 2 promotion rules).
    means = rng.standard_normal((len(sizes), latent_dim), dtype=np.float32)
    means *= np.float32(separation / np.sqrt(2.0))
    spreads = rng.uniform(0.6, 1.4, size=len(sizes)).astype(np.float32)
    latent = means[labels] + (rng.standard_normal((num_items, latent_dim), dtype=np.float32)
                              * spreads[labels, None])
    projection = rng.standard_normal((latent_dim, num_features), dtype=np.float32)
    projection *= np.float32(1.0 / np.sqrt(latent_dim))
    features = latent @ projection
    features += rng.normal(0.0, 0.5, size=num_features).astype(np.float32)
    features += rng.standard_normal(features.shape, dtype=np.float32) * np.float32(noise)
    np.maximum(features, 0.0, out=features)
    return features, labels


def _pca_dims(text: str):
    return None if text.lower() == "none" else int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=33000)
    parser.add_argument("--num_features", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k_min", type=int, default=2)
    parser.add_argument("--k_max", type=int, default=10)
    parser.add_argument("--criterion", default=kmeans.DEFAULT_CRITERION, choices=kmeans.CRITERIA)
    parser.add_argument("--pca_dims", type=_pca_dims, default=kmeans.DEFAULT_PCA_DIMS,
                        help="an int, or 'none' to cluster the full vectors")
    parser.add_argument("--n_init", type=int, default=kmeans.DEFAULT_N_INIT)
    parser.add_argument("--sample_size", type=int, default=kmeans.DEFAULT_SAMPLE_SIZE)
    parser.add_argument("--separation", type=float, default=1.5)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)

    start = time.perf_counter()
    features, truth = make_features(args.num_items, args.num_features,
                                    separation=args.separation, noise=args.noise,
                                    seed=args.seed)
    logging.info("made %d x %d features (%.0f%% zeros) in %.1f s", *features.shape,
                 100 * np.mean(features == 0), time.perf_counter() - start)

    seconds, selection = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        selection = kmeans.select_k(
            features, range(args.k_min, args.k_max + 1), criterion=args.criterion,
            seed=args.seed, sample_size=args.sample_size, n_init=args.n_init,
            pca_dims=args.pca_dims)
        seconds.append(time.perf_counter() - start)
        logging.info("select_k took %.1f s", seconds[-1])
    scores = agreement.agreement(truth, selection.labels)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"settings: {args.num_items} x {args.num_features} float32, "
          f"k = {args.k_min}..{args.k_max}, criterion {args.criterion}, PCA dims "
          f"{args.pca_dims}, silhouette sample {args.sample_size}, n_init {args.n_init}, "
          f"KMeans (Lloyd, k-means++), {len(PROPORTIONS)} planted clusters")
    print("| PCA dims | n_init | median s | runs (s) | k chosen | purity | NMI |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.pca_dims} | {args.n_init} | {statistics.median(seconds):.1f} | "
          f"{', '.join(f'{s:.1f}' for s in seconds)} | {selection.k} | "
          f"{scores['purity']:.4f} | {scores['nmi']:.4f} |")
    for name in kmeans.CRITERIA:
        print(f"{name}: " + ", ".join(f"{k}: {v:.3f}" for k, v in
                                      selection.scores[name].items()))


if __name__ == "__main__":
    main()
