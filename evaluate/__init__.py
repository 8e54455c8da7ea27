"""The evaluate stage: downstream heads and honest metrics on cached embeddings."""
