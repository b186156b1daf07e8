"""The action tokenizer: VQ/FSQ over chunks of normalized actions, its data, objective, evaluation, checkpoints."""
