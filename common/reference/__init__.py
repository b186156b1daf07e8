"""The reference behaviour-cloning policy: a small conv net per camera, a task embedding and proprio -> K actions.

It has no language model and no latent supervision: trained with L1 on the same demonstrations as the VLA, it shows
what closed-loop success a plain conv policy reaches on this data and CPU budget (the study's yardstick beside the
scripted expert). `model` holds the network and its random-shift augmentation, `data` the samples and held-out
scoring, `policy` saving, loading and the `reference` loader of common/policy.py's registry.
"""
