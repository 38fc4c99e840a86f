"""Modality families: what every objective of one modality shares.

A family turns a dataset's records into training examples on the host, says what to monitor
during training and how to evaluate a finished run (with its baselines). The trainer reaches a
family only through `Objective.family`, so a new modality is a new module here and touches no
trainer code.
"""
