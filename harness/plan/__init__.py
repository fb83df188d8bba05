"""Planning: cells x prompts x seeds -> batches, what the store already holds, shards."""
