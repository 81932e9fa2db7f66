//! `wayback repair index | packs | snapshots`: salvage what is intact, keep the damaged pack in
//! `damaged/`, write a snapshot without exactly the damaged files, and never lose anything that
//! still restored. The random trials are in `bitrot.rs`; these pin down each step.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

/// A backup of four 300 KB files (one chunk each, one data pack beside the tree pack) and its
/// data pack.
fn four_files() -> (Repo, PathBuf, Value, PathBuf) {
    let r = Repo::new();
    let src = r.mkdir("src");
    for (i, n) in ["a.bin", "b.bin", "d/c.bin", "d/e.bin"].iter().enumerate() {
        write_random(&src.join(n), 300_000, 40 + i as u64);
    }
    let snap = r.backup_dir(&src, "s");
    let pack = r.new_data_pack(&BTreeSet::new());
    (r, src, snap, pack)
}

fn pack_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn restored_names(r: &Repo, id: &str, name: &str) -> BTreeSet<String> {
    let dst = r.scratch(name);
    r.restore(id, &dst, &[]);
    let mut out = BTreeSet::new();
    for n in ["a.bin", "b.bin", "d/c.bin", "d/e.bin"] {
        if dst.join(n).exists() {
            out.insert(n.to_string());
        }
    }
    out
}

#[test]
fn a_damaged_blob_costs_exactly_its_file_and_the_rest_is_salvaged() {
    let (r, src, snap, pack) = four_files();
    let id = str_of(&snap, "/id").to_string();
    let mut image = fs::read(&pack).unwrap();
    image[100] ^= 0x10; // inside the first blob
    fs::write(&pack, &image).unwrap();

    // check names the one damaged file.
    let o = r.code(&["check", "--read-data", "--json"], exit::DAMAGED);
    let rep = parse_json(&o);
    let hurt: Vec<String> = rep["problems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["affected"].as_array().unwrap().clone())
        .map(|a| {
            a.as_str()
                .unwrap()
                .rsplit(": /")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(hurt.len(), 1, "{rep:#}");
    let damaged_file = hurt[0].clone();
    assert_eq!(rep["problems"][0]["kind"], "blob", "{rep:#}");

    // A dry run changes nothing.
    let o = r.code(&["repair", "packs", "--dry-run", "--json"], exit::DAMAGED);
    let plan = parse_json(&o);
    assert_eq!(plan["damaged"].as_array().unwrap().len(), 1, "{plan:#}");
    // Four chunks were in the data pack (the trees are in a pack of their own): all but the
    // damaged chunk verify.
    assert_eq!(plan["damaged"][0]["located"], 4, "{plan:#}");
    assert_eq!(plan["damaged"][0]["salvaged"], 3, "{plan:#}");
    assert_eq!(plan["damaged"][0]["lost"].as_array().unwrap().len(), 1);
    assert!(plan["damaged"][0]["quarantined"].is_null());
    assert!(pack.exists());
    assert!(!r.path.join("damaged").exists());

    // The repair: exit 12 (a blob was lost), the damaged pack kept byte for byte in damaged/.
    let o = r.code(&["repair", "packs", "--json"], exit::DAMAGED);
    let done = parse_json(&o);
    assert_eq!(done["packs_written"], 1, "{done:#}");
    let q = r.path.join("damaged").join(pack_name(&pack));
    assert_eq!(fs::read(&q).unwrap(), image, "the quarantined pack differs");
    assert!(!pack.exists(), "the damaged pack is still in packs/");
    // Every other file still restores from the original snapshot; the damaged one does not.
    for n in ["a.bin", "b.bin", "d/c.bin", "d/e.bin"] {
        let o = r.wb(&["cat", &format!("{id}:/{n}")]);
        if *n == *damaged_file {
            assert_code(&o, exit::DAMAGED, "cat of the lost file");
        } else {
            assert_code(&o, exit::OK, n);
            assert!(o.stdout == fs::read(src.join(n)).unwrap(), "{n} differs");
        }
    }
    // check now calls the blob lost (in no pack) and still names the file.
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    assert!(all_output(&o).contains(&damaged_file), "{}", describe(&o));

    // Snapshots: a dry run writes nothing; the repair writes one snapshot without the file.
    let o = r.ok(&["repair", "snapshots", "--dry-run", "--json"]);
    assert_eq!(
        parse_json(&o)["repaired"][0]["omitted"][0],
        format!("{damaged_file} (damaged data)")
    );
    assert_eq!(r.snapshots().len(), 1);
    let o = r.ok(&["repair", "snapshots", "--json"]);
    let rep = parse_json(&o);
    let new_id = str_of(&rep, "/repaired/0/new").to_string();
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2, "the original stays without --forget");
    let new = snaps.iter().find(|s| s["id"] == new_id.as_str()).unwrap();
    assert_eq!(new["repaired_from"], id.as_str());
    assert!(new["tags"].as_array().unwrap().contains(&"repaired".into()));
    assert_eq!(new["complete"], false);
    assert!(
        new["warnings"][0].as_str().unwrap().contains(&damaged_file),
        "{new:#}"
    );
    assert!(u64_of(new, "/time") > u64_of(&snap, "/time"));
    let mut want: BTreeSet<String> = ["a.bin", "b.bin", "d/c.bin", "d/e.bin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.remove(&damaged_file);
    assert_eq!(restored_names(&r, &new_id, "restored-new"), want);
    let dst = r.scratch("restored-new");
    for n in &want {
        assert!(fs::read(dst.join(n)).unwrap() == fs::read(src.join(n)).unwrap());
    }
    // Again: nothing new, it says which snapshot repaired it already.
    let o = r.ok(&["repair", "snapshots", "--json"]);
    assert_eq!(parse_json(&o)["repaired"][0]["already"], new_id.as_str());
    assert_eq!(r.snapshots().len(), 2);
    // --forget drops the original; then nothing is damaged any more.
    r.ok(&["repair", "snapshots", "--forget"]);
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], new_id.as_str());
    r.ok(&["check", "--read-data"]);
    // And the repository takes backups again.
    r.backup_dir(&src, "s");
    r.ok(&["check", "--read-data"]);
}

#[test]
fn a_pack_whose_header_is_lost_is_salvaged_whole_through_the_old_index() {
    let (r, src, snap, pack) = four_files();
    let len = fs::metadata(&pack).unwrap().len();
    // Without its trailer the header cannot be found; every blob is intact.
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 16)
        .unwrap();
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    assert!(
        all_output(&o).contains(&pack_name(&pack)),
        "{}",
        describe(&o)
    );
    // The dry run reports the header; the rebuild keeps what the old index knew of the pack.
    let o = r.code(&["repair", "index", "--dry-run", "--json"], exit::DAMAGED);
    assert_eq!(
        parse_json(&o)["damaged"][0]["pack"],
        pack_name(&pack).as_str()
    );
    let o = r.code(&["repair", "index", "--json"], exit::DAMAGED);
    assert_eq!(parse_json(&o)["kept"], 1, "{}", describe(&o));
    let o = r.ok(&["repair", "packs", "--json"]);
    let rep = parse_json(&o);
    assert_eq!(
        rep["damaged"][0]["lost"].as_array().unwrap().len(),
        0,
        "{rep:#}"
    );
    assert_eq!(rep["damaged"][0]["salvaged"], rep["damaged"][0]["located"]);
    r.ok(&["check", "--read-data"]);
    let o = r.ok(&["repair", "snapshots"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 damaged"),
        "{}",
        describe(&o)
    );
    let dst = r.scratch("dst");
    r.restore(str_of(&snap, "/id"), &dst, &[]);
    assert_trees_equal(&src, &dst);
}

#[test]
fn repair_takes_the_writer_lock() {
    let (r, _src, _snap, _pack) = four_files();
    // A writer in this process holds the lock (and the index) meanwhile.
    let _writer =
        wayback::repo::Repository::open(&r.path, PASSWORD.as_bytes(), wayback::repo::Access::Write)
            .unwrap();
    for args in [
        &["repair", "index"][..],
        &["repair", "packs"][..],
        &["repair", "snapshots"][..],
    ] {
        r.code(args, exit::LOCKED);
    }
}
