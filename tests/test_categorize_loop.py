"""The categorizer loop end to end on a tiny patch set with three obvious kinds."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.categorize import agreement
from deeplesion_tf.categorize import loop
from deeplesion_tf.categorize import vgg16_features


def _patches(per_kind=12, size=32):
    """Horizontal stripes, vertical stripes and a centred blob, noisy; kinds interleaved.

    The kinds differ in pattern, not brightness: features are L2-normalised before
    k-means, so brightness alone would not separate them.
    """
    rng = np.random.default_rng(0)
    kinds = np.tile(np.arange(3), per_kind)
    y, x = np.mgrid[:size, :size]
    shapes = np.stack([
        100.0 * ((y // 4) % 2),
        100.0 * ((x // 4) % 2),
        100.0 * (((y - size / 2) ** 2 + (x - size / 2) ** 2) < (size / 4) ** 2),
    ]) - 50.0
    patches = shapes[kinds][..., None] + rng.normal(0, 5, (len(kinds), size, size, 3))
    ids = [f"lesion-{i:02d}" for i in range(len(kinds))]
    dataset = tf.data.Dataset.from_tensor_slices(
        {"patch": patches.astype(np.float32), "lesion_id": ids})
    return dataset.cache(), kinds, ids


def test_split_indices_partition_the_items():
    train, val, test = loop.split_indices(20, (0.75, 0.10, 0.15), seed=3)
    assert (len(train), len(val), len(test)) == (15, 2, 3)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(20))
    again = loop.split_indices(20, (0.75, 0.10, 0.15), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    with pytest.raises(ValueError, match="at least 3"):
        loop.split_indices(2, (0.75, 0.10, 0.15), seed=0)


def test_loop_finds_the_kinds_and_converges():
    patches, kinds, ids = _patches()
    tf.keras.utils.set_random_seed(0)
    model = vgg16_features.build_vgg16(input_size=32, width_multiplier=1 / 4, fc_units=64,
                                       num_classes=3)
    settings = loop.LoopSettings(k_values=(2, 3, 4, 5), max_iterations=3, epochs=1,
                                 batch_size=8, seed=0)
    result = loop.run(model, patches, settings)
    assert result.lesion_ids == ids
    first = result.iterations[0]
    assert first.purity is None and first.nmi is None
    assert first.k == 3
    assert agreement.purity(kinds, result.labels) == 1.0
    assert sorted(first.cluster_sizes) == [12, 12, 12]
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in result.iterations)
    # The kinds are obvious, so the second clustering repeats the first.
    assert result.converged and len(result.iterations) == 2
    assert result.iterations[1].purity == 1.0 and result.iterations[1].nmi == pytest.approx(1.0)
    assert set(first.k_scores["silhouette"]) == {2, 3, 4, 5}


def test_a_network_that_diverges_stops_the_loop_with_its_name_and_iteration():
    patches, _, _ = _patches(per_kind=4)
    tf.keras.utils.set_random_seed(0)
    model = vgg16_features.build_vgg16(input_size=32, width_multiplier=1 / 4, fc_units=64,
                                       num_classes=3, name="vgg16_unstable")
    settings = loop.LoopSettings(k_values=(3,), max_iterations=2, epochs=1, batch_size=4,
                                 learning_rate=1e12, seed=0)
    with pytest.raises(loop.TrainingDiverged,
                       match=r"iteration 1: the training loss of network 'vgg16_unstable' not "
                             r"finite \(\d+ of 1 values\).*learning rate 1e\+12"):
        loop.run(model, patches, settings)
    # Weights that overflow stop it before k-means sees a NaN.
    model.get_layer("block1_conv1").kernel.assign(
        np.full(model.get_layer("block1_conv1").kernel.shape, np.inf, np.float32))
    with pytest.raises(loop.TrainingDiverged, match="iteration 1: the features of network "
                                                    "'vgg16_unstable' not finite"):
        loop.run(model, patches, settings)


@pytest.mark.slow
def test_an_ensemble_chooses_k_by_agreement_and_fine_tunes_every_member():
    patches, kinds, ids = _patches()
    models = []
    for member in range(3):
        tf.keras.utils.set_random_seed(member)
        models.append(vgg16_features.build_vgg16(input_size=32, width_multiplier=1 / 4,
                                                 fc_units=64, name=f"vgg16_{member}"))
    before = [m.get_layer("block1_conv1").get_weights()[0].copy() for m in models]
    settings = loop.LoopSettings(feature_layer="block1", feature_normalization="standardize",
                                 k_values=(2, 3, 4, 5), k_criterion="agreement",
                                 max_iterations=1, epochs=1, batch_size=8, mirror=True, seed=0)
    result = loop.run(models, patches, settings)
    first = result.iterations[0]
    assert first.k == 3 and agreement.purity(kinds, result.labels) == 1.0
    assert first.k_scores["agreement"][3] == max(first.k_scores["agreement"].values())
    assert set(first.k_scores["agreement_standard_error"]) == {2, 3, 4, 5}
    # Every member was fine-tuned (its first convolution moved).
    assert all(not np.array_equal(b, m.get_layer("block1_conv1").get_weights()[0])
               for b, m in zip(before, models))
    with pytest.raises(ValueError, match="at least 2 networks"):
        loop.run(models[0], patches, settings)


def test_with_agreement_later_iterations_keep_the_first_iterations_k():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 20)
    latent = rng.normal(0, 8, (3, 4))[truth] + rng.normal(0, 1, (60, 4))
    members = [latent @ rng.normal(0, 1, (4, 6)) for _ in range(3)]
    settings = loop.LoopSettings(feature_normalization="standardize", k_values=(2, 3, 4, 5),
                                 k_criterion="agreement", seed=0)
    k, labels, scores = loop._cluster(members, settings, iteration=1)
    assert k == 3 and agreement.purity(truth, labels) == 1.0
    assert set(scores) >= {"agreement", "agreement_standard_error", "pairwise_ari", "bic"}
    k, labels, scores = loop._cluster(members, settings, iteration=2, fixed_k=4)
    assert k == 4 and scores == {} and sorted(set(labels.tolist())) == [0, 1, 2, 3]
