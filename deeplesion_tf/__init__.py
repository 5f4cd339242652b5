"""deeplesion-tf: DeepLesion (Yan et al.) in TensorFlow/Keras.

The data flows PACS bookmarks -> TFRecords -> (categorizer -> pseudo labels) ->
detector -> evaluation / SavedModel; each stage has its own subpackage.
"""

__version__ = "0.1.0"
