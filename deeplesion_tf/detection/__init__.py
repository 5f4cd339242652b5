"""The two-stage detector (paper Sec. 2.3): VGG16 trunk, RPN, RoI pooling, box head."""
