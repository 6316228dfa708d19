"""open_clip factory, zero-shot head, image classifier and the LightningModule."""
