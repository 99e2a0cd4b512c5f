"""Explaining one decision, one module per method: CAM and Grad-CAM (`cam`, paper eq. 13), IBD
(`basis_decomposition`, eq. 9-12), Network Dissection's unit explanation (`netdissect`, eq. 14);
the loop they share and the explainers' base class (`loop`); the explanation records and their
files (`records`)."""
