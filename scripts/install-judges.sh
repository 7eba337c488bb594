#!/usr/bin/env bash
# Install the trained judges committed under Models/ (the default reward model and safety
# classifier, alignd.embedding-head folders made by Training/reward and Training/safety) into the
# git-ignored models folder, beside the encoder they read (scripts/fetch-encoder.sh), and the
# held-out validation sets their rollout gates evaluate candidates on (Models/eval → models/eval).
# Idempotent: copies a folder only when its files differ.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${ALIGND_MODELS_DIR:-$ROOT/models}"
mkdir -p "$MODELS_DIR"
for source in "$ROOT"/Models/reward/* "$ROOT"/Models/safety/*; do
  [[ -f "$source/manifest.json" ]] || continue
  target="$MODELS_DIR/$(basename "$source")"
  if [[ -d "$target" ]] && diff -rq "$source" "$target" >/dev/null 2>&1; then continue; fi
  rm -rf "$target.partial"
  cp -R "$source" "$target.partial"
  rm -rf "$target"
  mv "$target.partial" "$target"
  echo "trained judge installed: $target" >&2
done
mkdir -p "$MODELS_DIR/eval"
for source in "$ROOT"/Models/eval/*.jsonl; do
  target="$MODELS_DIR/eval/$(basename "$source")"
  if cmp -s "$source" "$target"; then continue; fi
  cp "$source" "$target.partial"
  mv "$target.partial" "$target"
  echo "gate evaluation set installed: $target" >&2
done
