//! The engines fleets run, started by the tests on loopback and stopped on drop: Debian's
//! ClickHouse server, and Python (pyspark, communityid, jsonschema) for Spark and the
//! reference implementations.
use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::sensor::{ChildGuard, TempDir};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

const CLICKHOUSE_SERVER: &str = "/usr/sbin/clickhouse-server";

/// A ClickHouse server of its own: data in a temporary directory, HTTP on a loopback port.
pub struct ClickHouse {
    pub port: u16,
    dir: TempDir,
    server: Option<ChildGuard>,
}

impl ClickHouse {
    pub fn start(name: &str) -> Self {
        assert!(
            Path::new(CLICKHOUSE_SERVER).is_file(),
            "{CLICKHOUSE_SERVER} missing: run `cargo xtask setup` (Debian's clickhouse-server)"
        );
        let dir = TempDir::new(&format!("clickhouse-{name}"));
        let port = free_port();
        let d = dir.path.display();
        std::fs::write(
            dir.file("config.xml"),
            format!(
                "<?xml version=\"1.0\"?>\n<yandex>\n\
                 <logger><level>warning</level><console>1</console></logger>\n\
                 <http_port>{port}</http_port>\n<listen_host>127.0.0.1</listen_host>\n\
                 <path>{d}/data/</path>\n<tmp_path>{d}/tmp/</tmp_path>\n\
                 <users_config>{d}/users.xml</users_config>\n\
                 <default_profile>default</default_profile>\n\
                 <default_database>default</default_database>\n<timezone>UTC</timezone>\n\
                 <mark_cache_size>5368709</mark_cache_size>\n</yandex>\n"
            ),
        )
        .expect("write config.xml");
        std::fs::write(
            dir.file("users.xml"),
            "<?xml version=\"1.0\"?>\n<yandex>\n<profiles><default></default></profiles>\n\
             <users><default><password></password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\n\
             <quotas><default></default></quotas>\n</yandex>\n",
        )
        .expect("write users.xml");
        let mut ch = Self {
            port,
            dir,
            server: None,
        };
        ch.resume();
        ch
    }

    /// (Re)starts the server on the same port and data, and waits until it answers.
    pub fn resume(&mut self) {
        let mut cmd = Command::new(CLICKHOUSE_SERVER);
        cmd.arg(format!(
            "--config-file={}",
            self.dir.file("config.xml").display()
        ));
        let server = ChildGuard::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.try_query("SELECT 1").is_ok_and(|r| r.trim() == "1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer within 60 s; stderr:\n{}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.server = Some(server);
    }

    /// Stops the server (SIGKILL: as abrupt as a crash or a network cut).
    pub fn pause(&mut self) {
        self.server = None;
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-s", "-S", "--max-time", "30", "--data-binary", "@-"])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut i) = c.stdin.take() {
                    i.write_all(sql.as_bytes())?;
                }
                c.wait_with_output()
            })
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("DB::Exception") {
            return Err(format!(
                "{text}{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(text)
    }

    /// Runs one statement; fails the test if ClickHouse refuses it.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("ClickHouse refused {sql:?}: {e}"))
    }
}

/// Runs a Python script (the interpreter the setup installed pyspark/communityid into)
/// with `args`; fails the test with its stderr if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 failed ({}): {}\n(the packages come from `cargo xtask setup`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
