#!/bin/bash
# `make test-k8s`: one small experiment of two trials (one of 2 ranks in 2 pods) on the cluster
# the current kubeconfig reaches, with this machine's `trainyard run` as the Master.
# Not run by trainyard's CI (no cluster there); see docs/operators/kubernetes.md, "Proving a
# cluster works", for a kind cluster that meets what this needs:
#   K8S_IMAGE          an image built from deploy/docker/Dockerfile that the cluster can pull
#   K8S_HOME           a folder of this machine that the pods see at the same path: TRAINYARD_HOME
#   K8S_CLAIM          a ReadWriteMany PersistentVolumeClaim in K8S_NAMESPACE whose volume is K8S_HOME
#   K8S_MASTER_HOST    the address pods reach this machine at (kind on Linux: the gateway of
#                      docker's `kind` network, e.g. 172.18.0.1)
#   K8S_NAMESPACE      default trainyard-test (created when missing)
#   K8S_GPUS           GPUs per pod, default 0 (CPU pods)
#   K8S_CONTEXT        default: the kubeconfig's current context
set -euo pipefail
: "${K8S_IMAGE:?set K8S_IMAGE to an image built from deploy/docker/Dockerfile}"
: "${K8S_HOME:?set K8S_HOME to the folder the pods see at the same path}"
: "${K8S_CLAIM:?set K8S_CLAIM to the ReadWriteMany PVC whose volume is K8S_HOME}"
: "${K8S_MASTER_HOST:?set K8S_MASTER_HOST to the address pods reach this machine at}"
NAMESPACE=${K8S_NAMESPACE:-trainyard-test}
GPUS=${K8S_GPUS:-0}
CONTEXT=${K8S_CONTEXT:-$(kubectl config current-context)}
TRAINYARD=${TRAINYARD:-.venv/bin/trainyard}
WORK="$K8S_HOME/test-k8s"

kubectl --context "$CONTEXT" get namespace "$NAMESPACE" >/dev/null 2>&1 \
    || kubectl --context "$CONTEXT" create namespace "$NAMESPACE"
kubectl --context "$CONTEXT" -n "$NAMESPACE" get pvc "$K8S_CLAIM" >/dev/null
mkdir -p "$WORK"
[ -f "$WORK/toy/.complete" ] || {
    "$TRAINYARD" data generate toy --out "$WORK/toy" --train-jets 4000 --val-jets 1000
    touch "$WORK/toy/.complete"
}
if [ "$GPUS" = 0 ]; then slots="ranks_per_pod: 1"; else slots="gpus_per_node: $GPUS"; fi
cat > "$WORK/facility.yaml" <<FACILITY
pools:
  cluster:
    executor: kubernetes
    kubernetes:
      context: $CONTEXT
      namespace: $NAMESPACE
      image: $K8S_IMAGE
      gpus_per_pod: $([ "$GPUS" = 0 ] && echo 0 || echo 1)
      $slots
      cpus_per_gpu: 1
      memory_per_gpu: 2Gi
      max_pods: 2
      stop_grace_s: 60
      volumes:
        data: {claim: $K8S_CLAIM, mount_path: $K8S_HOME}
FACILITY
cat > "$WORK/experiment.yaml" <<EXPERIMENT
name: test-k8s
model: {name: particlenet-lite, options: {k: 4}}
data: {train: $WORK/toy/train/*.parquet, val: $WORK/toy/val/*.parquet, max_particles: 16}
hyperparameters: {lr: 0.003, batch_size: 64}
training: {max_length: {batches: 40}, validation_period: {batches: 20}, log_period_batches: 5}
checkpoint: {period: {batches: 20}, keep: 1}
resources: {pool: cluster, slots_per_trial: 2}
EXPERIMENT
chmod -R a+rwX "$WORK"   # the pods run as uid 1000
TRAINYARD_HOME="$K8S_HOME" TRAINYARD_FACILITY="$WORK/facility.yaml" \
    TRAINYARD_MASTER_HOST=0.0.0.0 TRAINYARD_MASTER_ADVERTISE_HOST="$K8S_MASTER_HOST" \
    "$TRAINYARD" run "$WORK/experiment.yaml"
echo "test-k8s: the trial completed on context $CONTEXT, namespace $NAMESPACE"
