"""The transformers backend: the streaming engine, its continuous-batching scheduler, KV cache and CUDA graphs."""
