"""Backend selection in the configuration and the Triton client's options."""

from __future__ import annotations

import pytest

from recognizer.backends.triton import TritonClientOptions
from smartgate.config import ModelsConfig, load_config
from smartgate.errors import ConfigError


def test_backend_and_triton_settings_come_from_the_environment() -> None:
    config = load_config(
        environ={
            "SMARTGATE_MODELS__BACKEND": "triton",
            "SMARTGATE_MODELS__TRITON_URL": "10.0.0.5:8001",
            "SMARTGATE_MODELS__TRITON_TIMEOUT_S": "2.5",
            "SMARTGATE_MODELS__TRITON_RETRIES": "0",
        }
    )
    models = config.models
    assert (models.backend, models.triton_url) == ("triton", "10.0.0.5:8001")
    assert TritonClientOptions.from_config(models) == TritonClientOptions(timeout_s=2.5, retries=0)
    assert load_config(environ={}).models.backend == "onnxruntime"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "tensorrt", "models.backend must be 'onnxruntime' or 'triton'"),
        ("triton_timeout_s", "0", "triton_timeout_s must be > 0"),
        ("triton_retries", "-1", "triton_retries >= 0"),
    ],
)
def test_bad_backend_settings_are_config_errors(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={f"SMARTGATE_MODELS__{field.upper()}": value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": 0.0}, "timeout_s must be > 0"),
        ({"retries": -1}, "retries must be >= 0"),
        ({"backoff_s": -0.1}, "backoff_s must be >= 0"),
    ],
)
def test_client_options_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TritonClientOptions(**kwargs)  # type: ignore[arg-type]


def test_defaults_stay_in_process() -> None:
    assert ModelsConfig().backend == "onnxruntime"
