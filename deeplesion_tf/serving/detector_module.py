"""The trained detector as a `tf.Module` whose signatures TF Serving runs.

Everything between a CT slice and its lesion boxes lives in the graph, built
from the training pipeline's own functions (`detector_pipeline.resize_with_scale`,
`hu_windows.apply_windows`, `detector_pipeline.boxes_to_original`), so that a
served slice is prepared exactly as the detector saw slices in training and
evaluation. Only stock TensorFlow ops are used (no `py_function`, no custom ops).

Shape shorthand:
  B: images per request (`batch`).
  H, W: rows and columns of the input slices (any size; one size per request).
  S: `image_size`, the side of the network input.
  D: detections per image (`max_detections` of the model; padded rows last).

Signatures (all outputs are batch-major; see `SIGNATURES`):
  (A 3DCE model, M context images, takes `3M` slices head to feet wherever 3 appear
  below: `[B, H, W, 3M]` HU, `[B, 3M]` PNGs.)
  `serving_default`: `images` float32 `[B, H, W, 3]` HU of the previous, key
    and next slice (the key slice's neighbours give context; repeat the key
    slice where there is none).
  `detect_hu_with_spacing`: `images` as above and `pixel_spacing` float32
    `[B, 2]` `(row, column)` mm, adding the mm outputs.
  `detect_png`: `png_slices` string `[B, 3]`, 16-bit grayscale PNGs of
    HU + 32768 (the NIH release's and the TFDS dataset's format) for the
    previous, key and next slice.
  `detect_png_with_spacing`: `png_slices` and `pixel_spacing`.

A signature input cannot be optional in TF Serving (every signature input
must be fed), so the spacing comes as separate signatures rather than a
default value that would silently put wrong millimetres in the answer.

Outputs:
  `detection_boxes`: `[B, D, 4]` float32 `[ymin, xmin, ymax, xmax]` in pixels
    of the input slice (pixel centres at integers, clipped to the slice);
    padded rows 0. Every returned box has `ymax - ymin >= 1` and
    `xmax - xmin >= 1` (`MIN_BOX_SIDE_PX`): a detection whose box, mapped to
    the slice and clipped to it, is thinner than one pixel on either side (a
    box over the network input's padding beyond a non-square slice clips to
    nothing) is dropped, and the rest move up in score order
    (`compact_detections`), so `num_detections` counts only real boxes.
    With `drop_empty_boxes` (the default) so is a detection whose box holds a
    single value of the key slice under every window (`box_contrast` <=
    `EMPTY_BOX_CONTRAST`: a uniform blank slice, air beyond the body, the
    padding): a lesion differs from its surroundings, so such a box cannot be
    one (benchmarks/BENCHMARKS.md, "Blank slices"). `bin/evaluate_detector`
    scores the Keras model, without these two rules.
  `detection_scores`: `[B, D]` float32, best first; padded rows 0.
  `detection_classes`: `[B, D]` int32, 1..K; padded rows 0.
  `detection_class_names`: `[B, D]` string; padded rows "".
  `num_detections`: `[B]` int32, the real rows.
  `detection_diameters_px`: `[B, D, 2]` float32 (long, short) lesion
    diameter estimated from the box (`estimate_diameters`); padded rows 0.
  With spacing also `detection_boxes_mm` (`detection_boxes` times the
  spacing: mm from the centre of the top-left pixel) and
  `detection_diameters_mm` `[B, D, 2]`.

Resizing: every slice of a request has the same `H, W` and is resized by one
scale `S / max(H, W)` (as in training); requests of several sizes go in
separate calls. A model trained with `--pixel_spacing_mm` resamples each slice
to that spacing from its `pixel_spacing` instead (each slice of a request by
its own factor, `detector_pipeline.input_scale`); its signatures without
`pixel_spacing` refuse every request, saying so.
Bad input (wrong rank or channel count, an empty batch, slices with a side
below `checks.MIN_SLICE_SIDE_PX`, non-finite HU, PNGs that are not 16-bit
grayscale, differ in size or whose data does not decode, a non-positive spacing)
fails with `InvalidArgumentError` naming the input (`images`, `png_slices` or
`pixel_spacing`); a PNG's data is decoded under the
name scope `png_slices_decode`, so that TensorFlow's own "Invalid PNG data"
names the node, and with it the input.
The inputs' shapes are left unknown in the signatures so that these checks,
rather than a client-specific shape mismatch, answer malformed requests in
every client (TF Serving does not check shapes against the signature).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf

from deeplesion_tf.data import checks
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import hu_windows

# Signature names.
SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
HU_WITH_SPACING = "detect_hu_with_spacing"
PNG = "detect_png"
PNG_WITH_SPACING = "detect_png_with_spacing"
SIGNATURES = (SERVING_DEFAULT, HU_WITH_SPACING, PNG, PNG_WITH_SPACING)

# Input names.
IMAGES = "images"
PNG_SLICES = "png_slices"
PIXEL_SPACING = "pixel_spacing"

OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes",
           "detection_class_names", "num_detections", "detection_diameters_px")
SPACING_OUTPUTS = ("detection_boxes_mm", "detection_diameters_mm")

# The smallest side of a returned box, pixels of the input slice (module docstring).
MIN_BOX_SIDE_PX = 1.0
# `box_contrast` at or below which a box holds one value (module docstring); float32
# rounding of the resize gives ~1e-7, a 1 HU edge in a 100 x 100 px box ~1e-5.
EMPTY_BOX_CONTRAST = 1e-6
_MIN_SIDE = checks.MIN_SLICE_SIDE_PX

_PNG_HEADER_BYTES = 26  # signature (8), IHDR length and type (8), width, height, depth, colour
_PNG_SIGNATURE = (137, 80, 78, 71, 13, 10, 26, 10)
_IHDR = (73, 72, 68, 82)


def estimate_diameters(boxes: tf.Tensor, box_padding_px: float, spacing=None) -> tf.Tensor:
    """(long, short) lesion diameters estimated from detection boxes.

    Training boxes are the extent of the two RECIST diameters' endpoints widened
    by `box_padding_px` on each side (`bookmarks.measure`). The estimate undoes
    the padding and takes the longer side of the remaining extent as the long
    diameter and the shorter as the short one. That is exact for diameters
    along the image axes and underestimates an oblique long diameter (by up to
    a factor 1/sqrt(2) at 45 degrees); boxes clipped at the border give less.

    Args:
      boxes: `[..., 4]` `[ymin, xmin, ymax, xmax]` pixels of the original slice.
      box_padding_px: the padding of the training boxes, original pixels.
      spacing: None for pixels, else `[..., 2]` `(row, column)` mm per pixel,
        broadcastable to `boxes[..., :2]`.

    Returns:
      `[..., 2]` float32 `(long, short)`, >= 0.
    """
    extent = tf.nn.relu(boxes[..., 2:] - boxes[..., :2] - 2.0 * box_padding_px)  # (rows, cols)
    if spacing is not None:
        extent = extent * spacing
    return tf.stack([tf.reduce_max(extent, axis=-1), tf.reduce_min(extent, axis=-1)], axis=-1)


def _box_sums(integral: tf.Tensor, first: tf.Tensor, last: tf.Tensor) -> tf.Tensor:
    """Sums over `[first, last]` (inclusive rows, columns) of a map, from its integral image.

    Args:
      integral: `[B, H + 1, W + 1]` float64, `integral[b, y, x]` the sum of rows < y, columns < x.
      first, last: `[B, D, 2]` int32 `(row, column)`; an empty range (last < first) sums to 0.
    """
    last = tf.maximum(last, first - 1)

    def at(rows, columns):
        return tf.gather_nd(integral, tf.stack([rows, columns], axis=-1), batch_dims=1)

    return (at(last[..., 0] + 1, last[..., 1] + 1) - at(first[..., 0], last[..., 1] + 1)
            - at(last[..., 0] + 1, first[..., 1]) + at(first[..., 0], first[..., 1]))


def _integral(values: tf.Tensor) -> tf.Tensor:
    """`[B, H, W]` -> `[B, H + 1, W + 1]` float64 integral image (float64: sums of 10^5 pixels)."""
    summed = tf.cumsum(tf.cumsum(tf.cast(values, tf.float64), axis=1), axis=2)
    return tf.pad(summed, [[0, 0], [1, 0], [1, 0]])


def box_contrast(image: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference of neighbouring pixels inside each box of an image.

    Zero exactly where the box's pixels all hold one value (a blank slice, air
    beyond the body under a soft-tissue window, the padding of the network
    input); float32 rounding of the resize leaves about 1e-7.

    Args:
      image: `[B, H, W, C]` the network input (or any image); differences are
        summed over the channels.
      boxes: `[B, D, 4]` `[ymin, xmin, ymax, xmax]` pixels of `image`, pixel
        centres at integers; the box holds the pixels whose centres it covers.

    Returns:
      `[B, D]` float32, >= 0; 0 for a box covering a single pixel or none.
    """
    shape = tf.shape(image)
    vertical = tf.reduce_sum(tf.abs(image[:, 1:] - image[:, :-1]), axis=-1)  # [B, H - 1, W]
    horizontal = tf.reduce_sum(tf.abs(image[:, :, 1:] - image[:, :, :-1]), axis=-1)  # [B, H, W - 1]
    limit = tf.stack([shape[1] - 1, shape[2] - 1])
    first = tf.clip_by_value(tf.cast(tf.math.ceil(boxes[..., :2]), tf.int32), 0, limit)
    last = tf.clip_by_value(tf.cast(tf.math.floor(boxes[..., 2:]), tf.int32), 0, limit)
    rows, columns = tf.unstack(tf.maximum(last - first, -1), axis=-1)  # pixels - 1
    total = (_box_sums(_integral(vertical), first, last - [1, 0])
             + _box_sums(_integral(horizontal), first, last - [0, 1]))
    count = (tf.maximum(rows, 0) * tf.maximum(columns + 1, 0)
             + tf.maximum(rows + 1, 0) * tf.maximum(columns, 0))
    return tf.cast(tf.math.divide_no_nan(total, tf.cast(count, tf.float64)), tf.float32)


def compact_detections(keep: tf.Tensor, rows: Dict[str, tf.Tensor]):
    """Moves the kept rows of every image to the front, in their order; zeroes the rest.

    Args:
      keep: `[B, D]` bool, the rows to keep (False on padding rows too).
      rows: tensors `[B, D, ...]` (numbers or strings), one row per detection.

    Returns:
      `(rows, num)`: each tensor with image b's kept rows first, in their
      original (score) order, and its other rows 0 (numbers) or "" (strings);
      `num` `[B]` int32 the kept rows per image.
    """
    # A stable sort on "dropped" puts the kept rows first without reordering them.
    order = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), axis=1, stable=True)
    num = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    real = tf.sequence_mask(num, tf.shape(keep)[1])  # [B, D]
    compacted = {}
    for name, value in rows.items():
        value = tf.gather(value, order, batch_dims=1)
        mask = tf.reshape(real, tf.concat([tf.shape(real), tf.ones(
            [tf.rank(value) - 2], tf.int32)], axis=0))
        compacted[name] = tf.where(mask, value, tf.zeros_like(value))
    return compacted, num


def _slices_words(n: int) -> str:
    if n == 3:
        return "previous, key and next slice"
    return f"{n} slices head to feet, the key slice in the middle: {n // 3} 3-slice images"


def _guard(ok: tf.Tensor, message: list, passed, placeholder_shape, dtype) -> tf.Tensor:
    """`passed()` where `ok` holds, else fails with `InvalidArgumentError: message`.

    The check runs as a branch of `tf.cond` rather than as an `Assert` that
    later ops depend on by control only: Grappler may run a shape check such as
    `EnsureShape` before such an `Assert`, which would then answer bad input
    with its own vaguer error. The failing branch returns an empty tensor of
    `placeholder_shape` that is never used.
    """
    def failed():
        with tf.control_dependencies([tf.debugging.Assert(ok, message, summarize=30)]):
            return tf.zeros(placeholder_shape, dtype)

    return tf.cond(ok, passed, failed)


class DetectorModule(tf.Module):
    """A trained `FasterRCNN` with its input settings and class names, for export.

    Args:
      model: the detector (`model_dir.load_model(...).model`).
      class_names: K names, `class_names[k - 1]` for class k.
      image_size: `S` of training.
      windows: HU windows of training.
      box_padding_px: box padding of training (for the diameter estimate).
      drop_empty_boxes: drop detections whose box holds a single value of the
        key slice under every window (module docstring).
      slice_interval_mm: the interval training took the slices at, or None (saved
        for clients such as bin/detect, which interpolate; the signatures do not).
      pixel_spacing_mm: the spacing training resampled slices to, or None. A model
        with one needs each slice's spacing: its signatures without `pixel_spacing`
        answer every request with an `InvalidArgumentError` saying so.
    """

    def __init__(self, model, class_names: Sequence[str], *, image_size: int,
                 windows: Sequence[Sequence[float]], box_padding_px: float,
                 drop_empty_boxes: bool = True, pixel_spacing_mm: Optional[float] = None,
                 slice_interval_mm: Optional[float] = None, name=None):
        super().__init__(name=name)
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model of "
                             f"{model.num_classes} classes")
        self.model = model
        self.image_size = int(image_size)
        self.windows = hu_windows.validate_windows(windows)
        self.box_padding_px = float(box_padding_px)
        self.drop_empty_boxes = bool(drop_empty_boxes)
        self.pixel_spacing_mm = None if pixel_spacing_mm is None else float(pixel_spacing_mm)
        # 3 slices per image; 3DCE's M images take 3M (`context_fusion`).
        self.num_slices = 3 * getattr(model, "num_context_images", 1)
        # Saved with the export, so that bin/detect knows how many slices to give.
        self.input_slices = tf.Variable(self.num_slices, trainable=False, dtype=tf.int32,
                                        name="input_slices")
        # The slice interval training used (0: the stored neighbours), for bin/detect too:
        # the signatures take the slices as given.
        self.slice_interval_mm = tf.Variable(float(slice_interval_mm or 0.0), trainable=False,
                                             dtype=tf.float32, name="slice_interval_mm")
        # The key slice under each window: channel n k + n // 2 (`apply_windows` is
        # window-major; n slices, the key in the middle).
        self._key_channels = [self.num_slices * k + self.num_slices // 2
                              for k in range(len(self.windows))]
        self.class_names = tuple(str(n) for n in class_names)
        # Index 0 is the padding class.
        self._names_with_padding = tf.constant(("",) + self.class_names, tf.string)

    # -- The graph, shared by the signatures -------------------------------------------------

    def _check_hu(self, images: tf.Tensor) -> tf.Tensor:
        n = self.num_slices
        shape = tf.shape(images)
        # The shape padded with zeros, so that entry 3 exists at any rank.
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)
        channels_ok = tf.logical_and(tf.equal(tf.rank(images), 4), tf.equal(padded[3], n))
        images = _guard(channels_ok, [
            f"{IMAGES} must be float32 HU of shape [batch, height, width, {n}] ({_slices_words(n)}"
            "); got shape", shape],
            lambda: tf.ensure_shape(images, [None, None, None, n]), [0, 0, 0, n], tf.float32)
        shape = tf.shape(images)
        images = _guard(shape[0] > 0, [f"{IMAGES}: empty batch; got shape", shape],
                        lambda: images, [0, 0, 0, n], tf.float32)
        images = _guard(tf.logical_and(shape[1] >= _MIN_SIDE, shape[2] >= _MIN_SIDE),
                        [f"{IMAGES}: slices must be at least {_MIN_SIDE} px per side "
                         "(height and width); got shape", shape],
                        lambda: images, [0, 0, 0, n], tf.float32)
        return _guard(tf.reduce_all(tf.math.is_finite(images)),
                      [f"{IMAGES}: HU must be finite (found NaN or Inf)"],
                      lambda: images, [0, 0, 0, n], tf.float32)

    def _check_spacing(self, spacing: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(spacing)
        # The shape padded to 2 entries, so that the comparison is defined at any rank.
        first_two = tf.concat([shape, [-1, -1]], axis=0)[:2]
        shape_ok = tf.logical_and(tf.equal(tf.rank(spacing), 2),
                                  tf.reduce_all(tf.equal(first_two, tf.stack([batch, 2]))))
        spacing = _guard(shape_ok, [
            f"{PIXEL_SPACING} must be float32 [batch, 2] (row, column) mm with the images' "
            "batch of", batch, "; got shape", shape],
            lambda: tf.ensure_shape(spacing, [None, 2]), [0, 2], tf.float32)
        positive = tf.reduce_all(tf.logical_and(tf.math.is_finite(spacing), spacing > 0.0))
        return _guard(positive, [f"{PIXEL_SPACING} must be finite and > 0 mm; got", spacing],
                      lambda: spacing, [0, 2], tf.float32)

    def _decode_pngs(self, png_slices: tf.Tensor) -> tf.Tensor:
        """`[B, n]` PNG bytes -> `[B, H, W, n]` float32 HU (n = 3, or 3M for 3DCE),
        checking each header first."""
        n = self.num_slices
        shape = tf.shape(png_slices)
        padded = tf.concat([shape, tf.zeros([2], tf.int32)], axis=0)
        three = tf.logical_and(tf.equal(tf.rank(png_slices), 2), tf.equal(padded[1], n))
        png_slices = _guard(three, [
            f"{PNG_SLICES} must be a string tensor [batch, {n}] of 16-bit PNGs "
            f"({_slices_words(n)}); got shape", shape],
            lambda: tf.ensure_shape(png_slices, [None, n]), [0, n], tf.string)
        png_slices = _guard(tf.shape(png_slices)[0] > 0, [f"{PNG_SLICES}: empty batch"],
                            lambda: png_slices, [0, n], tf.string)
        flat = tf.reshape(png_slices, [-1])
        header = tf.cast(tf.io.decode_raw(tf.strings.substr(flat, 0, _PNG_HEADER_BYTES),
                                          tf.uint8, fixed_length=_PNG_HEADER_BYTES), tf.int32)
        long_enough = tf.strings.length(flat) >= _PNG_HEADER_BYTES
        is_png = tf.logical_and(long_enough, tf.logical_and(
            tf.reduce_all(tf.equal(header[:, :8], _PNG_SIGNATURE), axis=1),
            tf.reduce_all(tf.equal(header[:, 12:16], _IHDR), axis=1)))
        is_16_bit_gray = tf.logical_and(tf.equal(header[:, 24], 16), tf.equal(header[:, 25], 0))
        big_endian = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int32)
        width = tf.reduce_sum(header[:, 16:20] * big_endian, axis=1)
        height = tf.reduce_sum(header[:, 20:24] * big_endian, axis=1)
        flat = _guard(tf.reduce_all(is_png), [
            f"{PNG_SLICES}: not PNG data at flat indices (batch * "
            f"{n} + slice)",
            tf.where(tf.logical_not(is_png))[:, 0]], lambda: flat, [0], tf.string)
        flat = _guard(tf.reduce_all(is_16_bit_gray), [
            f"{PNG_SLICES}: PNGs must be 16-bit grayscale of HU + 32768; bit depth and colour "
            "type of each PNG:", header[:, 24], header[:, 25]], lambda: flat, [0], tf.string)
        flat = _guard(tf.reduce_all(tf.logical_and(height >= _MIN_SIDE, width >= _MIN_SIDE)), [
            f"{PNG_SLICES}: slices must be at least {_MIN_SIDE} px per side; heights, widths:",
            height, width], lambda: flat, [0], tf.string)
        one_size = tf.logical_and(tf.reduce_all(tf.equal(width, width[0])),
                                  tf.reduce_all(tf.equal(height, height[0])))

        def decode_one(data):
            # TensorFlow's "Invalid PNG data" names only the node: this scope
            # puts the input's name in it.
            with tf.name_scope(f"{PNG_SLICES}_decode"):
                return tf.io.decode_png(data, channels=1, dtype=tf.uint16)

        def decode():
            stored = tf.map_fn(decode_one, flat,
                               fn_output_signature=tf.TensorSpec([None, None, 1], tf.uint16))
            hu = hu_windows.hu_from_stored(stored)  # [B * n, H, W, 1]
            hu = tf.reshape(hu, tf.stack([-1, n, height[0], width[0]]))
            return tf.transpose(hu, [0, 2, 3, 1])

        return _guard(one_size, [
            f"{PNG_SLICES}: all PNGs of a request must have one size; heights, widths:",
            height, width], decode, [0, 0, 0, n], tf.float32)

    def _network_input(self, hu: tf.Tensor, spacing=None):
        """`[B, H, W, 3]` HU (and `[B, 2]` spacing) -> (`[B, S, S, C]` network input,
        `[B]` scale), as in training."""
        hu = tf.ensure_shape(hu, [None, None, None, self.num_slices])
        image, scale, _ = detector_pipeline.network_input(
            hu, self.image_size, self.windows, pixel_spacing_mm=self.pixel_spacing_mm,
            spacing=spacing if self.pixel_spacing_mm is not None else None)
        return tf.ensure_shape(image, [None, self.image_size, self.image_size,
                                       self.num_slices * len(self.windows)]), tf.broadcast_to(
            scale, tf.shape(hu)[:1])

    def _detect(self, hu: tf.Tensor, spacing=None) -> Dict[str, tf.Tensor]:
        input_spacing = spacing
        if self.pixel_spacing_mm is not None and spacing is None:
            hu = _guard(tf.constant(False), [
                f"this model resamples slices to {self.pixel_spacing_mm:g} mm per pixel: it "
                f"needs their spacing; call {HU_WITH_SPACING} or {PNG_WITH_SPACING} with "
                f"{PIXEL_SPACING}"], lambda: hu, [0, 0, 0, self.num_slices], tf.float32)
            input_spacing = tf.ones([tf.shape(hu)[0], 2])  # Never used: the guard fails.
        height = tf.cast(tf.shape(hu)[1], tf.float32)
        width = tf.cast(tf.shape(hu)[2], tf.float32)
        image, scale = self._network_input(hu, input_spacing)
        detections = self.model(image, training=False)
        real = tf.sequence_mask(tf.cast(detections["num_detections"], tf.int32),
                                tf.shape(detections["scores"])[1])  # [B, D]
        boxes = detector_pipeline.boxes_to_original(detections["boxes"],
                                                    scale[:, tf.newaxis, tf.newaxis])
        boxes = tf.clip_by_value(boxes, 0.0, tf.stack([height - 1.0, width - 1.0] * 2))
        sides = boxes[..., 2:] - boxes[..., :2]  # [B, D, 2] (rows, columns)
        keep = tf.logical_and(real, tf.reduce_all(sides >= MIN_BOX_SIDE_PX, axis=-1))
        if self.drop_empty_boxes:
            contrast = box_contrast(tf.gather(image, self._key_channels, axis=-1),
                                    tf.cast(detections["boxes"], tf.float32))
            keep = tf.logical_and(keep, contrast > EMPTY_BOX_CONTRAST)
        rows, num = compact_detections(keep, {
            "boxes": boxes, "scores": tf.cast(detections["scores"], tf.float32),
            "classes": tf.cast(detections["classes"], tf.int32)})
        boxes, classes = rows["boxes"], rows["classes"]
        real = tf.sequence_mask(num, tf.shape(keep)[1])
        outputs = {
            "detection_boxes": boxes,
            "detection_scores": rows["scores"],
            "detection_classes": classes,
            # Padded rows have class 0, the name "".
            "detection_class_names": tf.gather(self._names_with_padding, classes),
            "num_detections": num,
            "detection_diameters_px": tf.where(real[..., tf.newaxis], estimate_diameters(
                boxes, self.box_padding_px), 0.0),
        }
        if spacing is not None:
            per_box = spacing[:, tf.newaxis, :]  # [B, 1, 2]
            outputs["detection_boxes_mm"] = boxes * tf.tile(per_box, [1, 1, 2])
            outputs["detection_diameters_mm"] = tf.where(real[..., tf.newaxis], estimate_diameters(
                boxes, self.box_padding_px, per_box), 0.0)
        return outputs

    # -- Signatures ---------------------------------------------------------------------------

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name=IMAGES)])
    def detect_hu(self, images):
        """`serving_default`: HU `[B, H, W, 3]` -> detections (module docstring)."""
        return self._detect(self._check_hu(images))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name=IMAGES),
                                  tf.TensorSpec(None, tf.float32, name=PIXEL_SPACING)])
    def detect_hu_with_spacing(self, images, pixel_spacing):
        """HU `[B, H, W, 3]` and spacing `[B, 2]` mm -> detections with mm outputs."""
        images = self._check_hu(images)
        return self._detect(images, self._check_spacing(pixel_spacing, tf.shape(images)[0]))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name=PNG_SLICES)])
    def detect_png(self, png_slices):
        """16-bit PNGs `[B, 3]` -> detections."""
        return self._detect(self._check_hu(self._decode_pngs(png_slices)))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name=PNG_SLICES),
                                  tf.TensorSpec(None, tf.float32, name=PIXEL_SPACING)])
    def detect_png_with_spacing(self, png_slices, pixel_spacing):
        """16-bit PNGs `[B, 3]` and spacing `[B, 2]` mm -> detections with mm outputs."""
        images = self._check_hu(self._decode_pngs(png_slices))
        return self._detect(images, self._check_spacing(pixel_spacing, tf.shape(images)[0]))

    def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
        """The concrete functions to save, by signature name."""
        return {SERVING_DEFAULT: self.detect_hu.get_concrete_function(),
                HU_WITH_SPACING: self.detect_hu_with_spacing.get_concrete_function(),
                PNG: self.detect_png.get_concrete_function(),
                PNG_WITH_SPACING: self.detect_png_with_spacing.get_concrete_function()}
