"""Interpretable Basis Decomposition (Zhou et al., ECCV 2018) and its baselines.

Subpackages and modules are organised by concept: architectures and checkpoints (`models`),
feature capture (`hooks`), image loading (`images`), CAM / Grad-CAM (`cam`), explanation files
(`explanations`), concept data (`broden`, `world`), the concept basis (`basis`), class
decomposition (`decompose`), Network Dissection (`dissect`).
"""

__version__ = "0.1.0"
