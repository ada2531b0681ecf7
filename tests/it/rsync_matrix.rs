//! rsync into a writable mount with the options that make temporary files and folders inside the
//! tree (`--delay-updates`, `--partial-dir`, `--temp-dir`, `--backup`, `--backup-dir`, the
//! `--delete-*` family): either rsync exits 0 and every tile it sent is stored (and every tile it
//! deleted is gone), or it exits non-zero. Never exit 0 with tiles missing. And times: after
//! writing one tile and remounting, only that tile is newer (`find -newer`), and `rsync -a` out of
//! the mount sends only it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::mount::{need, sh, Mounted};
use crate::support::{bin, png_with_text, run, run_ok, sample_cache, tree_files};

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bundlefs-rsync-{name}-"))
        .tempdir()
        .unwrap()
}

/// `bundlefs unmount MNT`, which returns once the daemon stored its buffer: (success, output).
fn unmount_status(m: &mut Mounted) -> (bool, String) {
    let o = run(Command::new("timeout")
        .arg("120")
        .arg(bin())
        .arg("unmount")
        .arg(&m.mnt));
    if let Some(mut c) = m.child.take() {
        let _ = c.wait();
    }
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// [`unmount_status`] that must succeed.
fn unmount(m: &mut Mounted) {
    let (ok, text) = unmount_status(m);
    assert!(ok, "unmount: {text}");
}

/// Level 2 of the cache as an exploded tree (`L02/Rxxxxxxxx/Cxxxxxxxx.png` → bytes).
fn level2(cache: &Path, scratch: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = scratch.join("exported");
    let _ = std::fs::remove_dir_all(&out);
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(cache)
            .arg(&out)
            .args(["--storage", "exploded", "--levels", "2"]),
    );
    tree_files(&out.join("_alllayers"))
}

/// What rsync is asked to do: `opts` (after `-a`), and whether it deletes extra tiles.
struct Run {
    opts: &'static [&'static str],
    /// A folder the user makes inside the tree first (rsync's --temp-dir must exist).
    premade: Option<&'static str>,
    /// rsync must exit 0 here (a temporary kept in the tree works); else either outcome is
    /// right as long as an exit 0 stored everything.
    must_work: bool,
}

const RUNS: &[Run] = &[
    Run {
        opts: &[],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--delay-updates"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--delay-updates", "--delete"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--partial-dir=.rsync-partial"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--partial"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--temp-dir=.tmp"],
        premade: Some(".tmp"),
        must_work: true,
    },
    Run {
        opts: &["--inplace"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--whole-file", "--checksum"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--delete-delay"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--delete-after", "--delay-updates"],
        premade: None,
        must_work: true,
    },
    Run {
        opts: &["--delete-before"],
        premade: None,
        must_work: true,
    },
    // Backups inside the tree would live only in memory: refused, so rsync must fail loudly.
    Run {
        opts: &["--backup"],
        premade: None,
        must_work: false,
    },
    Run {
        opts: &["--backup", "--backup-dir=.bak"],
        premade: None,
        must_work: false,
    },
    Run {
        opts: &["--backup", "--suffix=.old"],
        premade: None,
        must_work: false,
    },
];

#[test]
fn rsync_options_store_every_tile_or_fail_loudly() {
    matrix(None);
}

/// The same runs into a writable `--layout xyz` view, the source a z/x/y tree: its temporaries,
/// folders and renames take the view's names.
#[test]
fn rsync_options_into_an_xyz_view_store_every_tile_or_fail_loudly() {
    matrix(Some("xyz"));
}

/// Where `rel` (`L02/Rrrrrrrrr/Ccccccccc.png`) sits in the source tree and the mount: under
/// `_alllayers/` as it is, or with `layout` xyz at `2/col/row.png`.
fn placed(rel: &str, layout: Option<&str>) -> String {
    if layout.is_none() {
        return format!("_alllayers/{rel}");
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let hex = |s: &str| u32::from_str_radix(&s[1..], 16).unwrap();
    let (row, col) = (hex(parts[1]), hex(parts[2].trim_end_matches(".png")));
    format!("2/{col}/{row}.png")
}

/// Runs every rsync of [`RUNS`] into a fresh writable mount (with `--layout` when given).
fn matrix(layout: Option<&str>) {
    need("fusermount3");
    need("rsync");
    let d = tmp(&format!("matrix-{}", layout.unwrap_or("arcgis")));
    let base = sample_cache(d.path(), "0-2");
    let before = level2(&base, d.path());
    assert_eq!(before.len(), 16);
    // The source: level 2 with every other tile changed (same pixels, other bytes) and two
    // tiles left out (for the --delete runs).
    let src = d.path().join("src");
    let mut want = BTreeMap::new();
    for (i, (rel, bytes)) in before.iter().enumerate() {
        if i == 3 || i == 9 {
            continue;
        }
        let b = if i % 2 == 0 {
            png_with_text(bytes, &format!("rsync\0changed {i}"))
        } else {
            bytes.clone()
        };
        let p = src.join(placed(rel, layout));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &b).unwrap();
        want.insert(rel.clone(), b);
    }
    let mut report = Vec::new();
    for (n, r) in RUNS.iter().enumerate() {
        let cache = d.path().join(format!("cache-{n}"));
        crate::support::copy_dir(&base, &cache);
        let mnt = d.path().join(format!("mnt-{n}"));
        let mut args = vec!["-o", "rw"];
        if let Some(l) = layout {
            args.extend(["--layout", l]);
        }
        let mut m = Mounted::start(&cache, &mnt, &args);
        let top = if layout.is_none() { "_alllayers/" } else { "" };
        if let Some(dir) = r.premade {
            std::fs::create_dir(m.path(top).join(dir)).unwrap();
        }
        let (ok, out, err) = sh(&format!(
            "cd {} && rsync -a {} {}/{top} {}/{top}",
            d.path().display(),
            r.opts.join(" "),
            src.display(),
            mnt.display()
        ));
        let (unmounted, said) = unmount_status(&mut m);
        let got = level2(&cache, d.path());
        let deletes = r.opts.iter().any(|o| o.starts_with("--delete"));
        // Tiles rsync sent are stored with its bytes; with --delete the left-out ones are gone.
        let mut expect = before.clone();
        if deletes {
            expect.clear();
        }
        expect.extend(want.clone());
        let stored = got == expect;
        report.push(format!(
            "rsync -a {:<40} exit {}  unmount exit {}  stored all: {stored}",
            r.opts.join(" "),
            if ok { "0" } else { "non-zero" },
            if unmounted { "0" } else { "non-zero" }
        ));
        if ok {
            assert!(
                unmounted,
                "rsync -a {} exited 0, then unmount: {said}",
                r.opts.join(" ")
            );
            crate::support::assert_same_tree(
                &got,
                &expect,
                &format!("rsync -a {} exited 0", r.opts.join(" ")),
            );
        } else {
            assert!(
                !r.must_work,
                "rsync -a {} failed: {out}{err}",
                r.opts.join(" ")
            );
            // Refused loudly: nothing it was not told about changed (the tiles before stay).
            for (rel, b) in &got {
                assert!(
                    before.get(rel) == Some(b) || want.get(rel) == Some(b),
                    "{rel}: bytes from neither side"
                );
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// After one tile is written and the cache remounted, only that tile is newer than a mark, and a
/// second `rsync -a` out of the mount sends only it (Compact V2 and V1).
#[test]
fn only_the_written_tile_moves_in_time_across_a_remount() {
    need("fusermount3");
    need("rsync");
    for storage in ["compact-v2", "compact-v1", "exploded"] {
        let d = tmp(&format!("times-{storage}"));
        let s = sample_cache(d.path(), "0-2");
        let cache = d.path().join("cache");
        run_ok(
            Command::new(bin())
                .arg("export")
                .arg(&s)
                .arg(&cache)
                .args(["--storage", storage]),
        );
        let mnt = d.path().join("mnt");
        let mirror = d.path().join("mirror");
        // A mirror of the mount, as an admin keeps one.
        {
            let _m = Mounted::start(&cache, &mnt, &[]);
            let (ok, _, err) = sh(&format!(
                "rsync -a {}/ {}/",
                mnt.display(),
                mirror.display()
            ));
            assert!(ok, "{storage}: rsync: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mark = d.path().join("mark");
        std::fs::write(&mark, b"").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let rel = "_alllayers/L02/R00000001/C00000002.png";
        let new = png_with_text(&std::fs::read(mirror.join(rel)).unwrap(), "t\0new");
        {
            let mut m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
            std::fs::write(m.path(rel), &new).unwrap();
            unmount(&mut m);
        }
        let _m = Mounted::start(&cache, &mnt, &[]);
        let (_, newer, _) = sh(&format!(
            "cd {} && find _alllayers -type f -newer {}",
            mnt.display(),
            mark.display()
        ));
        assert_eq!(newer.trim(), rel, "{storage}: find -newer after a remount");
        let (ok, stats, err) = sh(&format!(
            "rsync -a --stats {}/ {}/",
            mnt.display(),
            mirror.display()
        ));
        assert!(ok, "{storage}: {err}");
        assert!(
            stats.contains("Number of regular files transferred: 1\n"),
            "{storage}: rsync sent more than the one changed tile:\n{stats}"
        );
        assert_eq!(std::fs::read(mirror.join(rel)).unwrap(), new);
    }
}
