#!/usr/bin/env bash
# Writes rendered/OVERLAY.yaml for each overlay: the manifests ready to
# apply without kustomize (kubectl apply -f rendered/ingress.yaml).
# A test holds them to what `kubectl kustomize` renders now.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p rendered
for dir in overlays/*/; do
    name=$(basename "$dir")
    {
        echo "# Rendered from deploy/kubernetes/overlays/$name by \`kubectl kustomize\`."
        echo "# Do not edit: change the overlay, then run deploy/kubernetes/render.sh."
        kubectl kustomize "$dir"
    } > "rendered/$name.yaml"
    echo "rendered/$name.yaml"
done
