"""Evaluation of lesion detectors: the paper's accuracy (Sec. 3, Table 1, Fig. 5) and FROC.

Everything here works on numpy records in original-image pixels
(`records`), whatever produced the detections: the in-Python model, an
exported SavedModel, or another toolkit's COCO results file.
"""
