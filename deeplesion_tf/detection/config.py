"""The detector's settings in one shape: a dataclass per stage, nested in `DetectorConfig`.

As TF Model Garden's configs: every stage of `faster_rcnn.build_faster_rcnn(config)`
reads its own part (the RPN owns its target settings, the box head its loss weight),
`model_config.json` is the config serialised (`to_dict` / `from_dict`), and the
command line maps onto it in one place (`FLAT_NAMES`: a `bin/train_detector` flag
name -> the field it sets; `from_flat`). Defaults are the paper's (Sec. 2.3, 3).

Model directories written before this module held the flat keyword arguments of
the old `build_faster_rcnn` (`{"model": {...}, "inputs": {...}}`); `from_dict`
still reads them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from deeplesion_tf.data import hu_windows
from deeplesion_tf.ops import anchors as anchors_lib


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """VGG16 without pool4 (`backbone.build_backbone`)."""

    weights: Optional[str] = None  # None, "imagenet" or a Keras VGG16 weights file.
    width_multiplier: float = 1.0
    frozen_blocks: int = 0
    norm: str = "none"  # "none" (the paper) or "group".
    # 3DCE's M: 3-slice images through the trunk, their features fused (`context_fusion`);
    # 1 is the paper's single 3-slice image.
    num_context_images: int = 1


@dataclasses.dataclass(frozen=True)
class RPNConfig:
    """The region proposal network: its anchors, its head and its training targets."""

    anchor_sizes: Tuple[float, ...] = tuple(anchors_lib.PAPER_ANCHOR_SIZES)
    anchor_ratios: Tuple[float, ...] = tuple(anchors_lib.PAPER_ANCHOR_RATIOS)
    channels: Optional[int] = None  # The head's 3x3 conv; None: the trunk's width.
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    num_samples: int = 256
    positive_fraction: float = 0.5
    ignore_cross_boundary: bool = True


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
    """`proposal_generator.ProposalGenerator`."""

    train_pre_nms_top_k: int = 12000
    train_post_nms_top_k: int = 2000
    test_pre_nms_top_k: int = 6000
    test_post_nms_top_k: int = 300
    nms_iou: float = 0.7


@dataclasses.dataclass(frozen=True)
class RoISamplerConfig:
    """`roi_sampler.RoISampler` (training only)."""

    num_samples: int = 32
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou_high: float = 0.5
    background_iou_low: float = 0.1


@dataclasses.dataclass(frozen=True)
class PoolerConfig:
    """`roi_pooler.RoIPooler`."""

    method: str = "max"  # "max" (the paper) or "align".
    output_size: int = 7


@dataclasses.dataclass(frozen=True)
class BoxHeadConfig:
    """`box_head.BoxHead` and its loss."""

    num_classes: int = 1
    fc_units: int = 4096
    fc_from_vgg16: bool = True  # With backbone weights, FC6/FC7 start from VGG16's.
    category_loss_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class DetectionsConfig:
    """`detection_generator.DetectionGenerator`."""

    score_threshold: float = 0.5
    nms_iou: float = 0.3
    max_detections: int = 5
    score: str = "class"  # "class" (the paper) or "lesion".


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How slices become the network's input (`detector_pipeline.network_input`)."""

    image_size: int = 512
    windows: Tuple[Tuple[float, float], ...] = tuple(
        (float(low), float(high)) for low, high in hu_windows.DETECTOR_WINDOWS)
    box_padding_px: float = 20.0
    # Resample every slice to this many mm per pixel within `image_size` (3DCE: 0.8);
    # None: the longest side fills `image_size` (the paper's).
    pixel_spacing_mm: Optional[float] = None
    # The previous and next slice this many mm from the key slice, interpolated from
    # the stored ones (the NIH loaders: 2); None: the stored neighbours.
    slice_interval_mm: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How the detector is trained (defaults: the paper's, Sec. 3).

    Attributes:
      steps: total optimizer steps (the paper: 60K).
      batch_size: images per replica per step.
      optimizer: "sgd" (the paper: SGD with momentum) or "adam" (Adam, for
        training from random initialisation on a CPU in few steps).
      learning_rate: initial learning rate (0.001).
      decay_every: the learning rate is multiplied by `decay_factor` every
        this many steps (20K, 0.1).
      decay_factor: see `decay_every`.
      momentum: SGD momentum (0.9).
      weight_decay: decoupled weight decay (0.0005, py-faster-rcnn's).
      clip_norm: clip the global gradient norm to this (None: no clipping).
      checkpoint_every: steps between checkpoints.
      keep_checkpoints: how many checkpoints are kept.
      log_every: steps between summaries.
      mixed_precision: "" (float32), "mixed_float16" (GPUs) or "mixed_bfloat16" (TPUs).
      seed: seeds the anchor and RoI samples (stateless draws from `seed` and
        the step, so that another seed gives other samples and a resumed run
        the samples it would have drawn).
    """

    steps: int = 60000
    batch_size: int = 4
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    decay_every: int = 20000
    decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: Optional[float] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 20
    mixed_precision: str = ""
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    backbone: BackboneConfig = BackboneConfig()
    rpn: RPNConfig = RPNConfig()
    proposals: ProposalConfig = ProposalConfig()
    roi_sampler: RoISamplerConfig = RoISamplerConfig()
    pooler: PoolerConfig = PoolerConfig()
    box_head: BoxHeadConfig = BoxHeadConfig()
    detections: DetectionsConfig = DetectionsConfig()
    inputs: InputConfig = InputConfig()
    training: TrainingConfig = TrainingConfig()

    def replace(self, **flat: Any) -> "DetectorConfig":
        """A copy with settings changed, named as `FLAT_NAMES` names them."""
        sections: Dict[str, Dict[str, Any]] = {}
        for name, value in flat.items():
            section, field = _field_of(name)
            sections.setdefault(section, {})[field] = _normalised(field, value)
        return dataclasses.replace(self, **{
            section: dataclasses.replace(getattr(self, section), **fields)
            for section, fields in sections.items()})

    def to_dict(self) -> Dict[str, Any]:
        """The config as JSON-ready nested dicts (tuples become lists)."""
        return {"format": FORMAT, **dataclasses.asdict(self)}


# model_config.json's `format`; files without it hold the flat kwargs of before.
FORMAT = 2
_SECTION_TYPES = {
    "backbone": BackboneConfig, "rpn": RPNConfig, "proposals": ProposalConfig,
    "roi_sampler": RoISamplerConfig, "pooler": PoolerConfig, "box_head": BoxHeadConfig,
    "detections": DetectionsConfig, "inputs": InputConfig, "training": TrainingConfig}

# A flag of bin/train_detector (and a key of the old flat model_config.json) -> its field.
FLAT_NAMES: Dict[str, Tuple[str, str]] = {
    "weights": ("backbone", "weights"),
    "width_multiplier": ("backbone", "width_multiplier"),
    "frozen_blocks": ("backbone", "frozen_blocks"),
    "backbone_norm": ("backbone", "norm"),
    "anchor_sizes": ("rpn", "anchor_sizes"),
    "anchor_ratios": ("rpn", "anchor_ratios"),
    "rpn_channels": ("rpn", "channels"),
    "rpn_positive_iou": ("rpn", "positive_iou"),
    "rpn_negative_iou": ("rpn", "negative_iou"),
    "rpn_num_samples": ("rpn", "num_samples"),
    "rpn_positive_fraction": ("rpn", "positive_fraction"),
    "rpn_ignore_cross_boundary": ("rpn", "ignore_cross_boundary"),
    "train_pre_nms_top_k": ("proposals", "train_pre_nms_top_k"),
    "train_post_nms_top_k": ("proposals", "train_post_nms_top_k"),
    "test_pre_nms_top_k": ("proposals", "test_pre_nms_top_k"),
    "test_post_nms_top_k": ("proposals", "test_post_nms_top_k"),
    "rpn_nms_iou": ("proposals", "nms_iou"),
    "rois_per_image": ("roi_sampler", "num_samples"),
    "foreground_fraction": ("roi_sampler", "foreground_fraction"),
    "foreground_iou": ("roi_sampler", "foreground_iou"),
    "background_iou_high": ("roi_sampler", "background_iou_high"),
    "background_iou_low": ("roi_sampler", "background_iou_low"),
    "roi_pooling": ("pooler", "method"),
    "pool_size": ("pooler", "output_size"),
    "num_classes": ("box_head", "num_classes"),
    "fc_units": ("box_head", "fc_units"),
    "fc_from_vgg16": ("box_head", "fc_from_vgg16"),
    "category_loss_weight": ("box_head", "category_loss_weight"),
    "score_threshold": ("detections", "score_threshold"),
    "detection_nms_iou": ("detections", "nms_iou"),
    "max_detections": ("detections", "max_detections"),
    "detection_score": ("detections", "score"),
    "num_context_images": ("backbone", "num_context_images"),
    "image_size": ("inputs", "image_size"),
    "windows": ("inputs", "windows"),
    "box_padding_px": ("inputs", "box_padding_px"),
    "pixel_spacing_mm": ("inputs", "pixel_spacing_mm"),
    "slice_interval_mm": ("inputs", "slice_interval_mm"),
    **{f.name: ("training", f.name) for f in dataclasses.fields(TrainingConfig)},
}


def _field_of(name: str) -> Tuple[str, str]:
    try:
        return FLAT_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown detector setting {name!r}; expected one of "
                         f"{sorted(FLAT_NAMES)}") from None


def _normalised(field: str, value: Any) -> Any:
    # JSON and flags give lists; the config holds tuples (hashable, comparable).
    if field in ("anchor_sizes", "anchor_ratios"):
        return tuple(float(v) for v in value)
    if field == "windows":
        return tuple((float(low), float(high)) for low, high in value)
    return value


def from_flat(**flat: Any) -> DetectorConfig:
    """The paper's config with the settings named by `FLAT_NAMES` changed."""
    return DetectorConfig().replace(**flat)


def from_dict(data: Mapping[str, Any]) -> DetectorConfig:
    """A config from `to_dict`'s output, or from an old flat `model_config.json`.

    Raises:
      ValueError: an unknown section or field, or an unknown format.
    """
    if "format" not in data:
        # Before format 2: {"model": build_faster_rcnn kwargs, "inputs": {...}}.
        flat = dict(data.get("model", {}))
        flat.update(data.get("inputs", {}))
        return from_flat(**flat)
    if data["format"] != FORMAT:
        raise ValueError(f"model_config format {data['format']} is not {FORMAT}: written by "
                         "another version of deeplesion-tf")
    sections = {}
    for section, values in data.items():
        if section == "format":
            continue
        if section not in _SECTION_TYPES:
            raise ValueError(f"unknown config section {section!r}; expected one of "
                             f"{sorted(_SECTION_TYPES)}")
        known = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {section} settings {unknown}; expected {sorted(known)}")
        sections[section] = _SECTION_TYPES[section](**{
            k: _normalised(k, v) for k, v in values.items()})
    return DetectorConfig(**sections)
