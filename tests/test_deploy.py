"""docker-compose.yml is valid (checked by Debian's docker-compose; no engine is needed)."""

from __future__ import annotations

import os
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
    env = {**os.environ, "POSTGRES_PASSWORD": "pw-for-validation", "SUPPORT_BOT_SECRET_KEY": "k" * 32,
           "SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}
    out = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"postgres", "redis", "migrate", "web", "worker", "web-gpu"}


def _resolved(compose: str, *args: str) -> dict:
    import yaml

    env = {**os.environ, "POSTGRES_PASSWORD": "pw-for-validation", "SUPPORT_BOT_SECRET_KEY": "k" * 32,
           "SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}
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


def test_compose_refuses_to_run_without_secrets(compose):
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "SUPPORT_BOT_SECRET_KEY")}
    out = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr or "SUPPORT_BOT_SECRET_KEY" in out.stderr
