#!/usr/bin/env bash
# Security end-to-end checks on the local cluster (assumed up: make
# cluster-up), docs/security.md:
#   - a cluster with no security settings gets <cluster>-internal, -auth and
#     -tls Secrets and a NetworkPolicy;
#   - the NetworkPolicy is enforced (kube-router on the local cluster): a pod
#     in another namespace reaches the client port but not the admin or the
#     metrics port; listed in spec.networkPolicy.metricsNamespaces it reaches
#     the metrics port and still not the admin port; with the policy turned
#     off the admin port answers it (401);
#   - from a pod the policy admits that is not the operator (the cluster's
#     label, no token) every admin /v1 call without the token or with a
#     wrong one is refused (401; 403 in plain HTTP) and nothing changes:
#     fencing epoch, topology, follow target, archive hold, snapshots; the
#     snapshot download carries no data;
#   - redis-cli with --tls --cacert and the generated password works; without
#     the password, or plaintext to the TLS port, it is refused;
#   - replication runs over TLS (a write on the primary reaches the replica);
#   - the admin API is HTTPS: /v1 in plain HTTP is refused even with the
#     token, probes and /metrics stay plain;
#   - a renewed node certificate written into <cluster>-tls under a write
#     load: every node serves it without a restart, no acknowledged write is
#     lost, no client fails more than one reconnect.
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
CA=/tmp/e2e-sec-ca.crt
kubectl get secret -n "$NS" "$C-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$CA"
# The admin API over HTTPS, verified against the cluster's CA; the node
# certificate names the shard's pods (*.<sts>.<ns>.svc), not their IPs.
ADM_HOST="node.$C-shard-0.$NS.svc"
adm() { local ip=$1 path=$2; shift 2
  curl -fsS --cacert "$CA" --resolve "$ADM_HOST:9121:$ip" -H "Authorization: Bearer $TOKEN" "$@" "https://$ADM_HOST:9121$path"; }
primary_ip=$(kubectl get dbc -n "$NS" "$C" -o jsonpath='{.status.shards[0].primary.ip}')
replica_ip=$(kubectl get dbc -n "$NS" "$C" -o jsonpath='{.status.shards[0].replicas[0].ip}')
[[ -n $primary_ip && -n $replica_ip ]]; result $? "primary $primary_ip and replica $replica_ip known"

# A value the attacker must never see, and a snapshot holding it.
redis-cli -h "$primary_ip" -p 6379 -a "$PASSWORD" --no-auth-warning SET e2e-secret-key e2e-secret-value >/dev/null
adm "$primary_ip" /v1/snapshot -XPOST >/dev/null
result $? "snapshot taken with the token over HTTPS (from the host)"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$primary_ip:9121/v1/status")
[[ $code == 403 ]]; result $? "/v1 in plain HTTP refused even with the token" "$code"

# What the refused calls could change, read with the token from the host.
state() {
  local ip=$1 st seg topo
  st=$(adm "$ip" /v1/status)
  seg=$(adm "$ip" /v1/wal/segments)
  topo=$(adm "$ip" /v1/topology)
  jq -cS --argjson seg "$seg" --argjson topo "$topo" \
    '{fencingEpoch, role, epoch, shardEpoch, primary: .replication.primary, snap: .lastSnapshot.path, hold: $seg.archiveHold, topo: $topo}' <<<"$st"
}
before_p=$(state "$primary_ip"); before_r=$(state "$replica_ip")

# The attacker: a pod in another namespace with curl and redis-cli, and
# the cluster's CA certificate (public).
# The insider: a pod in the cluster's namespace with the cluster's label,
# which the policy admits to the admin port, holding no token.
for where in "$ATT attacker {}" "$NS insider {tessera.dev/cluster: $C}"; do
  read -r ns name labels <<<"$where"
  kubectl create configmap -n "$ns" cluster-ca --from-file=ca.crt="$CA" >&2
  kubectl apply -n "$ns" -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, labels: $labels}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: $name
      image: $BASE_IMAGE
      imagePullPolicy: Never
      command: [sh, -c, 'exec sleep infinity']
      volumeMounts: [{name: ca, mountPath: /ca}]
  volumes: [{name: ca, configMap: {name: cluster-ca}}]
EOF
  kubectl wait -n "$ns" "pod/$name" --for=condition=Ready --timeout=120s >&2
  result $? "$name pod running in $ns"
done
att() { kubectl exec -n "$ATT" attacker -- "$@"; }
ins() { kubectl exec -n "$NS" insider -- "$@"; }

# The policy, enforced: from another namespace only the client ports answer.
# `reach POD-FN PORT PATH`: the HTTP status, 000 when no connection was made.
reach() { "$1" curl -s -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 5 "http://$primary_ip:$2$3" 2>/dev/null; }
out=$(att redis-cli -h "$primary_ip" -p 6379 PING 2>&1)
[[ $out == *NOAUTH* ]]; result $? "policy: the client port answers a pod of another namespace" "$out"
a=$(reach att 9121 /metrics); m=$(reach att 9122 /metrics)
[[ $a == 000 && $m == 000 ]]; result $? "policy: admin and metrics ports closed to another namespace" "admin $a, metrics $m"
a=$(reach ins 9121 /metrics); m=$(reach ins 9122 /metrics)
[[ $a == 200 && $m == 200 ]]; result $? "policy: the cluster's own pods reach both" "admin $a, metrics $m"
kubectl patch dbc -n "$NS" "$C" --type merge -p "{\"spec\":{\"networkPolicy\":{\"metricsNamespaces\":[\"$ATT\"]}}}" >&2
m=000
for _ in $(seq 30); do m=$(reach att 9122 /metrics); [[ $m == 200 ]] && break; sleep 1; done
a=$(reach att 9121 /metrics)
[[ $m == 200 && $a == 000 ]]; result $? "policy: a metrics namespace reaches the metrics port, not the admin port" "metrics $m, admin $a"

# Every /v1 call, without a token and with a wrong one, over HTTPS and in
# plain HTTP, from the insider the policy lets through: the status code is
# 401 (HTTPS) or 403 (plain HTTP).
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
  for scheme in https http; do
    for auth in none wrong; do
      bad=""
      for c in "${calls[@]}"; do
        read -r method path body <<<"$c"
        hdr=(); [[ $auth == wrong ]] && hdr=(-H "Authorization: Bearer wrong-$TOKEN")
        out=$(ins curl -k -s -o /tmp/body -w '%{http_code}' --max-time 5 -X "$method" "${hdr[@]}" \
          -H 'Content-Type: application/json' ${body:+--data "$body"} "$scheme://$ip:9121$path" 2>/dev/null)
        leak=$(ins sh -c 'grep -c e2e-secret-value /tmp/body 2>/dev/null || true')
        want=401; [[ $scheme == http ]] && want=403
        if [[ $out != "$want" ]] || [[ ${leak:-0} != 0 ]]; then bad+=" $method $path=$out"; fi
      done
      [[ -z $bad ]]; result $? "every /v1 call to $ip over $scheme with $auth token refused" "$bad"
    done
  done
done
after_p=$(state "$primary_ip"); after_r=$(state "$replica_ip")
[[ $before_p == "$after_p" ]]; result $? "primary unchanged (fence, topology, follow, archive hold, snapshot)" "$before_p -> $after_p"
[[ $before_r == "$after_r" ]]; result $? "replica unchanged" "$before_r -> $after_r"

# Probes and metrics stay readable for the kubelet and Prometheus where the
# policy admits them (here: the host); they carry no data.
m=$(curl -fsS "http://$primary_ip:9121/metrics"); rc=$?
[[ $rc == 0 && $m != *e2e-secret* ]]; result $? "/metrics open and without data"
# The metrics port (9122) serves the probes and /metrics and no admin call,
# even with the token; the pods' probes use it.
m=$(curl -fsS "http://$primary_ip:9122/metrics"); rc=$?
[[ $rc == 0 && $m == *tessera_* && $m != *e2e-secret* ]]; result $? "/metrics on the metrics port, without data"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$primary_ip:9122/v1/status")
[[ $code == 404 ]]; result $? "no admin call on the metrics port, even with the token" "$code"
probe=$(kubectl get pods -n "$NS" -l "tessera.dev/cluster=$C,app.kubernetes.io/component=node" -o jsonpath='{range .items[*]}{.spec.containers[0].readinessProbe.httpGet.port}{" "}{.spec.containers[0].livenessProbe.httpGet.port}{" "}{end}')
[[ $probe =~ ^(metrics\ )+$ ]]; result $? "the probes use the metrics port" "$probe"

# Clients: TLS with the CA and the generated password.
out=$(att redis-cli --tls --cacert /ca/ca.crt -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning GET e2e-secret-key 2>&1)
[[ $out == e2e-secret-value ]]; result $? "redis-cli --tls --cacert with the generated password reads" "$out"
out=$(att redis-cli --tls --cacert /ca/ca.crt -h "$primary_ip" -p 6380 GET e2e-secret-key 2>&1)
[[ $out == *NOAUTH* ]]; result $? "redis-cli --tls without the password is refused" "$out"
out=$(att timeout 5 redis-cli -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning GET e2e-secret-key 2>&1)
[[ $out != *e2e-secret-value* ]]; result $? "plaintext to the TLS port gets nothing" "$out"
out=$(att redis-cli -h "$primary_ip" -p 6379 GET e2e-secret-key 2>&1)
[[ $out == *NOAUTH* ]]; result $? "plaintext port without the password is refused" "$out"

# The policy can be turned off: it is deleted and the admin port answers
# the other namespace again, with 401 (the token still guards it).
kubectl patch dbc -n "$NS" "$C" --type merge -p '{"spec":{"networkPolicy":{"enabled":false}}}' >&2
a=000
for _ in $(seq 30); do a=$(reach att 9121 /v1/status); [[ $a != 000 ]] && break; sleep 1; done
gone=$(kubectl get networkpolicy -n "$NS" "$C-nodes" -o name 2>/dev/null)
[[ -z $gone && $a == 403 ]]; result $? "policy off: deleted, and the admin port answers another namespace (403 in plain HTTP)" "policy '$gone', admin $a"
kubectl patch dbc -n "$NS" "$C" --type merge -p '{"spec":{"networkPolicy":{"enabled":true}}}' >&2

# Replication over TLS: the replica's link is up and has the write.
out=$(redis-cli -h "$replica_ip" -p 6379 -a "$PASSWORD" --no-auth-warning -c READONLY >/dev/null; \
      adm "$replica_ip" /v1/status | jq -r '.replication.linkUp')
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
node_log=$(kubectl logs -n "$NS" "$(kubectl get pods -n "$NS" -l "tessera.dev/cluster=$C,app.kubernetes.io/component=node" -o name | head -1)" 2>/dev/null)
grep -q 'TLS client port listening' <<<"$node_log"; result $? "nodes serve TLS (log)"

# Rotation under load: a renewed node certificate (same CA, same names, a
# new key) written into <cluster>-tls as the operator's renewal does, while
# writers keep going over TLS, each write its own connection (a handshake
# per write: every new connection meets whichever certificate the node has).
ROT=$(mktemp -d)
secret "$C-tls" 'tls\.crt' >"$ROT/old.crt"
secret "$C-tls" 'ca\.key' >"$ROT/ca.key"
sans=$(openssl x509 -in "$ROT/old.crt" -noout -ext subjectAltName | tail -n +2 | tr -d ' ')
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ROT/tls.key" \
  -out "$ROT/tls.csr" -subj "/CN=$C-renewed" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$sans" >"$ROT/ext.cnf"
openssl x509 -req -in "$ROT/tls.csr" -CA "$CA" -CAkey "$ROT/ca.key" -CAcreateserial -days 90 \
  -extfile "$ROT/ext.cnf" -out "$ROT/tls.crt" 2>/dev/null
result $? "a renewed node certificate issued from the cluster's CA"
new_serial=$(openssl x509 -in "$ROT/tls.crt" -noout -serial)
writes() {  # $1: writer id; appends "<key>" per acknowledged write, "FAIL" per failed one
  local i=0
  while [[ ! -e $ROT/stop ]]; do
    i=$((i+1))
    out=$(redis-cli --tls --cacert "$CA" -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning \
      SET "rot-$1-$i" "$i" 2>&1)
    if [[ $out == OK ]]; then echo "rot-$1-$i" >>"$ROT/acked-$1"; else echo FAIL >>"$ROT/acked-$1"; fi
  done
}
writes a & wa=$!
writes b & wb=$!
redis-benchmark --tls --cacert "$CA" -h "$primary_ip" -p 6380 -a "$PASSWORD" -t set -r 100000 \
  -n 100000000 -c 10 -q >/dev/null 2>&1 & wbench=$!
# acked_ok ID: the writer's acknowledged writes so far.
acked_ok() { local n; n=$(grep -cv '^FAIL$' "$ROT/acked-$1" 2>/dev/null); echo "${n:-0}"; }
# wait_acked N A0 B0: until both writers have N more acknowledged writes
# than A0 and B0 (at most 60 s); 0 when they do.
wait_acked() {
  local i
  for i in $(seq 600); do
    (( $(acked_ok a) >= $2 + $1 && $(acked_ok b) >= $3 + $1 )) && return 0
    sleep 0.1
  done
  return 1
}
wait_acked 20 0 0; result $? "both writers acknowledged over TLS before the rotation" "a: $(acked_ok a), b: $(acked_ok b)"
kubectl patch secret -n "$NS" "$C-tls" --type merge -p "$(jq -n --arg c "$(base64 -w0 <"$ROT/tls.crt")" \
  --arg k "$(base64 -w0 <"$ROT/tls.key")" '{data: {"tls.crt": $c, "tls.key": $k}}')" >&2
result $? "renewed certificate written into $C-tls"
served=1
for _ in $(seq 120); do
  p=$(openssl s_client -connect "$primary_ip:6380" -CAfile "$CA" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)
  r=$(openssl s_client -connect "$replica_ip:6380" -CAfile "$CA" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)
  a=$(openssl s_client -connect "$primary_ip:9121" -CAfile "$CA" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)
  [[ $p == "$new_serial" && $r == "$new_serial" && $a == "$new_serial" ]] && { served=0; break; }
  sleep 1
done
result $served "both nodes serve the renewed certificate (client and admin ports) without a restart"
# Keep writing until each writer has made 20 more writes, each a new
# connection meeting the renewed certificate.
a0=$(acked_ok a); b0=$(acked_ok b)
wait_acked 20 "$a0" "$b0"; result $? "both writers acknowledged over TLS after the rotation" "a: $a0 -> $(acked_ok a), b: $b0 -> $(acked_ok b)"
touch "$ROT/stop"; wait "$wa" "$wb"; kill "$wbench" 2>/dev/null; wait "$wbench" 2>/dev/null
restarts=$(kubectl get pods -n "$NS" -l "tessera.dev/cluster=$C,app.kubernetes.io/component=node" -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{" "}{end}')
[[ $restarts =~ ^(0\ )+$ ]]; result $? "no node restarted" "$restarts"
fails=$(cat "$ROT"/acked-* | awk '/^FAIL$/{run++; if (run > max) max = run; next} {run = 0} END {print max + 0}')
(( fails <= 1 )); result $? "no writer failed more than one write in a row (one reconnect)" "longest run of failures: $fails"
lost=0; total=0
while read -r k; do
  total=$((total+1))
  v=$(redis-cli --tls --cacert "$CA" -h "$primary_ip" -p 6380 -a "$PASSWORD" --no-auth-warning GET "$k" 2>/dev/null)
  [[ $v == "${k##*-}" ]] || lost=$((lost+1))
done < <(grep -hv '^FAIL$' "$ROT"/acked-*)
(( total > 0 && lost == 0 )); result $? "every acknowledged write survived the rotation" "$lost of $total lost"
out=$(adm "$replica_ip" /v1/status | jq -r '.replication.linkUp')
[[ $out == true ]]; result $? "replication link up after the rotation" "$out"
# Longer than the operator's periodic reconcile of a Ready cluster (60 s),
# so at least one certificate check ran over the renewed certificate.
sleep 70
kubectl get secret -n "$NS" "$C-tls" -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl x509 -noout -serial | grep -qx "$new_serial"
result $? "the operator keeps a valid renewed certificate (no re-issue over it)"

if (( failed == 0 )); then
  kubectl delete namespace "$NS" "$ATT" --wait=false >&2
fi
echo "$passed passed, $failed failed"
(( failed == 0 ))
