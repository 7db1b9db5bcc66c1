"""3DGAN trainer: presets, models, the shared GAN step, fit and custom-loop paths, strategies, checkpoints, export."""
