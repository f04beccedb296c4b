//! Traffic maker for the integration tests: each scenario is one real process doing one
//! kind of socket work, printing `key=value` lines (its local address, pids, tids) so the
//! test can assert exactly which process apptag should name.
//!
//! Usage: apptag-traffic SCENARIO ADDR [ARG]
use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

fn tid() -> i64 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn say(k: &str, v: impl std::fmt::Display) {
    println!("{k}={v}");
    let _ = std::io::stdout().flush();
}

fn wait_stdin() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: apptag-traffic SCENARIO ADDR [ARG]");
        std::process::exit(2);
    }
    let addr: SocketAddr = match args[2].parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bad address {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let arg = args.get(3).cloned().unwrap_or_default();
    say("pid", std::process::id());
    say("tid", tid());
    if let Err(e) = run(&args[1], addr, &arg) {
        eprintln!("apptag-traffic {}: {e}", args[1]);
        std::process::exit(1);
    }
}

fn run(scenario: &str, addr: SocketAddr, arg: &str) -> std::io::Result<()> {
    match scenario {
        // Connect, send one message, read the echo, exit: as short-lived as it gets.
        // With ARG `wait`, connect only after a line on stdin (a process that exists before
        // a capture starts, whose connection starts after).
        "tcp-client" => {
            if arg == "wait" {
                wait_stdin();
            }
            let mut s = TcpStream::connect(addr)?;
            say("local", s.local_addr()?);
            s.write_all(b"hello")?;
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf)?;
        }
        // Accept one connection, echo what it sends, exit.
        "tcp-server" => {
            let l = TcpListener::bind(addr)?;
            say("listen", l.local_addr()?);
            let (mut s, peer) = l.accept()?;
            say("peer", peer);
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            s.write_all(&buf[..n])?;
            let _ = s.read(&mut buf);
        }
        "udp-send" => {
            let s = UdpSocket::bind(source_for(addr))?;
            say("local", s.local_addr()?);
            for _ in 0..count(arg) {
                s.send_to(b"ping", addr)?;
            }
        }
        "udp-connected" => {
            let s = UdpSocket::bind(source_for(addr))?;
            s.connect(addr)?;
            say("local", s.local_addr()?);
            for _ in 0..count(arg) {
                s.send(b"ping")?;
            }
        }
        // Send ARG datagrams, then stay until one answer arrives (the socket lives for
        // all of its traffic).
        "udp-ping" => {
            let s = UdpSocket::bind(source_for(addr))?;
            say("local", s.local_addr()?);
            for _ in 0..count(arg) {
                s.send_to(b"ping", addr)?;
            }
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = [0u8; 64];
            let (n, peer) = s.recv_from(&mut buf)?;
            say("reply", format!("{n},{peer}"));
        }
        // Bind, report, receive one datagram and answer it.
        "udp-recv" => {
            let s = UdpSocket::bind(addr)?;
            say("listen", s.local_addr()?);
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = [0u8; 64];
            let (n, peer) = s.recv_from(&mut buf)?;
            s.send_to(&buf[..n], peer)?;
        }
        "sendmmsg" => sendmmsg(addr, count(arg))?,
        // Connect in the parent, fork; only the child sends.
        "fork-send" => {
            let mut s = TcpStream::connect(addr)?;
            say("local", s.local_addr()?);
            // SAFETY: single-threaded process; the child only writes and exits.
            let child = unsafe { libc::fork() };
            if child < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if child == 0 {
                let _ = s.write_all(b"from child");
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
                // SAFETY: leave without running the parent's atexit handlers twice.
                unsafe { libc::_exit(0) };
            }
            say("child", child);
            let mut status = 0;
            // SAFETY: valid child pid and status pointer.
            unsafe { libc::waitpid(child, &mut status, 0) };
        }
        // Two threads, each with its own connection.
        "threads" => {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    std::thread::spawn(move || -> std::io::Result<(i64, SocketAddr)> {
                        let mut s = TcpStream::connect(addr)?;
                        s.write_all(b"thread")?;
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf)?;
                        Ok((tid(), s.local_addr()?))
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(Ok((t, local))) => say("thread", format!("{t},{local}")),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(std::io::Error::other("thread panicked")),
                }
            }
        }
        // Connect now, send only after a line on stdin (lets a test start apptag between).
        "hold" => {
            let mut s = TcpStream::connect(addr)?;
            say("local", s.local_addr()?);
            wait_stdin();
            s.write_all(b"late")?;
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf)?;
        }
        // Send a file over TCP with sendfile(2): no write() ever names the socket, and the
        // sender is a child that neither created nor connected it.
        "sendfile" => {
            use std::os::fd::AsRawFd;
            let s = TcpStream::connect(addr)?;
            say("local", s.local_addr()?);
            let path = std::env::temp_dir().join(format!("apptag-sendfile-{}", std::process::id()));
            std::fs::write(&path, vec![b'x'; 4096])?;
            let f = std::fs::File::open(&path)?;
            let _ = std::fs::remove_file(&path);
            in_child(|| {
                // SAFETY: valid fds; a null offset uses the file position.
                let n = unsafe {
                    libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), std::ptr::null_mut(), 4096)
                };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                say("sent", n);
                Ok(())
            })?;
        }
        // Move data from a pipe into the socket with splice(2): no send() names the socket,
        // and the sender is a child that neither created nor connected it.
        "splice" => {
            use std::os::fd::AsRawFd;
            let s = TcpStream::connect(addr)?;
            say("local", s.local_addr()?);
            let mut fds = [0i32; 2];
            // SAFETY: fds has room for the two descriptors pipe(2) returns.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let data = [b's'; 512];
            // SAFETY: valid fd and buffer.
            let w = unsafe { libc::write(fds[1], data.as_ptr().cast(), data.len()) };
            if w < 0 {
                return Err(std::io::Error::last_os_error());
            }
            in_child(|| {
                // SAFETY: valid fds; null offsets for a pipe and a socket.
                let n = unsafe {
                    libc::splice(
                        fds[0],
                        std::ptr::null_mut(),
                        s.as_raw_fd(),
                        std::ptr::null_mut(),
                        data.len(),
                        0,
                    )
                };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                say("sent", n);
                Ok(())
            })?;
            // SAFETY: our own pipe fds.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
        // One ICMP echo request through a raw socket (ping without ping).
        "icmp-raw" => icmp_raw(addr)?,
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown scenario {other}"),
            ));
        }
    }
    Ok(())
}

fn icmp_raw(addr: SocketAddr) -> std::io::Result<()> {
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("icmp-raw takes an IPv4 address"));
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Echo request, id 0x4242, seq 1, with its checksum.
    let mut pkt = [
        8u8, 0, 0, 0, 0x42, 0x42, 0, 1, b'a', b'p', b'p', b't', b'a', b'g', 0, 0,
    ];
    let sum = pkt
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: valid buffer and address of the stated sizes.
    let r = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    say("sent", r);
    Ok(())
}

/// Where a UDP sender binds: loopback for a loopback peer (the attribution tests look its
/// socket up by that exact address), any address otherwise so the kernel can route to a
/// namespace peer.
fn source_for(addr: SocketAddr) -> &'static str {
    match (addr.is_ipv4(), addr.ip().is_loopback()) {
        (true, true) => "127.0.0.1:0",
        (true, false) => "0.0.0.0:0",
        (false, true) => "[::1]:0",
        (false, false) => "[::]:0",
    }
}

fn count(arg: &str) -> usize {
    arg.parse().unwrap_or(1)
}

fn sendmmsg(addr: SocketAddr, n: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind(source_for(addr))?;
    s.connect(addr)?;
    say("local", s.local_addr()?);
    let mut payload = *b"mmsg";
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..n.max(1))
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // The parent created and connected the socket; a child sends, so only a hook that
    // sees the send itself can name the sender.
    in_child(|| {
        // SAFETY: msgs points to len valid headers whose iovecs outlive the call.
        let r = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        say("sent", r);
        Ok(())
    })
}

/// Runs `f` in a forked child, prints `child=PID` and waits for it. The child ends with
/// `_exit`, so nothing of the parent runs twice.
fn in_child(f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    // SAFETY: this process is single-threaded; the child runs `f` and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child: {e}");
                1
            }
        };
        // SAFETY: leave without running the parent's atexit handlers twice.
        unsafe { libc::_exit(code) };
    }
    say("child", child);
    let mut status = 0;
    // SAFETY: valid child pid and status pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    if status != 0 {
        return Err(std::io::Error::other(format!("child exited with {status}")));
    }
    Ok(())
}
