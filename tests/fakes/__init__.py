"""Test doubles that run in the test process: a fake OpenAI-compatible endpoint."""
