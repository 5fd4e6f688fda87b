#!/usr/bin/env bash
# Builds the image and checks it where Docker runs: /health answers, and SIGTERM stops the server with exit 0.
# Where there is no Docker engine it says so and exits 0 (the files themselves are checked by
# tests/test_deploy_files.py everywhere).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
    echo "deploy-check: skipped: no docker command on this machine"
    exit 0
fi
if ! docker info >/dev/null 2>&1; then
    echo "deploy-check: skipped: the docker command is here but no Docker engine answers"
    exit 0
fi

engine="${ENGINE:-openai}"
image="interview-bridge:deploy-check"
docker build --build-arg "ENGINE=$engine" -t "$image" .
container=$(docker run -d -p 127.0.0.1::8080 -e STT_ENGINE=simulate -e STORE=sqlite -e BROADCASTER=local "$image")
trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
port=$(docker port "$container" 8080/tcp | head -n1 | sed 's/.*://')
for _ in $(seq 1 60); do
    if curl -fsS "http://127.0.0.1:$port/health"; then
        echo
        break
    fi
    sleep 1
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null
docker stop --time 30 "$container" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
if [ "$code" != "0" ]; then
    echo "deploy-check: the server exited with $code on SIGTERM" >&2
    exit 1
fi
echo "deploy-check: $image ($engine engine) answered /health and stopped cleanly on SIGTERM"
