"""Shared test data and helpers: contract sentences, eval cases, LlamaIndex fixtures, the injection corpus."""
