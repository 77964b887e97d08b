################################################################################
#
# appliance-init
#
################################################################################

# Version, site (this repository, with vendored crates) and license: external.mk.
$(eval $(call bseries-workspace-package,APPLIANCE_INIT,init))

# Installs /usr/bin/appliance-init; post-build.sh makes it /init.
$(eval $(cargo-package))
