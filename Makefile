# Build the CO-RE BPF objects shipped in the pwru package, and run checks.
CLANG ?= clang
BPF_CFLAGS := -target bpf -O2 -g -Wall -Werror -Ibpf
BPF_SRC := bpf/pwru.bpf.c
BPF_DEPS := $(BPF_SRC) bpf/pwru.h
BPF_OBJS := pwru/bpf/pwru_x86.bpf.o pwru/bpf/pwru_arm64.bpf.o
PYTHON ?= python3

.PHONY: all bpf setup check test lint bench vm-matrix clean

# System packages a fresh Debian 12 needs: libbpf (runtime), clang/llvm/bpftool
# (building and inspecting BPF objects), iproute2/iptables/ethtool (end-to-end tests),
# tshark (reads the pcapng files pwru writes; installed without its setuid helper).
APT_PACKAGES := libbpf1 libbpf-dev clang llvm bpftool iproute2 iptables ethtool tshark gcc make

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

bench:
	$(PYTHON) bench/run.py

clean:
	rm -f $(BPF_OBJS)
