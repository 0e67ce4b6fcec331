# The vitgrade image: Python, torch, torchvision and vitgrade, and a non-root user. It is the
# image student code runs in (`--backend docker`), so it holds no hidden tests and no reference:
# those stay on the trusted side, in the course checkout of the grader that starts containers.
#
#   docker build -t vitgrade .                                         # with internet
#   docker build -t vitgrade --build-arg BASE_IMAGE=vitgrade-base:local .   # offline (see scripts/docker-base-image.sh)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Pinned by constraints.txt; on an offline base image that already holds them, pip installs nothing.
COPY constraints.txt /src/
RUN python -m pip install --no-cache-dir -c /src/constraints.txt torch torchvision einops \
        "pydantic>=2.6" "click>=8.1" "safetensors>=0.4" "nbformat>=5.9" "rich>=13" "pytest>=8.4" \
        "pyyaml>=6" "matplotlib>=3.7" "docker>=7" "setuptools>=68"

# The engine and the public suite only (see .dockerignore): never reference/ or test_cases/hidden/.
COPY pyproject.toml README.md /src/
COPY vitgrade /src/vitgrade
COPY test_cases/public /src/test_cases/public
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation /src && rm -rf /src

RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin grader
USER 10001:10001
WORKDIR /home/grader
ENTRYPOINT ["vitgrade"]
CMD ["--help"]
