"""Evaluation against the concept world's ground truth (docs/evaluate.md): the measures
(`scoring`, `faithfulness`, `counterfactual`), the stages that apply them (`items`, `truth`,
`curves`, `reliance`, `rules`, `summary`), their order (`pipeline`) and what is written
(`report`, `outputs`)."""
