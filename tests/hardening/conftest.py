"""The hardening tests reuse the data tests' Hydra composition fixture."""

from tests.data.conftest import compose_config  # noqa: F401  (a fixture)
