"""Training: run configuration, the trainer, distributed runs, sweeps, paper recipes, zero-shot presets and the app's background jobs."""
