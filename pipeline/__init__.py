"""llmgate: decide whether an LLM-serving image digest may be promoted."""

__version__ = "0.1.0"
