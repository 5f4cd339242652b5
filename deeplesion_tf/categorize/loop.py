"""The categorizer's loop (paper Sec. 2.2, Fig. 2).

Each iteration: encode every lesion patch with VGG16's FC6 or FC7 (or, without
pretrained weights, a convolutional block's pooled output) -> k-means,
with k chosen by model selection -> compare the clusters with the previous
iteration's (purity and NMI) -> fine-tune VGG16 on the cluster labels with a
fresh random 75/10/15 split and report top-1 accuracy on the 15% test part. The
loop stops when purity and NMI against the previous iteration both reach their
thresholds, or after `max_iterations`.

The network may be an ensemble: several VGG16s (members, e.g. differently
initialised random networks), whose features are concatenated for k-means and
each of which is fine-tuned on the same cluster labels. With the "agreement"
criterion k is the number of clusters the members agree on best
(`member_agreement`), chosen on the first iteration, while the members are
still independent random networks, and kept for the later ones.

Patches are a `tf.data.Dataset` of unbatched `{"patch": [S, S, 3], "lesion_id":
string}` (see `deeplesion_tf.data.patch_pipeline`), read in the same order every
time; it should be cached by the caller.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeplesion_tf.categorize import agreement
from deeplesion_tf.categorize import kmeans
from deeplesion_tf.categorize import member_agreement
from deeplesion_tf.categorize import vgg16_features


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How the loop runs.

    Attributes:
      feature_layer: "fc6" or "fc7", or "block1" ... "block5" (pooled, see
        `vgg16_features.pooled_block_extractor`).
      feature_normalization: how k-means normalises the features, one of
        `kmeans.NORMALIZATIONS` ("l2" for FC6/FC7, "standardize" for pooled blocks).
      k_values: the k tried by model selection; a single value fixes k.
      k_criterion: the score that chooses k, one of `kmeans.CRITERIA` ("silhouette",
        the default) or `member_agreement.AGREEMENT` ("agreement", for the CPU
        quickstart's ensemble of random networks; needs two or more).
      max_iterations: iterations at most.
      purity_threshold: purity against the previous iteration needed to stop.
      nmi_threshold: NMI against the previous iteration needed to stop.
      epochs: fine-tuning epochs per iteration.
      batch_size: patches per fine-tuning step (global, over all replicas).
      learning_rate: SGD learning rate (momentum 0.9, as the paper's detector).
      split_fractions: train / validation / test fractions of each iteration's split.
      mirror: features are the mean of the patch's and its left-right mirror's
        (a lesion's category does not depend on the body side it is on).
      seed: seeds the splits, k-means and the new classifier layers.
    """

    feature_layer: str = "fc7"
    feature_normalization: str = kmeans.DEFAULT_NORMALIZATION
    k_values: Tuple[int, ...] = tuple(range(2, 11))
    k_criterion: str = kmeans.DEFAULT_CRITERION
    max_iterations: int = 6
    purity_threshold: float = 0.9
    nmi_threshold: float = 0.85
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 1e-3
    split_fractions: Tuple[float, float, float] = (0.75, 0.10, 0.15)
    mirror: bool = False
    seed: int = 0


class IterationReport(NamedTuple):
    """One iteration: the clustering, its agreement with the previous one, the fine-tuning."""

    iteration: int
    k: int
    k_scores: Dict[str, Dict[int, float]]
    cluster_sizes: List[int]
    purity: Optional[float]   # against the previous iteration; None on the first
    nmi: Optional[float]
    train_loss: float
    validation_accuracy: float
    test_accuracy: float


class CategorizerResult(NamedTuple):
    """Final cluster of every lesion, and the history of the loop."""

    lesion_ids: List[str]
    labels: np.ndarray          # [num_lesions] int, the last iteration's clusters
    iterations: List[IterationReport]
    converged: bool


def split_indices(num_items: int, fractions: Sequence[float], seed: int
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random train/validation/test split of `range(num_items)` (each part non-empty).

    Raises:
      ValueError: fewer than 3 items.
    """
    if num_items < 3:
        raise ValueError(f"need at least 3 lesions to split 3 ways, got {num_items}")
    order = np.random.default_rng(seed).permutation(num_items)
    num_test = max(1, int(round(fractions[2] * num_items)))
    num_val = max(1, int(round(fractions[1] * num_items)))
    num_train = num_items - num_val - num_test
    if num_train < 1:
        raise ValueError(f"{num_items} lesions leave no training part for {fractions}")
    return (np.sort(order[:num_train]), np.sort(order[num_train:num_train + num_val]),
            np.sort(order[num_train + num_val:]))


class TrainingDiverged(RuntimeError):
    """A network's loss or features stopped being finite numbers; the run cannot go on."""


def _check_finite(values, what: str, network: str, iteration: int, settings: LoopSettings):
    """Raises `TrainingDiverged` naming the network, the iteration and what to change.

    k-means (and every later iteration) on NaN features would fail far from the cause,
    and sklearn's message says nothing about training: a categorizer started from a
    trunk of unbounded activations reached NaN in its first fine-tuning.
    """
    values = np.asarray(values, np.float64)
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise TrainingDiverged(
            f"iteration {iteration}: {what} of network {network!r} not finite ({bad} of "
            f"{np.size(values)} values): its training diverged (SGD, learning rate "
            f"{settings.learning_rate:g}); lower --learning_rate, or start from other --weights")


def _subset(patches: tf.data.Dataset, labels: np.ndarray, indices: np.ndarray) -> tf.data.Dataset:
    """`(patch, label)` pairs of the patches at `indices` (in dataset order)."""
    keep = np.zeros(len(labels), bool)
    keep[indices] = True
    keep, labels = tf.constant(keep), tf.constant(labels, tf.int32)
    return (patches.enumerate()
            .filter(lambda i, element: tf.gather(keep, i))
            .map(lambda i, element: (element["patch"], tf.gather(labels, i))))


def _cluster(members: List[np.ndarray], settings: LoopSettings, iteration: int,
             fixed_k: Optional[int] = None):
    """k, labels and `{criterion: {k: score}}` of one iteration (features: one array per member).

    `fixed_k` (or a single value in `settings.k_values`) skips model selection.
    """
    seed = settings.seed + iteration
    features = np.concatenate(members, axis=1)
    normalization = settings.feature_normalization
    if fixed_k is not None or len(settings.k_values) == 1:
        k = fixed_k if fixed_k is not None else settings.k_values[0]
        labels, _ = kmeans.cluster(features, k, seed=seed, normalization=normalization)
        return k, np.asarray(labels), {}
    by_agreement = settings.k_criterion == member_agreement.AGREEMENT
    # The criteria of kmeans are computed in every case, to be audited in the report;
    # its clusterings of every k are the agreement's reference clusters.
    selection = kmeans.select_k(features, settings.k_values, seed=seed,
                                criterion=kmeans.BIC if by_agreement else settings.k_criterion,
                                normalization=normalization)
    scores = dict(selection.scores)
    if not by_agreement:
        return selection.k, np.asarray(selection.labels), scores
    agreement_by_k = member_agreement.member_agreement(
        members, settings.k_values, seed=seed, normalization=normalization,
        references=selection.labels_by_k)
    scores[member_agreement.AGREEMENT] = agreement_by_k.mean
    scores[member_agreement.AGREEMENT + "_standard_error"] = agreement_by_k.standard_error
    scores[member_agreement.PAIRWISE_ARI] = agreement_by_k.pairwise_ari
    k = member_agreement.best_k(agreement_by_k)
    return k, np.asarray(agreement_by_k.labels[k]), scores


def _fine_tune(model: keras.Model, patches: tf.data.Dataset, labels: np.ndarray, k: int,
               settings: LoopSettings, iteration: int, strategy: tf.distribute.Strategy,
               member: int = 0) -> Tuple[float, float, float]:
    train, val, test = split_indices(len(labels), settings.split_fractions,
                                     seed=settings.seed * 1000 + iteration)
    batch = settings.batch_size
    with strategy.scope():
        # Each member gets its own classifier initialisation; member 0 keeps the
        # seeds of a single network.
        keras.utils.set_random_seed(settings.seed * 1000 + iteration + 100_000 * member)
        classifier = vgg16_features.with_new_classifier(model, k)
        classifier.compile(
            optimizer=keras.optimizers.SGD(settings.learning_rate, momentum=0.9),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = classifier.fit(
        _subset(patches, labels, train).shuffle(len(train), seed=settings.seed + iteration)
        .batch(batch), epochs=settings.epochs, verbose=0)
    _check_finite(history.history["loss"], "the training loss", model.name, iteration, settings)
    _, val_accuracy = classifier.evaluate(_subset(patches, labels, val).batch(batch), verbose=0)
    _, test_accuracy = classifier.evaluate(_subset(patches, labels, test).batch(batch), verbose=0)
    return float(history.history["loss"][-1]), float(val_accuracy), float(test_accuracy)


def run(models: Union[keras.Model, Sequence[keras.Model]], patches: tf.data.Dataset,
        settings: LoopSettings, strategy: Optional[tf.distribute.Strategy] = None,
        followers: Sequence[keras.Model] = ()) -> CategorizerResult:
    """Runs the loop until the clusters converge or `max_iterations` pass.

    Args:
      models: VGG16 from `vgg16_features.build_vgg16`, or an ensemble of them (a
        sequence), built under `strategy.scope()`; fine-tuned in place. The
        reported losses and accuracies are the members' means.
      patches: the lesion patches (see the module docstring).
      settings: a `LoopSettings`.
      strategy: the `tf.distribute` strategy; the default strategy when None.
      followers: more VGG16s fine-tuned on every iteration's clusters as the
        members are, but not encoding: e.g. a network with the detector's trunk
        settings, saved for the detector to start from, whose group
        normalisation would change the members' features (on the default PACS
        it moved the chosen k from 5 to 7). Their accuracies are logged, not
        reported.

    Returns:
      A `CategorizerResult`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    models = [models] if isinstance(models, keras.Model) else list(models)
    if (settings.k_criterion == member_agreement.AGREEMENT and len(settings.k_values) > 1
            and len(models) < 2):
        raise ValueError("k_criterion 'agreement' needs an ensemble of at least 2 networks, "
                         f"got {len(models)}")
    reports: List[IterationReport] = []
    previous: Optional[np.ndarray] = None
    converged = False
    lesion_ids: List[str] = []
    labels = np.zeros(0, int)
    for iteration in range(1, settings.max_iterations + 1):
        members = []
        for model in models:
            extractor = vgg16_features.feature_extractor(model, settings.feature_layer)
            features, lesion_ids = vgg16_features.extract_features(extractor, patches,
                                                                   mirror=settings.mirror)
            _check_finite(features, "the features", model.name, iteration, settings)
            members.append(features)
        # The members' agreement tells k only while they are independent views: once
        # every member is fine-tuned on the same clusters they agree on those
        # (on the default PACS, seed 1 went from k = 5 to k = 3 after one round).
        # So with that criterion k is chosen on the first iteration's random
        # networks and kept; the later iterations refine the clusters.
        fixed_k = (reports[0].k if reports and settings.k_criterion == member_agreement.AGREEMENT
                   else None)
        k, labels, k_scores = _cluster(members, settings, iteration, fixed_k)
        purity = nmi = None
        if previous is not None:
            purity = agreement.purity(previous, labels)
            nmi = agreement.nmi(previous, labels)
        loss, val_accuracy, test_accuracy = np.mean(
            [_fine_tune(model, patches, labels, k, settings, iteration, strategy, member)
             for member, model in enumerate(models)], axis=0).tolist()
        for j, follower in enumerate(followers):
            _, _, follower_accuracy = _fine_tune(follower, patches, labels, k, settings,
                                                 iteration, strategy, len(models) + j)
            logging.info("Iteration %d: follower %s test accuracy %.3f", iteration,
                         follower.name, follower_accuracy)
        reports.append(IterationReport(
            iteration=iteration, k=k, k_scores=k_scores,
            cluster_sizes=np.bincount(labels, minlength=k).tolist(), purity=purity, nmi=nmi,
            train_loss=loss, validation_accuracy=val_accuracy, test_accuracy=test_accuracy))
        logging.info("Iteration %d: k=%d, purity %s, NMI %s, test accuracy %.3f", iteration, k,
                     purity, nmi, test_accuracy)
        if (purity is not None and purity >= settings.purity_threshold
                and nmi >= settings.nmi_threshold):
            converged = True
            break
        previous = labels
    return CategorizerResult(lesion_ids, labels, reports, converged)
