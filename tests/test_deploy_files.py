"""The Fly.io deployment files, checked offline: fly.toml's keys and the Dockerfile's stages and rules."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from bridge.cli import build_parser
from tests.test_server_process import BIN

REPO = Path(__file__).resolve().parents[1]
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "DATABASE_URL")


def fly() -> dict[str, Any]:
    return tomllib.loads((REPO / "fly.toml").read_text(encoding="utf-8"))


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into build stages."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def parses(command: str) -> list[str]:
    """The command's arguments after `interview-bridge`, accepted by the real CLI parser."""
    words = shlex.split(command)
    assert words[0] == "interview-bridge", command
    build_parser().parse_args(words[1:])
    return words[1:]


def test_fly_toml_uses_the_modern_http_service_keys() -> None:
    """Auto-stopping and auto-starting app machines on the internal port, HTTPS forced, requests concurrency."""
    service = fly()["http_service"]
    assert service["internal_port"] == int(fly()["env"]["PORT"]) == 8080
    assert service["force_https"] is True
    assert service["auto_stop_machines"] == "stop"
    assert service["auto_start_machines"] is True
    assert service["min_machines_running"] == 0
    assert service["processes"] == ["app"]
    concurrency = service["concurrency"]
    assert concurrency["type"] == "requests"
    assert 0 < concurrency["soft_limit"] < concurrency["hard_limit"]
    [check] = service["checks"]
    assert (check["method"], check["path"]) == ("GET", "/health")
    assert {"grace_period", "interval", "timeout"} <= set(check)


def test_fly_toml_stops_with_sigterm_migrates_on_release_and_keeps_secrets_out() -> None:
    """SIGTERM with time to drain, `db migrate` as the release command, [env] of strings and no secrets."""
    config = fly()
    assert config["kill_signal"] == "SIGTERM"
    assert 30 < config["kill_timeout"] <= 300  # serve's graceful shutdown takes up to 30 s
    assert parses(config["deploy"]["release_command"]) == ["db", "migrate"]
    env = config["env"]
    assert all(isinstance(value, str) for value in env.values())
    assert not [name for name in env if name.startswith("FLY_") or any(w in name for w in SECRET_WORDS)]
    assert env["HOST"] == "0.0.0.0"
    assert config["build"]["args"]["ENGINE"] in ("openai", "local")


def test_fly_toml_runs_a_reaper_group_that_is_never_auto_stopped() -> None:
    """An app group that serves and a reaper group outside [http_service], each with a VM size of its own."""
    config = fly()
    processes = config["processes"]
    assert parses(processes["app"]) == ["serve"]
    assert parses(processes["reaper"])[:1] == ["reap"] and "--every" in processes["reaper"]
    assert "reaper" not in config["http_service"]["processes"]
    sizes = {group: vm for vm in config["vm"] for group in vm["processes"]}
    assert set(sizes) == {"app", "reaper"}
    assert all({"size", "memory"} <= set(vm) for vm in sizes.values())
    assert not sizes["app"]["size"].startswith(("a100", "l40s", "a10"))  # no GPU machines: they are withdrawn


def test_dockerfile_builds_in_one_stage_and_runs_slim_and_unprivileged() -> None:
    """A build stage with the compilers and the ENGINE arg; a slim final stage without them, not root, exec CMD."""
    build, final = stages()
    assert re.match(r"FROM python:3\.11-slim AS build$", build[0])
    assert "ARG ENGINE=openai" in build
    assert any("build-essential" in line for line in build)
    assert any('pip install -e ".[local]"' in line and "ENGINE" in line for line in build)
    assert re.match(r"FROM python:3\.11-slim$", final[0])
    assert not [line for line in final if re.search(r"apt-get|build-essential|gcc|g\+\+", line)]
    [user] = [line for line in final if line.startswith("USER ")]
    assert user.split()[1] not in ("root", "0")
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "HOST=0.0.0.0" in env and "PORT=8080" in env
    [cmd] = [line for line in final if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["interview-bridge", "serve"]  # exec form: PID 1 gets SIGTERM
    assert any(line.startswith("COPY --from=build") for line in final)


def test_dockerignore_keeps_the_repository_and_local_state_out_of_the_image() -> None:
    """Git history, virtualenvs, node modules, local data, tests and secrets in .env never reach the build."""
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", "node_modules", "data", "tests", ".env"} <= ignored


def test_deploy_check_says_why_it_skips_without_docker(tmp_path: Path) -> None:
    """Without a Docker command the check prints the reason and exits 0 instead of failing."""
    env = {**os.environ, "PATH": str(tmp_path)}  # no docker on this PATH
    done = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "deploy-check.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert "skipped: no docker command" in done.stdout


def test_the_reaper_machine_command_repeats_passes_until_sigterm(tmp_path: Path) -> None:
    """`reap --every` prints a pass's JSON line each interval and exits 0 soon after SIGTERM."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), "STT_ENGINE": "simulate", "STORE": "sqlite"}
    env.pop("DATABASE_URL", None)
    with subprocess.Popen(
        [str(BIN / "interview-bridge"), "reap", "--every", "0.2"], env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            lines = [json.loads(process.stdout.readline()) for _ in range(2)]
            assert all(line["abandoned"] == 0 for line in lines)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_readme_deploy_section_covers_each_step_with_real_setting_names() -> None:
    """The README's Deploy section walks through launch, secrets, deploy, migrations, regions, the reaper and
    per-interview mode, and every variable it tells a user to set is one the bridge reads (or a build argument of the Dockerfile)."""
    from shared.settings import Settings

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    deploy = readme[readme.index("## Deploy on Fly.io") :]
    deploy = deploy[: deploy.find("\n## ", 1) if "\n## " in deploy[1:] else len(deploy)]
    for step in ("fly launch --no-deploy", "fly secrets set", "fly deploy", "db migrate", "supabase db push",
                 "fly scale count app=", "reaper", "PER_INTERVIEW_MACHINES=on", "machines_destroyed"):  # fmt: skip
        assert step in deploy, step
    named = set(re.findall(r"\b([A-Z][A-Z0-9_]{3,})=", deploy))
    build_args = set(re.findall(r"^ARG (\w+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M))
    known = {name.upper() for name in Settings.model_fields} | build_args
    assert named and named <= known, named - known
