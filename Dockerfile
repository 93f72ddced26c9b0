# The lab image: kexlab, Mosquitto, its clients and tcpdump, for every service of
# docker-compose.yml (one image: one build, one cache, the same Debian packages on
# amd64 and arm64), which also mounts the lab's scripts. `make lab` builds it; so does
# `docker compose build`.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 (default python:3.11-slim). With
# no registry at hand, lab/offline-base.sh makes one from Debian packages.
# kexlab comes from lab/wheels, a wheelhouse built on the host (lab/wheelhouse.sh, run
# by `make lab`), so the build never needs the package index; without a wheelhouse it
# is installed from this source tree with the index, as on any machine with internet.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS install
COPY . /src
RUN python3 -m venv /opt/kexlab \
    && if ls /src/lab/wheels/kexlab-*.whl >/dev/null 2>&1; then \
         /opt/kexlab/bin/pip install --no-cache-dir --no-index --find-links /src/lab/wheels kexlab; \
       else \
         /opt/kexlab/bin/pip install --no-cache-dir /src; \
       fi

FROM ${BASE_IMAGE}
LABEL org.kexlab.lab="1"
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's packages, unpinned on purpose: whatever the base's release ships (the
# offline base already has them, so nothing is downloaded there).
# hadolint ignore=DL3008
RUN dpkg -s mosquitto mosquitto-clients tcpdump libcap2-bin iproute2 >/dev/null 2>&1 \
    || { apt-get update \
         && apt-get install -y --no-install-recommends mosquitto mosquitto-clients tcpdump libcap2-bin iproute2 \
         && rm -rf /var/lib/apt/lists/*; }
# The sniffer runs tcpdump as the host user (so that captures/ belongs to that user):
# a file capability lets it open a packet socket without root. Only the sniffer's
# container keeps NET_RAW in its bounding set (docker-compose.yml); in every other
# container the capability is void and tcpdump does not even start.
RUN setcap cap_net_raw=eip "$(command -v tcpdump)"
# Mount points of the named volumes and of captures/. The lab runs as the host user,
# whose uid is known only at run time, so they are world-writable with the sticky
# bit, like /tmp (a new volume takes the mode of its mount point).
RUN install -d -m 1777 /var/lib/kexlab/home /var/lib/kexlab/account \
        /var/lib/kexlab/accounts/server /var/lib/kexlab/accounts/client \
        /var/lib/kexlab/accounts/eve /captures
COPY --from=install /opt/kexlab /opt/kexlab
# /opt/lab/bin: the lab's scripts (lab/bin), bind-mounted by docker-compose.yml.
ENV PATH=/opt/kexlab/bin:/opt/lab/bin:$PATH \
    KEXLAB_HOME=/var/lib/kexlab/home \
    PYTHONUNBUFFERED=1
WORKDIR /captures
USER 1000:1000
CMD ["kexlab", "--help"]
