//! A throwaway PostgreSQL 15 server for tests: initdb in a temp dir, unix socket only, run as
//! the `postgres` user (the server refuses root); clients run as root with `-U postgres`.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Directory of the PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running server; stopped on drop.
pub struct Pg {
    _tmp: tempfile::TempDir,
    /// Data directory.
    pub data: PathBuf,
    /// Socket directory (pass as `-h`).
    pub sock: PathBuf,
    /// Port (socket file suffix).
    pub port: u16,
}

/// Path of a PostgreSQL binary.
pub fn bin(name: &str) -> String {
    format!("{PG_BIN}/{name}")
}

fn as_postgres(args: &[&str]) -> Output {
    let o = Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        o.status.success(),
        "{:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Pg {
    /// initdb + start with extra `postgresql.conf` lines.
    pub fn start(extra_conf: &str) -> Pg {
        let tmp = tempfile::Builder::new()
            .prefix("wayback-pg-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path();
        Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(root)
            .status()
            .expect("chown");
        let data = root.join("data");
        let sock = root.join("sock");
        std::fs::create_dir(&sock).unwrap();
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&sock)
            .status()
            .unwrap();
        as_postgres(&[
            &bin("initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = 5432\nfsync = off\nfull_page_writes = on\nshared_buffers = 64MB\n{}\n",
            sock.display(),
            extra_conf
        );
        let mut c = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        c.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), c).unwrap();
        let log = root.join("server.log");
        as_postgres(&[
            &bin("pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]);
        Pg {
            _tmp: tmp,
            data,
            sock,
            port: 5432,
        }
    }

    /// A client command (psql, pg_dump, pgbench...) connected to this server as `postgres`.
    pub fn client(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("PGHOST", &self.sock)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    /// Shell prefix setting the connection environment (for `wayback backup --command`).
    pub fn env_prefix(&self) -> String {
        format!(
            "PGHOST={} PGPORT={} PGUSER=postgres",
            self.sock.display(),
            self.port
        )
    }

    /// Runs SQL and returns trimmed unaligned output.
    pub fn sql(&self, db: &str, q: &str) -> String {
        let o = self
            .client("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", q])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql {q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &bin("pg_ctl"), "-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
