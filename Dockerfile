# gatesum REST service: `gatesum serve` on port 8000, with the bundled model when it exists.
#
#   docker build -t gatesum .                                  CPU PyTorch (the default)
#   docker run -p 8000:8000 -e GATESUM_API_KEYS=me=$(openssl rand -hex 24) gatesum
#                                                              then http://localhost:8000/
#
# The image listens on all interfaces (GATESUM_HOST=0.0.0.0), so it refuses to start without
# API keys: give GATESUM_API_KEYS (name=key,...) or GATESUM_API_KEYS_FILE (a mounted file, one
# name=key or name=sha256:<hex> per line), or say GATESUM_ALLOW_ANONYMOUS=true when something in
# front already authenticates. /healthz, /readyz and the page stay open; /v1/* and /metrics need
# "Authorization: Bearer <key>". GATESUM_RATE_LIMIT_PER_S / _BURST limit each key.
#
# GPU serving: a CUDA base with apt and the matching PyTorch wheel index, e.g.
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_VARIANT=cu128 -t gatesum:cuda .
#   docker run --gpus all -e GATESUM_DEVICE=cuda -p 8000:8000 gatesum:cuda
#
# BASE is any Debian or Ubuntu image (python3 comes from apt): where Docker Hub is out of
# reach, build one with debootstrap (scripts/docker-check does, and builds this with podman).
# A CPU torch wheel placed in build/docker-wheels/ is installed instead of downloading one.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
# pip inside the build trusts the system CA bundle (which includes a proxy's CA, if the base has it)
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gatesum/bin:$PATH \
    GATESUM_KERNELS=off
# GATESUM_KERNELS=off: the image has no C++ compiler, so the LSTM runs on torch ops instead of
# our compiled loops (model/csrc): the same results up to float rounding, a slower encoder.

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/gatesum

# PyTorch first, in its own layer (the largest): a local CPU wheel if the context has one,
# else from PyTorch's index for TORCH_VARIANT (cpu, cu128, ...). pyproject.toml is listed so
# that the copy never has zero sources when build/docker-wheels/ is absent.
COPY pyproject.toml build/docker-wheel[s] /tmp/build/
RUN if ls /tmp/build/torch-*.whl >/dev/null 2>&1; then \
      pip install /tmp/build/torch-*.whl; \
    else \
      pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
                  --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}"; \
    fi

# the package's dependencies at the lock's exact, hashed versions (cached until the lock
# changes; made for this base's Python 3.11), then the package itself without resolving more
COPY requirements/runtime.txt /tmp/build/requirements.txt
RUN pip install --require-hashes -r /tmp/build/requirements.txt
# the package's folders, mapped into the one import package ``gatesum`` by pyproject.toml; the
# bundled model is package data of gatesum.pretrained (owned by root, readable by the service user)
COPY gatesum /src/gatesum
COPY model /src/model
COPY training /src/training
COPY service /src/service
COPY experiments /src/experiments
COPY benchmarks /src/benchmarks
COPY pretrained /src/pretrained
RUN cp /tmp/build/pyproject.toml /src/ \
 && rm -rf /src/benchmarks/results \
 && pip install --no-deps /src \
 && rm -rf /src /tmp/build \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gatesum

USER gatesum
WORKDIR /app
ENV GATESUM_HOST=0.0.0.0 \
    GATESUM_PORT=8000
EXPOSE 8000
# Healthy = ready to summarize: the check probes /readyz, not /healthz. The port opens at once
# and /readyz answers 503 ("loading") while the model loads, which the start period covers; a
# model that cannot load (missing or corrupt bundle) keeps /readyz at 503 with the reason and logs
# it at ERROR, so the container turns unhealthy instead of passing for healthy forever (the
# process stays up so that /readyz can say why; see service/settings.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['GATESUM_PORT'], timeout=2)"]
ENTRYPOINT ["gatesum", "serve"]
