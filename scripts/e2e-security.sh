#!/usr/bin/env bash
# Security end-to-end checks on the local cluster (assumed up: make
# cluster-up), docs/security.md:
#   - a cluster with no security settings gets <cluster>-internal, -auth and
#     -tls Secrets and a NetworkPolicy;
#   - from a pod in another namespace (not the operator) every admin /v1 call
#     without the token or with a wrong one is refused (401, or no
#     connection where NetworkPolicies are enforced) and nothing changes:
#     fencing epoch, topology, follow target, archive hold, snapshots; the
#     snapshot download carries no data;
#   - redis-cli with --tls --cacert and the generated password works; without
#     the password, or plaintext to the TLS port, it is refused;
#   - replication runs over TLS (a write on the primary reaches the replica).
# Ends with `N passed, M failed`.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"
source e2e/lib.sh >/dev/null 2>&1 || true   # BASE_IMAGE
passed=0; failed=0
result() { if [[ $1 == 0 ]]; then passed=$((passed+1)); echo "PASS $2"; else failed=$((failed+1)); echo "FAIL $2${3:+: $3}"; fi; }

e2e_require_cluster
e2e_install_operator

NS=tessera-e2e-sec
ATT=tessera-e2e-attacker
C=sec
for n in "$NS" "$ATT"; do
  kubectl delete namespace "$n" --ignore-not-found --wait=true --timeout=180s >&2
  kubectl create namespace "$n" >&2
done

kubectl apply -f - >&2 <<EOF
apiVersion: tessera.dev/v1alpha1
kind: DatabaseCluster
metadata: {name: $C, namespace: $NS}
spec:
  shards: 1
  replicas: 2
  storage: {size: 32Mi}
EOF
kubectl wait "databasecluster/$C" -n "$NS" --for=condition=Ready --timeout=10m >&2
result $? "a cluster with no security settings becomes Ready"

secret() { kubectl get secret -n "$NS" "$1" -o jsonpath="{.data.$2}" | base64 -d; }
for s in "$C-internal:token" "$C-auth:password" "$C-tls:tls\.crt"; do
  v=$(secret "${s%%:*}" "${s#*:}" 2>/dev/null)
  [[ -n $v ]]; result $? "Secret ${s%%:*} generated with ${s#*:}"
done
kubectl get networkpolicy -n "$NS" "$C-nodes" >/dev/null 2>&1; result $? "NetworkPolicy $C-nodes created"

TOKEN=$(secret "$C-internal" token)
PASSWORD=$(secret "$C-auth" password)
primary_ip=$(kubectl get dbc -n "$NS" "$C" -o jsonpath='{.status.shards[0].primary.ip}')
replica_ip=$(kubectl get dbc -n "$NS" "$C" -o jsonpath='{.status.shards[0].replicas[0].ip}')
[[ -n $primary_ip && -n $replica_ip ]]; result $? "primary $primary_ip and replica $replica_ip known"

# A value the attacker must never see, and a snapshot holding it.
redis-cli -h "$primary_ip" -p 6379 -a "$PASSWORD" --no-auth-warning SET e2e-secret-key e2e-secret-value >/dev/null
curl -fsS -XPOST -H "Authorization: Bearer $TOKEN" "http://$primary_ip:9121/v1/snapshot" >/dev/null
result $? "snapshot taken with the token (from the host)"

# What the refused calls could change, read with the token from the host.
state() {
  local ip=$1 st seg topo
  st=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://$ip:9121/v1/status")
  seg=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://$ip:9121/v1/wal/segments")
  topo=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://$ip:9121/v1/topology")
  jq -cS --argjson seg "$seg" --argjson topo "$topo" \
    '{fencingEpoch, role, epoch, shardEpoch, primary: .replication.primary, snap: .lastSnapshot.path, hold: $seg.archiveHold, topo: $topo}' <<<"$st"
}
before_p=$(state "$primary_ip"); before_r=$(state "$replica_ip")

# The attacker: a pod in another namespace with curl and redis-cli, and
# the cluster's CA certificate (public).
kubectl get secret -n "$NS" "$C-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >/tmp/e2e-sec-ca.crt
kubectl create configmap -n "$ATT" cluster-ca --from-file=ca.crt=/tmp/e2e-sec-ca.crt >&2
kubectl apply -n "$ATT" -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: attacker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: attacker
      image: $BASE_IMAGE
      imagePullPolicy: Never
      command: [sh, -c, 'exec sleep infinity']
      volumeMounts: [{name: ca, mountPath: /ca}]
  volumes: [{name: ca, configMap: {name: cluster-ca}}]
EOF
kubectl wait -n "$ATT" pod/attacker --for=condition=Ready --timeout=120s >&2
result $? "attacker pod running in $ATT"
att() { kubectl exec -n "$ATT" attacker -- "$@"; }

# Every /v1 call, without a token and with a wrong one: the status code is
# 401, or 000 (no connection: an enforcing NetworkPolicy).
big=18446744073709551615
calls=(
  "GET /v1/status"
  "GET /v1/topology"
  "PUT /v1/topology {\"epoch\":$big,\"shards\":[]}"
  "POST /v1/fence {\"epoch\":$big}"
  "POST /v1/promote {\"epoch\":$big}"
  "POST /v1/follow {\"epoch\":$big,\"primary\":{\"id\":\"$(printf 'e%.0s' {1..40})\",\"host\":\"198.18.0.250\",\"port\":6379}}"
  "POST /v1/wal/archived {\"lsn\":$big}"
  "GET /v1/wal/segments"
  "POST /v1/snapshot"
  "GET /v1/backup/snapshot"
  "GET /v1/migrations"
  "GET /v1/slots/digest?slots=0-16383"
)
for ip in "$primary_ip" "$replica_ip"; do
  for auth in none wrong; do
    bad=""
    for c in "${calls[@]}"; do
      read -r method path body <<<"$c"
      hdr=(); [[ $auth == wrong ]] && hdr=(-H "Authorization: Bearer wrong-$TOKEN")
      out=$(att curl -s -o /tmp/body -w '%{http_code}' --max-time 5 -X "$method" "${hdr[@]}" \
        -H 'Content-Type: application/json' ${body:+--data "$body"} "http://$ip:9121$path" 2>/dev/null)
      leak=$(att sh -c 'grep -c e2e-secret-value /tmp/body 2>/dev/null || true')
      if [[ $out != 401 && $out != 000 ]] || [[ ${leak:-0} != 0 ]]; then bad+=" $method $path=$out"; fi
    done
    [[ -z $bad ]]; result $? "every /v1 call to $ip with $auth token refused" "$bad"
  done
done
after_p=$(state "$primary_ip"); after_r=$(state "$replica_ip")
[[ $before_p == "$after_p" ]]; result $? "primary unchanged (fence, topology, follow, archive hold, snapshot)" "$before_p -> $after_p"
[[ $before_r == "$after_r" ]]; result $? "replica unchanged" "$before_r -> $after_r"

# Probes and metrics stay readable for the kubelet and Prometheus where the
# policy admits them (here: the host); they carry no data.
m=$(curl -fsS "http://$primary_ip:9121/metrics"); rc=$?
[[ $rc == 0 && $m != *e2e-secret* ]]; result $? "/metrics open and without data"

# Clients: TLS with the CA and the generated password.
out=$(att redis-cli --tls --cacert /ca/ca.crt -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning GET e2e-secret-key 2>&1)
[[ $out == e2e-secret-value ]]; result $? "redis-cli --tls --cacert with the generated password reads" "$out"
out=$(att redis-cli --tls --cacert /ca/ca.crt -h "$primary_ip" -p 6380 GET e2e-secret-key 2>&1)
[[ $out == *NOAUTH* ]]; result $? "redis-cli --tls without the password is refused" "$out"
out=$(att timeout 5 redis-cli -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning GET e2e-secret-key 2>&1)
[[ $out != *e2e-secret-value* ]]; result $? "plaintext to the TLS port gets nothing" "$out"
out=$(att redis-cli -h "$primary_ip" -p 6379 GET e2e-secret-key 2>&1)
[[ $out == *NOAUTH* ]]; result $? "plaintext port without the password is refused" "$out"

# Replication over TLS: the replica's link is up and has the write.
out=$(redis-cli -h "$replica_ip" -p 6379 -a "$PASSWORD" --no-auth-warning -c READONLY >/dev/null; \
      curl -fsS -H "Authorization: Bearer $TOKEN" "http://$replica_ip:9121/v1/status" | jq -r '.replication.linkUp')
[[ $out == true ]]; result $? "replica's link to the primary is up (TLS)"
redis-cli -h "$primary_ip" -p 6379 -a "$PASSWORD" --no-auth-warning SET e2e-repl tls-link >/dev/null
ok=1
for _ in $(seq 50); do
  v=$(printf 'READONLY\nGET e2e-repl\n' | redis-cli -h "$replica_ip" -p 6379 -a "$PASSWORD" --no-auth-warning 2>/dev/null | tail -1)
  [[ $v == tls-link ]] && { ok=0; break; }
  sleep 0.2
done
result $ok "a write reaches the replica over the TLS link"
# The log is read whole first: `grep -q` in a pipe under pipefail would fail
# the check whenever it matched before kubectl finished writing.
node_log=$(kubectl logs -n "$NS" "$(kubectl get pods -n "$NS" -l tessera.dev/cluster=$C -o name | head -1)" 2>/dev/null)
grep -q 'TLS client port listening' <<<"$node_log"; result $? "nodes serve TLS (log)"

if (( failed == 0 )); then
  kubectl delete namespace "$NS" "$ATT" --wait=false >&2
fi
echo "$passed passed, $failed failed"
(( failed == 0 ))
