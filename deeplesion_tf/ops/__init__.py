"""Pure box math: IoU, anchors, box coder, matcher, sampler, NMS (no model state)."""
