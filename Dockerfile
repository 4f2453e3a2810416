# dtrepro: the pipeline in a CUDA image; the default command is `dvc exp run` in the mounted repository.
#
#   docker build -t dtrepro .
#   docker run --gpus all --user "$(id -u):$(id -g)" -v "$PWD":/workspace dtrepro
#
# BASE_IMAGE may be any Debian or Ubuntu image with apt (CI builds on a plain Debian one).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

# Only for networks that need them, both mounted at build time (make docker-test does): a folder of
# local wheels for pip (e.g. a CPU build of torch) and the CA bundle that pip must trust.
ARG PIP_FIND_LINKS
ARG PIP_CERT

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/dtrepro \
    PATH=/opt/dtrepro/bin:${PATH} \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    HOME=/home/dtrepro \
    MPLCONFIGDIR=/tmp/matplotlib \
    DVC_SITE_CACHE_DIR=/tmp/dvc-site-cache \
    DVC_NO_ANALYTICS=1

# python3-venv: the pipeline's own environment; git: DVC; libegl1/libgl1/libglvnd0/libopengl0: headless MuJoCo,
# libegl-mesa0/libgbm1/libgl1-mesa-dri: its offscreen rendering without a GPU's EGL (the render stage);
# dumb-init: PID 1 (below).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv git make ca-certificates libegl1 libgl1 libglvnd0 libopengl0 \
        libegl-mesa0 libgbm1 libgl1-mesa-dri dumb-init \
    && rm -rf /var/lib/apt/lists/*

# The same lock file as `make install` (its own layer, so that edits to the code do not reinstall it);
# then the library itself, so that the image also runs stand-alone.
WORKDIR /opt/dtrepro-src
COPY requirements.lock ./
RUN python3 -m venv "${VIRTUAL_ENV}" \
    && pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . \
    && python -c "import gymnasium as gym; gym.make('Hopper-v4').reset(seed=0)"

# Runs as uid 1000, a user of the base image's own if it has one (Ubuntu 24.04's `ubuntu`), else a new
# `dtrepro`; any other uid (docker run --user "$(id -u):$(id -g)") works as well: HOME is open to all, the
# caches live in /tmp, git trusts a repository mounted from another owner, and DVC experiments (which
# commit to git refs) have an author.
RUN (getent passwd 1000 >/dev/null || useradd --uid 1000 --user-group --no-create-home --shell /bin/bash dtrepro) \
    && mkdir -p /home/dtrepro && chmod 1777 /home/dtrepro \
    && git config --system --add safe.directory '*' \
    && git config --system user.name dtrepro \
    && git config --system user.email dtrepro@localhost
USER 1000:1000

# The mounted repository's own library comes first, so edits to src/ are what the stages run.
ENV PYTHONPATH=/workspace/src
WORKDIR /workspace
# PID 1 is dumb-init, not dvc: a PID 1 ignores SIGTERM, so `docker stop` had to SIGKILL dvc, whose lock then
# named PID 1, which always exists. dumb-init passes `docker stop`'s SIGTERM on as SIGINT to the command's
# whole process group: dvc and its stage stop as after a Ctrl-C (the stage removes its temporaries, DVC
# releases its lock and records the stage as not done), well within docker's 10 s.
ENTRYPOINT ["dumb-init", "--rewrite", "15:2", "--"]
CMD ["dvc", "exp", "run"]
