#!/bin/busybox sh
# The test guest acting a K3s cluster member at the guest boundary (no K3s binary here: see
# docs/clusters-node.md).  /init runs it, in the background, when the user data holds
# `EVE_K3S_ROLE=` (the agent's /etc/eve/k3s-member.env, a literal block in its cloud-config):
#
#   eve-k3s-guest <user-data file>
#
# - eth0 up with DHCP (udhcpc; the instance's dnsmasq gives the VM its planned address);
# - every role: a CA and a serving certificate for EVE_K3S_NODE_IP (EC P-256) and this node's
#   Kubernetes Node object (Ready, labelled as the config says) in $state/www/eve-node;
# - init/server: an HTTPS "Kubernetes API" on port 6443 (openssl s_server -WWW, files under
#   $state/www; no auth: the bearer token or client certificate a client sends is ignored)
#   answering /api/v1/nodes (this node and the members that joined it, see below) and
#   /api/v1/pods (a few kube-system pods, Running), and a kubeconfig as K3s writes it (server
#   https://127.0.0.1:6443, the CA, a token user) posted to the metadata server until it
#   answers 200;
# - joining (server, agent): the Node object served on the kubelet port 10250, and a join: GET
#   https://<EVE_K3S_SERVER>/eve-join/<own ip> until the server answers "joined", then again
#   every 10 s (the node's status, as a kubelet posts it); the init server, seeing that request
#   in its API's log, fetches https://<ip>:10250/eve-node and lists the node in /api/v1/nodes,
#   and marks it NotReady when its status stops for 30 s.  Both are packets between two
#   members' VMs across the cluster network, through both nodes' firewalls (6443 on the
#   server, 10250 on the joiner);
# - with EVE_K3S_MANIFEST_URL (servers; the controller's --manifest-url): the init server
#   fetches it (as K3s's auto-deploy directory would get it) and posts the result to the
#   metadata server as the app's custom status (/eve/v1/app/appCustomStatus), once.
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

# --- TLS: a CA and a serving certificate (the API's; a joiner's kubelet port's) -----------------
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

# --- this node's Node object ------------------------------------------------------------------
control=""
case $role in
init) control=',"node-role.kubernetes.io/control-plane":"true","node-role.kubernetes.io/master":"true","node-role.kubernetes.io/etcd":"true"' ;;
server) control=',"node-role.kubernetes.io/control-plane":"true","node-role.kubernetes.io/master":"true"' ;;
esac
cond() { printf '{"type":"%s","status":"%s","reason":"%s","lastHeartbeatTime":"%s","lastTransitionTime":"%s"}' "$1" "$2" "$3" "$now" "$now"; }
mkdir -p www
# One line: the init server splices joiners' lines into its node list.
{
    printf '{"metadata":{"name":"%s","uid":"%s","creationTimestamp":"%s",' "$name" "$node_uuid" "$now"
    printf '"labels":{"kubernetes.io/hostname":"%s","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","node-uuid":"%s","eve-cluster-id":"%s"%s}},' "$name" "$node_uuid" "$cluster_id" "$control"
    printf '"spec":{"podCIDR":"10.42.0.0/24"},'
    printf '"status":{"conditions":[%s,%s,%s,%s],' "$(cond MemoryPressure False KubeletHasSufficientMemory)" "$(cond DiskPressure False KubeletHasNoDiskPressure)" "$(cond PIDPressure False KubeletHasSufficientPID)" "$(cond Ready True KubeletReady)"
    printf '"addresses":[{"type":"InternalIP","address":"%s"},{"type":"Hostname","address":"%s"}],' "$ip4" "$name"
    printf '"nodeInfo":{"kubeletVersion":"v1.30.0+eve-test-guest","kubeProxyVersion":"v1.30.0+eve-test-guest","kernelVersion":"%s","osImage":"eve-test-guest (busybox)","containerRuntimeVersion":"none://eve-test-guest","operatingSystem":"linux","architecture":"amd64"}}}\n' "$(uname -r)"
} >www/eve-node

# serve PORT LOG: openssl s_server -WWW answers GET /<path> with the file www/<path> (HTTP/1.0),
# one connection at a time; LOG gets its "FILE:<path>" lines (what was asked).
serve() {
    (
        cd www || exit 1
        while :; do
            openssl s_server -WWW -accept "$1" -cert ../server.crt -key ../server.key \
                </dev/null >/dev/null 2>>"$2"
            sleep 1
        done
    ) &
}
# fetch HOST:PORT PATH: the body of https://HOST:PORT/PATH (the peer's certificate is not
# checked: a K3s joiner checks the server's CA by the token's hash, which the guest never reads).
fetch() {
    printf 'GET /%s HTTP/1.0\r\n\r\n' "$2" |
        timeout 10 openssl s_client -quiet -connect "$1" 2>/dev/null | sed '1,/^\r*$/d'
}

# --- joining (server, agent): the Node object on the kubelet port, then the join -----------------
if [ "$role" != init ]; then
    serve 10250 /dev/null
    joinee=${server#https://}
    joinee=${joinee%%/*}
    tries=0
    while :; do
        tries=$((tries + 1))
        if [ -n "$joinee" ] && [ "$(fetch "$joinee" "eve-join/$ip4")" = joined ]; then
            say "k3s $role joined $server (try $tries)"
            break
        fi
        [ $((tries % 10)) -eq 1 ] && say "k3s $role: $server does not answer yet, retrying"
        sleep 3
    done
    # Then the node's status every 10 s, as a kubelet posts it: the server marks a node that
    # stops NotReady, and lists again one it forgot (its VM restarted).
    (
        while :; do
            sleep 10
            fetch "$joinee" "eve-join/$ip4" >/dev/null
        done
    ) &
    [ "$role" = agent ] && { say "k3s agent: no API here (as a K3s agent), nothing to post"; exit 0; }
fi

# --- the API's answers --------------------------------------------------------------------------
mkdir -p www/api/v1 joined
# nodes: this node's object and the joiners' ($state/joined/<ip>, one line each).
list_nodes() {
    {
        printf '{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"%s"},"items":[\n' "$(ls joined | wc -l)"
        cat www/eve-node
        for f in joined/*[0-9]; do
            [ -s "$f" ] && { printf ','; cat "$f"; }
        done
        printf ']}\n'
    } >www/api/v1/nodes.new && mv www/api/v1/nodes.new www/api/v1/nodes
}
list_nodes
pod() { printf '{"metadata":{"name":"%s","namespace":"kube-system","creationTimestamp":"%s"},"spec":{"nodeName":"%s"},"status":{"phase":"Running","startTime":"%s"}}' "$1" "$now" "$name" "$now"; }
{
    printf '{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[\n'
    printf '%s,\n%s,\n%s\n]}\n' "$(pod coredns-6799fbcd5-eve01)" \
        "$(pod local-path-provisioner-6c86858495-eve01)" "$(pod metrics-server-54fd9b65b-eve01)"
} >www/api/v1/pods
# /version, as kubectl asks it first.
echo '{"major":"1","minor":"30","gitVersion":"v1.30.0+eve-test-guest","platform":"linux/amd64"}' >www/version

if [ "$role" = init ]; then
    # A join is a GET of eve-join/<ip> for an address of this /24 (the cluster prefix): the
    # files exist, so s_server answers "joined" and logs the path.
    mkdir -p www/eve-join
    net=${ip4%.*}
    i=1
    while [ $i -lt 255 ]; do
        echo joined >"www/eve-join/$net.$i"
        i=$((i + 1))
    done
    : >api.log
    serve 6443 "$PWD/api.log"
    # The joiners: their Node objects from their kubelet port, each listed once; one whose
    # status (its join request, every 10 s) stops for $grace s is marked NotReady (status
    # Unknown, as Kubernetes' node lifecycle controller does after its 40 s grace), and listed
    # Ready again when it comes back.
    grace=30
    mkdir -p seen
    (
        while :; do
            now_s=$(date +%s)
            sed -n 's|^FILE:eve-join/\([0-9.]*\)$|\1|p' api.log | sort | uniq -c >seen/counts
            while read -r count peer; do
                if [ "$(cat "seen/$peer" 2>/dev/null)" != "$count" ]; then
                    echo "$count" >"seen/$peer"
                    echo "$now_s" >"seen/$peer.at"
                    if [ -s "joined/$peer" ] && grep -q '"status":"Unknown"' "joined/$peer"; then
                        rm -f "joined/$peer" # back: fetched again below
                        say "k3s: the node at $peer posts its status again"
                    fi
                fi
                if [ ! -s "joined/$peer" ]; then
                    fetch "$peer:10250" eve-node | head -n 1 >"joined/$peer.new"
                    if grep -q '"node-uuid"' "joined/$peer.new"; then
                        mv "joined/$peer.new" "joined/$peer"
                        list_nodes
                        say "k3s: the node at $peer joined the cluster"
                    fi
                elif at=$(cat "seen/$peer.at" 2>/dev/null) && [ -n "$at" ] &&
                    [ $((now_s - at)) -gt $grace ] &&
                    grep -q '"status":"True","reason":"KubeletReady"' "joined/$peer"; then
                    sed 's/"status":"True","reason":"KubeletReady"/"status":"Unknown","reason":"NodeStatusUnknown"/' \
                        "joined/$peer" >"joined/$peer.new" && mv "joined/$peer.new" "joined/$peer"
                    list_nodes
                    say "k3s: the node at $peer stopped posting its status: NotReady"
                fi
            done <seen/counts
            sleep 2
        done
    ) &
else
    serve 6443 /dev/null
fi
say "k3s API on https://${ip4:-?}:6443 (CA $(openssl x509 -in ca.crt -noout -fingerprint -sha256 | cut -d= -f2 | cut -c1-23)...)"

# --- the manifest URL (the controller's --manifest-url), applied once, from the init server ------
# K3s applies what is in its auto-deploy directory; the guest fetches the URL as the K3s VM's
# bootcmd does, keeps it as $state/manifest.yaml, and posts the result as the app's custom
# status (EVE's metadata server path /eve/v1/app/appCustomStatus; the node reports it to the
# controller as app instance metadata, the controller records it in the cluster's history).
manifest=$(member EVE_K3S_MANIFEST_URL 'a-zA-Z0-9.:/?&=%_~+#@!$,;-')
if [ "$role" = init ] && [ -n "$manifest" ]; then
    (
        tries=0
        while :; do
            tries=$((tries + 1))
            got=$(timeout 15 wget -q -S -O manifest.yaml "$manifest" 2>&1 |
                sed -n 's/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -n 1)
            if [ "$got" = 200 ] && [ -s manifest.yaml ]; then
                result=applied detail="$(wc -c <manifest.yaml | tr -d ' ') bytes"
                break
            fi
            # An answer with an error is final; no answer is retried (60 x 3 s).
            if [ -n "$got" ] || [ $tries -ge 60 ]; then
                result=failed detail="HTTP ${got:-no answer}"
                break
            fi
            sleep 3
        done
        hash=$(printf %s "$manifest" | sha256sum | cut -c1-64)
        printf '{"eve-cluster-manifest":{"result":"%s","detail":"%s","url-sha256":"%s"}}' \
            "$result" "$detail" "$hash" >manifest.status
        say "k3s: manifest $result ($detail)"
        tries=0
        while :; do
            tries=$((tries + 1))
            status=$(timeout 15 wget -q -S -O /dev/null --header 'Content-Type: application/json' \
                --post-file manifest.status http://169.254.169.254/eve/v1/app/appCustomStatus 2>&1 |
                sed -n '1s/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
            [ "$status" = 200 ] && { say "manifest status posted (try $tries)"; break; }
            sleep 3
        done
    ) &
fi

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
