//! The agent's WAL archive socket: `wayback wal-push` hands a segment to the running agent.
//!
//! Why: a standalone `wal-push` pays the passphrase KDF (~0.2 s) and a repository open for
//! every 16 MiB segment, which made archiving slower than `pgbench -c 4` produces WAL on this
//! machine. The agent has the key unlocked and the repository open, so a push through it costs
//! only chunking, sealing and two fsyncs.
//!
//! Protocol (one push per connection, `<repo>/wal-push.sock`): the client sends the line
//! `push <cluster> <name>\n` together with the open file as an `SCM_RIGHTS` descriptor, so the
//! agent reads exactly what the client could open, with the client's permissions, never a path
//! it would resolve as root. The agent answers one line after the segment is durable:
//! `stored`, `already`, `conflict <message>`, `other-cluster <message>`, `bad-name <message>`
//! or `error <message>`. A connection closed without an answer (agent killed mid-push) is a
//! failure: PostgreSQL retries, and the retry, finding no agent, writes directly.
//!
//! The socket is owned by the repository directory's owner with mode 0600 from the instant it
//! exists (see [`super::sock`]): whoever may write the repository directly may push through the
//! agent, nobody else. The client checks the listener's peer credentials before it hands over a
//! descriptor: only a listener run by the repository's owner or by root is an agent of this
//! repository; anything else (another user who can write the directory and bound a socket
//! there) gets nothing, and the push is written directly instead.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::sock::{self, Owner};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::wal::{self, Pushed, WalError};

/// Where the agent of the repository at `root` listens for pushes.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("wal-push.sock")
}

/// Binds the archive socket and serves pushes on background threads until the process ends.
/// Returns the socket's owner (for [`sock::remove_if_ours`] at shutdown).
pub fn serve(repo: Arc<Repository>) -> Result<Owner> {
    let sock = socket_path(&repo.home);
    let meta = std::fs::metadata(&repo.home).map_err(|e| Error::io("stat", &repo.home, e))?;
    let me = Owner::current();
    // Root makes the socket the repository owner's (who runs wal-push); anyone else can only
    // make it their own, which serves pushes by the same user.
    let owner = if me.uid == 0 {
        Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        }
    } else {
        if me.uid != meta.uid() {
            tracing::warn!(
                socket = %sock.display(),
                "the repository belongs to uid {}: its wal-push cannot use this agent's socket",
                meta.uid()
            );
        }
        me
    };
    let listener = sock::bind(&sock, 0o600, owner)?;
    tracing::info!(socket = %sock.display(), "accepting wal-push");
    std::thread::Builder::new()
        .name("wal-push-accept".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let repo = repo.clone();
                let _ = std::thread::Builder::new()
                    .name("wal-push".into())
                    .spawn(move || handle(&repo, conn));
            }
        })
        .map_err(|e| Error::io("spawn", &sock, e))?;
    Ok(owner)
}

/// WAL files this process failed to archive, and the last failure (`cluster: error`), cleared
/// by the next success: the agent copies both into its durable state for `status`.
static FAILURES: std::sync::Mutex<(u64, Option<String>)> = std::sync::Mutex::new((0, None));

/// Failures so far and the last one still standing (see [`FAILURES`]).
pub fn failures() -> (u64, Option<String>) {
    FAILURES.lock().map(|f| f.clone()).unwrap_or_default()
}

fn record(cluster: &str, err: Option<&str>) {
    if let Ok(mut f) = FAILURES.lock() {
        match err {
            Some(e) => {
                f.0 += 1;
                f.1 = Some(format!("{cluster}: {e}"));
            }
            None => f.1 = None,
        }
    }
}

fn handle(repo: &Repository, mut conn: UnixStream) {
    let reply = match receive(&conn) {
        Ok((cluster, name, file)) => {
            let started = std::time::Instant::now();
            match wal::push_file(repo, &cluster, &name, &file, Path::new(&name)) {
                Ok(Pushed::Stored) => {
                    tracing::info!(
                        cluster,
                        name,
                        ms = started.elapsed().as_millis() as u64,
                        "archived"
                    );
                    record(&cluster, None);
                    "stored".to_string()
                }
                Ok(Pushed::AlreadyThere) => "already".into(),
                Err(e @ WalError::Conflict { .. }) => {
                    record(&cluster, Some(&e.to_string()));
                    format!("conflict {e}")
                }
                Err(e @ WalError::OtherCluster { .. }) => {
                    record(&cluster, Some(&e.to_string()));
                    format!("other-cluster {e}")
                }
                Err(e @ WalError::BadName(_)) => format!("bad-name {e}"),
                Err(WalError::Repo(e)) if e.is_no_space() => {
                    tracing::error!(cluster, name, error = %e, "wal-push through the agent failed: no space");
                    record(&cluster, Some(&e.to_string()));
                    format!("no-space {e}")
                }
                Err(e) => {
                    tracing::error!(cluster, name, error = %e, "wal-push through the agent failed");
                    record(&cluster, Some(&e.to_string()));
                    format!("error {e}")
                }
            }
        }
        Err(e) => format!("error {e}"),
    };
    let _ = conn.write_all(format!("{}\n", reply.replace('\n', " ")).as_bytes());
}

fn receive(conn: &UnixStream) -> Result<(String, String, File)> {
    let mut buf = [0u8; 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::Invalid(format!("receiving a push: {e}")))?;
    let mut fd = None;
    for c in msg
        .cmsgs()
        .map_err(|e| Error::Invalid(format!("receiving a push: {e}")))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just installed `f` in this process for us; we own it.
                let file = unsafe { File::from_raw_fd(f) };
                fd.get_or_insert(file);
            }
        }
    }
    let n = msg.bytes;
    let file = fd.ok_or_else(|| Error::Invalid("push request without a file".into()))?;
    let (cluster, name) = parse_push_request(&buf[..n])?;
    Ok((cluster, name, file))
}

/// Parses the request line of a push, `push <cluster> <name>`, into cluster and name (checked
/// later, by `wal::push_file`, before either names a path).
///
/// Why separate from the socket code: the bytes come from any process that can connect, and
/// the fuzz target and its corpus test drive this without a socket.
pub fn parse_push_request(bytes: &[u8]) -> Result<(String, String)> {
    let line = std::str::from_utf8(bytes)
        .map_err(|_| Error::Invalid("push request is not UTF-8".into()))?
        .trim();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("push"), Some(cluster), Some(name), None) => {
            Ok((cluster.to_string(), name.to_string()))
        }
        _ => Err(Error::Invalid(format!("bad push request {line:?}"))),
    }
}

/// Classifies the agent's answer to a push (what `wal-push` reads back from the socket).
pub fn parse_reply(reply: &str) -> AgentReply {
    let reply = reply.trim();
    let (word, rest) = reply.split_once(' ').unwrap_or((reply, ""));
    match word {
        "stored" | "already" => AgentReply::Archived,
        "conflict" => AgentReply::Conflict(rest.into()),
        "other-cluster" => AgentReply::OtherCluster(rest.into()),
        "no-space" => AgentReply::NoSpace(rest.into()),
        "" => AgentReply::Failed("the agent closed the connection without answering".into()),
        _ => AgentReply::Failed(rest.into()),
    }
}

/// What the agent answered.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentReply {
    /// Durable now (or already archived with the same bytes).
    Archived,
    /// Same name, other bytes (message names both digests).
    Conflict(String),
    /// Segment of another database system.
    OtherCluster(String),
    /// The repository's file system is full (the CLI exits 17, as a direct push would).
    NoSpace(String),
    /// Anything else, with the agent's message.
    Failed(String),
}

/// Whether the listener at the other end of `conn` runs as `owner` (the repository directory's
/// owner) or root, per the kernel (`SO_PEERCRED`, recorded when the listener called listen).
fn peer_is_trusted(conn: &UnixStream, owner: u32) -> std::result::Result<(), String> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the listener's credentials: {e}"))?;
    if cred.uid() == owner || cred.uid() == 0 {
        Ok(())
    } else {
        Err(format!(
            "the listener is uid {} (pid {}), neither the repository's owner (uid {owner}) nor root",
            cred.uid(),
            cred.pid()
        ))
    }
}

/// Pushes `path` through the agent, or `None` when no agent listens (the caller then writes
/// directly). A connection that breaks before the answer is `Failed`: never report success
/// for a push that may not be durable.
///
/// A listener that is not the repository owner's or root's is not an agent: it gets no
/// descriptor (it could read the segment and answer `stored` for bytes it never kept) and the
/// push is written directly, so PostgreSQL's archive_command still succeeds only when the
/// segment is durable, and a stray socket cannot stall archiving.
pub fn push_via_agent(root: &Path, cluster: &str, path: &Path) -> Option<AgentReply> {
    let sock = socket_path(root);
    let mut conn = UnixStream::connect(&sock).ok()?;
    let owner = std::fs::metadata(root).ok()?.uid();
    if let Err(why) = peer_is_trusted(&conn, owner) {
        eprintln!(
            "wayback wal-push: not using {}: {why}; writing directly",
            sock.display()
        );
        return None;
    }
    let name = path.file_name()?.to_str()?.to_string();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(AgentReply::Failed(format!("open {}: {e}", path.display()))),
    };
    let line = format!("push {cluster} {name}\n");
    let fds = [file.as_raw_fd()];
    if let Err(e) = sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(line.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    ) {
        return Some(AgentReply::Failed(format!("sending to the agent: {e}")));
    }
    drop(file);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
    let mut reply = String::new();
    if let Err(e) = conn.read_to_string(&mut reply) {
        return Some(AgentReply::Failed(format!(
            "reading the agent's answer: {e}"
        )));
    }
    Some(parse_reply(&reply))
}
