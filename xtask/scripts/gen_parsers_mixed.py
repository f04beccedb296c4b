# Mixed protocol capture for a parser throughput figure: HTTP, DNS, FTP, SMTP, TLS streams.
import struct, sys
out = open(sys.argv[1], 'wb')
n = int(sys.argv[2])
out.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
t = [1_700_000_000, 0]
def pkt(src, dst, proto, sport, dport, payload, seq=0, ack=0, flags=0x18):
    t[1] += 10
    if proto == 6:
        l4 = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    else:
        l4 = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4) + len(payload), 0, 0, 64, proto, 0, bytes(src), bytes(dst))
    frame = b'\x02' * 6 + b'\x04' * 6 + b'\x08\x00' + ip + l4 + payload
    out.write(struct.pack('<IIII', t[0] + t[1] // 1_000_000, t[1] % 1_000_000, len(frame), len(frame)))
    out.write(frame)
def tcp(c, s, cp, sp, msgs):
    cs, ss = 1000, 5000
    pkt(c, s, 6, cp, sp, b'', cs, 0, 0x02); cs += 1
    pkt(s, c, 6, sp, cp, b'', ss, cs, 0x12); ss += 1
    for to_server, m in msgs:
        if to_server:
            pkt(c, s, 6, cp, sp, m, cs, ss); cs += len(m)
        else:
            pkt(s, c, 6, sp, cp, m, ss, cs); ss += len(m)
    pkt(c, s, 6, cp, sp, b'', cs, ss, 0x11); pkt(s, c, 6, sp, cp, b'', ss, cs + 1, 0x11)
body = b'x' * 1200
for i in range(n):
    c = [10, 1, (i >> 8) & 255, i & 255]; s = [192, 0, 2, i % 200 + 1]
    cp = 20000 + i % 40000
    k = i % 5
    if k == 0:
        tcp(c, s, cp, 80, [(1, b'GET /item/%d HTTP/1.1\r\nHost: h%d.example\r\nUser-Agent: gen\r\n\r\n' % (i, i % 97)),
                          (0, b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(body) + body)])
    elif k == 1:
        q = struct.pack('!HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + b'\x03www\x04n%03d\x07example\x00\x00\x01\x00\x01' % (i % 1000)
        pkt(c, s, 17, cp, 53, q)
        a = struct.pack('!HHHHHH', i & 0xffff, 0x8180, 1, 1, 0, 0) + q[12:] + b'\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04' + bytes(s)
        pkt(s, c, 17, 53, cp, a)
    elif k == 2:
        tcp(c, s, cp, 21, [(0, b'220 FTP ready\r\n'), (1, b'USER u%d\r\n' % i), (0, b'331 pw\r\n'), (1, b'PASS p%d\r\n' % i), (0, b'230 ok\r\n'), (1, b'QUIT\r\n'), (0, b'221 bye\r\n')])
    elif k == 3:
        tcp(c, s, cp, 25, [(0, b'220 mx ESMTP\r\n'), (1, b'EHLO c\r\n'), (0, b'250 ok\r\n'), (1, b'MAIL FROM:<a%d@x>\r\n' % i), (0, b'250 ok\r\n'),
                          (1, b'RCPT TO:<r@y>\r\n'), (0, b'250 ok\r\n'), (1, b'DATA\r\n'), (0, b'354 go\r\n'), (1, b'Subject: s\r\n\r\n' + body + b'\r\n.\r\n'), (0, b'250 ok\r\n')])
    else:
        sni = b'tls%d.example' % (i % 300)
        ext = struct.pack('!HHHBH', 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
        hello = b'\x03\x03' + b'\x00' * 32 + b'\x00' + b'\x00\x02\x13\x01' + b'\x01\x00' + struct.pack('!H', len(ext)) + ext
        hs = b'\x01' + struct.pack('!I', len(hello))[1:] + hello
        tcp(c, s, cp, 443, [(1, b'\x16\x03\x01' + struct.pack('!H', len(hs)) + hs), (0, b'\x17\x03\x03\x00\x10' + b'z' * 16)])
