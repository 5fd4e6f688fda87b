"""Fuzzing: the OpenAPI contract, the audio decoder and the assembler under generated input (issue 20)."""
