"""Dagger module for llmgate: `dagger call` runs the same pipeline as the `llmgate` CLI."""

from llmgate_dagger.main import Llmgate

__all__ = ["Llmgate"]
