"""Configuration layering and the error → gRPC status table."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cluster.status import status_code, status_message
from smartgate import errors
from smartgate.config import load_config


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sg.toml"
    cfg_file.write_text('data_dir = "/srv/a"\n[match]\nthreshold = 0.5\nmargin = 0.1\n')
    env = {"SMARTGATE_MATCH__MARGIN": "0.2", "SMARTGATE_SERVER__LISTEN": "0.0.0.0:1"}
    cfg = load_config(
        cfg_file, environ=env, overrides={"server.listen": "127.0.0.1:2", "data_dir": None}
    )
    assert cfg.data_dir == Path("/srv/a")
    assert cfg.match.threshold == 0.5
    assert cfg.match.margin == 0.2
    assert cfg.server.listen == "127.0.0.1:2"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("[match]\nthreshhold = 1\n", {}, "unknown setting"),
        ("", {"SMARTGATE_SERVER__MAX_WORKERS": "many"}, "cannot read 'many' as int"),
        ("[match\n", {}, "config file"),
        ("[tracking]\nstill_scene_diff = 300\n", {}, "still_scene_diff"),
        ("[tracking]\nstill_scene_max_age_s = 0\n", {}, "still_scene_max_age_s"),
        ("", {"SMARTGATE_TRACKING__REGION_FRAMES": "-1"}, "region_frames"),
    ],
)
def test_bad_configuration_is_reported(
    tmp_path: Path, content: str, env: dict, message: str
) -> None:
    cfg_file = tmp_path / "sg.toml"
    cfg_file.write_text(content)
    with pytest.raises(errors.ConfigError, match=message):
        load_config(cfg_file, environ=env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.DecodeError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.EnrollmentError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidInputError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExistsError("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.ModelError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.OverloadedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnavailableError("x"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_codes(exc: Exception, code: grpc.StatusCode) -> None:
    assert status_code(exc) == code


def test_unexpected_errors_do_not_leak_details() -> None:
    assert "boom" not in status_message(RuntimeError("boom"))
    assert status_message(errors.NotFoundError("community 'x'")) == "community 'x'"
