"""docker-compose.yml is valid (checked by Debian's docker-compose; no engine is needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("SUPPORT_BOT_TEST_REQUIRE_ALL"):
            pytest.fail("docker-compose is required in CI (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed")
    return exe


def test_compose_file_is_valid_and_has_the_services(compose):
    env = {**os.environ, "POSTGRES_PASSWORD": "pw-for-validation", "SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}
    out = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"postgres", "redis", "migrate", "web", "worker", "web-gpu", "web-gpu-1"}


def _resolved(compose: str, *args: str) -> dict:
    import yaml

    env = {**os.environ, "POSTGRES_PASSWORD": "pw-for-validation", "SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}
    out = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


def test_every_long_running_service_has_a_health_check_and_web_scales_out(compose):
    services = _resolved(compose)
    for name in ("postgres", "redis", "web", "worker", "web-gpu"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["web"]["deploy"]["replicas"] >= 2
    # Every replica and worker shares the index store and the production settings.
    for name in ("web", "worker", "web-gpu"):
        env = services[name]["environment"]
        assert env["SUPPORT_BOT_ENV"] == "production"
        assert env["SUPPORT_BOT_REDIS_URL"].startswith("redis://")
        mounts = [v if isinstance(v, dict) else {"source": v.split(":")[0], "target": v.split(":")[1]}
                  for v in services[name]["volumes"]]
        assert {"source": "shared-data", "target": "/data"} in [
            {"source": m.get("source"), "target": m.get("target")} for m in mounts
        ]


def test_gpu_profile_reserves_nvidia_gpus_for_llama_2(compose):
    gpu = _resolved(compose, "--profile", "gpu")["web-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["environment"]["SUPPORT_BOT_LLM__DEVICE"] == "cuda"
    assert gpu["environment"]["SUPPORT_BOT_LLM__MODEL"].startswith("llama-2-")


def test_each_gpu_replica_is_pinned_to_its_own_card(compose):
    services = _resolved(compose, "--profile", "gpu", "--profile", "gpu-2")
    cards = []
    for name in ("web-gpu", "web-gpu-1"):
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        # A card by id, never `count: all` (a 7B model spread over every card runs them one at a time).
        assert "count" not in device and len(device["device_ids"]) == 1
        cards.append(device["device_ids"][0])
        assert services[name]["environment"] == services["web-gpu"]["environment"]
    assert cards == ["0", "1"]
    assert services["web-gpu-1"]["profiles"] == ["gpu-2"]


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "SUPPORT_BOT_ADMIN_TOKEN"])
def test_compose_refuses_to_run_without_secrets(compose, missing):
    env = {**os.environ, "POSTGRES_PASSWORD": "pw-for-validation", "SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}
    del env[missing]
    out = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode != 0
    assert missing in out.stderr


# Compose's own variable (the model of the GPU replicas), not a setting.
COMPOSE_ONLY = {"SUPPORT_BOT_GPU_MODEL"}


def _is_setting(name: str) -> bool:
    from pydantic import BaseModel

    from support_bot.core.config import Settings

    model: type[BaseModel] = Settings
    *parents, leaf = name.removeprefix("SUPPORT_BOT_").lower().split("__")
    for part in parents:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    return leaf in model.model_fields


def test_every_variable_the_docs_and_deployment_files_name_is_a_setting():
    named = set()
    for name in ("README.md", "docker-compose.yml", "Dockerfile"):
        named |= set(re.findall(r"\bSUPPORT_BOT_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / name).read_text()))
    unknown = {n for n in named - COMPOSE_ONLY if not n.startswith("SUPPORT_BOT_TEST_") and not _is_setting(n)}
    assert unknown == set(), "named in the docs or deployment files but not a setting"
