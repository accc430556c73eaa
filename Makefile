# Build the CO-RE BPF objects shipped in the pwru package, and run checks.
CLANG ?= clang
BPF_CFLAGS := -target bpf -O2 -g -Wall -Werror -Ibpf
BPF_SRC := bpf/pwru.bpf.c
BPF_DEPS := $(BPF_SRC) bpf/pwru.h
BPF_OBJS := pwru/bpf/pwru_x86.bpf.o pwru/bpf/pwru_arm64.bpf.o
PYTHON ?= python3

.PHONY: all bpf setup check test lint bench bench-full bench-guest vm-matrix clean wheels image

# System packages a fresh Debian 12 needs: libbpf (runtime), clang/llvm/bpftool
# (building and inspecting BPF objects), iproute2/iptables/nftables/ethtool (end-to-end
# tests; the drop summary reads rule counters with iptables-save and nft), tshark (reads
# the pcapng files pwru writes; installed without its setuid helper);
# for the wheels, the image and their tests (packaging/): dpkg-dev (apt-get source),
# binutils (objdump), mmdebstrap (Debian 11, 12 and arm64 roots), podman + runc (the
# image), qemu-system-arm (the arm64 guest).
APT_PACKAGES := libbpf1 libbpf-dev clang llvm bpftool iproute2 iptables nftables ethtool \
	tshark gcc make dpkg-dev binutils mmdebstrap podman runc qemu-system-arm

all: bpf

bpf: $(BPF_OBJS)

pwru/bpf/pwru_x86.bpf.o: $(BPF_DEPS) vmlinux-headers/x86/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_x86 -Ivmlinux-headers/x86 -c $< -o $@
	llvm-strip -g $@ 2>/dev/null || true

pwru/bpf/pwru_arm64.bpf.o: $(BPF_DEPS) vmlinux-headers/arm64/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_arm64 -Ivmlinux-headers/arm64 -c $< -o $@
	llvm-strip -g $@ 2>/dev/null || true

setup:
	apt-get update -q
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -e '.[dev]'
	bash tests/vm/setup-host.sh

check: lint test vm-matrix

test:
	$(PYTHON) -m pytest -q -m "not vm" tests

vm-matrix:
	bash tests/vm/matrix.sh

lint:
	$(PYTHON) -m ruff check pwru tests bench netlab examples
	$(PYTHON) -m mypy

# Benchmarks (root; docs/benchmarks.md). BENCH_ARGS=--guest adds the 6.12 guest part.
bench:
	$(PYTHON) bench/run.py $(BENCH_ARGS)

bench-full:
	$(PYTHON) bench/run.py --soak-seconds 600 $(BENCH_ARGS)

bench-guest:
	$(PYTHON) bench/guest.py $(BENCH_ARGS)

# dist/: the sdist and one wheel per architecture with its own libbpf (packaging/); the
# wheels ship the BPF objects as committed (make bpf rebuilds them)
wheels:
	PYTHON=$(PYTHON) bash packaging/build-wheels.sh

# dist/pwru-<version>-image-<arch>.tar: OCI image (Debian 12 + the wheel), no registry used
image: wheels
	PYTHON=$(PYTHON) bash packaging/image.sh

clean:
	rm -f $(BPF_OBJS)
	rm -rf build/packaging dist
