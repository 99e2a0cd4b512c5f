#!/usr/bin/env bash
# The main job (README's first command): the whole study on the embedded concept world, from
# models to a running HIT server. Every step is skipped when its output is newer than its inputs
# (`ibd world build` and `ibd train` keep their own caches, keyed by seed and settings).
#
# Environment: IBD_HOME (default ./ibd-data), DEMO_PORT (default 8000), DEMO_SERVE=0 to stop
# after the figures instead of serving.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
export IBD_HOME="${IBD_HOME:-$PWD/ibd-data}"
H="$IBD_HOME"
PORT="${DEMO_PORT:-8000}"
REF=world_resnet
OTHERS=(world_vgg world_alexnet world_resnet_mirror)
# A vision transformer, explained and scored against the world's rules beside the CNNs. It stays
# out of the Fig. 9 batches: those ask whether people can tell the reference from a model that is
# known to be worse (the paper's AlexNet, VGG16 and resnet50* roles), and world_vit is a
# different architecture, not a weaker role (docs/world.md, "A vision transformer").
VIT=world_vit
# Data randomisation (Adebayo et al. 2018): the reference network trained on shuffled labels can
# only memorise, so its explanations must not look like the reference's (docs/sanity.md).
SHUFFLED=world_resnet_shuffled
START=$(date +%s)

say() { printf '\n== demo: %s\n' "$*"; }

# step OUTPUT INPUT... -- COMMAND...: run COMMAND unless OUTPUT exists and is newer than every
# INPUT.
step() {
  local out=$1 deps=() stale=0
  shift
  while [ "$1" != "--" ]; do deps+=("$1"); shift; done
  shift
  if [ -e "$out" ]; then
    for d in "${deps[@]}"; do [ "$d" -nt "$out" ] && stale=1; done
    if [ "$stale" = 0 ]; then echo "demo: up to date: ${out#"$H"/}"; return 0; fi
  fi
  "$@"
}

say "concept world and its models"
"$BIN/ibd" world build
"$BIN/ibd" train
"$BIN/ibd" train --arch "$SHUFFLED" --threads 1

say "concept basis, class decomposition with p-values (every model), Network Dissection"
for m in "$REF" "${OTHERS[@]}" "$VIT" "$SHUFFLED"; do
  W="$H/models/$m.pt"
  # --rebuild: a retrained model replaces the store of its previous weights (same weights: reused)
  step "$H/basis/$m.npz" "$W" -- "$BIN/ibd" basis learn --weights "$W" --rebuild
  # --significance: every term's p-value against random concept directions (docs/significance.md)
  step "$H/decompose/$m.json" "$W" "$H/basis/$m.npz" -- \
    "$BIN/ibd" decompose --weights "$W" --significance
done
for m in "$REF" "$VIT" "$SHUFFLED"; do
  step "$H/dissect/$m/tally.csv" "$H/models/$m.pt" -- \
    "$BIN/ibd" dissect --weights "$H/models/$m.pt" --split val --quiet
done

say "explanations of the held-out images"
explain() {  # model method
  local W="$H/models/$1.pt" out="$H/explanations/$1/$2" deps=("$H/models/$1.pt")
  [ "$2" = ibd ] && deps+=("$H/decompose/$1.json")
  [ "$2" = netdissect ] && deps+=("$H/dissect/$1/tally.csv")
  local flags=()
  [ "$2" = ibd ] && flags+=(--significance)
  step "$out/explanations.json" "${deps[@]}" -- \
    "$BIN/ibd" explain --method "$2" --weights "$W" "${flags[@]}"
}
for method in ibd cam gradcam netdissect; do
  for m in "$REF" "$VIT" "$SHUFFLED"; do explain "$m" "$method"; done
done
for m in "${OTHERS[@]}"; do for method in ibd cam; do explain "$m" "$method"; done; done

say "ground truth: the reference decomposition and every explanation against the world's rules"
# With every check: faithfulness (deletion / insertion, ROAD, Average Drop) on the first
# DEMO_FAITHFULNESS explanations of each model and method, completeness, the sanity checks
# (model and data randomisation) and the concepts' significance. The report is in report.md.
evaluate() {
  "$BIN/ibd" evaluate --faithfulness-limit "${DEMO_FAITHFULNESS:-40}" --sanity \
    --data-randomisation "$REF=$SHUFFLED" --significance > /dev/null
}
step "$H/evaluate/report.md" "$H/decompose/$REF.json" "$H"/explanations/*/*/explanations.json -- \
  evaluate
grep '^Target' "$H/evaluate/report.md" || true

# The transformer's class decomposition against the rules (its explanations, counterfactuals
# and own ranking are in the report above, beside the CNNs'), in $H/evaluate-vit.
evaluate_vit() {
  "$BIN/ibd" evaluate --no-faithfulness --counterfactual none \
    --decomposition "$H/decompose/$VIT.json" --explanations "$H/explanations/$VIT/ibd" \
    --out "$H/evaluate-vit" > /dev/null
}
step "$H/evaluate-vit/report.md" "$H/decompose/$VIT.json" \
  "$H/explanations/$VIT/ibd/explanations.json" -- evaluate_vit
grep '^Target' "$H/evaluate-vit/report.md" | sed "s/^/$VIT: /" || true

# The authors' basis trainer (the default) gives decompositions closer to the world's rules, the
# paper's detects concepts better (docs/basis.md, "Which procedure, and why"): so the reference
# model's decomposition is evaluated again with the paper's basis.
say "ground truth with the paper's basis trainer (--procedure paper), in $H/paper"
A="$H/paper"
W="$H/models/$REF.pt"
step "$A/basis/$REF.npz" "$W" -- \
  "$BIN/ibd" basis learn --procedure paper --weights "$W" --out "$A/basis/$REF.npz"
step "$A/decompose/$REF.json" "$A/basis/$REF.npz" -- \
  "$BIN/ibd" decompose --weights "$W" --basis "$A/basis/$REF.npz" --out "$A/decompose/$REF.json"
step "$A/explanations/$REF/ibd/explanations.json" "$A/decompose/$REF.json" -- \
  "$BIN/ibd" explain --method ibd --weights "$W" --basis "$A/basis/$REF.npz" \
  --decomposition "$A/decompose/$REF.json" --out "$A/explanations/$REF/ibd"
evaluate_paper() {
  "$BIN/ibd" evaluate --no-faithfulness --counterfactual none --decomposition \
    "$A/decompose/$REF.json" --explanations "$A/explanations/$REF/ibd" --out "$A/evaluate" \
    > /dev/null
}
step "$A/evaluate/report.md" "$A/explanations/$REF/ibd/explanations.json" -- evaluate_paper
grep '^Target' "$A/evaluate/report.md" | sed 's/^/paper: /' || true

say "task batches: Fig. 8 (method vs method) and Fig. 9 (model vs model)"
N="${DEMO_ITEMS:-100}"
BATCHES=()
batch() {  # name deps... -- hitgen flags...
  local name=$1 deps=()
  shift
  while [ "$1" != "--" ]; do deps+=("$1"); shift; done
  shift
  step "$H/batches/$name/manifest.json" "${deps[@]}" -- \
    "$BIN/hitgen" build "$@" --n "$N" --batch "$name" --force
  BATCHES+=("$H/batches/$name")
}
for other in cam gradcam netdissect; do
  batch "fig8-$REF-ibd-vs-$other" "$H/explanations/$REF/ibd/explanations.json" \
    "$H/explanations/$REF/$other/explanations.json" -- --pair "ibd,$other" --model "$REF"
done
for method in ibd cam; do
  for m in "${OTHERS[@]}"; do
    batch "fig9-$method-$REF-vs-$m" "$H/explanations/$REF/$method/explanations.json" \
      "$H/explanations/$m/$method/explanations.json" -- --models "$REF,$m" --method "$method"
  done
done

say "simulated raters (flagged as simulated; never results) -> Fig. 8 and Fig. 9"
SIM_DB="sqlite:///$H/simulation.sqlite"
if [ ! -e "$H/figures/fig8.png" ] || [ "$H/batches" -nt "$H/figures/fig8.png" ]; then
  rm -f "$H/simulation.sqlite"*
  "$BIN/hitserver" load --assignments 2 --db "$SIM_DB" "${BATCHES[@]}"
  SIM_PORT=$((PORT + 1))
  "$BIN/hitserver" run --db "$SIM_DB" --port "$SIM_PORT" > "$H/simulation-server.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do
    "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$SIM_PORT/api/health" 2>/dev/null && break
    sleep 0.5
  done
  "$BIN/hitserver" simulate --url "http://127.0.0.1:$SIM_PORT" --raters 40 "${BATCHES[@]}"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  trap - EXIT
  "$BIN/analysis" stats --db "$SIM_DB" --include-simulated --config scripts/demo-exclusion.toml \
    --out "$H/stats"
  "$BIN/analysis" plot --db "$SIM_DB" --include-simulated --config scripts/demo-exclusion.toml \
    --out "$H/figures"
fi

say "the human study: batches loaded into $H/hitserver.sqlite"
# The server refuses to load a rebuilt batch over the one it holds under that name (answers may
# hang on it). So when the batches changed since the last load (a new world, say), the old study
# database is kept under a dated name and a fresh one takes its place: nothing is deleted.
LOADED="$H/hitserver.loaded"
sha256sum "${BATCHES[@]/%//manifest.json}" > "$LOADED.new"
if [ -z "${HITSERVER_DATABASE_URL:-}" ] && [ -e "$H/hitserver.sqlite" ] \
  && ! cmp -s "$LOADED" "$LOADED.new"; then
  KEPT="$H/hitserver-$(date -u +%Y%m%dT%H%M%SZ).sqlite"
  for f in "$H"/hitserver.sqlite*; do mv "$f" "$KEPT${f#"$H/hitserver.sqlite"}"; done
  echo "demo: the batches changed since they were loaded; the old study database is now $KEPT"
fi
"$BIN/hitserver" load --assignments 3 "${BATCHES[@]}"
mv "$LOADED.new" "$LOADED"
mkdir -p "$H"
# The admin token is a password: readable by its owner only (umask in a subshell, so the file
# is never world-readable, not even for a moment; chmod for a token left by an older demo).
[ -s "$H/admin-token" ] || (umask 077 && "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(32))" > "$H/admin-token")
chmod 600 "$H/admin-token"
export HITSERVER_ADMIN_TOKEN
HITSERVER_ADMIN_TOKEN=$(cat "$H/admin-token")

ELAPSED=$(( $(date +%s) - START ))
cat <<EOF

== demo: done in ${ELAPSED}s
   figures (simulated raters): $H/figures/fig8.png, $H/figures/fig9.png
   statistics (simulated raters): $H/stats/stats.md
   ground truth (ibd evaluate): $H/evaluate/report.md
     the vision transformer's decomposition: $H/evaluate-vit/report.md
     with the paper's basis trainer: $H/paper/evaluate/report.md
   worker URL: http://127.0.0.1:$PORT/
   admin URL:  http://127.0.0.1:$PORT/admin/  (bearer token in $H/admin-token)
EOF
if [ "${DEMO_SERVE:-1}" = 1 ]; then
  exec "$BIN/hitserver" run --port "$PORT"
fi
