//! A private PostgreSQL for tests: Debian's server binaries, a fresh data directory, a free
//! port on loopback, started and stopped by the test itself (no system service).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL, stopped on drop.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    pub url: String,
}

/// Where Debian puts the server binaries (the newest version installed), or `PG_BIN`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Postgres {
    /// Starts one, or `None` when PostgreSQL is not installed (never under `CI`, where the
    /// bootstrap installs it: there a missing server fails the test).
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not installed: run scripts/bootstrap"
            );
            eprintln!("PostgreSQL not installed; skipping its part of the test");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        // initdb refuses to run as root: the data directory then belongs to `postgres`.
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the PostgreSQL data directory failed");
        }
        let port = free_port();
        let me =
            Self { bin, dir, as_postgres, url: format!("postgres://mh@127.0.0.1:{port}/postgres") };
        let data = me.dir.path().join("data");
        me.run("initdb", &["-D", path(&data), "-A", "trust", "-U", "mh", "-E", "UTF8"]);
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", path(me.dir.path()));
        let log = me.dir.path().join("log");
        me.run("pg_ctl", &["-D", path(&data), "-o", &options, "-l", path(&log), "-w", "start"]);
        Some(me)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command.args(args).output().expect("PostgreSQL tools run");
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command.args(["-D", path(&data), "-m", "immediate", "stop"]).output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
