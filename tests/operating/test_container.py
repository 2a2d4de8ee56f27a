"""The Dockerfile and the compose files, checked without a Docker engine: what ops would trip over first.

No engine runs in CI, so the image is never built here. What can be checked is: the files parse, every
variable they set is one the worker reads (a typo would be silently ignored), the values validate, the
commands exist in the CLI, ports and credentials agree between services, and the dependencies wait for
healthchecks that exist.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service import cli
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_ENV_PREFIXES = ("AWS_", "FSSPEC_", "OTEL_", "PYTHON", "PATH")
"""Variables read by s3fs/botocore, fsspec, OpenTelemetry and Python itself, not by the settings class."""


def setting_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert alias is not None and hasattr(alias, "choices")
        names.add(str(alias.choices[0]))
    return names


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is refused: signals must reach the worker."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"expected exec form, got {arguments!r}"
    return [str(v) for v in value]


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(arguments))


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def cli_parser() -> argparse.ArgumentParser:
    """The real ``storage-worker`` parser, every subcommand of its table."""
    return cli.parser()


def assert_cli_accepts(argv: list[str], command: str) -> None:
    assert argv[0] == "storage-worker", argv
    args = cli_parser().parse_args(argv[1:])
    assert args.command == command


def compose(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    assert test[0] == "CMD"
    return [str(part) for part in test[1:]]


def duration_s(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose("docker-compose.yml")


# ---- Dockerfile ----


def test_dockerfile_is_multi_stage_on_slim_python_and_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    """The image is built in one stage and runs from a slim one, as an unprivileged user."""
    bases = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert len(bases) >= 2
    assert all("python:" in base and "-slim" in base for base in bases), bases
    runtime = final_stage(dockerfile)
    assert any(keyword == "COPY" and args.startswith("--from=") for keyword, args in runtime)
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_entrypoint_runs_the_worker_and_healthcheck_pings_it(dockerfile: list[tuple[str, str]]) -> None:
    """``docker run image`` starts ``storage-worker run``; the HEALTHCHECK is ``storage-worker health``."""
    runtime = dict(final_stage(dockerfile))
    argv = exec_form(runtime["ENTRYPOINT"]) + exec_form(runtime["CMD"])
    assert_cli_accepts(argv, "run")
    health = runtime["HEALTHCHECK"]
    _, _, command = health.partition("CMD ")
    assert_cli_accepts(exec_form(command.strip()), "health")
    assert runtime["STOPSIGNAL"] == "SIGTERM"


def test_dockerfile_keeps_files_and_sqlite_on_the_declared_volume(dockerfile: list[tuple[str, str]]) -> None:
    """``STORAGE_ROOT`` and the SQLite file sit under the declared volume, so data outlives the container."""
    runtime = final_stage(dockerfile)
    volumes = [v for keyword, args in runtime if keyword == "VOLUME" for v in exec_form(args)]
    env: dict[str, str] = {}
    for keyword, args in runtime:
        if keyword == "ENV":
            env.update(env_pairs(args))
    root = urlsplit(env["STORAGE_ROOT"])
    assert root.scheme == "file"
    assert any(root.path == v or root.path.startswith(v + "/") for v in volumes), (root.path, volumes)
    sqlite_file = env["DATABASE_URL"].split(":///", 1)[1]
    assert env["DATABASE_URL"].startswith("sqlite+aiosqlite:///")
    assert any(sqlite_file.startswith(v + "/") for v in volumes), (sqlite_file, volumes)
    workdirs = [args for keyword, args in runtime if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] in volumes


def test_dockerfile_env_names_are_settings_and_values_validate(dockerfile: list[tuple[str, str]]) -> None:
    """Every worker variable the image sets is one the settings read, with a value they accept."""
    env: dict[str, str] = {}
    for keyword, args in final_stage(dockerfile):
        if keyword == "ENV":
            env.update(env_pairs(args))
    ours = {k: v for k, v in env.items() if not k.startswith(EXTERNAL_ENV_PREFIXES)}
    assert set(ours) <= setting_names(), set(ours) - setting_names()
    settings = Settings(**ours)  # type: ignore[arg-type]
    exposed = {int(p.split("/")[0]) for keyword, args in dockerfile if keyword == "EXPOSE" for p in args.split()}
    assert settings.metrics_port in exposed


def test_dockerfile_copies_every_package_and_installs_existing_extras(dockerfile: list[tuple[str, str]]) -> None:
    """The build copies the distribution's packages and asks only for extras that pyproject defines."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        src for keyword, args in dockerfile if keyword == "COPY" and "--from" not in args for src in args.split()[:-1]
    }
    assert packages | {"pyproject.toml", "README.md"} <= copied, packages - copied
    assert all((ROOT / src).exists() for src in copied), copied
    installs = [args for keyword, args in dockerfile if keyword == "RUN" and "pip install" in args]
    extras = {e for args in installs for e in args.split('".[', 1)[1].split("]", 1)[0].split(",")}
    assert extras and extras <= set(project["project"]["optional-dependencies"])


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    """A local virtualenv, database or git history never ends up in the image."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".data"} <= ignored
    assert not ({"contracts", "service", "buffer", "pyproject.toml", "README.md"} & ignored)


# ---- docker-compose.yml (the whole stack) ----


def test_stack_has_broker_database_object_store_and_worker(stack: dict[str, Any]) -> None:
    """One ``docker compose up`` brings RabbitMQ with its UI, PostgreSQL, MinIO and the worker."""
    services = stack["services"]
    assert {"rabbitmq", "postgres", "minio", "storage-worker"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert any(str(p).endswith(":15672") for p in services["rabbitmq"]["ports"])
    assert services["storage-worker"]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_stack_dependencies_wait_for_healthchecks_that_exist(stack: dict[str, Any]) -> None:
    """The worker starts only after the broker, database and bucket are ready, never on a race."""
    services = stack["services"]
    worker = services["storage-worker"]
    conditions = {name: dep["condition"] for name, dep in worker["depends_on"].items()}
    assert conditions["rabbitmq"] == "service_healthy"
    assert conditions["postgres"] == "service_healthy"
    for name, service in services.items():
        for dep_name, dep in (service.get("depends_on") or {}).items():
            assert dep_name in services, (name, dep_name)
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[dep_name], dep_name
            if dep["condition"] == "service_completed_successfully":
                assert services[dep_name].get("restart") == "no", dep_name
    migrate = services["storage-migrate"]
    assert conditions["storage-migrate"] == "service_completed_successfully"
    assert_cli_accepts(["storage-worker", *migrate["command"]], "migrate")


def test_stack_worker_commands_are_real_cli_commands(stack: dict[str, Any]) -> None:
    """The worker's command and healthcheck are subcommands the CLI actually has."""
    worker = stack["services"]["storage-worker"]
    assert_cli_accepts(["storage-worker", *worker["command"]], "run")
    assert_cli_accepts(healthcheck_argv(worker), "health")
    assert duration_s(worker["stop_grace_period"]) > float(worker["environment"]["STORAGE_SHUTDOWN_GRACE"])


def test_stack_worker_env_names_are_settings_and_values_validate(stack: dict[str, Any]) -> None:
    """No variable in the worker's environment is a typo the settings would silently ignore."""
    for name in ("storage-worker", "storage-migrate"):
        env = {k: str(v) for k, v in stack["services"][name]["environment"].items()}
        ours = {k: v for k, v in env.items() if not k.startswith(EXTERNAL_ENV_PREFIXES)}
        assert set(ours) <= setting_names(), set(ours) - setting_names()
        Settings(**ours)  # type: ignore[arg-type]


def test_stack_urls_point_at_the_services_with_their_credentials(stack: dict[str, Any]) -> None:
    """AMQP, SQL and S3 URLs name the right service, port and credentials, and the bucket gets created."""
    services = stack["services"]
    env = services["storage-worker"]["environment"]

    amqp = urlsplit(env["AMQP_URL"])
    rabbit_env = services["rabbitmq"]["environment"]
    assert (amqp.hostname, amqp.port) == ("rabbitmq", 5672)
    assert (amqp.username, amqp.password) == (rabbit_env["RABBITMQ_DEFAULT_USER"], rabbit_env["RABBITMQ_DEFAULT_PASS"])

    db = urlsplit(env["DATABASE_URL"])
    pg_env = services["postgres"]["environment"]
    assert db.scheme == "postgresql+asyncpg"
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]

    endpoint = urlsplit(env["FSSPEC_S3_ENDPOINT_URL"])
    minio = services["minio"]
    assert (endpoint.hostname, endpoint.port) == ("minio", 9000)
    assert any(str(p).endswith(":9000") for p in minio["ports"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["environment"]["MINIO_ROOT_USER"],
        minio["environment"]["MINIO_ROOT_PASSWORD"],
    )
    bucket = urlsplit(env["STORAGE_ROOT"])
    assert bucket.scheme == "s3"
    init = " ".join(services["minio-init"]["command"])
    assert f"local/{bucket.hostname}" in init
    assert "http://minio:9000" in init


def test_stack_publishes_the_metrics_port(stack: dict[str, Any]) -> None:
    """Prometheus can scrape the worker on the port its settings serve metrics on."""
    worker = stack["services"]["storage-worker"]
    port = Settings(STORAGE_METRICS_PORT=worker["environment"]["STORAGE_METRICS_PORT"]).metrics_port  # type: ignore[call-arg]
    assert f"{port}:{port}" in [str(p) for p in worker["ports"]]


def test_stack_named_volumes_are_declared(stack: dict[str, Any]) -> None:
    """Every named volume a service mounts is declared, so data survives ``docker compose down``."""
    declared = set(stack.get("volumes") or {})
    for service in stack["services"].values():
        for mount in service.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


# ---- docker-compose.rabbitmq.yml (just a broker for development) ----


def test_rabbitmq_only_file_has_management_healthcheck_and_named_volume() -> None:
    """The development broker has its UI, a healthcheck for ``up --wait`` and data in a named volume."""
    doc = compose("docker-compose.rabbitmq.yml")
    (service,) = doc["services"].values()
    assert "management" in service["image"]
    assert {"5672:5672", "15672:15672"} <= {str(p) for p in service["ports"]}
    assert healthcheck_argv(service)[0] == "rabbitmq-diagnostics"
    volume = service["volumes"][0].split(":", 1)[0]
    assert volume in doc["volumes"]
    assert "RABBITMQ_DEFAULT_USER" not in (service.get("environment") or {})  # guest/guest, the worker's default
