"""Evaluation against the concept world's ground truth: scoring, faithfulness curves and
counterfactual images."""
