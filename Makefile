# One entry point for people and CI. As root on a fresh Debian 12 machine:
#   make run    installs missing host packages, builds kernel + image, boots the appliance
#   make test   the same setup, then every test (unit, namespace, QEMU)
SHELL := /bin/bash
.DEFAULT_GOAL := help

TARGET      := x86_64-unknown-linux-gnu
STATIC_DIR  := target/$(TARGET)/release
IMAGES      := out/images
BIN         := out/bin
BUILD_ID    := $(shell git describe --always --dirty 2>/dev/null || echo dev)
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
BENCH_RUNS  ?= 5
BENCH_FAILOVER_RUNS ?= 10

# Debian packages the build and the tests need (QEMU, kernel source and its build tools,
# e2fsprogs for the image, iproute2 for namespaces and bridges, python3-venv for the OpenAPI
# validator, chrony for the NTP server the NTP test runs in a namespace; for the UEFI disk image: systemd's EFI stub, binutils' objcopy, dosfstools and
# mtools for the ESP, fdisk's sfdisk to check it, OVMF firmware to boot it, genimage to check
# the buildroot layout).
HOST_PACKAGES := qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev libssl-dev \
                 cpio xz-utils build-essential e2fsprogs iproute2 kmod python3-venv \
                 nftables chrony systemd-boot-efi binutils dosfstools mtools fdisk ovmf genimage

# The command line baked into the unified kernel image of appliance.img; the test build
# (appliance-test.img) adds the debug hooks the QEMU tests use.
UKI_CMDLINE      := console=tty0 console=ttyS0,115200 quiet
UKI_TEST_CMDLINE := $(UKI_CMDLINE) panic=-1 appliance.debug=1 appliance.rma_hold=10

.PHONY: help deps kernel binaries image disk-image flash run test test-unit test-openapi test-system bench-boot bench-acd bench-failover bench-sync clean

help:
	@echo "make run        build everything and boot the appliance in QEMU on a bridge"
	@echo "                (RUN_ONCE=1: stop once its API answers)"
	@echo "make test       build everything and run every test (unit, namespace, QEMU)"
	@echo "make image      build kernel, binaries and images into $(IMAGES)/"
	@echo "make disk-image also the UEFI disk image $(IMAGES)/appliance.img (and its test build)"
	@echo "make flash DEV=/dev/sdX  write appliance.img to a disk (refuses a mounted or system disk)"
	@echo "make bench-boot boot $(BENCH_RUNS) times and print the boot-phase medians and sizes"
	@echo "make bench-acd  time the factory address (link up to usable) per profile, in namespaces"
	@echo "make bench-failover  client-observed failover outage per timeout, beside keepalived"
	@echo "make bench-sync  full and 1% incremental data sync beside rsync, and the bandwidth limit's worst window"

# The host keeps its own time: chrony's service is disabled and stopped right after the
# install (the NTP test starts its own chronyd, with -x, inside a namespace).
deps:
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing host packages: $$missing (install them as root: apt-get install $$missing)"; exit 1; fi; \
	  echo "installing host packages: $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	if [ "$$(id -u)" = 0 ] && [ -e /lib/systemd/system/chrony.service ]; then \
	  systemctl disable --now chrony >/dev/null 2>&1 || systemctl disable chrony >/dev/null 2>&1; \
	  if pgrep -x chronyd >/dev/null && [ -x /etc/init.d/chrony ]; then /etc/init.d/chrony stop >/dev/null; fi; \
	fi

kernel: deps
	image/build-kernel.sh $(IMAGES)

# init, agent and appliancectl, statically linked (glibc, +crt-static): the same files run
# in the appliance and on the host.
binaries:
	APPLIANCE_BUILD=$(BUILD_ID) RUSTFLAGS="-C target-feature=+crt-static" \
	  cargo build --release --locked --target $(TARGET) -p appliance-init -p appliance-agent
	@mkdir -p $(BIN)
	cp $(STATIC_DIR)/appliance-init $(STATIC_DIR)/appliance-agent $(STATIC_DIR)/appliancectl $(BIN)/

image: kernel binaries
	cargo run --locked -q -p appliance-image -- initramfs --bin-dir $(BIN) \
	  --out $(IMAGES)/initramfs.cpio.gz --version $(VERSION) --build $(BUILD_ID)
	cargo run --locked -q -p appliance-image -- data-disk --out $(IMAGES)/data.img --size-mib 256
	@ls -l $(IMAGES)

# GPT disk for UEFI machines: ESP with the unified kernel image at EFI/BOOT/BOOTX64.EFI,
# firmware slots A and B (reserved), blank data partition. No root, no loop devices.
DISK_IMAGE = cargo run --locked -q -p appliance-image -- disk-image --kernel $(IMAGES)/bzImage \
	  --initramfs $(IMAGES)/initramfs.cpio.gz --version $(VERSION) --build $(BUILD_ID)
disk-image: image
	$(DISK_IMAGE) --cmdline "$(UKI_CMDLINE)" --out $(IMAGES)/appliance.img
	$(DISK_IMAGE) --cmdline "$(UKI_TEST_CMDLINE)" --out $(IMAGES)/appliance-test.img

# Installation: the image written to a whole disk, which must not be mounted or in use.
flash:
	@test -n "$(DEV)" || { echo "usage: make flash DEV=/dev/sdX (a whole disk, not mounted)"; exit 2; }
	image/flash $(IMAGES)/appliance.img $(DEV)

# The boot itself is qemu/run (the tests run it too). RUN_ONCE=1: stop once the API
# answers, instead of following the console until Ctrl-C.
run: deps image
	@qemu/run $(if $(RUN_ONCE),--exit-when-up)

test: deps disk-image
	$(MAKE) test-unit test-openapi test-system

test-unit:
	cargo test --locked --workspace --exclude appliance-tests

# The OpenAPI document must be valid OpenAPI 3 (checked with a pinned validator from PyPI).
# The same venv carries schemathesis, which tests/tests/api_fuzz.rs runs against an agent.
PYTHON_TOOLS := openapi-spec-validator==0.7.2 schemathesis==4.32.5
test-openapi:
	@test -x out/venv/bin/python || python3 -m venv out/venv
	@out/venv/bin/pip install -q --disable-pip-version-check $(PYTHON_TOOLS)
	out/venv/bin/python -c 'import yaml, openapi_spec_validator as v; v.validate(yaml.safe_load(open("agent/openapi.yaml"))); print("agent/openapi.yaml: valid OpenAPI 3")'

test-system:
	cargo test --locked -p appliance-tests -- --test-threads=2

bench-boot: deps disk-image
	cargo run --locked -q -p appliance-tests --bin bench-boot -- --runs $(BENCH_RUNS)

bench-acd: deps binaries
	cargo run --locked -q -p appliance-tests --bin bench-acd

# keepalived (VRRPv3) and rsync are measured beside our failover and sync; only there.
BENCH_PACKAGES := keepalived rsync
bench-failover: deps binaries
	@$(MAKE) -s deps HOST_PACKAGES="$(BENCH_PACKAGES)"
	cargo run --locked -q -p appliance-tests --bin bench-failover -- --runs $(BENCH_FAILOVER_RUNS)

bench-sync: deps binaries
	@$(MAKE) -s deps HOST_PACKAGES="$(BENCH_PACKAGES)"
	cargo run --locked -q -p appliance-tests --bin bench-sync

clean:
	rm -rf out target
