# Shared by scripts/worker and scripts/test: a project venv with the extras its caller needs, installed once.
# The caller may set, before sourcing: venv_name (default .venv) and extras (default test,s3,bench, what the
# tests and benchmarks use; empty for the worker and client alone).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/${venv_name:-.venv}"
extras=${extras-test,s3,bench}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed-$( (cat "$ROOT/pyproject.toml"; echo "extras=$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing the project${extras:+ with [$extras]} into $VENV" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}" >&2
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

ensure_rabbitmq() {
  # AMQP_URL pointing elsewhere is the user's choice: leave it alone.
  if [ -n "${AMQP_URL:-}" ] || broker_up; then return 0; fi
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "==> starting the local RabbitMQ (rabbitmq-server -detached)" >&2
    rabbitmq-server -detached >/dev/null 2>&1 || true
    rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
  fi
  broker_up && return 0
  return 1
}
