"""The real-worker harness of the pipeline tests, shared with the bot tests."""

from tests.pipeline.conftest import live, namespace, processes, replay_market, stub  # noqa: F401
