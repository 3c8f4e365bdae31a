"""PPO training throughput on real GOOGL training bars, per feature extractor.

Prints environment steps per second (SPS) for the Transformer and MLP extractors at the
demo's PPO settings, the ratio between them, and the projected wall time of a demo job
(both models at the demo budget) against its anchor: the issue's 10-minute demo limit
(the whole demo, training included, on a 2-core machine).

    .venv/bin/python bench/training_throughput.py [--timesteps 16384] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import torch

from bsopt_common.marketdata import bundled_provider
from bsopt_trainer.domain.env import TradingEnv
from bsopt_trainer.domain.job import DEMO_TOTAL_TIMESTEPS, default_spec, env_config_for, ppo_config_for
from bsopt_trainer.domain.ppo import train_ppo

DEMO_LIMIT_SECONDS = 600.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=16_384)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    spec = default_spec(total_timesteps=args.timesteps)
    split = spec.validate(bundled_provider().fetch_history(spec.symbol))
    config = dataclasses.replace(ppo_config_for(spec), torch_threads=args.threads)
    env_config = env_config_for(spec)
    sps = {}
    for extractor in ("transformer", "mlp"):
        t0 = time.perf_counter()
        train_ppo(config, lambda _: TradingEnv(split.train_bars, env_config, split.train_range, mode="train"),
                  extractor, {})
        sps[extractor] = config.trained_timesteps / (time.perf_counter() - t0)
    projected = DEMO_TOTAL_TIMESTEPS * (1 / sps["transformer"] + 1 / sps["mlp"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {args.threads}, {config.trained_timesteps} steps per model")
    print(f"transformer SPS: {sps['transformer']:.0f}")
    print(f"mlp SPS: {sps['mlp']:.0f}")
    print(f"transformer / mlp SPS ratio: {sps['transformer'] / sps['mlp']:.2f}")
    print(f"projected demo training ({DEMO_TOTAL_TIMESTEPS} steps x 2 models): {projected:.0f}s = "
          f"{projected / DEMO_LIMIT_SECONDS:.2f} of the {DEMO_LIMIT_SECONDS:.0f}s demo limit")


if __name__ == "__main__":
    main()
