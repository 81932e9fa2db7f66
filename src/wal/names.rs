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

/// Eight uppercase hex digits, as PostgreSQL writes them; `None` for anything else.
///
/// Works on bytes: names come from argv, a socket and directory listings, and slicing a `str`
/// at a fixed byte offset panics inside a multibyte character.
fn hex8(s: &[u8]) -> Option<u32> {
    if s.len() != 8 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some((acc << 4) | d as u32)
    })
}

fn segment(s: &[u8]) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
}

/// Classifies a file name; `None` for anything PostgreSQL would not archive.
pub fn parse(name: &str) -> Option<WalName> {
    parse_bytes(name.as_bytes())
}

/// [`parse`] on raw bytes (names from a directory or a socket need not be UTF-8).
pub fn parse_bytes(name: &[u8]) -> Option<WalName> {
    if let Some((tli, log, seg)) = segment(name) {
        return Some(WalName::Segment { tli, log, seg });
    }
    if let Some(t) = name.strip_suffix(b".history") {
        return hex8(t).map(|tli| WalName::History { tli });
    }
    if let Some(p) = name.strip_suffix(b".partial") {
        return segment(p).map(|_| WalName::Partial);
    }
    if let Some(b) = name.strip_suffix(b".backup") {
        // `<segment>.<offset>`: exactly 24 + 1 + 8 bytes.
        if b.len() != 33 || b[24] != b'.' {
            return None;
        }
        segment(&b[..24])?;
        hex8(&b[25..])?;
        return Some(WalName::Backup);
    }
    None
}

/// Segments per "log" (xlogid) for a segment size.
///
/// Never zero: the size may come from a record on disk, and callers divide by the result.
pub fn segs_per_log(seg_size: u64) -> u64 {
    (0x1_0000_0000 / seg_size.max(1)).max(1)
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

/// Parses `X/Y` LSN notation (each half at most 32 bits, as PostgreSQL prints them); the text
/// comes from a backup label inside a tar stream, so an oversized half is `None`, not a silently
/// truncated LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let half = |h: &str| {
        (!h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
    };
    Some(((half(hi)? as u64) << 32) | half(lo)? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            // 24 bytes with a multibyte character across the 8-byte field boundary.
            "0000000\u{e9}000000000000000",
            "000000010000000\u{e9}0000000.partial",
            "0000000100000000000000020000002\u{e9}.backup",
            "00000001000000000000000200000028.backup",
            "\u{e9}\u{e9}\u{e9}\u{e9}.history",
            "0000000a.history",
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
    fn lsn_halves_are_bounded() {
        assert_eq!(parse_lsn("1/FF000000"), Some(0x1_FF00_0000));
        assert_eq!(parse_lsn("100000000/0"), None);
        assert_eq!(parse_lsn("0/100000000"), None);
        assert_eq!(parse_lsn("+1/0"), None);
        assert_eq!(parse_lsn("/0"), None);
        assert_eq!(segs_per_log(u64::MAX), 1);
        assert_eq!(segs_per_log(0), 1 << 32);
    }

    fn valid_name() -> impl Strategy<Value = String> {
        let h = || any::<u32>();
        prop_oneof![
            (h(), h(), h()).prop_map(|(t, l, s)| format!("{t:08X}{l:08X}{s:08X}")),
            h().prop_map(|t| format!("{t:08X}.history")),
            (h(), h(), h()).prop_map(|(t, l, s)| format!("{t:08X}{l:08X}{s:08X}.partial")),
            (h(), h(), h(), h())
                .prop_map(|(t, l, s, o)| format!("{t:08X}{l:08X}{s:08X}.{o:08X}.backup")),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_text(s in "\\PC{0,40}") {
            let _ = parse(&s);
            let _ = segment_size_for(0x0200_0028, &s);
        }

        #[test]
        fn parse_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..48)) {
            let _ = parse_bytes(&b);
            if let Ok(s) = std::str::from_utf8(&b) {
                let _ = parse(s);
                let _ = parse_lsn(s);
            }
        }

        #[test]
        fn parse_never_panics_on_multibyte_24(s in "[0-9A-F\u{e9}\u{20ac}\u{1f600}]{1,24}") {
            // Names whose byte length is around 24 with multibyte characters anywhere.
            let _ = parse(&s);
            let _ = parse(&format!("{s}.partial"));
            let _ = parse(&format!("{s}.history"));
        }

        #[test]
        fn valid_names_round_trip(n in valid_name()) {
            let kind = parse(&n).expect("valid name parses");
            if let WalName::Segment { tli, log, seg } = kind {
                prop_assert_eq!(format!("{tli:08X}{log:08X}{seg:08X}"), n.clone());
            }
            if let WalName::History { tli } = kind {
                prop_assert_eq!(format!("{tli:08X}.history"), n.clone());
            }
            prop_assert_eq!(parse_bytes(n.as_bytes()), Some(kind));
            let low = n.to_lowercase();
            if low != n {
                prop_assert_eq!(parse(&low), None);
            }
        }
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
