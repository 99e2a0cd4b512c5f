"""Data: the Broden-format concept dataset reader, image decoding, the feature store and the
concept dataset's CSV tables."""
