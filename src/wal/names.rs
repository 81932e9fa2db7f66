//! PostgreSQL WAL file names.
//!
//! `TTTTTTTTXXXXXXXXYYYYYYYY` segments (timeline, log, segment within log), `TTTTTTTT.history`,
//! `<segment>.XXXXXXXX.backup` labels and `<segment>.partial` files left by a promotion. The
//! archive is flat and keyed by these names, exactly as PostgreSQL asks for them.

/// What kind of file a WAL archive name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalName {
    /// A WAL segment.
    Segment {
        /// Timeline.
        tli: u32,
        /// High 32 bits of the LSN ("log").
        log: u32,
        /// Segment within the log.
        seg: u32,
    },
    /// A timeline history file.
    History {
        /// Timeline it starts.
        tli: u32,
    },
    /// A backup label file (`<segment>.<offset>.backup`).
    Backup,
    /// A partial segment from the old timeline at promotion.
    Partial,
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn segment(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
}

/// Classifies a file name; `None` for anything PostgreSQL would not archive.
pub fn parse(name: &str) -> Option<WalName> {
    if let Some((tli, log, seg)) = segment(name) {
        return Some(WalName::Segment { tli, log, seg });
    }
    if let Some(t) = name.strip_suffix(".history") {
        return hex8(t).map(|tli| WalName::History { tli });
    }
    if let Some(p) = name.strip_suffix(".partial") {
        return segment(p).map(|_| WalName::Partial);
    }
    if let Some(b) = name.strip_suffix(".backup") {
        let (seg, off) = b.split_once('.')?;
        segment(seg)?;
        hex8(off)?;
        return Some(WalName::Backup);
    }
    None
}

/// Segments per "log" (xlogid) for a segment size.
pub fn segs_per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

/// The segment file name holding `lsn` on timeline `tli`.
pub fn segment_name(tli: u32, lsn: u64, seg_size: u64) -> String {
    let segno = lsn / seg_size.max(1);
    let per = segs_per_log(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// The WAL segment size (1 MiB to 1 GiB, a power of two, as `initdb --wal-segsize` allows)
/// under which `lsn` lies in the segment named `name`; `None` when no size fits.
///
/// Why: a base backup's label names its start segment and LSN but not the segment size, and
/// the stop segment must be named with the cluster's real size, not an assumed 16 MiB.
pub fn segment_size_for(lsn: u64, name: &str) -> Option<u64> {
    let tli = match parse(name)? {
        WalName::Segment { tli, .. } => tli,
        _ => return None,
    };
    (20..=30)
        .map(|b| 1u64 << b)
        .find(|&size| segment_name(tli, lsn, size) == name)
}

/// Parses `X/Y` LSN notation.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse("000000010000000A000000FF"),
            Some(WalName::Segment {
                tli: 1,
                log: 10,
                seg: 255
            })
        );
        assert_eq!(parse("00000002.history"), Some(WalName::History { tli: 2 }));
        assert_eq!(
            parse("000000010000000000000002.00000028.backup"),
            Some(WalName::Backup)
        );
        assert_eq!(
            parse("000000010000000000000003.partial"),
            Some(WalName::Partial)
        );
        for bad in [
            "",
            "0000000100000000000000",
            "00000001000000000000000g",
            "x.history",
            "../etc/passwd",
            "000000010000000000000002.backup",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            segment_name(1, parse_lsn("0/2000028").unwrap(), 16 << 20),
            "000000010000000000000002"
        );
        assert_eq!(
            segment_name(3, parse_lsn("1/FF000000").unwrap(), 16 << 20),
            "0000000300000001000000FF"
        );
    }

    #[test]
    fn segment_size_is_recovered_from_a_label() {
        for size in [1u64 << 20, 16 << 20, 64 << 20, 1 << 30] {
            for lsn in [0x0200_0028u64, 0x1_FF00_0000, 0x37_4000_1234] {
                let lsn = lsn.max(size + 0x28);
                let n = segment_name(1, lsn, size);
                assert_eq!(segment_size_for(lsn, &n), Some(size), "{n} {lsn:X}");
            }
        }
        assert_eq!(
            segment_size_for(0x0200_0028, "000000010000000000000077"),
            None
        );
        assert_eq!(segment_size_for(0x0200_0028, "00000002.history"), None);
    }
}
