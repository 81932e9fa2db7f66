//! Where a repository is: a local directory or a bucket prefix on S3-compatible storage.
//!
//! Why one type: every command, the agent's `repo =` and `WAYBACK_REPO` name a repository the
//! same way, and only the storage layer should care which kind it is. A location string is a
//! path, or `s3://bucket/prefix?endpoint=http://host:port&region=garage`. Credentials never
//! appear in it (it is in argv and in `ps`): they come from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (taken out of the environment at start, see [`crate::secrets`]) or
//! from a credentials file (`credentials=/path` or `AWS_SHARED_CREDENTIALS_FILE`) that must be
//! this user's and unreadable by others, like a key file.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local (or locally mounted) file system.
    Local(PathBuf),
    /// A prefix in a bucket of an S3-compatible object store.
    S3(S3Location),
}

/// An S3 bucket prefix and how to reach it (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL (`http://127.0.0.1:3900`); none: AWS's default for the region.
    pub endpoint: Option<String>,
    /// Region name (Garage's default is `garage`).
    pub region: String,
    /// Credentials file given in the location (else `AWS_SHARED_CREDENTIALS_FILE`).
    pub credentials_file: Option<PathBuf>,
    /// Budget of the in-memory cache of pack ranges read over the network, MiB.
    pub cache_mib: usize,
}

/// Default budget of the pack range cache (see [`S3Location::cache_mib`]).
pub const DEFAULT_CACHE_MIB: usize = 256;

/// An access key pair, kept in memory only.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub key_id: String,
    /// Secret access key.
    pub secret: zeroize::Zeroizing<String>,
    /// Session token, for temporary credentials.
    pub token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Decodes `%XX` escapes of a query value.
fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Invalid(format!("bad %-escape in location: {s}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Invalid(format!("location is not UTF-8: {s}")))
}

/// `url` (an `s3://` location as written) naming `file` as its credentials file instead of
/// any it named: `pitr` writes this into `restore_command`, because the recovered server runs
/// as another user who cannot use the caller's environment keys, and a location shows in `ps`
/// so it may name a file but never hold a key.
pub fn with_credentials_file(url: &str, file: &Path) -> Result<String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Invalid(format!("{url} is not an s3:// location")))?;
    let path = file
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("{} is not UTF-8", file.display())))?;
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("credentials="))
        .map(str::to_string)
        .collect();
    let mut enc = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    parts.push(format!("credentials={enc}"));
    let out = format!("s3://{base}?{}", parts.join("&"));
    S3Location::parse(&out["s3://".len()..])?;
    Ok(out)
}

impl Location {
    /// Parses a location string: `s3://...` is S3, anything else a path.
    pub fn parse(s: &OsStr) -> Result<Location> {
        match s.to_str().and_then(|s| s.strip_prefix("s3://")) {
            Some(rest) => S3Location::parse(rest).map(Location::S3),
            None => Ok(Location::Local(PathBuf::from(s))),
        }
    }

    /// The local directory of the repository, if it is one.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }

    /// The local directory this host keeps for the repository: the repository itself when it
    /// is local; for S3, a private cache directory (index, writer lock, sockets, scratch), all
    /// rebuildable, `$WAYBACK_CACHE_DIR/s3-<hash of endpoint, bucket, prefix>`.
    ///
    /// Why a hash of the location and not the repository id: the id is sealed in `config`,
    /// and `wal-push` must find the agent's socket (and `wal-fetch` answer "not archived")
    /// before any key is unlocked.
    pub fn home(&self) -> Result<PathBuf> {
        match self {
            Location::Local(p) => Ok(p.clone()),
            Location::S3(s) => {
                let base = cache_base();
                let dir = base.join(s.cache_name());
                super::private_dir_all(&base)?;
                super::private_dir(&dir)?;
                Ok(dir)
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) => write!(f, "s3://{}/{}", s.bucket, s.prefix),
        }
    }
}

/// Where S3 repositories' cache directories live: `$WAYBACK_CACHE_DIR`, else
/// `/var/cache/wayback` for root, else `$XDG_CACHE_HOME/wayback` (or `~/.cache/wayback`).
pub fn cache_base() -> PathBuf {
    if let Some(d) = std::env::var_os("WAYBACK_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/wayback");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("wayback");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/wayback"))
        .unwrap_or_else(|| PathBuf::from("/var/cache/wayback"))
}

impl S3Location {
    /// Parses what follows `s3://`.
    fn parse(rest: &str) -> Result<S3Location> {
        let bad = |why: &str| Error::Invalid(format!("s3 location s3://{rest}: {why}"));
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
        if !bucket_ok {
            return Err(bad("the bucket name must be 3-63 of a-z 0-9 . -"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == ".." || p == ".") || prefix.contains("//") {
            return Err(bad("the prefix must not contain ., .. or empty parts"));
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
            region: "us-east-1".into(),
            credentials_file: None,
            cache_mib: DEFAULT_CACHE_MIB,
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad("query parts are key=value"))?;
            let v = percent_decode(v)?;
            match k {
                "endpoint" => {
                    let host = v
                        .strip_prefix("http://")
                        .or_else(|| v.strip_prefix("https://"))
                        .ok_or_else(|| bad("endpoint must be an http:// or https:// URL"))?;
                    // "http://" alone (or "http:///x") names no server: refused here rather
                    // than at the first request, and the location's canonical form (which
                    // drops trailing slashes) would not parse again.
                    if host.is_empty() || host.starts_with('/') {
                        return Err(bad("endpoint names no host"));
                    }
                    loc.endpoint = Some(v.trim_end_matches('/').to_string());
                }
                "region" => loc.region = v,
                "credentials" => loc.credentials_file = Some(PathBuf::from(v)),
                "cache-mib" => {
                    loc.cache_mib = v.parse().map_err(|_| bad("cache-mib is a number"))?
                }
                "access_key_id"
                | "secret_access_key"
                | "aws_access_key_id"
                | "aws_secret_access_key" => {
                    return Err(bad(
                        "credentials are never part of the location (it shows in ps): use \
                         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file",
                    ))
                }
                other => return Err(bad(&format!("unknown parameter {other}"))),
            }
        }
        Ok(loc)
    }

    /// The cache directory's name for this location (see [`Location::home`]).
    pub fn cache_name(&self) -> String {
        let id = format!(
            "{}\n{}\n{}",
            self.endpoint.as_deref().unwrap_or(""),
            self.bucket,
            self.prefix
        );
        format!("s3-{}", &blake3::hash(id.as_bytes()).to_hex()[..32])
    }

    /// The credentials to use: the location's credentials file, else `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, else `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub fn credentials(&self) -> Result<Credentials> {
        if let Some(f) = &self.credentials_file {
            return read_credentials_file(f);
        }
        let id = crate::secrets::get("AWS_ACCESS_KEY_ID");
        let secret = crate::secrets::get("AWS_SECRET_ACCESS_KEY");
        if let (Some(key_id), Some(secret)) = (id, secret) {
            return Ok(Credentials {
                key_id,
                secret: secret.into(),
                token: crate::secrets::get("AWS_SESSION_TOKEN").map(Into::into),
            });
        }
        let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials"))
            });
        match file {
            Some(f) if f.exists() => read_credentials_file(&f),
            _ => Err(Error::Invalid(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give a \
                 credentials file (credentials=/path in the location or AWS_SHARED_CREDENTIALS_FILE)"
                    .into(),
            )),
        }
    }
}

/// Largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 64 << 10;

/// Reads an AWS shared credentials file (INI; profile `$AWS_PROFILE` or `default`). Refused
/// unless it is a regular file (not a symlink) owned by this user with no group or other
/// permission bits: another user who can write it could point us at their bucket, one who can
/// read it has our keys.
pub fn read_credentials_file(path: &Path) -> Result<Credentials> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("open credentials file", path, e))?;
    let m = f
        .metadata()
        .map_err(|e| Error::io("stat credentials file", path, e))?;
    if !m.is_file() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "credentials file {} must be a regular file owned by this user with mode 0600",
            path.display()
        )));
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    f.take(MAX_CREDENTIALS_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read credentials file", path, e))?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse_credentials(&text, &profile).ok_or_else(|| {
        Error::Invalid(format!(
            "credentials file {}: no aws_access_key_id and aws_secret_access_key in [{profile}]",
            path.display()
        ))
    })
}

/// The key pair of `[profile]` in an INI credentials file. Public for the fuzz target.
pub fn parse_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(zeroize::Zeroizing::new(v)),
            "aws_session_token" => token = Some(zeroize::Zeroizing::new(v)),
            _ => {}
        }
    }
    Some(Credentials {
        key_id: id?,
        secret: secret?,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_parse_and_paths_stay_paths() {
        let l = Location::parse(OsStr::new(
            "s3://my-bucket/a/b/?endpoint=http%3A%2F%2F127.0.0.1:3900&region=garage&cache-mib=8",
        ))
        .unwrap();
        let Location::S3(s) = l else { panic!() };
        assert_eq!(s.bucket, "my-bucket");
        assert_eq!(s.prefix, "a/b");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(s.region, "garage");
        assert_eq!(s.cache_mib, 8);
        assert_eq!(
            Location::parse(OsStr::new("/srv/repo")).unwrap(),
            Location::Local("/srv/repo".into())
        );
        for bad in [
            "s3://B/x",
            "s3://ok-bucket/x?secret_access_key=s",
            "s3://ok-bucket/x?endpoint=ftp://h",
            "s3://ok-bucket/../x",
            "s3://ok-bucket/x?nope=1",
        ] {
            assert!(Location::parse(OsStr::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_endpoint_without_a_host_is_refused() {
        // Found by the `location` fuzz target: "http://" parsed, and its canonical form
        // ("http:") did not parse again.
        for e in ["http://", "http%3A%2F%2F", "https:///", "http:///x"] {
            let u = format!("s3://bkt/?endpoint={e}");
            assert!(Location::parse(OsStr::new(&u)).is_err(), "{u}");
        }
        assert!(Location::parse(OsStr::new("s3://bkt/?endpoint=http://h/")).is_ok());
    }

    #[test]
    fn a_credentials_file_replaces_the_one_named_and_survives_odd_paths() {
        let u = with_credentials_file(
            "s3://bkt/pre?endpoint=http://h:1&credentials=/old&region=r",
            Path::new("/tmp/a b&c=d/creds"),
        )
        .unwrap();
        let Location::S3(l) = Location::parse(OsStr::new(&u)).unwrap() else {
            panic!("{u}")
        };
        assert_eq!(l.credentials_file.unwrap(), Path::new("/tmp/a b&c=d/creds"));
        assert_eq!(l.region, "r");
        assert_eq!(l.endpoint.as_deref(), Some("http://h:1"));
        assert!(with_credentials_file("/local/repo", Path::new("/c")).is_err());
    }

    #[test]
    fn a_credentials_file_is_refused_unless_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(
            &f,
            "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = GK1\n\
             aws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_credentials_file(&f).unwrap_err().to_string();
        assert!(e.contains("mode 0600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = read_credentials_file(&f).unwrap();
        assert_eq!(c.key_id, "GK1");
        assert_eq!(c.secret.as_str(), "s3cr3t");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_credentials_file(&link).is_err());
    }
}
