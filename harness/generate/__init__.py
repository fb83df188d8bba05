"""Generation: pipeline loading, the GPT-2 fix, conditioning cache, sampling, executors, ``run``."""
