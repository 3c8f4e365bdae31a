"""Pure learning logic of the rl-trainer service: no network, no Kafka, no database.

Modules
-------
``env``         :class:`~bsopt_trainer.domain.env.TradingEnv`, a long/flat trading
                environment over a bars frame, and the market features it observes.
``extractors``  feature extractors (Transformer, MLP) behind a name registry.
``ppo_config``  :class:`~bsopt_trainer.domain.ppo_config.PPOConfig`, the PPO hyperparameters.
``policy``      the actor-critic network and the checkpointable
                :class:`~bsopt_trainer.domain.policy.TrainedPolicy` (checkpoint format).
``ppo``         the PPO training loop :func:`~bsopt_trainer.domain.ppo.train_ppo` and
                :func:`~bsopt_trainer.domain.ppo.compute_gae` (GAE).
``evaluation``  equity-curve metrics with transaction costs, policy evaluation and the
                buy-and-hold benchmark.
``job``         one training job: train/test split with a no-look-ahead rule, PPO with the
                Transformer extractor against an MLP baseline and buy-and-hold, checkpoints,
                paper-trading positions.

Submodules are imported lazily by callers (``from bsopt_trainer.domain.job import ...``);
importing this package does not import torch.
"""
