"""The large-model side of the hybrid loop: escalations answered by an OpenAI-compatible endpoint,
answers joined back to their escalations, and the joined pairs exported as training data."""

from streamer.bridge.answers import Answer, InvalidAnswer, parse_answer
from streamer.bridge.llm import CircuitBreaker, ClientOptions, LLMClient, TokenBucket, backoff_delay

__all__ = [
    "Answer",
    "CircuitBreaker",
    "ClientOptions",
    "InvalidAnswer",
    "LLMClient",
    "TokenBucket",
    "backoff_delay",
    "parse_answer",
]
