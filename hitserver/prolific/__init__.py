"""Prolific through its REST API: publish a batch as a study, sync submissions, approve or
reject them by the study's rules, pay bonuses exactly once (`hitserver prolific ...`)."""
