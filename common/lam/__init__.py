"""The image-based latent action model: features, model, frame-pair data, evaluation."""
