"""Networks: architectures by name, checkpoint loading, the GAP variants, the concept world's
networks, the mirrored network, class labels, layer hooks and training."""
