#!/usr/bin/env bash
# Writes rendered/OVERLAY.yaml for each overlay: the manifests ready to
# apply without kustomize (kubectl apply -f rendered/ingress.yaml).
# A test renders them again into another directory (render.sh DIR) and
# holds rendered/ to that.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/rendered}")
cd "$(dirname "$0")"
mkdir -p "$out"
for dir in overlays/*/; do
    name=$(basename "$dir")
    {
        echo "# Rendered from deploy/kubernetes/overlays/$name by \`kubectl kustomize\`."
        echo "# Do not edit: change the overlay, then run deploy/kubernetes/render.sh."
        kubectl kustomize "$dir"
    } > "$out/$name.yaml"
    echo "$out/$name.yaml"
done
