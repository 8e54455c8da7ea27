"""The train stage: the Adaptor trained on cached embeddings; never opens an image or runs a backbone."""
