"""A random-weight detector exported as bin/export_detector does, for tests of what runs it."""

import tensorflow as tf

from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import model_dir as model_dir_lib
from deeplesion_tf.serving import export


def export_random(tmp_path_factory, padding, model_kwargs, version=7):
    """An export dir holding `version` of a seeded random two-class detector (96 px)."""
    model_dir = tmp_path_factory.mktemp("random_detector")
    tf.keras.utils.set_random_seed(3)
    config = config_lib.from_flat(image_size=96, windows=[(-1024.0, 3071.0)],
                                  box_padding_px=padding, **model_kwargs)
    model = faster_rcnn.build_faster_rcnn(config)
    model_dir_lib.write_model_config(str(model_dir), config)
    classes_lib.write(classes_lib.ClassSpec("test", ["nodule", "liver"], None), str(model_dir))
    tf.train.Checkpoint(model=model).save(str(model_dir / "ckpt"))
    export_dir = tmp_path_factory.mktemp("exported")
    export.export_detector(str(model_dir), str(export_dir), version=version)
    return export_dir
