//! Parser behaviour on byte streams fed as the driver feeds them, segment by segment.
use super::tests_support::run;
use crate::analysis::stream::Dir::{Forward as C, Reverse as S};

fn has(out: &[String], needle: &str) -> bool {
    out.iter().any(|l| l.contains(needle))
}

#[test]
fn http_pipelined_requests_split_across_segments_are_each_reported_once_whole() {
    // Break: emitting the request line before the head is complete reports frame 1's
    // half line, or the second request twice.
    let out = run(
        8080,
        &[
            (C, b"GET /a HTTP/1.1\r\nHost: x\r"),
            (C, b"\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n"),
            (S, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n"),
        ],
        false,
    );
    let reqs: Vec<_> = out.iter().filter(|l| l.contains("HttpRequest")).collect();
    assert_eq!(reqs.len(), 2, "{out:#?}");
    assert!(reqs[0].starts_with("1 Forward") && reqs[0].contains("\"/a\""));
    assert!(reqs[1].starts_with("2 Forward") && reqs[1].contains("\"/b\""));
    assert!(has(&out, "code: 200") && has(&out, "code: 404"));
    assert!(has(&out, "HttpBody { \"abc\""));
}

#[test]
fn http_invalid_request_line_reports_nothing() {
    // Break: reporting the request before validating the version reports "/x".
    let out = run(80, &[(C, b"GET /x HTTX/9\r\nHost: a\r\n\r\n")], false);
    assert!(!has(&out, "HttpRequest"), "{out:#?}");
}

#[test]
fn http_on_port_6667_is_http() {
    let out = run(6667, &[(C, b"GET /irc HTTP/1.0\r\n\r\n")], false);
    assert!(has(&out, "uri: \"/irc\""), "{out:#?}");
}

#[test]
fn http_chunked_body_and_100_continue() {
    // Break: popping the request at a 1xx response makes the final 200 lose its
    // request, and treating the chunk size as decimal reads "1a" wrong.
    let out = run(
        80,
        &[
            (C, b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"),
            (S, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (C, b"hi"),
            (S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
            (C, b"HEAD / HTTP/1.1\r\n\r\n"),
            (S, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
            (C, b"GET /after-head HTTP/1.1\r\n\r\n"),
        ],
        false,
    );
    assert!(
        has(&out, "code: 100") && has(&out, "3 Forward: HttpBody { \"hi\""),
        "{out:#?}"
    );
    assert!(has(&out, "\"abcdefghijklmnopqrstuvwxyz\""), "{out:#?}");
    assert!(has(&out, "HttpEnd { body_bytes: 26 }"), "{out:#?}");
    // The HEAD response has no body despite its Content-Length.
    assert!(has(&out, "uri: \"/after-head\""), "{out:#?}");
}

#[test]
fn http_gzip_bodies_are_decoded_for_sinks_that_ask() {
    // Break: not decoding (or decoding for every sink) fails one of the two checks.
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"hello, decoded world").unwrap();
    let body = gz.finish().unwrap();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let segs: [(crate::analysis::Dir, &[u8]); 2] = [(C, b"GET / HTTP/1.1\r\n\r\n"), (S, &resp)];
    let out = run(80, &segs, true);
    assert!(
        has(&out, "\"hello, decoded world\", decoded: true"),
        "{out:#?}"
    );
    let out = run(80, &segs, false);
    assert!(!has(&out, "decoded: true"), "{out:#?}");
}

#[test]
fn http_absurd_lengths_and_huge_heads_stop_the_direction_without_growth() {
    // Break: removing the MAX_BUFFER check keeps the endless head (the test then sees no
    // second stream direction stop, and memory grows with the input).
    let out = run(
        80,
        &[(
            C,
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        )],
        false,
    );
    assert!(!has(&out, "HttpRequest"), "{out:#?}");
    let line = vec![b'a'; 70_000];
    let mut segs: Vec<(crate::analysis::Dir, &[u8])> = vec![(C, b"GET / HTTP/1.1\r\nX: ")];
    segs.push((C, &line));
    segs.push((C, b"\r\n\r\nGET /never HTTP/1.1\r\n\r\n"));
    let out = run(80, &segs, false);
    assert!(!has(&out, "/never"), "{out:#?}");
}

#[test]
fn ftp_login_and_passive_data_link() {
    let out = run(
        21,
        &[
            (S, b"220 FTP ready\r\n"),
            (C, b"USER alice\r\n"),
            (S, b"331 pw\r\n"),
            (C, b"PASS s3cret\r\n"),
            (S, b"230-Welcome\r\n more\r\n230 ok\r\n"),
        ],
        false,
    );
    assert!(
        has(
            &out,
            "4 Forward: Login { mechanism: \"USER/PASS\", user: \"alice\", password: Some(\"s3cret\")"
        ),
        "{out:#?}"
    );
    // A multi-line reply is one response.
    assert_eq!(
        out.iter().filter(|l| l.contains("code: 230")).count(),
        1,
        "{out:#?}"
    );
}

#[test]
fn smtp_auth_login_plain_mail_and_bdat() {
    // Break: counting BDAT's length from the command line's start (or not at all) makes
    // "MAIL FROM:<b@x>" part of the message instead of a command.
    let out = run(
        2525,
        &[
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO me\r\n"),
            (C, b"AUTH LOGIN\r\n"),
            (C, b"dXNlcg==\r\n"),
            (C, b"cGFzcw==\r\n"),
            (C, b"AUTH PLAIN AHUyAHB3Mg==\r\n"),
            (
                C,
                b"MAIL FROM:<a@x>\r\nRCPT TO:<r@y>\r\nBDAT 21 LAST\r\nSubject: hi\r\n\r\nbody\r\n",
            ),
            (C, b"MAIL FROM:<b@x>\r\nDATA\r\n"),
            (C, b"From: z\r\n\r\n..not end\r\n.\r\nQUIT\r\n"),
        ],
        false,
    );
    assert!(
        has(
            &out,
            "5 Forward: Login { mechanism: \"LOGIN\", user: \"user\", password: Some(\"pass\")"
        ),
        "{out:#?}"
    );
    assert!(
        has(
            &out,
            "Login { mechanism: \"PLAIN\", user: \"u2\", password: Some(\"pw2\")"
        ),
        "{out:#?}"
    );
    assert!(
        has(&out, "SmtpHeader { name: \"Subject\", value: \"hi\" }"),
        "{out:#?}"
    );
    assert!(
        has(
            &out,
            "8 Forward: SmtpRequest { command: \"MAIL\", parameter: \"FROM:<b@x>\" }"
        ),
        "{out:#?}"
    );
    assert!(
        has(&out, "SmtpHeader { name: \"From\", value: \"z\" }"),
        "{out:#?}"
    );
    assert!(has(&out, "SmtpRequest { command: \"QUIT\""), "{out:#?}");
    assert!(!has(&out, "command: \"..not"), "{out:#?}");
}

#[test]
fn pop3_and_imap_logins() {
    let out = run(
        110,
        &[
            (S, b"+OK hi\r\n"),
            (
                C,
                b"USER bob\r\nPASS pw\r\nAPOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
            ),
        ],
        false,
    );
    assert!(
        has(
            &out,
            "Login { mechanism: \"USER/PASS\", user: \"bob\", password: Some(\"pw\")"
        ),
        "{out:#?}"
    );
    assert!(
        has(
            &out,
            "Login { mechanism: \"APOP\", user: \"mrose\", password: None"
        ),
        "{out:#?}"
    );
    let out = run(
        143,
        &[
            (S, b"* OK IMAP4rev1\r\n"),
            (C, b"a1 LOGIN \"fred\" \"x y\"\r\n"),
            (S, b"a1 OK done\r\n"),
            (C, b"a2 AUTHENTICATE PLAIN\r\n"),
            (S, b"+ \r\n"),
            (C, b"AGppbQBzZWNyZXQ=\r\n"),
        ],
        false,
    );
    assert!(
        has(
            &out,
            "Login { mechanism: \"LOGIN\", user: \"fred\", password: Some(\"x y\")"
        ),
        "{out:#?}"
    );
    assert!(
        has(
            &out,
            "Login { mechanism: \"PLAIN\", user: \"jim\", password: Some(\"secret\")"
        ),
        "{out:#?}"
    );
    assert!(
        has(&out, "ImapResponse { tag: \"a1\", status: \"OK\" }"),
        "{out:#?}"
    );
}

#[test]
fn dns_over_tcp_reads_the_length_prefix_across_segments() {
    // Break: reading the message without waiting for the 2-byte length's full message
    // reports a truncated or no query.
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    let (a, b) = framed.split_at(7);
    let out = run(53, &[(C, a), (C, b)], false);
    assert!(
        has(
            &out,
            "1 Forward: DnsQuery { id: 4660, response: false, name: \"example.com\", qtype: 1 }"
        ),
        "{out:#?}"
    );
}

#[test]
fn tls_client_hello_sni_and_alpn_and_lying_lengths() {
    // A ClientHello with SNI "a.example" and ALPN h2, http/1.1.
    let sni = b"a.example";
    let mut ext = Vec::new();
    let mut sn = vec![0u8];
    sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sn.extend_from_slice(sni);
    let mut snl = (sn.len() as u16).to_be_bytes().to_vec();
    snl.extend_from_slice(&sn);
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&(snl.len() as u16).to_be_bytes());
    ext.extend_from_slice(&snl);
    let alpn = b"\x02h2\x08http/1.1";
    ext.extend_from_slice(&[0, 16]);
    ext.extend_from_slice(&((alpn.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(alpn.len() as u16).to_be_bytes());
    ext.extend_from_slice(alpn);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    let (a, b) = rec.split_at(20);
    let out = run(9443, &[(C, a), (C, b)], false);
    assert!(
        has(
            &out,
            "sni: Some(\"a.example\"), alpn: [\"h2\", \"http/1.1\"]"
        ),
        "{out:#?}"
    );
    // A record claiming 65535 bytes is refused, not waited for.
    let out = run(443, &[(C, &[0x16, 3, 1, 0xff, 0xff, 1, 0, 0, 0])], false);
    assert!(out.is_empty());
}

#[test]
fn ssh_banners_both_ways() {
    let out = run(
        22,
        &[(S, b"SSH-2.0-OpenSSH_9.6\r\n"), (C, b"SSH-2.0-client\r\n")],
        false,
    );
    assert!(
        has(
            &out,
            "Reverse: SshBanner { banner: \"SSH-2.0-OpenSSH_9.6\" }"
        ),
        "{out:#?}"
    );
    assert!(
        has(&out, "Forward: SshBanner { banner: \"SSH-2.0-client\" }"),
        "{out:#?}"
    );
}
