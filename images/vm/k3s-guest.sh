#!/bin/busybox sh
# The test guest acting a K3s cluster member at the guest boundary (no K3s binary here: see
# docs/clusters-node.md).  /init runs it, in the background, when the user data holds
# `EVE_K3S_ROLE=` (the agent's /etc/eve/k3s-member.env, a literal block in its cloud-config):
#
#   eve-k3s-guest <user-data file>
#
# - eth0 up with DHCP (udhcpc; the instance's dnsmasq gives the VM its planned address);
# - init/server: a CA and a serving certificate for EVE_K3S_NODE_IP (EC P-256), an HTTPS
#   "Kubernetes API" on port 6443 (openssl s_server -WWW, files under $state/www; no auth: the
#   bearer token or client certificate a client sends is ignored) answering /api/v1/nodes (this
#   node, Ready, labelled as the config says) and /api/v1/pods (a few kube-system pods,
#   Running), and a kubeconfig as K3s writes it (server https://127.0.0.1:6443, the CA, a token
#   user) posted to the metadata server until it answers 200;
# - agent: the network only (a K3s agent serves no API and posts nothing).
#
# Console lines start with "eve-test-guest: ".  Nothing secret is printed: neither the cluster
# token (never read here) nor the kubeconfig's token.
set -u
seed_ud=$1
state=/run/eve-k3s
say() { echo "eve-test-guest: $*" >>/dev/console; }

# One EVE_K3S_* value from the user data, cut to the characters in $2 (no eval, no quoting
# games); the last one wins: the agent's cloud-config part comes after the controller's.
member() { sed -n "s/^[[:space:]]*$1=//p" "$seed_ud" | tail -n 1 | tr -cd "$2"; }

role=$(member EVE_K3S_ROLE 'a-z')
ip4=$(member EVE_K3S_NODE_IP '0-9.')
name=$(member EVE_K3S_NODE_NAME 'a-zA-Z0-9.-')
node_uuid=$(member EVE_K3S_NODE_UUID '0-9a-fA-F-')
cluster_id=$(member EVE_K3S_CLUSTER_ID '0-9a-fA-F-')
server=$(member EVE_K3S_SERVER 'a-zA-Z0-9.:/[]-')
case $role in
init | server | agent) ;;
*) say "k3s role '$role' unknown: not acting a cluster member"; exit 0 ;;
esac
[ -n "$name" ] || name=$(hostname)
say "k3s role $role on ${ip4:-?}${server:+, joining $server}"

# --- network ------------------------------------------------------------------------------------
mkdir -p "$state"
ip link set lo up
ip link set eth0 up 2>/dev/null || say "no eth0: no network"
# -f: stays, renews the lease; its own chatter stays off the console (the script says what counts).
udhcpc -f -i eth0 -s /etc/udhcpc.script -O staticroutes -t 5 -T 2 -A 3 >/dev/null 2>&1 &

[ "$role" = agent ] && { say "k3s agent: no API here (as a K3s agent), nothing to post"; exit 0; }

# --- TLS: a CA and the API's serving certificate ------------------------------------------------
cd "$state" || exit 1
umask 077
export OPENSSL_CONF=/etc/ssl/openssl.cnf RANDFILE=/dev/null
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# As K3s's serving certificate: the node's address as an IP SAN (and 127.0.0.1, localhost).
cat >server.ext <<EOF
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:${ip4:-127.0.0.1},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:$name
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EOF
serial=0x$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key &&
        openssl req -x509 -new -key ca.key -subj "/CN=eve-test-guest-ca@$name" -days 3650 \
            -extensions ca -out ca.crt &&
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key &&
        openssl req -new -key server.key -subj "/CN=kube-apiserver" -out server.csr &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial "$serial" \
            -days 365 -extfile server.ext -extensions ext -out server.crt
} >openssl.log 2>&1 || {
    say "k3s: cannot make the API's certificates"
    cat openssl.log >>/dev/console
    exit 1
}

# --- the API's answers --------------------------------------------------------------------------
mkdir -p www/api/v1
control=""
case $role in
init) control=',"node-role.kubernetes.io/control-plane":"true","node-role.kubernetes.io/master":"true","node-role.kubernetes.io/etcd":"true"' ;;
server) control=',"node-role.kubernetes.io/control-plane":"true","node-role.kubernetes.io/master":"true"' ;;
esac
cond() { printf '{"type":"%s","status":"%s","reason":"%s","lastHeartbeatTime":"%s","lastTransitionTime":"%s"}' "$1" "$2" "$3" "$now" "$now"; }
cat >www/api/v1/nodes <<EOF
{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
{"metadata":{"name":"$name","uid":"$node_uuid","creationTimestamp":"$now",
"labels":{"kubernetes.io/hostname":"$name","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","node-uuid":"$node_uuid","eve-cluster-id":"$cluster_id"$control}},
"spec":{"podCIDR":"10.42.0.0/24"},
"status":{"conditions":[$(cond MemoryPressure False KubeletHasSufficientMemory),$(cond DiskPressure False KubeletHasNoDiskPressure),$(cond PIDPressure False KubeletHasSufficientPID),$(cond Ready True KubeletReady)],
"addresses":[{"type":"InternalIP","address":"$ip4"},{"type":"Hostname","address":"$name"}],
"nodeInfo":{"kubeletVersion":"v1.30.0+eve-test-guest","kubeProxyVersion":"v1.30.0+eve-test-guest","kernelVersion":"$(uname -r)","osImage":"eve-test-guest (busybox)","containerRuntimeVersion":"none://eve-test-guest","operatingSystem":"linux","architecture":"amd64"}}}
]}
EOF
pod() { printf '{"metadata":{"name":"%s","namespace":"kube-system","creationTimestamp":"%s"},"spec":{"nodeName":"%s"},"status":{"phase":"Running","startTime":"%s"}}' "$1" "$now" "$name" "$now"; }
cat >www/api/v1/pods <<EOF
{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
$(pod coredns-6799fbcd5-eve01),
$(pod local-path-provisioner-6c86858495-eve01),
$(pod metrics-server-54fd9b65b-eve01)
]}
EOF
# /version, as kubectl asks it first.
echo '{"major":"1","minor":"30","gitVersion":"v1.30.0+eve-test-guest","platform":"linux/amd64"}' >www/version

# --- serve: openssl s_server -WWW answers GET /<path> with the file www/<path> (HTTP/1.0) --------
(
    cd www || exit 1
    while :; do
        openssl s_server -quiet -WWW -accept 6443 -cert ../server.crt -key ../server.key \
            </dev/null >/dev/null 2>&1
        sleep 1
    done
) &
say "k3s API on https://${ip4:-?}:6443 (CA $(openssl x509 -in ca.crt -noout -fingerprint -sha256 | cut -d= -f2 | cut -c1-23)...)"

# --- the kubeconfig, as K3s writes /etc/rancher/k3s/k3s.yaml, posted as EVE's K3s does ----------
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >k3s.yaml <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(base64 -w 0 ca.crt)
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {}
users:
- name: default
  user:
    token: $token
EOF
unset token
tries=0
while :; do
    tries=$((tries + 1))
    # -S: the status line, so only a 200 counts (a 204 says the server did not take it); no
    # wget -T: Debian's busybox-static 1.35 wget segfaults with it, `timeout` bounds it instead.
    status=$(timeout 15 wget -q -S -O /dev/null --header 'Content-Type: application/json' \
        --post-file k3s.yaml http://169.254.169.254/eve/v1/kubeconfig 2>&1 |
        sed -n '1s/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
    if [ "$status" = 200 ]; then
        say "kubeconfig posted (try $tries)"
        break
    fi
    [ $((tries % 10)) -eq 1 ] && say "kubeconfig not taken yet (${status:-no answer}), retrying"
    sleep 3
done
