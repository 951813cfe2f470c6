#!/usr/bin/env bash
# Smoke test of the e2e cluster: proves the pod tier really works, with the
# Tessera image. Brings the cluster up (no-op when it is) and builds/imports
# the image first. Prints PASS/FAIL per check and ends with "N passed, M failed".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$E2E_DIR/cluster.sh" up
# E2E_IMAGE=<ref> tests an image already imported (e.g. while iterating on
# the cluster itself); by default the image is built from this tree.
if [[ -n ${E2E_IMAGE:-} ]]; then echo "$E2E_IMAGE" >"$RUN/image"; else "$E2E_DIR/image.sh"; fi
IMAGE=$(cat "$RUN/image")

NS=e2e-smoke
PASSED=0 FAILED=0
T0=$SECONDS
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" -n "$NS" "$@"; }

pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() {
  FAILED=$((FAILED + 1)); echo "FAIL: $*"
  # Context for whoever reads the CI log.
  k get pods,pvc,jobs,events -o wide 2>&1 | tail -25 | sed 's/^/    /'
}

# Start from an empty namespace (a previous run may have been interrupted).
if k get ns "$NS" >/dev/null 2>&1; then
  kubectl delete ns "$NS" --wait=true --timeout=120s >/dev/null
fi
kubectl create ns "$NS" >/dev/null

# Everything the checks need, created at once so the pods start in parallel.
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: tessera}
spec:
  replicas: 1
  selector: {matchLabels: {app: tessera}}
  template:
    metadata: {labels: {app: tessera}}
    spec:
      containers:
        - name: tessera
          image: $IMAGE
          imagePullPolicy: Never
          args: [node, --port, "6379", --admin-port, "9121", --data-dir, /data]
          ports: [{containerPort: 6379, name: redis}, {containerPort: 9121, name: admin}]
          readinessProbe:
            httpGet: {path: /healthz, port: 9121}
            periodSeconds: 2
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: tessera}
spec:
  selector: {app: tessera}
  ports: [{name: redis, port: 6379}, {name: admin, port: 9121}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: client
      image: $BASE_IMAGE
      imagePullPolicy: Never
      command: [sh, -c, 'echo smoke-log-marker; exec sleep infinity']
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: $BASE_IMAGE
      imagePullPolicy: Never
      command: [sh, -c, 'echo persisted-$NS > /data/proof && sync']
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: tick
              image: $BASE_IMAGE
              imagePullPolicy: Never
              command: [sh, -c, 'echo tick']
EOF

# 1. A Deployment of the Tessera image becomes available (readiness: /healthz).
if k rollout status deploy/tessera --timeout=120s >/dev/null 2>&1; then
  pass "Deployment running $IMAGE is available"
else
  fail "Deployment running $IMAGE did not become available"
fi

# 2. DNS: the client pod resolves the Service name to its ClusterIP, and
#    connects to Tessera through that ClusterIP (kube-proxy DNAT).
k wait --for=condition=Ready pod/client --timeout=60s >/dev/null 2>&1 || true
svc_ip=$(k get svc tessera -o jsonpath='{.spec.clusterIP}')
resolved=$(k exec client -- getent hosts "tessera.$NS.svc.cluster.local" 2>/dev/null | awk '{print $1}' || true)
short=$(k exec client -- getent hosts tessera 2>/dev/null | awk '{print $1}' || true)
if [[ -n $svc_ip && $resolved == "$svc_ip" && $short == "$svc_ip" ]]; then
  pass "pod resolves tessera.$NS.svc.cluster.local (and 'tessera') to ClusterIP $svc_ip"
else
  fail "DNS: expected $svc_ip, got '$resolved' (FQDN) and '$short' (short name)"
fi
health=$(k exec client -- curl -fsS --max-time 5 "http://tessera:9121/healthz" 2>&1 || true)
pong=$(k exec client -- timeout 5 redis-cli -h tessera -p 6379 PING 2>&1 || true)
if [[ -n $health && $pong == PONG ]]; then
  pass "pod reaches Tessera through the ClusterIP (/healthz ok, PING -> PONG)"
else
  fail "ClusterIP connection: healthz='$health' ping='$pong'"
fi

# 3. The PVC binds through the default StorageClass and its data outlives the pod.
if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=120s >/dev/null 2>&1 \
   && [[ $(k get pvc data -o jsonpath='{.status.phase}/{.spec.storageClassName}') == Bound/local-path ]]; then
  k delete pod writer --wait=true --timeout=60s >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
    - name: reader
      image: $BASE_IMAGE
      imagePullPolicy: Never
      command: [cat, /data/proof]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
EOF
  if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/reader --timeout=60s >/dev/null 2>&1 \
     && [[ $(k logs reader 2>/dev/null) == "persisted-$NS" ]]; then
    pass "PVC bound with default StorageClass local-path; data survived deleting the pod"
  else
    fail "PVC data did not survive: reader says '$(k logs reader 2>&1 | tail -1)'"
  fi
else
  fail "PVC did not bind / writer pod did not finish ($(k get pvc data -o jsonpath='{.status.phase}' 2>&1))"
fi

# 4. The CronJob controller creates a Job, and the Job completes (the schedule
#    is every minute, so this can take up to ~60 s plus pod start).
job_done() {
  k get jobs -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].name}={.status.succeeded}{"\n"}{end}' \
    | grep -q '^tick=1$'
}
if wait_for 100 "a Job of CronJob tick" job_done; then
  pass "CronJob created a Job that completed"
else
  fail "no completed Job from CronJob tick within 100s"
fi

# 5. kubectl logs and kubectl exec (apiserver -> kubelet on 198.18.0.1:10250).
if [[ $(k logs client 2>/dev/null) == smoke-log-marker ]]; then
  pass "kubectl logs returns the container's output"
else
  fail "kubectl logs client: '$(k logs client 2>&1 | tail -1)'"
fi
if [[ $(k exec client -- cat /etc/hostname 2>/dev/null) == client ]]; then
  pass "kubectl exec runs a command in the pod"
else
  fail "kubectl exec client failed: $(k exec client -- cat /etc/hostname 2>&1 | tail -1)"
fi

# 6. The host reaches a pod IP directly over the bridge (no NAT, no proxy).
pod_ip=$(k get pod -l app=tessera -o jsonpath='{.items[0].status.podIP}')
if [[ $pod_ip == 198.18.0.* ]] && curl -fsS --max-time 5 "http://$pod_ip:9121/healthz" >/dev/null 2>&1 \
   && [[ $(timeout 5 redis-cli -h "$pod_ip" -p 6379 PING 2>/dev/null) == PONG ]]; then
  pass "host reaches pod IP $pod_ip directly (/healthz and PING)"
else
  fail "host cannot reach pod IP '$pod_ip'"
fi

# 7. Helm (built here, in e2e/.run/bin) talks to the cluster, and the
#    project's chart lints and server-side dry-run installs.
chart=$(ls -d "$REPO_ROOT"/charts/*/Chart.yaml 2>/dev/null | head -1 || true)
if ! helm list -A >/dev/null 2>&1; then
  fail "helm $(helm version --short 2>&1) cannot talk to the cluster"
elif [[ -z $chart ]]; then
  fail "no chart in charts/ to lint and dry-run install"
else
  chart=$(dirname "$chart")
  if out=$(helm lint "$chart" 2>&1 && helm install smoke-chart "$chart" -n "$NS" --dry-run=server 2>&1); then
    pass "helm lint and helm install --dry-run=server of ${chart#"$REPO_ROOT"/}"
  else
    fail "helm on ${chart#"$REPO_ROOT"/}: $(tail -3 <<<"$out")"
  fi
fi

# 8. Namespace deletion and garbage collection remove everything we made.
if kubectl delete ns "$NS" --wait=true --timeout=120s >/dev/null 2>&1; then
  pass "namespace $NS deleted (namespace controller and garbage collection work)"
else
  fail "namespace $NS was not deleted within 120s"
fi

echo "smoke test took $((SECONDS - T0))s (cluster: $KUBECONFIG_FILE, logs: $LOGS)"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
