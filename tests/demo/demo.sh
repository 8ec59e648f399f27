#!/usr/bin/env bash
# champion demo (`make demo`, after `make components images`): the whole story from nothing.
#
#   1. the local one-node Kubernetes cluster starts (or the running one is reused);
#   2. the operator is installed with `helm install` from charts/champion-operator;
#   3. a `wine` ModelPipeline reads CSV slots from a hostPath store; the slots arrive one at a
#      time, as the original system simulated arriving data, and each run's outcome is printed
#      as it happens: promoted or rejected, both scores, the version;
#   4. predictions in the original request format (POST /predict, a JSON body sent as
#      `requests.post(url, data=...)` sends it: no Content-Type);
#   5. a 10-second load test through the predictor Service (wrk): requests/s, p50/p99, failures;
#   6. everything stops: the cluster when the demo started it, else the demo's release and
#      namespaces. KEEP=1 leaves it all running and prints how to reach it.
#
# Every wait is `kubectl wait` or a polling loop with a deadline. Re-running tells the story
# again from an empty store.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
PROFILE=${IMAGE_PROFILE:-release}
export KUBECONFIG=${CHAMPION_KUBECONFIG:-/var/lib/champion-cluster/admin.kubeconfig}
# The cluster manager (the Makefile passes its own spelling).
read -r -a CLUSTER <<<"${CHAMPION_CLUSTER:-cargo run -q -p champion-tests --bin champion-cluster --}"
KUBECTL=$CACHE/bin/kubectl
HELM=$CACHE/bin/helm
NS=champion-demo
OPERATOR_NS=champion-system
RELEASE=champion
STORE=/var/lib/champion-demo
PIPELINE=wine
SLOTS=${SLOTS:-3}
LOAD_SECONDS=${LOAD_SECONDS:-10}
TIMEOUT=300 # seconds, per wait
KEEP=${KEEP:-0}

k() { "$KUBECTL" -n "$NS" "$@"; }
START=$SECONDS
step() { printf '\n\033[1m==> [%3ds] %s\033[0m\n' "$((SECONDS - START))" "$*"; }
say() { printf '    %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# Polls `$@` (a command that succeeds once the condition holds) every half second, for at most
# TIMEOUT seconds.
wait_until() {
    local what=$1; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

# Moves a file into the data prefix in one rename, so the operator never lists half a file.
drop_data() {
    cp "$1" "$STORE/staging/$2"
    chmod 0644 "$STORE/staging/$2"
    mv "$STORE/staging/$2" "$STORE/data/$2"
}

field() { k get modelpipeline "$PIPELINE" -o "jsonpath=$1"; }
score() { if [[ -n $1 ]]; then printf '%.4f' "$1"; else printf 'none'; fi; }

[[ -x $KUBECTL && -x $HELM ]] || die "kubectl/helm missing in $CACHE/bin: run \`make components\`"
[[ -x $TARGET/$PROFILE/trainer-job ]] || die "$TARGET/$PROFILE/trainer-job missing: run \`make images\`"
command -v wrk >/dev/null || die "wrk missing: \`apt-get install wrk\` (make demo does it)"

# ---------------------------------------------------------------------------------------------
step "cluster: a real one-node Kubernetes (etcd, API server, kubelet, containerd)"
STARTED_CLUSTER=0
case "$("${CLUSTER[@]}" status 2>/dev/null || true)" in
    *"cluster: healthy"*) say "reusing the running cluster" ;;
    *) STARTED_CLUSTER=1 ;;
esac
"${CLUSTER[@]}" up
"${CLUSTER[@]}" load-images

finish() {
    local rc=$?
    if [[ $KEEP == 1 && $rc == 0 ]]; then
        return
    fi
    step "stopping everything"
    if [[ $STARTED_CLUSTER == 1 ]]; then
        "${CLUSTER[@]}" down || rc=$?
    else
        "$HELM" uninstall "$RELEASE" -n "$OPERATOR_NS" --wait >/dev/null 2>&1 || true
        "$KUBECTL" delete namespace "$NS" "$OPERATOR_NS" --wait=false >/dev/null 2>&1 || true
        say "the cluster was running before the demo: left running; the demo's release and namespaces are removed"
    fi
    printf '\ndemo finished in %ds (exit %d)\n' "$((SECONDS - START))" "$rc"
    exit "$rc"
}
trap finish EXIT

# ---------------------------------------------------------------------------------------------
step "an empty store under $STORE, and the wine data cut into $SLOTS slots"
if "$KUBECTL" get namespace "$NS" >/dev/null 2>&1; then
    say "removing the namespace of an earlier demo"
    "$KUBECTL" delete namespace "$NS" --wait=true --timeout="${TIMEOUT}s" >/dev/null
fi
rm -rf "$STORE"
mkdir -p "$STORE/data" "$STORE/models" "$STORE/staging"
# The operator, trainer and predictor run as uid 65532.
chmod 0777 "$STORE" "$STORE/data" "$STORE/models" "$STORE/staging"
SLOT_DIR=$(mktemp -d)
"$TARGET/$PROFILE/trainer-job" dataset wine --slots "$SLOTS" --out "$SLOT_DIR" >/dev/null
cp "$SLOT_DIR/test_data.csv" "$STORE/test_data.csv"
chmod 0644 "$STORE/test_data.csv"
say "linfa-datasets' red-wine set (trainer-job dataset wine): $(ls "$SLOT_DIR" | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
step "operator: helm install $RELEASE charts/champion-operator"
# Helm installs crds/ only when the CRD is absent and never upgrades it: apply it first, so a
# kept cluster from an older checkout gets this one.
"$KUBECTL" apply --server-side --force-conflicts -f "$ROOT/crds/modelpipelines.champion.dev.yaml" >/dev/null
"$KUBECTL" wait --for=condition=Established crd/modelpipelines.champion.dev --timeout=60s >/dev/null
# The pipeline's namespace first: the chart puts the operator's Role there.
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
if "$HELM" status "$RELEASE" -n "$OPERATOR_NS" >/dev/null 2>&1; then
    "$HELM" uninstall "$RELEASE" -n "$OPERATOR_NS" --wait >/dev/null
fi
# Chart defaults (namespaced: it watches the pipeline's namespace) plus the store volume the
# operator lists data from.
(
    set -x
    "$HELM" install "$RELEASE" "$ROOT/charts/champion-operator" \
        --namespace "$OPERATOR_NS" --create-namespace \
        --set "watchNamespaces[0]=$NS" \
        --set 'storeVolumes[0].name=store' \
        --set "storeVolumes[0].mountPath=$STORE" \
        --set "storeVolumes[0].hostPath.path=$STORE" \
        --wait --timeout "${TIMEOUT}s"
) 2>&1 | sed 's/^/    /'

# ---------------------------------------------------------------------------------------------
step "the ModelPipeline $PIPELINE (adaboost, f1Macro, promote only when 0.005 better)"
k apply -f - <<EOF
apiVersion: champion.dev/v1alpha1
kind: ModelPipeline
metadata:
  name: $PIPELINE
spec:
  data:
    uri: file://$STORE/data/
    pollInterval: 2s
    target: quality
    positiveAbove: 5
    dropColumns: [Id]
    testDataUri: file://$STORE/test_data.csv
  modelStore:
    uri: file://$STORE/models/
  trainer:
    algorithm: adaboost
  evaluation:
    metric: f1Macro
  promotion:
    minImprovement: 0.005
    firstModel: Promote
  predictor:
    replicas: 2
    port: 8080
  volumes:
    - name: store
      mountPath: $STORE
      hostPath:
        path: $STORE
EOF

# ---------------------------------------------------------------------------------------------
# One slot: dropped into the store, then followed until the run it causes is judged (and, when
# promoted, until the new version serves), printing the phases as they change.
feed_slot() {
    local i=$1 n phase last="" t0=$SECONDS
    n=$(field '{.status.lastRun.number}')
    n=${n:-0}
    drop_data "$SLOT_DIR/data_$i.csv" "data_$i.csv"
    say "data_$i.csv arrives ($(($(wc -l <"$SLOT_DIR/data_$i.csv") - 1)) rows)"
    local deadline=$((SECONDS + TIMEOUT))
    until [[ $(field '{.status.lastRun.number}') == "$((n + 1))" ]]; do
        ((SECONDS < deadline)) || die "timed out waiting for the run on data_$i.csv"
        phase=$(field '{.status.phase}')
        if [[ $phase != "$last" && -n $phase ]]; then
            say "  phase $phase $( [[ $phase == Training ]] && field '(Job {.status.challenger.job})')"
            last=$phase
        fi
        sleep 0.5
    done
    local version outcome score champion reason
    version=$(field '{.status.lastRun.version}')
    outcome=$(field '{.status.lastRun.outcome}')
    score=$(field '{.status.lastRun.score}')
    champion=$(field '{.status.lastRun.championScore}')
    reason=$(field '{.status.history[-1:].reason}')
    if [[ $outcome == Promoted ]]; then
        k wait "modelpipeline/$PIPELINE" --for=jsonpath="{.status.servingVersion}=$version" \
            --timeout="${TIMEOUT}s" >/dev/null
    fi
    printf '    \033[1m%-9s\033[0m version %s   challenger f1Macro %s   champion %s   (%ds)\n' \
        "$outcome" "$version" "$(score "$score")" "$(score "$champion")" "$((SECONDS - t0))"
    say "  why: $reason"
    say "  serving: version $(field '{.status.servingVersion}')"
}

for ((i = 1; i <= SLOTS; i++)); do
    step "slot $i of $SLOTS"
    feed_slot "$i"
done

step "what kubectl shows"
k get modelpipelines -o wide | sed 's/^/    /'
printf '\n'
k get events --field-selector "involvedObject.kind=ModelPipeline,involvedObject.name=$PIPELINE" \
    --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message |
    sed 's/^/    /'

# ---------------------------------------------------------------------------------------------
step "predictions, as the original client sends them: POST /predict, data= body, no Content-Type"
URL=$(field '{.status.address.url}')
CLUSTER_IP=$(k get service "$PIPELINE-predictor" -o jsonpath='{.spec.clusterIP}')
PORT=$(k get service "$PIPELINE-predictor" -o jsonpath='{.spec.ports[0].port}')
say "status.address.url = $URL (ClusterIP $CLUSTER_IP:$PORT, which this host, the node, reaches)"
# Rows of test_data.csv as {feature: value}, without the target and the Id; with the truth.
rows() {
    awk -F, -v n="$1" 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i; next }
        NR <= n + 1 { s = ""; q = ""
            for (i = 1; i <= NF; i++) {
                if (h[i] == "quality") q = $i
                else if (h[i] != "Id") s = s (s == "" ? "" : ",") "\"" h[i] "\":" $i
            }
            print (q > 5 ? "1" : "0") "\t{" s "}" }' "$STORE/test_data.csv"
}
while IFS=$'\t' read -r truth row; do
    # curl -H 'Content-Type:' removes the header curl would add: the body arrives bare.
    answer=$(curl -sS --max-time 10 -H 'Content-Type:' --data-binary "$row" "http://$CLUSTER_IP:$PORT/predict")
    say "truth $truth  ->  $answer"
done < <(rows 3)

# ---------------------------------------------------------------------------------------------
step "load test: wrk, ${LOAD_SECONDS}s, 2 threads, 32 connections, through the Service"
ROW=$(rows 1 | cut -f2)
LUA=$(mktemp --suffix=.lua)
cat >"$LUA" <<EOF
wrk.method = "POST"
wrk.body = '$ROW'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
OUT=$(wrk -t2 -c32 -d"${LOAD_SECONDS}s" -s "$LUA" "http://$CLUSTER_IP:$PORT/predict")
rm -f "$LUA"
read -r _ requests duration_us p50 p99 non2xx errors <<<"$(grep '^RESULT' <<<"$OUT")"
awk -v r="$requests" -v d="$duration_us" -v p50="$p50" -v p99="$p99" -v s="$non2xx" -v e="$errors" 'BEGIN {
    printf "    requests   %d in %.1fs = %.0f requests/s\n", r, d / 1e6, r / (d / 1e6)
    printf "    latency    p50 %.2f ms   p99 %.2f ms\n", p50 / 1000, p99 / 1000
    printf "    failures   %d non-2xx, %d socket errors\n", s, e }'
((non2xx == 0 && errors == 0)) || die "the load test saw failures"

# ---------------------------------------------------------------------------------------------
rm -rf "$SLOT_DIR"
if [[ $KEEP == 1 ]]; then
    step "KEEP=1: everything stays up"
    cat <<EOF
    export KUBECONFIG=$KUBECONFIG
    $KUBECTL get champion -A                      # every champion resource
    $KUBECTL -n $NS get mlp $PIPELINE -o wide -w  # watch the pipeline
    cp \$SOME_CSV $STORE/data/                    # new data: a new run
    curl -H 'Content-Type:' --data-binary '$ROW' http://$CLUSTER_IP:$PORT/predict
    make cluster-down                             # stop everything
EOF
fi
