"""Batch keys shared by the data pipeline, the model and the strategies (tensors on the model's device)."""

INPUT_IDS, ATTENTION, IMAGES, PROPRIO = "input_ids", "attention_mask", "images", "proprio"
ACTIONS, ACTION_MASK, TOKENS, ALIGN = "actions", "action_mask", "latent_tokens", "align_target"
IGNORE = -100  # token targets past an episode's end
