"""Engine implementations; import them through `humpback.engines.factory.make_engine`, which loads only the one
a run asks for (vLLM and the openai client are optional at import time)."""
