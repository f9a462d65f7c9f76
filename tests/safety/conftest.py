"""Guards built once per test session: loading the encoder and embedding the attack library takes a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from support_bot.core.config import SafetySettings, Settings
from support_bot.safety import InputGuard, OutputGuard

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def safety_settings(tmp_path_factory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("safety-data"), llm={"backend": "fake"})


@pytest.fixture(scope="session")
def guard(safety_settings) -> InputGuard:
    """The real input guard, embeddings included."""
    g = InputGuard(safety_settings)
    g.warm_up()
    return g


@pytest.fixture(scope="session")
def pattern_guard(safety_settings) -> InputGuard:
    """The guard without the embedding signal, to test the cheap signals on their own."""
    settings = safety_settings.model_copy(update={"safety": SafetySettings(use_embeddings=False)})
    return InputGuard(settings)


@pytest.fixture(scope="session")
def output_guard(safety_settings) -> OutputGuard:
    return OutputGuard(safety_settings)
