"""Pure helpers of ``benchmarks/stacks_llamacpp.py`` (``make stacks``): the llama.cpp flag parser and
the float32 GGUF writer. Neither needs llama.cpp; ``tests/test_stacks_llamacpp.py`` tests both."""
