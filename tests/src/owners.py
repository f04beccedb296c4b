"""Real clients whose TCP socket changes owner, for apptag's owner-change tests.

Every data segment a party sends names its sender: "pid=P tid=T n=N" from a client,
"pid=P tid=T for=P2,T2 n=N" from the server (P2, T2: the client task it answers), so the
test knows the task behind each packet from the packet itself. Each send waits for its
answer (TCP_NODELAY), so one send is one segment.

  owners.py server HOST 'PORT COUNT'        serve COUNT connections, then exit
  owners.py fork|scm|threads HOST PORT      one connection that changes owner
  owners.py late-rst HOST PORT              RSTs sent after the process closed its sockets
  owners.py udp-server HOST 'PORT COUNT'    answer COUNT datagrams
  owners.py udp-fork HOST PORT              a connected UDP socket that parent and child share
Prints key=value lines: listen, parent, child, thread, local.
"""
import os
import socket
import sys
import threading
import time


def say(k, v):
    print(f"{k}={v}", flush=True)


def me():
    return os.getpid(), threading.get_native_id()


def ask(s, n):
    pid, tid = me()
    s.sendall(f"pid={pid} tid={tid} n={n}\n".encode())
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            raise SystemExit("server closed early")
        buf += d
    return buf


def connect(host, port):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    say("local", s.getsockname()[1])
    return s


def answer(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        try:
            d = c.recv(4096)
        except OSError:
            break
        if not d:
            break
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            f = dict(kv.split("=", 1) for kv in line.decode().split())
            if f.get("late"):
                # Answer long after the client closed: its kernel resets the connection.
                time.sleep(float(f["late"]))
            pid, tid = me()
            try:
                c.sendall(f"pid={pid} tid={tid} for={f['pid']},{f['tid']} n={f['n']}\n".encode())
            except OSError:
                return
    c.close()


def serve(host, port, count):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(16)
    say("listen", f"{host}:{port}")
    workers = []
    for _ in range(count):
        c, _ = l.accept()
        t = threading.Thread(target=answer, args=(c,))
        t.start()
        workers.append(t)
    for t in workers:
        t.join()
    l.close()


def udp_serve(host, port, count):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((host, port))
    say("listen", f"{host}:{port}")
    for _ in range(count):
        d, peer = u.recvfrom(4096)
        f = dict(kv.split("=", 1) for kv in d.decode().split())
        pid, tid = me()
        u.sendto(f"pid={pid} tid={tid} for={f['pid']},{f['tid']} n={f['n']}\n".encode(), peer)
    u.close()


def udp_ask(s, n):
    pid, tid = me()
    s.send(f"pid={pid} tid={tid} n={n}\n".encode())
    s.settimeout(10)
    return s.recv(4096)


def udp_fork(host, port):
    # A connected UDP socket: parent, child, parent send in turn.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    say("local", s.getsockname()[1])
    say("parent", os.getpid())
    udp_ask(s, 1)
    pid = os.fork()
    if pid == 0:
        udp_ask(s, 2)
        os._exit(0)
    say("child", pid)
    os.waitpid(pid, 0)
    udp_ask(s, 3)
    s.close()


def fork_turns(host, port):
    # Parent connects and asks, the child asks, the parent asks again: every turn is a
    # change of owner, the first right after the fork.
    s = connect(host, port)
    say("parent", os.getpid())
    ask(s, 1)
    pid = os.fork()
    if pid == 0:
        ask(s, 2)
        os._exit(0)
    say("child", pid)
    os.waitpid(pid, 0)
    ask(s, 3)
    s.close()


def scm(host, port):
    # The receiver exists before the socket, so only fd passing can give it the socket.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        a.close()
        _, fds, _, _ = socket.recv_fds(b, 16, 1)
        s = socket.socket(fileno=fds[0])
        ask(s, 2)
        ask(s, 3)
        s.close()
        os._exit(0)
    b.close()
    say("parent", os.getpid())
    say("child", pid)
    s = connect(host, port)
    ask(s, 1)
    socket.send_fds(a, [b"x"], [s.fileno()])
    s.close()
    os.waitpid(pid, 0)


def threads(host, port):
    s = connect(host, port)
    say("parent", os.getpid())
    ask(s, 0)
    turn = [threading.Event(), threading.Event()]

    def worker(i):
        say("thread", threading.get_native_id())
        for n in range(3):
            turn[i].wait()
            turn[i].clear()
            ask(s, 1 + 2 * n + i)
            turn[1 - i].set()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    turn[0].set()
    for t in ts:
        t.join()
    s.close()


def late_rst(host, port):
    say("parent", os.getpid())
    # Data arriving after close: the kernel answers with a RST long after the close.
    s = connect(host, port)
    pid, tid = me()
    s.sendall(f"pid={pid} tid={tid} n=1 late=6\n".encode())
    s.close()
    # Close with unread data: the close itself sends a RST.
    s = connect(host, port)
    ask(s, 2)
    s.sendall(f"pid={pid} tid={tid} n=3\n".encode())
    time.sleep(0.3)
    s.close()


# The test harness passes "PORT" or "PORT COUNT" as one argument.
mode, host, rest = sys.argv[1], sys.argv[2], sys.argv[3].split() + sys.argv[4:]
port = int(rest[0])
if mode == "server":
    serve(host, port, int(rest[1]) if len(rest) > 1 else 1)
elif mode == "udp-server":
    udp_serve(host, port, int(rest[1]) if len(rest) > 1 else 1)
elif mode == "udp-fork":
    udp_fork(host, port)
elif mode == "fork":
    fork_turns(host, port)
elif mode == "scm":
    scm(host, port)
elif mode == "threads":
    threads(host, port)
elif mode == "late-rst":
    late_rst(host, port)
else:
    raise SystemExit(f"unknown mode {mode}")
