#!/bin/busybox sh
# The test guest probing its network from inside (no cloud-init here): /init runs it, in the
# background, when the user data holds `EVE_PROBE_` lines:
#
#   EVE_PROBE_SERVE=8080              serve "<hostname> answers" over HTTP on that port (httpd)
#   EVE_PROBE_LOOKUP=ct-app           resolve the name through the DNS server the lease named
#   EVE_PROBE_GET=http://host:port/p  fetch the URL (first 160 bytes)
#   EVE_PROBE_TCP=a.b.c.d:port        connect, print what the server says (first 160 bytes)
#
# eth0 comes up by DHCP (udhcpc; its script sets the address, the default route and, from the
# lease, /etc/resolv.conf).  Each lookup and fetch is tried every 3 s until it answers, for at
# most 180 s; each answer is one console line:
#
#   eve-test-guest: probe lookup ct-app = 10.66.0.23
#   eve-test-guest: probe get http://... = <the answer on one line>
#   eve-test-guest: probe tcp a.b.c.d:port = <the answer on one line>
#
# and "probe done" (or "probe gave up: <what>") at the end.  Values are cut to harmless
# characters before use (no eval).
set -u
ud=$1
say() { echo "eve-test-guest: $*" >>/dev/console; }
values() { sed -n "s/^[[:space:]]*$1=//p" "$ud" | tr -cd "$2\n"; }

ip link set lo up
ip link set eth0 up 2>/dev/null || say "no eth0: no network"
udhcpc -f -i eth0 -s /etc/udhcpc.script -t 5 -T 2 -A 3 >/dev/null 2>&1 &

for port in $(values EVE_PROBE_SERVE '0-9'); do
    mkdir -p "/www/$port"
    echo "$(hostname) answers" >"/www/$port/index.html"
    httpd -p "$port" -h "/www/$port" && say "probe serving on $port"
done

lookups=$(values EVE_PROBE_LOOKUP 'a-zA-Z0-9.-')
gets=$(values EVE_PROBE_GET 'a-zA-Z0-9.:/_-')
tcps=$(values EVE_PROBE_TCP '0-9.:')
# One line of an answer, harmless characters only.
line() { head -c 160 | tr -c 'a-zA-Z0-9.:,{}"_ -' ' '; }
end=$(($(date +%s) + 180))
while [ -n "$lookups$gets$tcps" ] && [ "$(date +%s)" -lt "$end" ]; do
    left=""
    for name in $lookups; do
        server=$(sed -n 's/^nameserver //p' /etc/resolv.conf 2>/dev/null | head -n 1)
        got=""
        if [ -n "$server" ]; then
            # busybox nslookup: the answer's "Address: a.b.c.d" lines follow "Name:".
            got=$(nslookup "$name" "$server" 2>/dev/null | sed -n '/^Name:/,$s/^Address:* *\([0-9.]*\).*/\1/p' | head -n 1)
        fi
        if [ -n "$got" ]; then say "probe lookup $name = $got"; else left="$left $name"; fi
    done
    lookups=$left
    left=""
    # No wget -T: Debian's busybox-static 1.35 wget segfaults with it; `timeout` bounds it.
    for url in $gets; do
        if body=$(timeout 5 wget -q -O - "$url" 2>/dev/null); then
            say "probe get $url = $(echo "$body" | line)"
        else
            left="$left $url"
        fi
    done
    gets=$left
    left=""
    for target in $tcps; do
        body=$(timeout 5 nc "${target%:*}" "${target##*:}" </dev/null 2>/dev/null)
        if [ -n "$body" ]; then say "probe tcp $target = $(echo "$body" | line)"; else left="$left $target"; fi
    done
    tcps=$left
    [ -n "$lookups$gets$tcps" ] && sleep 3
done
if [ -n "$lookups$gets$tcps" ]; then
    say "probe gave up:$lookups$gets$tcps"
else
    say "probe done"
fi
