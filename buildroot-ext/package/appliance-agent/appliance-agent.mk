################################################################################
#
# appliance-agent
#
################################################################################

# Version, site (this repository, with vendored crates) and license: external.mk.
$(eval $(call bseries-workspace-package,APPLIANCE_AGENT,agent))

# Installs /usr/bin/appliance-agent and /usr/bin/appliancectl.
$(eval $(cargo-package))
