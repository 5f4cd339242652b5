"""The `deeplesion` dataset."""
