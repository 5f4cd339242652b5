"""The detector's input pipeline: `deeplesion/*` key slices -> padded batches (paper Sec. 2.3).

Shape shorthand:
  B: images per batch.
  S: `image_size`, the side of the square network input (512 in the paper).
  C: channels, `3 * len(windows)`.
  N: the most lesions of one image in the batch (other images padded).
  n: lesions of one example.

Coordinates: boxes are `[ymin, xmin, ymax, xmax]` in absolute pixels of the
network input, pixel centres at integers (the convention of
`deeplesion_tf.data.bookmarks`: a box `[y1, x1, y2, x2]` covers the pixels
`image[y1:y2 + 1, x1:x2 + 1]`).

Per example:
  1. HU of the previous, key and next slices (`previous_slice`, `image`,
     `next_slice`): `[H, W, 3]`; or, with `slice_interval_mm`, slices that far
     apart interpolated from the stored ones (`interpolate_slices`).
  2. Resize (bilinear, no antialiasing) by `scale = S / max(H, W)` to
     `[round(H * scale), round(W * scale)]`; or, with a target pixel spacing
     (`pixel_spacing_mm`, 3DCE's 0.8 mm), by `spacing / pixel_spacing_mm`, no
     more than `S / max(H, W)` (`input_scale`). The resampling uses exactly
     `scale` on both axes, so a pixel centre `p` of the original lies at
     `(p + 0.5) * scale - 0.5` in the resized image (`scale_boxes`), on both
     axes; at `scale == 1` nothing is resampled.
  3. Windows: channel `3 * k + j` is slice `j` (0 previous, 1 key, 2 next)
     under `windows[k]`, in [0, 1]. With the default single wide window: the
     3 channels are previous, key, next.
  4. Training only: a random horizontal flip of the resized image and its
     boxes (column `c` of the resized width `W'` goes to `W' - 1 - c`).
  5. Pad bottom and right with 0.0 to `[S, S, C]`.
Boxes come from `lesions/measurement`: the extent of the 4 endpoints widened
by `box_padding_px` on each side and clipped to the original image (the rule of
`bookmarks.measure`), then mapped as in step 2 and clipped to the resized image.
The stored `lesions/bbox` is not used: its padding is the build config's.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf
from absl import logging

from deeplesion_tf.data import hu_windows

BOX_PADDING_VALUE = -1.0
CLASS_PADDING_VALUE = -1
LESION_ID_PADDING_VALUE = b""
IMAGE_PADDING_VALUE = 0.0
# The class of every lesion when no class table is given (single-class detection;
# 0 is the background).
SINGLE_CLASS = 1
# What the table answers for a lesion it lacks; never a valid class (>= 1).
_MISSING_CLASS = -1

# The order of the context slices in the channels.
SLICE_KEYS = ("previous_slice", "image", "next_slice")
CONTEXT_KEY = "context_slices"


def slice_stack(example: Dict[str, tf.Tensor]) -> tf.Tensor:
    """`[2k + 1, H, W]` HU of the stored slices at steps `-k .. k` (k = 1 without
    `context_slices`, whose steps are `key_slice.context_steps(k)`)."""
    near = [hu_windows.hu_from_stored(example[k])[..., 0] for k in SLICE_KEYS]
    if CONTEXT_KEY not in example:
        return tf.stack(near)
    context = tf.map_fn(lambda s: hu_windows.hu_from_stored(s)[..., 0], example[CONTEXT_KEY],
                        fn_output_signature=tf.float32)  # [2k - 2, H, W]
    half = tf.shape(context)[0] // 2
    return tf.concat([context[:half], tf.stack(near), context[half:]], axis=0)


def interpolate_slices(stack: tf.Tensor, stored_interval_mm: tf.Tensor,
                       slice_interval_mm: Optional[float], num_slices: int = 3) -> tf.Tensor:
    """`num_slices` slices `slice_interval_mm` apart around the key, from `stack`.

    The NIH loaders' rule (CADLab `lesion_detector_3DCE/rcnn/fio/load_ct_img.py`,
    `load_multislice_img_16bit_png`): the slice `j` intervals from the key lies
    `x = j * slice_interval_mm / stored_interval` stored steps away, linearly
    interpolated between the stored slices at `floor(x)` and `ceil(x)`; where the
    stored interval is unknown (NaN or <= 0), the key slice stands in for every
    slice. Past the series' ends the stack already holds its last slice.

    Args:
      stack: `[2k + 1, H, W]` HU at steps `-k .. k` (`slice_stack`).
      stored_interval_mm: scalar, the series' slice interval.
      slice_interval_mm: the wanted interval (the NIH loaders: 2 mm); None: one
        stored slice apart (the stored slices themselves).
      num_slices: odd; `j` runs over `-(num_slices - 1) / 2 .. (num_slices - 1) / 2`.

    Returns:
      `[H, W, num_slices]` HU, head to feet.

    Raises:
      tf.errors.InvalidArgumentError: the stack holds too few slices per side for
        this series' interval (the message says how many it needs).
    """
    half = (num_slices - 1) // 2
    k = (tf.shape(stack)[0] - 1) // 2
    stored = tf.cast(stored_interval_mm, tf.float32)
    known = tf.logical_and(tf.math.is_finite(stored), stored > 0.0)
    if slice_interval_mm is None:
        step = tf.constant(1.0)
    else:
        step = tf.where(known, float(slice_interval_mm) / tf.where(known, stored, 1.0), 0.0)
    reach = tf.cast(tf.math.ceil(step * half), tf.int32)
    apart = "one stored slice" if slice_interval_mm is None else f"{slice_interval_mm:g} mm"
    check = tf.debugging.assert_less_equal(reach, k, message=(
        f"{num_slices} slices {apart} apart need more stored slices on each side than the "
        "dataset has: build it with a larger context_slices (needed, stored):"), summarize=2)
    with tf.control_dependencies([check]):
        x = tf.range(-half, half + 1, dtype=tf.float32) * step  # [num_slices], in steps
    low, high = tf.math.floor(x), tf.math.ceil(x)
    weight = (x - low)[:, tf.newaxis, tf.newaxis]
    below = tf.gather(stack, tf.cast(low, tf.int32) + k)
    above = tf.gather(stack, tf.cast(high, tf.int32) + k)
    return tf.transpose((1.0 - weight) * below + weight * above, [1, 2, 0])


def measurement_boxes(measurement: tf.Tensor, image_height: tf.Tensor, image_width: tf.Tensor,
                      padding: float) -> tf.Tensor:
    """Lesion boxes from bookmark measurements, as `bookmarks.measure(...).box`.

    Args:
      measurement: `[n, 8]` float `x11, y11, x12, y12, x21, y21, x22, y22`,
        0-based pixels (x the column).
      image_height: rows `H` of the slice (scalar).
      image_width: columns `W` of the slice (scalar).
      padding: pixels added on each side of the measurement's extent.

    Returns:
      `[n, 4]` float32 `[ymin, xmin, ymax, xmax]`, absolute pixels of the
      slice, clipped to `[0, H - 1]` and `[0, W - 1]`.
    """
    points = tf.reshape(tf.cast(measurement, tf.float32), [-1, 4, 2])  # (x, y) endpoints
    low = tf.reduce_min(points, axis=1) - padding  # [n, 2] (x, y)
    high = tf.reduce_max(points, axis=1) + padding
    y_max = tf.cast(image_height, tf.float32) - 1.0
    x_max = tf.cast(image_width, tf.float32) - 1.0
    boxes = tf.stack([low[:, 1], low[:, 0], high[:, 1], high[:, 0]], axis=-1)
    return tf.clip_by_value(boxes, 0.0, tf.stack([y_max, x_max, y_max, x_max]))


def scale_boxes(boxes: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Boxes `[..., 4]` of an image, in the image resized by `scale` (step 2 above).

    Pixel centres map as `p -> (p + 0.5) * scale - 0.5`; at `scale == 1` the
    boxes are unchanged. No clipping.
    """
    return (boxes + 0.5) * scale - 0.5


def boxes_to_original(boxes: tf.Tensor, image_scale: tf.Tensor) -> tf.Tensor:
    """Inverse of `scale_boxes`: network-input boxes `[..., 4]` in original pixels.

    Args:
      boxes: `[..., 4]` `[ymin, xmin, ymax, xmax]` in network-input pixels
        (e.g. `[B, N, 4]` detections; mask padded rows yourself).
      image_scale: the batch's `image_scale`, broadcastable to `boxes[..., 0]`
        after a trailing axis is added (e.g. `[B, 1]` for `[B, N, 4]`).
    """
    return (boxes + 0.5) / image_scale - 0.5


def flip_boxes_left_right(boxes: tf.Tensor, image_width: tf.Tensor) -> tf.Tensor:
    """Boxes `[n, 4]` of an image of width `image_width`, mirrored: `c -> W - 1 - c`."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    last = tf.cast(image_width, boxes.dtype) - 1.0
    return tf.stack([ymin, last - xmax, ymax, last - xmin], axis=-1)


def _class_lookup(class_table: Mapping[str, int]) -> tf.lookup.StaticHashTable:
    if not class_table:
        raise ValueError("class_table is empty; pass None for single-class detection")
    keys, values = [], []
    for lesion_id, label in class_table.items():
        if int(label) != label or int(label) < 1:
            raise ValueError(f"class_table[{lesion_id!r}] = {label!r}: classes are integers "
                             ">= 1 (0 is the background)")
        keys.append(str(lesion_id))
        values.append(int(label))
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values, tf.int32)),
        default_value=_MISSING_CLASS)


def _lesion_classes(lesion_ids: tf.Tensor, table: Optional[tf.lookup.StaticHashTable]):
    """`[n]` int32 classes of the lesions; fails naming the lesions the table lacks."""
    if table is None:
        return tf.fill(tf.shape(lesion_ids), tf.constant(SINGLE_CLASS, tf.int32))
    classes = table.lookup(lesion_ids)
    missing = tf.equal(classes, _MISSING_CLASS)
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(missing)),
        ["lesion ids missing from class_table:", tf.boolean_mask(lesion_ids, missing)],
        summarize=20)
    with tf.control_dependencies([check]):
        return tf.identity(classes)


def resize_with_scale(hu: tf.Tensor, scale: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """`[H, W, c]` -> `[size[0], size[1], c]`, bilinear with exactly `scale` on both axes.

    `tf.image.resize` derives its scale per axis from the sizes, and
    `round(H * scale) / H` is not `scale` in general. So the slice is padded
    to the square of its longest side `L` and resized to `n x n`, `n = L * scale`
    (`S` where the slice fills the input; `input_scale` makes `L * scale` whole),
    then the content is cut out. Content rows sample the slice at rows
    `<= H - 0.5` only; the padding's first row repeats row `H - 1`, which is
    `tf.image.resize`'s own clamping (likewise columns).
    (`tf.raw_ops.ScaleAndTranslate` takes the scale itself but is ~5x slower.)
    """
    def resample():
        longest = tf.maximum(tf.shape(hu)[0], tf.shape(hu)[1])
        side = tf.cast(tf.round(tf.cast(longest, tf.float32) * scale), tf.int32)
        edge = tf.pad(hu, [[0, 1], [0, 1], [0, 0]], mode="SYMMETRIC")[:longest, :longest]
        square = tf.image.pad_to_bounding_box(edge, 0, 0, longest, longest)
        resized = tf.image.resize(square, tf.stack([side, side]), method="bilinear")
        return resized[:size[0], :size[1]]

    return tf.cond(tf.equal(scale, 1.0), lambda: hu, resample)


def _require_spacing(pixel_spacing_mm: float, spacing) -> None:
    if spacing is None:
        raise ValueError(f"the input resamples to {pixel_spacing_mm:g} mm per pixel: it needs "
                         "each slice's pixel spacing")


def input_scale(height: tf.Tensor, width: tf.Tensor, image_size: int,
                pixel_spacing_mm: Optional[float] = None,
                spacing: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The resize factor of step 2: `S / max(H, W)`, or with a target spacing
    `spacing / pixel_spacing_mm` capped at that.

    As 3DCE's loader (CADLab `lesion_detector_3DCE/rcnn/fio/load_ct_img.py`,
    `load_prep_img`): scale to `NORM_SPACING` mm per pixel, then shrink further
    where the longest side would exceed `MAX_SIZE`. It takes one spacing per slice
    (the release's `Spacing_mm_px_`, whose x and y agree): here the column spacing,
    `spacing[..., 1]`, so that one factor serves both axes and the box mapping stays
    exact. The factor is `n / max(H, W)` for the whole `n` nearest to
    `max(H, W) * spacing / pixel_spacing_mm` (so 0.8 mm becomes 0.8 +- 0.1%).

    Args:
      height, width: the slice's size (scalars).
      spacing: `[..., 2]` `(row, column)` mm per pixel; needed with `pixel_spacing_mm`.

    Raises:
      ValueError: `pixel_spacing_mm` without `spacing`.
    """
    longest = tf.cast(tf.maximum(height, width), tf.float32)
    if pixel_spacing_mm is None:
        return float(image_size) / longest
    _require_spacing(pixel_spacing_mm, spacing)
    # The resize is exact for a whole number of output pixels across the longest side
    # (`resize_with_scale`): the factor is rounded to one, at most 0.5 / L off.
    side = tf.minimum(tf.round(longest * tf.cast(spacing, tf.float32)[..., 1]
                               / float(pixel_spacing_mm)), float(image_size))
    return side / longest


def network_input(hu: tf.Tensor, image_size: int, windows: Sequence[Sequence[float]],
                  flip: Optional[tf.Tensor] = None, *, pixel_spacing_mm: Optional[float] = None,
                  spacing: Optional[tf.Tensor] = None):
    """HU slices -> the detector's input: the one transform of training and serving.

    The longest side is resized to `image_size`, or the slice resampled to
    `pixel_spacing_mm` within that size (`input_scale`; `resize_with_scale`, one
    scale on both axes), the slices windowed (`hu_windows.apply_windows`), optionally
    mirrored left-right, and padded bottom/right with 0 to `S x S`.

    Args:
      hu: `[H, W, 3]` (previous, key, next slice) or a batch `[B, H, W, 3]` of
        slices of one size, float32 HU; `3M` slices for M 3-slice images (3DCE).
      image_size: `S`.
      windows: validated `[low, high]` HU windows; `C = 3 * len(windows)`.
      flip: optional scalar bool tensor: mirror the resized content (before the
        padding, so the padding stays bottom/right), every slice of a batch alike.
      pixel_spacing_mm: the target spacing, or None (fill `S`).
      spacing: `[2]` (or `[B, 2]` for a batch) `(row, column)` mm per pixel of the
        slices; used with `pixel_spacing_mm`.

    Returns:
      `(image, scale, resized_size)`: `[(B,) S, S, C]` float32 in [0, 1], the
      resized / original size (a scalar; `[B]` for a batch resampled to a spacing,
      each slice its own), and the `[2]` (`[B, 2]`) int32 size of the content.
    """
    if hu.shape.rank not in (3, 4):
        raise ValueError(f"network_input takes [H, W, 3] or [B, H, W, 3] HU, got shape {hu.shape}")
    unbatched = hu.shape.rank == 3
    if pixel_spacing_mm is not None and not unbatched:
        _require_spacing(pixel_spacing_mm, spacing)
        # One factor per slice: the slices of a batch are resampled one by one.
        channels = hu.shape[-1] * len(windows)
        return tf.map_fn(
            lambda args: network_input(args[0], image_size, windows, flip,
                                       pixel_spacing_mm=pixel_spacing_mm, spacing=args[1]),
            (hu, tf.cast(spacing, tf.float32)),
            fn_output_signature=(tf.TensorSpec([image_size, image_size, channels], tf.float32),
                                 tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int32)))
    batch = hu[tf.newaxis] if unbatched else hu
    shape = tf.shape(batch)
    height, width = shape[1], shape[2]
    scale = input_scale(height, width, image_size, pixel_spacing_mm, spacing)
    resized_size = tf.minimum(tf.cast(tf.round(
        tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32), image_size)
    resized_size = tf.maximum(resized_size, 1)
    # `resize_with_scale` takes one [H, W, c] image: the batch's slices go along its
    # channels (bilinear resizing treats each channel alone: each slice is resized).
    channels_last = tf.reshape(tf.transpose(batch, [1, 2, 0, 3]), tf.stack([height, width, -1]))
    resized = resize_with_scale(channels_last, scale, resized_size)
    resized = tf.transpose(tf.reshape(resized, tf.stack(
        [resized_size[0], resized_size[1], shape[0], hu.shape[-1]])), [2, 0, 1, 3])
    image = hu_windows.apply_windows(resized, windows)
    if flip is not None:
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[2]), lambda: image)
    image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)
    return (image[0] if unbatched else image), scale, resized_size


def make_detector_dataset(ds: tf.data.Dataset, *, training: bool, batch_size: int,
                          image_size: int = 512, box_padding_px: float = 20.0,
                          windows: Sequence[Sequence[float]] = hu_windows.DETECTOR_WINDOWS,
                          class_table: Optional[Mapping[str, int]] = None,
                          deterministic: bool = False, shuffle_buffer: int = 256,
                          seed: int = 0, pixel_spacing_mm: Optional[float] = None,
                          slice_interval_mm: Optional[float] = None,
                          num_context_images: int = 1) -> tf.data.Dataset:
    """Batches of network inputs and lesion boxes for the detector.

    Args:
      ds: a split of `deeplesion/*` (dict examples as `tfds.load` gives them;
        slices decoded, or left as PNG bytes with `tfds.decode.SkipDecoding()`,
        which makes the shuffle buffer ~10x smaller).
      training: shuffle, flip at random, and drop the last partial batch.
      batch_size: `B`.
      image_size: `S`; the longest side of every slice is resized to it.
      box_padding_px: pixels around the measurement's extent (paper: 20).
      windows: `[low, high]` HU windows; `C = 3 * len(windows)`.
      class_table: None for a single class (every lesion is class 1); or
        `{lesion_id: class}` with classes >= 1 (pseudo labels). Iterating
        fails with `tf.errors.InvalidArgumentError` naming any lesion that the
        table lacks.
      deterministic: the same batches on every run: map results in order.
        Otherwise they may come out of order (faster), so that the batches
        hold the same examples only roughly in the same order.
      shuffle_buffer: examples in the shuffle buffer (training only).
      seed: seeds the shuffle and the flips (training only), with or without
        `deterministic`: another seed, another order and other flips.
      pixel_spacing_mm: resample each slice to this spacing from its `spacing_mm`
        (step 2); None: fill `image_size`.
      slice_interval_mm: the previous and next slice this far from the key slice,
        interpolated from the stored ones (`interpolate_slices`; a dataset built with
        `context_slices` reaches further); None: the stored neighbours as they are.
      num_context_images: 3DCE's M: `3M` slices around the key slice (`slice_interval_mm`
        apart, or one stored slice apart), image m in channels `3m .. 3m + 2`; M > 1
        takes one window (`C = 3M`).

    Returns:
      One pass over `ds` (repeat it for more epochs), prefetched; each element
      a dict:
        `images`: `[B, S, S, C]` float32 in [0, 1] (see the module docstring
          for the channels), padded bottom/right with 0.
        `boxes`: `[B, N, 4]` float32 `[ymin, xmin, ymax, xmax]` pixels of
          `images`, padded with -1.
        `classes`: `[B, N]` int32, padded with -1.
        `num_lesions`: `[B]` int32, the real rows of `boxes`.
        `image_scale`: `[B]` float32, resized / original size
          (`boxes_to_original` inverts the box mapping).
        `original_size`: `[B, 2]` int32 `(H, W)` of the slice.
        `lesion_ids`: `[B, N]` string, padded with b"".

    Raises:
      ValueError: bad windows, sizes or class table.
    """
    windows = hu_windows.validate_windows(windows)
    if batch_size < 1 or image_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and image_size ({image_size}) must be >= 1")
    table = None if class_table is None else _class_lookup(class_table)
    if num_context_images < 1 or num_context_images % 2 == 0:
        raise ValueError(f"num_context_images must be odd and >= 1, got {num_context_images}")
    if num_context_images > 1 and len(windows) != 1:
        raise ValueError("3DCE's context images take one window (as the NIH code), got "
                         f"{len(windows)}")
    channels = 3 * num_context_images * len(windows)
    for name, value in (("pixel_spacing_mm", pixel_spacing_mm),
                        ("slice_interval_mm", slice_interval_mm)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    logging.info("Detector pipeline: training=%s, batch %d, %dx%d%s, %d channels (windows %s), "
                 "box padding %g px, %s, deterministic=%s", training, batch_size, image_size,
                 image_size, "" if pixel_spacing_mm is None else
                 f" at {pixel_spacing_mm:g} mm per pixel", channels, windows, box_padding_px,
                 "single class" if table is None else f"class table of {len(class_table)} lesions",
                 deterministic)

    def prepare(example: Dict[str, tf.Tensor], flip_seed: Optional[tf.Tensor]):
        if slice_interval_mm is None and num_context_images == 1:
            hu = tf.concat([hu_windows.hu_from_stored(example[k]) for k in SLICE_KEYS], axis=-1)
        else:
            hu = interpolate_slices(slice_stack(example), example["slice_interval_mm"],
                                    slice_interval_mm, 3 * num_context_images)
        original_size = tf.shape(hu)[:2]
        height, width = original_size[0], original_size[1]
        flip = (None if flip_seed is None
                else tf.random.stateless_uniform([], seed=flip_seed) < 0.5)
        image, scale, resized_size = network_input(
            hu, image_size, windows, flip, pixel_spacing_mm=pixel_spacing_mm,
            spacing=example["spacing_mm"] if pixel_spacing_mm is not None else None)

        lesions = example["lesions"]
        boxes = measurement_boxes(lesions["measurement"], height, width, box_padding_px)
        resized_last = tf.cast(resized_size - 1, tf.float32)
        boxes = tf.clip_by_value(scale_boxes(boxes, scale), 0.0,
                                 tf.stack([resized_last[0], resized_last[1]] * 2))
        if flip is not None:
            boxes = tf.cond(flip, lambda: flip_boxes_left_right(boxes, resized_size[1]),
                            lambda: boxes)
        lesion_ids = lesions["lesion_id"]
        return {
            "images": tf.ensure_shape(image, [image_size, image_size, channels]),
            "boxes": tf.ensure_shape(boxes, [None, 4]),
            "classes": _lesion_classes(lesion_ids, table),
            "num_lesions": tf.shape(boxes)[0],
            "image_scale": scale,
            "original_size": original_size,
            "lesion_ids": lesion_ids,
        }

    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # One stateless seed per example, drawn in order, so that flips do not
        # depend on which parallel map call runs first.
        flip_seeds = tf.data.Dataset.random(seed=seed,
                                            rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, flip_seeds)).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(lambda example: prepare(example, None),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.padded_batch(
        batch_size,
        padded_shapes={"images": [image_size, image_size, channels], "boxes": [None, 4],
                       "classes": [None], "num_lesions": [], "image_scale": [],
                       "original_size": [2], "lesion_ids": [None]},
        padding_values={"images": IMAGE_PADDING_VALUE, "boxes": BOX_PADDING_VALUE,
                        "classes": CLASS_PADDING_VALUE, "num_lesions": 0,
                        "image_scale": 0.0, "original_size": 0,
                        "lesion_ids": LESION_ID_PADDING_VALUE},
        drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
