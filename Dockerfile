# The TrickFlow image: the Prefect worker and every flow-run pod (CPU and GPU work pools) run it.
# infra/scale-out/k8s/README.md has the build commands and how the pools use the image.
#
#   CPU (default):  docker build -t REGISTRY/trickflow:cpu .
#   GPU:            docker build -t REGISTRY/trickflow:gpu \
#                     --build-arg BASE=nvidia/cuda:12.3.2-runtime-ubuntu22.04 \
#                     --build-arg EXTRA_APT_PACKAGES="libcudnn8=8.9.7.29-1+cuda12.2 cuda-nvcc-12-3" .
#
# Why that GPU base: the locked tensorflow 2.16.2 wheel finds CUDA through the dynamic loader and
# was built for CUDA 12.3 with cuDNN 8.9 (its `and-cuda` extra pins nvidia-cudnn-cu12 8.9.7.29,
# nvidia-cublas-cu12 12.3.x ...). That extra is not in uv.lock, so the CUDA user-space libraries
# come from the base image instead: NVIDIA's CUDA 12.3 runtime image, plus cuDNN 8.9.7 (NVIDIA's
# apt repository labels that build +cuda12.2; it serves every CUDA 12.x) and ptxas (cuda-nvcc) for
# XLA. The cudnn9 variants of the 12.3 image do not work: TF 2.16 loads libcudnn.so.8. The node's
# NVIDIA driver (libcuda) comes from the host through the NVIDIA container runtime. The CUDA base
# has no Python 3.11: there uv downloads a standalone CPython 3.11 (build stage).

ARG BASE=python:3.11-slim-bookworm

# ---- build: compilers (crcmod and pyfarmhash are sdists) and the locked environment ----------
FROM ${BASE} AS build

ARG UV_VERSION=0.13.9
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && if ! python3 -m pip --version >/dev/null 2>&1; then \
      apt-get install -y --no-install-recommends python3-pip; \
    fi \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m pip install --no-cache-dir "uv==${UV_VERSION}"

# Python 3.11 from the base image when it has one (python:3.11-slim), else a uv-managed CPython
# 3.11 under /opt/python, which the runtime stage copies along with the environment.
ENV UV_PYTHON=3.11 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN mkdir -p /opt/python

WORKDIR /opt/trickflow
# Dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself (packages components and flows, installed editable so that the code,
# schemas/ and uv.lock stay side by side under /opt/trickflow, where the code looks for them).
# README.md is the package's readme in pyproject.toml; hatchling refuses to build without it.
COPY README.md ./
COPY schemas ./schemas
COPY components ./components
COPY flows ./flows
RUN uv sync --frozen --no-dev

# ---- runtime ---------------------------------------------------------------------------------
FROM ${BASE}

# GPU image only (see above): cuDNN 8.9 and ptxas on top of the CUDA runtime base.
ARG EXTRA_APT_PACKAGES=""
RUN if [ -n "${EXTRA_APT_PACKAGES}" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ${EXTRA_APT_PACKAGES} \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin trickflow

COPY --from=build /opt/python /opt/python
COPY --from=build /opt/trickflow /opt/trickflow

ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="trickflow" \
      org.opencontainers.image.revision="${GIT_COMMIT}"

# The locked environment first on PATH (prefect, python, mlflow); prefect.yaml's pull step changes
# into TRICKFLOW_REPO. There is no git in the image (MLflow's GitPython is told to stay quiet).
ENV PATH=/opt/trickflow/.venv/bin:${PATH} \
    TRICKFLOW_REPO=/opt/trickflow \
    PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet

WORKDIR /opt/trickflow
USER 10001:10001

# An empty ENTRYPOINT (the CUDA base brings a banner script): a flow-run pod's args, Prefect's
# `prefect flow-run execute ...`, are its whole command. Without args the container is the CPU
# pool's worker; the GPU pool's worker passes `prefect worker start --type kubernetes --pool
# trickflow-gpu`. A Kubernetes worker needs prefect-kubernetes, which uv.lock does not hold yet
# (see infra/scale-out/k8s/README.md).
ENTRYPOINT []
CMD ["prefect", "worker", "start", "--type", "kubernetes", "--pool", "trickflow-cpu"]
