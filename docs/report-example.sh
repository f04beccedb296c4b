#!/bin/bash
# Makes the capture behind docs/report-example.svg: a few applications talking over loopback
# while apptag captures them (run as root from a scratch directory; about 20 s).
#   APPTAG=target/release/apptag docs/report-example.sh && apptag report demo.pcapng --plot demo.svg
set -u
APPTAG=${APPTAG:-apptag}
head -c 3000000 /dev/urandom > blob.bin
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 \
    -subj "/CN=shop.example" 2>/dev/null
python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 & HTTP=$!
iperf3 -s -1 -B 127.0.0.1 -p 5201 >/dev/null 2>&1 & IPERF=$!
openssl s_server -accept 127.0.0.1:8443 -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 & TLS=$!
socat -u UDP-RECV:5300,bind=127.0.0.1 /dev/null & UDPSRV=$!
sleep 1
"$APPTAG" -i lo -w demo.pcapng --duration 14 'port 8000 or port 5201 or port 8443 or port 5300' & CAP=$!
sleep 2
for i in $(seq 1 6); do curl -s -o /dev/null http://127.0.0.1:8000/blob.bin; sleep 0.5; done &
sleep 2
iperf3 -c 127.0.0.1 -p 5201 -t 3 -b 40M >/dev/null 2>&1 &
for i in $(seq 1 8); do
    curl -sk -o /dev/null --resolve shop.example:8443:127.0.0.1 https://shop.example:8443/
    sleep 0.7
done &
python3 - <<'PY' &
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(200):
    s.sendto(b"telemetry %d " % i + b"x" * 500, ("127.0.0.1", 5300))
    time.sleep(0.04)
PY
wait $CAP
kill $HTTP $IPERF $TLS $UDPSRV 2>/dev/null
wait 2>/dev/null
rm -f blob.bin key.pem cert.pem
