#!/usr/bin/env bash
# champion demo (`make demo`, after `champion-cluster up`): the operator installed from its chart
# into namespace champion-demo, a `wine` ModelPipeline reading CSV slots from a hostPath store,
# the first model trained, promoted and asked for a prediction, then a second slot of data and
# the outcome of that run.
#
# Idempotent: each run resets the demo pipeline and its store, then tells the whole story again.
# Every wait is `kubectl wait` or a polling loop with a deadline.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${CHAMPION_CACHE:-$HOME/.cache/champion}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
export KUBECONFIG=${CHAMPION_KUBECONFIG:-/var/lib/champion-cluster/admin.kubeconfig}
KUBECTL=$CACHE/bin/kubectl
HELM=$CACHE/bin/helm
NS=champion-demo
STORE=/var/lib/champion-demo
PIPELINE=wine
TIMEOUT=300 # seconds, per wait

k() { "$KUBECTL" -n "$NS" "$@"; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
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
    echo "dropped $2 into file://$STORE/data/"
}

[[ -x $KUBECTL && -x $HELM ]] || die "kubectl/helm missing in $CACHE/bin: run \`make components\`"
[[ -f $KUBECONFIG ]] || die "no cluster ($KUBECONFIG missing): run \`make cluster\`"

step "CRD modelpipelines.champion.dev"
"$KUBECTL" apply --server-side --force-conflicts --field-manager=champion-demo \
    -f "$ROOT/crds/modelpipelines.champion.dev.yaml"
"$KUBECTL" wait --for=condition=Established crd/modelpipelines.champion.dev --timeout=60s

step "namespace $NS (an earlier demo pipeline is removed first)"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
if k get modelpipeline "$PIPELINE" >/dev/null 2>&1; then
    k delete modelpipeline "$PIPELINE" --wait=true --timeout="${TIMEOUT}s"
    # Its Jobs, Deployment and Service are collected through their owner references.
    wait_until "the old pipeline's objects to be collected" \
        bash -c "[[ -z \$('$KUBECTL' -n '$NS' get jobs,deployments,services,pods \
            -l champion.dev/pipeline=$PIPELINE -o name) ]]"
fi

step "store under $STORE"
rm -rf "$STORE/data" "$STORE/models" "$STORE/staging"
mkdir -p "$STORE/data" "$STORE/models" "$STORE/staging"
# The operator, trainer and predictor run as uid 65532.
chmod 0777 "$STORE" "$STORE/data" "$STORE/models" "$STORE/staging"
SLOTS=$STORE/generated
[[ -x $TARGET/release/trainer-job ]] || die "$TARGET/release/trainer-job missing: run \`make images\`"
"$TARGET/release/trainer-job" dataset wine --slots 2 --out "$SLOTS"
echo "data: linfa-datasets' red-wine set, written by trainer-job dataset wine into $SLOTS"
cp "$SLOTS/test_data.csv" "$STORE/test_data.csv"
chmod 0644 "$STORE/test_data.csv"
ls -l "$STORE"

step "operator (helm template | kubectl apply), watching only $NS"
"$HELM" template champion "$ROOT/charts/champion-operator" --namespace "$NS" \
    --set "watchNamespaces[0]=$NS" \
    --set logJson=false \
    --set 'storeVolumes[0].name=store' \
    --set "storeVolumes[0].mountPath=$STORE" \
    --set "storeVolumes[0].hostPath.path=$STORE" |
    k apply -f -
k rollout status deployment/champion --timeout="${TIMEOUT}s"

step "first slot of data, then the ModelPipeline $PIPELINE"
drop_data "$SLOTS/data_1.csv" data_1.csv
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
    replicas: 1
    port: 8080
  volumes:
    - name: store
      mountPath: $STORE
      hostPath:
        path: $STORE
EOF

step "waiting for the first model to be trained and promoted"
k wait --for=condition=Promoted "modelpipeline/$PIPELINE" --timeout="${TIMEOUT}s"
k wait --for=condition=Ready "modelpipeline/$PIPELINE" --timeout="${TIMEOUT}s"
k get modelpipeline "$PIPELINE"
k get jobs,deployments,services -l "champion.dev/pipeline=$PIPELINE"

step "a prediction from a predictor pod"
VERSION=$(k get modelpipeline "$PIPELINE" -o jsonpath='{.status.champion.version}')
IP=$(k get pods -l "champion.dev/pipeline=$PIPELINE,app.kubernetes.io/component=predictor" \
    -o jsonpath="{range .items[?(@.metadata.annotations.champion\.dev/model-version==\"$VERSION\")]}{.status.podIP}{\"\n\"}{end}" |
    head -n1)
[[ -n $IP ]] || die "no predictor pod serving version $VERSION"
# The first test row as {feature: value}, without the target and the Id.
ROW=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i }
    NR == 2 { s = ""; for (i = 1; i <= NF; i++) if (h[i] != "quality" && h[i] != "Id")
                  s = s (s == "" ? "" : ",") "\"" h[i] "\":" $i
              print "{" s "}"; exit }' "$STORE/test_data.csv")
echo "POST http://$IP:8080/predict $ROW"
curl -sS --max-time 10 -D - -H 'content-type: application/json' -d "$ROW" "http://$IP:8080/predict"
echo

step "second slot of data: the next run decides whether it beats version $VERSION"
RUNS=$(k get modelpipeline "$PIPELINE" -o jsonpath='{range .status.history[*]}x{end}')
drop_data "$SLOTS/data_2.csv" data_2.csv
judged() {
    local now rollout
    now=$(k get modelpipeline "$PIPELINE" -o jsonpath='{range .status.history[*]}x{end}')
    rollout=$(k get modelpipeline "$PIPELINE" -o jsonpath='{.status.rollout.version}')
    [[ ${#now} -gt ${#RUNS} && -z $rollout ]]
}
wait_until "the outcome of the second run" judged
k get modelpipeline "$PIPELINE"

step "history of $PIPELINE"
{
    printf 'VERSION\tOUTCOME\tSCORE\tCHAMPION-SCORE\tREASON\n'
    k get modelpipeline "$PIPELINE" -o jsonpath='{range .status.history[*]}{.version}{"\t"}{.outcome}{"\t"}{.score}{"\t"}{.championScore}{"\t"}{.reason}{"\n"}{end}'
} | column -t -s $'\t'

step "events of $PIPELINE"
UID_=$(k get modelpipeline "$PIPELINE" -o jsonpath='{.metadata.uid}')
k get events --field-selector "involvedObject.kind=ModelPipeline,involvedObject.uid=$UID_" \
    --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

printf '\nDemo done. Try: %s -n %s get mlp -w   (kubeconfig %s)\n' "$KUBECTL" "$NS" "$KUBECONFIG"
