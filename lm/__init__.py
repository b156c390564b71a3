"""Language-model backends: local transformers model, OpenAI-compatible endpoints, embeddings."""
