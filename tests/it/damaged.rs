//! Salvaging a damaged cache: one bundle cut short inside its index and one tile whose index entry
//! runs past the end of its bundle. `info` shows the rest and names the broken bundle (exit 1);
//! `export` stops at the first unreadable tile unless `--skip-unreadable`, which copies the rest and
//! lists what it left out (exit 1); nothing already stored in the destination is lost.

use std::fs;
use std::process::Command;

use bundlefs::cache::Cache;
use bundlefs::format::v2::{index_pos, IndexEntry};
use bundlefs::format::{Slot, TileAddr};

use crate::support::{all_tiles, bin, run, sample_cache};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn info_and_export_salvage_what_can_be_read() {
    let d = tempfile::tempdir().unwrap();
    let c = sample_cache(d.path(), "0-2");
    let want = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(want.len(), 21);
    // Level 1's bundle cut short inside its index.
    let l1 = c.join("_alllayers/L01/R0000C0000.bundle");
    let f = fs::OpenOptions::new().write(true).open(&l1).unwrap();
    f.set_len(1000).unwrap();
    // Level 2: tile (row 1, col 2)'s entry points past the end of the bundle.
    let l2 = c.join("_alllayers/L02/R0000C0000.bundle");
    let mut b = fs::read(&l2).unwrap();
    let at = index_pos(Slot { row: 1, col: 2 });
    let past = IndexEntry::new(b.len() as u64 + 100, 500).0.to_le_bytes();
    b[at..at + 8].copy_from_slice(&past);
    fs::write(&l2, &b).unwrap();

    // info: the table for what can be read, the broken bundle named, exit 1.
    let o = run(Command::new(bin()).arg("info").arg(&c));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("BROKEN") && t.contains("L01/R0000C0000.bundle"),
        "{t}"
    );
    let row0 = t.lines().find(|l| l.split_whitespace().next() == Some("0"));
    assert!(
        row0.is_some_and(|r| r.split_whitespace().nth(4) == Some("1")),
        "{t}"
    );

    // export without the option: an error naming the bundle; with it: the rest, listed, exit 1.
    let plain = d.path().join("plain");
    let o = run(Command::new(bin())
        .arg("export")
        .arg(&c)
        .arg(&plain)
        .args(["--storage", "compact-v2"]));
    assert!(!o.status.success(), "{}", text(&o));
    let out = d.path().join("salvaged");
    let o = run(Command::new(bin()).arg("export").arg(&c).arg(&out).args([
        "--storage",
        "compact-v2",
        "--skip-unreadable",
    ]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("2 left out as unreadable"), "{t}");
    assert!(t.contains("L01/R0000C0000.bundle"), "{t}");
    assert!(t.contains("L02/R00000001/C00000002"), "{t}");
    let got = all_tiles(&Cache::open(&out).unwrap());
    let mut expect = want.clone();
    expect.retain(|t, _| t.level != 1 && *t != TileAddr::new(2, 1, 2));
    assert_eq!(got.len(), 16, "level 0 and 15 of level 2");
    assert_eq!(got, expect);
}
