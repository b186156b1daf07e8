"""The VLA: a vision-language backbone, latent-token prompts, a bridge-attention action head, five strategies."""
