"""Explaining one decision: CAM and Grad-CAM (paper eq. 13), IBD (eq. 9-12), Network
Dissection's unit explanation (eq. 14), the loop they share and the explanation records."""
