"""rl-trainer: researchers' training jobs (PPO with a Transformer feature extractor over
16-bar windows), honest evaluation against baselines on held-out dates, versioned
checkpoints, and paper-trading runs of trained agents through broker-gateway."""
