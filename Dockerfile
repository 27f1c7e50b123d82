# The kvmesh node image: python:3.11-slim with the project installed from pyproject.toml, its
# runtime dependencies held to the versions requirements.lock pins (as constraints).
# docker-compose.yml runs it as the `node` service; alone:
#   docker build -t kvmesh . && docker run --rm -p 8080:8080 -p 9888:9888 kvmesh
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml requirements.lock node.py ./
COPY cluster/ cluster/
COPY loadtest/ loadtest/
RUN pip install -c requirements.lock . \
    && useradd --system --no-create-home --shell /usr/sbin/nologin kvmesh \
    && mkdir /data && chown kvmesh:kvmesh /data

# The nodes' data directories (docker-compose.yml mounts the volume `node-data` here; a new volume
# takes this directory's owner, so the node can write it).
USER kvmesh
# HTTP and gossip (UDP on the same number), then the line protocol.
EXPOSE 8080/tcp 8080/udp 9888/tcp 6379/tcp
# Bind every interface of the container; the other options keep node.py's defaults (KV_* variables
# override them, see `python node.py --help`).
ENV KV_HOST=0.0.0.0
CMD ["python", "node.py"]
