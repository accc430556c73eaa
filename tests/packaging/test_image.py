"""The OCI image (make image) for hosts without pip: podman loads dist/'s archive into a
private store and runs pwru with the README's flags; pwru traces an iptables drop in a
namespace the test made, from inside the container."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import Lab
from tests.packaging.conftest import (
    DIST,
    REPO,
    libbpf_used,
    run,
    trace_iptables_drop,
    write_script,
)

README_FLAGS = "--privileged --pid=host --network=host -v /sys/kernel:/sys/kernel"


@pytest.fixture(scope="module")
def image_archive(wheels: dict[str, Path]) -> Path:
    """dist/pwru-<version>-image-x86_64.tar, rebuilt when older than the wheel."""
    version = wheels["x86_64"].name.split("-")[1]
    archive = DIST / f"pwru-{version}-image-x86_64.tar"
    if not archive.exists() or archive.stat().st_mtime < wheels["x86_64"].stat().st_mtime:
        run("bash", REPO / "packaging" / "image.sh", "x86_64", timeout=1800)
    return archive


@pytest.fixture(scope="module")
def podman(image_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``podman`` wrapper with its own store and settings (the host's podman
    configuration and images are left alone), with the image loaded."""
    base = tmp_path_factory.mktemp("podman")
    (base / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/graph"\nrunroot = "{base}/run"\n'
    )
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    (base / "containers.conf").write_text(
        # Settings for this sandbox, not needed on ordinary hosts: root here lacks
        # CAP_SYS_RESOURCE, so podman's default rlimits (far above the current ones)
        # cannot be set; crun refuses this machine's hybrid cgroups, runc does not.
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]\n'
        f'[engine]\nruntime = "runc"\ntmp_dir = "{base}/tmp"\n'
    )
    wrapper = write_script(
        base / "podman",
        f"#!/bin/sh\nexport CONTAINERS_CONF={base}/containers.conf "
        f'CONTAINERS_STORAGE_CONF={base}/storage.conf\nexec podman "$@"\n',
    )
    try:
        run(wrapper, "load", "--quiet", "--input", image_archive)
        yield wrapper
    finally:
        run(wrapper, "rm", "--all", "--force")
        run(wrapper, "system", "reset", "--force")
        shutil.rmtree(base)


def image_name(podman: Path) -> str:
    images = json.loads(run(podman, "images", "--format", "json"))
    (name,) = [n for image in images for n in image.get("Names", [])]
    return str(name)


def test_image_entrypoint_is_pwru_with_its_bundled_libbpf(podman: Path) -> None:
    image = image_name(podman)
    assert re.fullmatch(r"localhost/pwru:\S+", image), image
    (config,) = json.loads(run(podman, "image", "inspect", image))
    assert config["Config"]["Entrypoint"] == ["/usr/local/bin/pwru"]
    assert config["Architecture"] == "amd64"
    version = run(podman, "run", "--rm", image, "--version")
    assert re.fullmatch(r"pwru \S+ \(libbpf 1\.\d+\.\d+, bundled\)\n", version), version


def test_image_traces_an_iptables_drop(podman: Path, lab: Lab, tmp_path: Path) -> None:
    # the ready file is written inside the container, at tmp_path bound to the same path
    pwru = write_script(
        tmp_path / "pwru",
        f"#!/bin/sh\nexec {podman} run --rm {README_FLAGS} -v {tmp_path}:{tmp_path} "
        f'{image_name(podman)} "$@"\n',
    )
    traced = trace_iptables_drop(lab, tmp_path, pwru, port=7961)
    assert re.fullmatch(
        r"pwru: using libbpf 1\.\d+\.\d+ \(bundled\) from "
        r"/usr/local/lib/python3\.11/dist-packages/pwru/bpf/lib/libbpf\.so\.[0-9.]+",
        libbpf_used(traced),
    )
    assert not json.loads(run(podman, "ps", "--all", "--format", "json"))  # --rm removed it


def test_podman_store_is_private(podman: Path) -> None:
    graphroot = run(podman, "info", "--format", "{{.Store.GraphRoot}}").strip()
    assert graphroot.startswith(str(podman.parent)), graphroot
    assert os.environ.get("CONTAINERS_CONF") is None  # the wrapper sets it, not the test
