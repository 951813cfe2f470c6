# e2e cluster targets, included from the top-level Makefile (`include e2e/e2e.mk`).
# Paths are relative to the repository root. See e2e/README.md.
#
#   make cluster-up      build what is missing (cached) and start the cluster
#   make cluster-down    stop everything and undo every host change
#   make cluster-status  processes, node and pods
#   make image           build the Tessera image (buildah) and import it
#   make e2e-smoke       smoke test (brings the cluster up if needed)
#
# After cluster-up: KUBECONFIG=e2e/.run/kubeconfig, binaries (kubectl, helm)
# in e2e/.run/bin, Tessera image reference in e2e/.run/image.

E2E_KUBECONFIG := $(CURDIR)/e2e/.run/kubeconfig
E2E_BIN := $(CURDIR)/e2e/.run/bin

.PHONY: cluster-up cluster-down cluster-status image e2e-smoke e2e-build

e2e-build:
	e2e/build.sh

cluster-up:
	e2e/cluster.sh up

cluster-down:
	e2e/cluster.sh down

cluster-status:
	e2e/cluster.sh status

image:
	e2e/image.sh

e2e-smoke:
	e2e/smoke.sh
