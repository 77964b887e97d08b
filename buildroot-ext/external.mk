# Where the packages find the Cargo workspace: the repository this tree belongs to.
BSERIES_SOURCE_DIR = $(realpath $(BR2_EXTERNAL_BSERIES_PATH)/..)

# Copies of the workspace leave out build output and local state.
BSERIES_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /out --exclude /buildroot-ext

# The crates come from vendor/ in the workspace (scripts/vendor-crates makes it), so that
# the build, like every buildroot build, runs with cargo --offline.
define BSERIES_CARGO_VENDOR_CONFIG
	@test -d $(@D)/vendor || { \
		echo "$(BSERIES_SOURCE_DIR)/vendor is missing: run" \
			"$(BR2_EXTERNAL_BSERIES_PATH)/scripts/vendor-crates once (needs the network)"; \
		exit 1; }
	mkdir -p $(@D)/.cargo
	printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "%s/vendor"\n' \
		"$(@D)" > $(@D)/.cargo/config.toml
endef

# The variables every package built from the workspace shares: $(1) is the package's
# variable prefix, $(2) the directory of its crate in the workspace.
define bseries-workspace-package
$(1)_VERSION = workspace
$(1)_SITE = $$(BSERIES_SOURCE_DIR)
$(1)_SITE_METHOD = local
$(1)_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $$(BSERIES_RSYNC_EXCLUSIONS)
$(1)_SUBDIR = $(2)
$(1)_LICENSE = Apache-2.0
$(1)_POST_RSYNC_HOOKS += BSERIES_CARGO_VENDOR_CONFIG
endef

include $(sort $(wildcard $(BR2_EXTERNAL_BSERIES_PATH)/package/*/*.mk))
