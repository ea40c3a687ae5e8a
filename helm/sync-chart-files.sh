#!/usr/bin/env bash
# Copies the observability sources of truth into the Helm chart (Helm cannot read files outside
# the chart directory): deploy/prometheus/*.yml|*.yaml -> helm/streamlearn/files/prometheus/,
# deploy/grafana/*.json -> helm/streamlearn/files/grafana/. Stale copies are removed. The rules'
# unit tests (*_test.yml, run by promtool) stay out of the chart.
# tests/deploy/test_chart_files.py checks the copies are byte-identical.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$root/helm/streamlearn/files"
sync() {  # sync SRC_DIR DEST_DIR GLOB...
    local src=$1 dest=$2
    shift 2
    mkdir -p "$dest"
    find "$dest" -maxdepth 1 -type f ! -name .gitkeep -delete
    [ -d "$src" ] || { echo "no $src yet: nothing to copy"; return 0; }
    local pattern file
    for pattern in "$@"; do
        for file in "$src"/$pattern; do
            [ -f "$file" ] || continue
            case "$file" in *_test.yml | *_test.yaml) continue ;; esac  # promtool's unit tests
            cp "$file" "$dest/"
            echo "copied ${file#"$root"/} -> ${dest#"$root"/}/"
        done
    done
}
sync "$root/deploy/prometheus" "$chart/prometheus" '*.yml' '*.yaml'
sync "$root/deploy/grafana" "$chart/grafana" '*.json'
