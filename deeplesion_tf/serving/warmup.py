"""TF Serving warmup requests (`assets.extra/tf_serving_warmup_requests`) without TF Serving.

TF Serving replays the `tensorflow.serving.PredictionLog` records of that
TFRecord file when it loads a model version, so the first real request does
not pay for graph initialisation. The `tensorflow-serving-api` package that
defines the message needs the full `tensorflow` package, which must not be
installed over `tensorflow-cpu`; so the few messages needed are declared here
at runtime from a `FileDescriptorProto` with the field numbers of TF Serving's
`model.proto`, `predict.proto` and `prediction_log.proto`. Protobuf's wire
format carries only field numbers and values, so the records parse with the
official classes (tests/test_serving_export.py checks it with them).

Declared subset (TF Serving field numbers):
  ModelSpec { string name = 1; string signature_name = 3; }
  PredictRequest { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
  PredictLog { PredictRequest request = 1; }
  PredictionLog { PredictLog predict_log = 6; }
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from tensorflow.core.framework import tensor_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"

# A package of our own: the wire format does not carry it, and it cannot clash
# with `tensorflow.serving` where tensorflow-serving-api is imported too.
_PACKAGE = "deeplesion_tf.serving.wire"
_FILE_NAME = "deeplesion_tf/serving/prediction_log_subset.proto"
# Importing tensor_pb2 puts this file in the default pool.
_TENSOR_PROTO = tensor_pb2.DESCRIPTOR.name  # "tensorflow/core/framework/tensor.proto"

_F = descriptor_pb2.FieldDescriptorProto


class WarmupRequest(NamedTuple):
    """One Predict request: the signature and its inputs (numpy arrays)."""

    signature_name: str
    inputs: Mapping[str, np.ndarray]


def _field(message, name, number, kind, type_name=None, repeated=False):
    field = message.field.add(name=name, number=number, type=kind,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=_FILE_NAME, package=_PACKAGE, syntax="proto3",
                                               dependency=[_TENSOR_PROTO])
    spec = proto.message_type.add(name="ModelSpec")
    _field(spec, "name", 1, _F.TYPE_STRING)
    _field(spec, "signature_name", 3, _F.TYPE_STRING)

    request = proto.message_type.add(name="PredictRequest")
    _field(request, "model_spec", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.ModelSpec")
    _field(request, "inputs", 2, _F.TYPE_MESSAGE, f".{_PACKAGE}.PredictRequest.InputsEntry",
           repeated=True)
    entry = request.nested_type.add(name="InputsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, ".tensorflow.TensorProto")

    log = proto.message_type.add(name="PredictLog")
    _field(log, "request", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.PredictRequest")

    prediction_log = proto.message_type.add(name="PredictionLog")
    _field(prediction_log, "predict_log", 6, _F.TYPE_MESSAGE, f".{_PACKAGE}.PredictLog")
    return proto


@functools.lru_cache(maxsize=None)
def prediction_log_class():
    """The `PredictionLog` message class (the subset above), declared once per process."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE_NAME)
    except KeyError:
        pool.Add(_file_descriptor())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.PredictionLog"))


def write_warmup_requests(saved_model_dir: str, model_name: str,
                          requests: Sequence[WarmupRequest]) -> str:
    """Writes `saved_model_dir/assets.extra/tf_serving_warmup_requests`; returns its path.

    Args:
      saved_model_dir: a version folder holding `saved_model.pb`.
      model_name: `model_spec.name` of the requests (TF Serving's `--model_name`).
      requests: the Predict requests, one record each.

    Raises:
      ValueError: no requests.
    """
    if not requests:
        raise ValueError("no warmup requests")
    log_class = prediction_log_class()
    directory = os.path.join(saved_model_dir, ASSETS_EXTRA)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = log_class()
            predict = log.predict_log.request
            predict.model_spec.name = model_name
            predict.model_spec.signature_name = request.signature_name
            for key, value in request.inputs.items():
                predict.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            writer.write(log.SerializeToString())
    return path
