"""Networks shared by the categorizer and the detector (VGG16)."""
