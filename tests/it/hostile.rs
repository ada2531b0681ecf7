//! Hostile caches and security defaults: broken index entries (past EOF, huge, overlapping, into
//! the index), bundles truncated mid-tile (before and while mounted), a `.bundlx` shorter than its
//! header, names with non-hex digits / `..` / very long, bundles and levels symlinked out of the
//! cache; each gives an error naming the file (library) or ENOENT/EIO for that tile only (mount),
//! never a panic, a read outside the file or a write outside the cache folder. Mount defaults:
//! private, `allow_other` only on request and then with `default_permissions`, `-o ro` answers
//! every write with EROFS. Every mount is undone by a guard, also on failure.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::mount::{need, within, Mounted};
use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;
use bundlefs::jobs::verify::verify;

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bundlefs-hostile-{name}-"))
        .tempdir()
        .unwrap()
}

/// A 256 px PNG sample cache, Compact V2, levels 0-2 (L02: one bundle of 16 tiles).
fn sample(dir: &Path) -> PathBuf {
    crate::support::sample_cache(dir, "0-2")
}

fn tile_path(t: TileAddr) -> String {
    format!(
        "_alllayers/L{:02}/R{:08x}/C{:08x}.png",
        t.level, t.row, t.col
    )
}

/// Sets the V2 index entry of (row, col) of a bundle file.
fn set_v2_entry(bytes: &mut [u8], row: u32, col: u32, offset: u64, size: u64) {
    let pos = 64 + 8 * (row * 128 + col) as usize;
    bytes[pos..pos + 8].copy_from_slice(&(offset | (size << 40)).to_le_bytes());
}

fn v2_entry(bytes: &[u8], row: u32, col: u32) -> (u64, u64) {
    let pos = 64 + 8 * (row * 128 + col) as usize;
    let e = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
    (e & ((1 << 40) - 1), e >> 40)
}

fn errno_of_read(p: PathBuf) -> Option<i32> {
    within(20, move || fs::read(p).err().and_then(|e| e.raw_os_error()))
}

#[test]
fn broken_v2_entries_fail_their_own_tiles_only() {
    need("fusermount3");
    let d = tmp("v2");
    let cache = sample(d.path());
    let before = crate::support::all_tiles(&Cache::open(&cache).unwrap());
    let b2 = cache.join("_alllayers/L02/R0000C0000.bundle");
    let mut bytes = fs::read(&b2).unwrap();
    let len = bytes.len() as u64;
    let (off10, size10) = v2_entry(&bytes, 1, 0);
    assert!(size10 > 16);
    // (0,0) past EOF; (0,1) the largest size a V2 entry holds; (0,2) into the index; (0,3) into
    // the middle of tile (1,0)'s bytes (overlapping it); (0,4) the whole of (1,0) but one byte
    // longer (overlapping the next record); (0,5) offset 2^40-1.
    set_v2_entry(&mut bytes, 0, 0, len + 1000, 100);
    set_v2_entry(&mut bytes, 0, 1, 64 + 131072 + 4, (1 << 24) - 1);
    set_v2_entry(&mut bytes, 0, 2, 100, 50);
    set_v2_entry(&mut bytes, 0, 3, off10 + 8, size10 - 8);
    set_v2_entry(&mut bytes, 0, 4, off10, size10 + 1);
    set_v2_entry(&mut bytes, 0, 5, (1 << 40) - 1, 16);
    fs::write(&b2, &bytes).unwrap();
    let broken: Vec<TileAddr> = (0..6).map(|c| TileAddr::new(2, 0, c)).collect();

    // Library: an error naming the file and the entry, for those tiles only.
    let c = Cache::open(&cache).unwrap();
    for t in &broken {
        let e = c.tile(*t).err().unwrap_or_else(|| panic!("{t} must fail"));
        let msg = e.to_string();
        assert!(
            msg.contains("R0000C0000.bundle") && msg.contains(&format!("col {}", t.col)),
            "{t}: {msg}"
        );
    }
    for (t, b) in before.iter().filter(|(t, _)| !broken.contains(t)) {
        assert_eq!(&c.tile(*t).unwrap().unwrap()[..], &b[..], "{t}");
    }
    let report = verify(&c, false).unwrap();
    assert_eq!(report.problems.len(), broken.len(), "{:?}", report.problems);

    // Mount: EIO for those tiles, every other tile reads as before, the daemon stays up.
    let m = Mounted::start(&cache, &d.path().join("mnt"), &[]);
    for t in &broken {
        assert_eq!(
            errno_of_read(m.path(&tile_path(*t))),
            Some(libc::EIO),
            "{t}"
        );
    }
    for (t, b) in before.iter().filter(|(t, _)| !broken.contains(t)) {
        assert_eq!(&fs::read(m.path(&tile_path(*t))).unwrap(), b, "{t}");
    }
    // The row still lists (its good tiles at least).
    let names: Vec<String> = fs::read_dir(m.path("_alllayers/L02/R00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn a_bundle_truncated_mid_tile() {
    need("fusermount3");
    let d = tmp("trunc");
    let cache = sample(d.path());
    let before = crate::support::all_tiles(&Cache::open(&cache).unwrap());
    let b2 = cache.join("_alllayers/L02/R0000C0000.bundle");
    let bytes = fs::read(&b2).unwrap();
    // The tile whose bytes end last is cut in half.
    let (last_t, (off, size)) = (0..16u32)
        .map(|i| {
            let t = TileAddr::new(2, i / 4, i % 4);
            (t, v2_entry(&bytes, t.row, t.col))
        })
        .max_by_key(|(_, (o, s))| o + s)
        .unwrap();
    let cut = off + size / 2;
    fs::write(&b2, &bytes[..cut as usize]).unwrap();
    let intact = |t: &TileAddr| {
        let (o, s) = v2_entry(&bytes, t.row, t.col);
        o + s <= cut
    };

    let c = Cache::open(&cache).unwrap();
    let e = c.tile(last_t).unwrap_err().to_string();
    assert!(
        e.contains("R0000C0000.bundle") && e.contains("past the end"),
        "{e}"
    );
    // The intact tile that ends first: cut in place later, so not read (kernel-cached) before.
    let (keep_t, (koff, ksize)) = (0..16u32)
        .map(|i| {
            let t = TileAddr::new(2, i / 4, i % 4);
            (t, v2_entry(&bytes, t.row, t.col))
        })
        .filter(|(_, (o, s))| o + s <= cut)
        .min_by_key(|(_, (o, s))| o + s)
        .unwrap();
    // Another intact tile, not read before the last cut either.
    let unread = before
        .keys()
        .copied()
        .find(|t| t.level == 2 && intact(t) && *t != keep_t)
        .unwrap();
    let m = Mounted::start(&cache, &d.path().join("mnt"), &[]);
    assert_eq!(errno_of_read(m.path(&tile_path(last_t))), Some(libc::EIO));
    for (t, b) in &before {
        if t.level < 2 || (intact(t) && *t != keep_t && *t != unread) {
            assert_eq!(&fs::read(m.path(&tile_path(*t))).unwrap(), b, "{t}");
        }
    }

    // Truncated again while mounted and mapped (a foreign tool cutting the file in place): the
    // daemon notices the size change, remaps, and fails only the tiles now cut.
    let cut2 = koff + ksize / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&b2)
        .unwrap()
        .set_len(cut2)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200)); // the mount's recheck interval
    assert_eq!(errno_of_read(m.path(&tile_path(keep_t))), Some(libc::EIO));
    for (t, b) in before.iter().filter(|(t, _)| t.level < 2) {
        assert_eq!(&fs::read(m.path(&tile_path(*t))).unwrap(), b, "{t}");
    }
    // Cut below the index, and read at once (inside the recheck interval, with the old map still
    // in use): an error for that tile, not a fault that kills the daemon.
    fs::OpenOptions::new()
        .write(true)
        .open(&b2)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert_eq!(errno_of_read(m.path(&tile_path(unread))), Some(libc::EIO));
    let _ = fs::read_dir(m.path("_alllayers/L02")).map(|d| d.count());
    assert!(
        crate::support::mount::is_mounted(&m.mnt),
        "the daemon is still up"
    );
    for (t, b) in before.iter().filter(|(t, _)| t.level < 2) {
        assert_eq!(&fs::read(m.path(&tile_path(*t))).unwrap(), b, "{t}");
    }
}

#[test]
fn v1_bundlx_shorter_than_its_header_and_entries_past_eof() {
    need("fusermount3");
    let d = tmp("v1");
    let v2 = sample(d.path());
    let cache = d.path().join("v1");
    crate::support::bundlefs_export(&v2, &cache, "compact-v1");
    let before = crate::support::all_tiles(&Cache::open(&cache).unwrap());
    // L02: a .bundlx of 10 bytes (its header is 16).
    let x2 = cache.join("_alllayers/L02/R0000C0000.bundlx");
    let xb = fs::read(&x2).unwrap();
    fs::write(&x2, &xb[..10]).unwrap();
    // L01: tile (0,1) offset past the end of the .bundle; (1,0) offset into the header.
    let x1 = cache.join("_alllayers/L01/R0000C0000.bundlx");
    let mut xb = fs::read(&x1).unwrap();
    let set = |xb: &mut Vec<u8>, row: usize, col: usize, off: u64| {
        let at = 16 + 5 * (col * 128 + row);
        xb[at..at + 5].copy_from_slice(&off.to_le_bytes()[..5]);
    };
    set(&mut xb, 0, 1, 1 << 39);
    set(&mut xb, 1, 0, 20);
    fs::write(&x1, &xb).unwrap();

    let c = Cache::open(&cache).unwrap();
    let e = c.tile(TileAddr::new(2, 0, 0)).unwrap_err().to_string();
    assert!(
        e.contains("R0000C0000.bundlx") && e.contains("shorter"),
        "{e}"
    );
    for t in [TileAddr::new(1, 0, 1), TileAddr::new(1, 1, 0)] {
        let e = c.tile(t).unwrap_err().to_string();
        assert!(e.contains("L01/R0000C0000.bundl"), "{t}: {e}");
    }
    assert_eq!(
        &c.tile(TileAddr::new(1, 1, 1)).unwrap().unwrap()[..],
        &before[&TileAddr::new(1, 1, 1)][..]
    );
    assert!(!verify(&c, false).unwrap().problems.is_empty());

    let m = Mounted::start(&cache, &d.path().join("mnt"), &[]);
    for t in [
        TileAddr::new(2, 0, 0),
        TileAddr::new(1, 0, 1),
        TileAddr::new(1, 1, 0),
    ] {
        assert_eq!(errno_of_read(m.path(&tile_path(t))), Some(libc::EIO), "{t}");
    }
    for t in [
        TileAddr::new(0, 0, 0),
        TileAddr::new(1, 0, 0),
        TileAddr::new(1, 1, 1),
    ] {
        assert_eq!(fs::read(m.path(&tile_path(t))).unwrap(), before[&t], "{t}");
    }
}

#[test]
fn hostile_names_give_enoent_and_are_never_written() {
    need("fusermount3");
    let d = tmp("names");
    let cache = sample(d.path());
    // Files with names that are not bundles of the cache, beside the real one.
    let l2 = cache.join("_alllayers/L02");
    for junk in ["R00zzC0000.bundle", "R0000C0000.bundle.bak", "Rxx..bundle"] {
        fs::write(l2.join(junk), b"junk").unwrap();
    }
    let before_tree = crate::support::tree_files(&cache);
    let m = Mounted::start(&cache, &d.path().join("mnt"), &["-o", "rw"]);
    let long = format!("C{}.png", "0".repeat(250));
    let too_long = format!("C{}.png", "0".repeat(300));
    for name in [
        "_alllayers/L0x",
        "_alllayers/L002",
        "_alllayers/L02/R0000000g",
        "_alllayers/L02/R0000000G",
        "_alllayers/L02/R000000001",
        "_alllayers/L02/R00000001/C0000000z.png",
        "_alllayers/L02/R00000001/C00000001.PNG",
        "_alllayers/L02/R00000001/C00000001.png.",
        "_alllayers/L02/R00000001/C-0000001.png",
        "_alllayers/L02/R00000001/..C00000001.png",
        "_alllayers/L02/R0000C0000.bundle",
        &format!("_alllayers/L02/R00000001/{long}"),
    ] {
        assert_eq!(errno_of_read(m.path(name)), Some(libc::ENOENT), "{name}");
    }
    // Past NAME_MAX the kernel or bundlefs refuses the name; past PATH_MAX the kernel does.
    for name in [
        &too_long,
        &format!("C{}.png", "0".repeat(1100)),
        &"C".repeat(5000),
    ] {
        let e = errno_of_read(m.path(&format!("_alllayers/L02/R00000001/{name}")));
        assert!(
            e == Some(libc::ENOENT) || e == Some(libc::ENAMETOOLONG),
            "{} chars: {e:?}",
            name.len()
        );
    }
    // `..` is the kernel's: it never leaves the mount.
    let up = m.path("_alllayers/L02/R00000001/../../../conf.xml");
    assert!(fs::read(&up).unwrap() == fs::read(m.path("conf.xml")).unwrap());
    // The level lists only its rows, not the junk.
    let rows: Vec<String> = fs::read_dir(m.path("_alllayers/L02"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    // Writing under hostile names is refused; nothing lands anywhere.
    let row = m.path("_alllayers/L02/R00000001");
    for name in ["C0000000z.png", "x.bundle", "R0000C0000.bundle", &long] {
        let p = row.join(name);
        let r = within(20, move || {
            let mut f = fs::File::create(&p)?;
            f.write_all(b"\x89PNG")?;
            f.sync_all()
        });
        assert!(r.is_err(), "{name}");
    }
    assert!(fs::create_dir(m.path("_alllayers/L02/Rzzzzzzzz")).is_err());
    assert!(fs::create_dir(m.path("_alllayers/Lfoo")).is_err());
    drop(m);
    assert_eq!(
        crate::support::tree_files(&cache),
        before_tree,
        "the cache is unchanged"
    );
}

/// A cache whose L01 bundle and L02 folder are symbolic links to copies outside the cache folder.
fn escaping_cache(d: &Path) -> (PathBuf, PathBuf) {
    let cache = sample(d);
    let outside = d.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let b1 = cache.join("_alllayers/L01/R0000C0000.bundle");
    fs::copy(&b1, outside.join("R0000C0000.bundle")).unwrap();
    fs::remove_file(&b1).unwrap();
    std::os::unix::fs::symlink(outside.join("R0000C0000.bundle"), &b1).unwrap();
    let l2 = cache.join("_alllayers/L02");
    fs::rename(&l2, outside.join("L02")).unwrap();
    std::os::unix::fs::symlink(outside.join("L02"), &l2).unwrap();
    (cache, outside)
}

#[test]
fn symlinks_out_of_the_cache_are_not_followed() {
    need("fusermount3");
    let d = tmp("symlink");
    let (cache, outside) = escaping_cache(d.path());
    let outside_before = crate::support::tree_files(&outside);
    let l0 = TileAddr::new(0, 0, 0);

    let c = Cache::open(&cache).unwrap();
    let good = c.tile(l0).unwrap().unwrap().to_vec();
    for t in [TileAddr::new(1, 0, 0), TileAddr::new(2, 1, 1)] {
        let e = c.tile(t).unwrap_err().to_string();
        assert!(e.contains("outside the cache folder"), "{t}: {e}");
        let e = c.write_tiles(&[(t, &good[..])]).unwrap_err().to_string();
        assert!(e.contains("outside the cache folder"), "{t}: {e}");
        let e = c.delete_tiles(&[t]).unwrap_err().to_string();
        assert!(e.contains("outside the cache folder"), "{t}: {e}");
    }
    // A new bundle in the symlinked level folder would be created outside: refused too.
    let far = TileAddr::new(2, 0, 0);
    assert!(c.write_tiles(&[(far, &good[..])]).is_err());
    // A dangling lock-file link: taking the lock would create its target outside.
    let lck = cache.join("_alllayers/L00/R0000C0000.lck");
    let _ = fs::remove_file(&lck);
    std::os::unix::fs::symlink(outside.join("made-by-lock"), &lck).unwrap();
    let e = c.write_tiles(&[(l0, &good[..])]).unwrap_err().to_string();
    assert!(e.contains("dangling"), "{e}");
    assert!(!outside.join("made-by-lock").exists());
    fs::remove_file(&lck).unwrap();

    let m = Mounted::start(&cache, &d.path().join("mnt"), &["-o", "rw"]);
    assert_eq!(fs::read(m.path(&tile_path(l0))).unwrap(), good);
    for t in [TileAddr::new(1, 0, 0), TileAddr::new(2, 1, 1)] {
        assert_eq!(errno_of_read(m.path(&tile_path(t))), Some(libc::EIO), "{t}");
        // A write there reaches the writer as an error (at the latest at fsync).
        let p = m.path(&tile_path(t));
        let bytes = good.clone();
        let r = within(30, move || {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)?;
            f.write_all(&bytes)?;
            f.sync_all()
        });
        assert!(
            r.is_err(),
            "{t}: a write through a symlink out of the cache"
        );
    }
    drop(m);
    assert_eq!(
        crate::support::tree_files(&outside),
        outside_before,
        "nothing written outside the cache folder"
    );
}

fn mount_options(mnt: &Path) -> String {
    let want = fs::canonicalize(mnt).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not in mountinfo", mnt.display()))
        .to_string()
}

#[test]
fn private_by_default_allow_other_with_default_permissions_ro_is_erofs() {
    need("fusermount3");
    let d = tmp("sec");
    let cache = sample(d.path());
    let mnt = d.path().join("mnt");
    let before = crate::support::tree_files(&cache);
    {
        let m = Mounted::start(&cache, &mnt, &[]);
        let info = mount_options(&mnt);
        assert!(
            !info.contains("allow_other") && !info.contains("default_permissions"),
            "{info}"
        );
        assert!(info.contains(" ro,") || info.contains(" ro "), "{info}");
        // Every kind of write is EROFS on a read-only mount.
        let t = m.path(&tile_path(TileAddr::new(1, 0, 0)));
        let row = m.path("_alllayers/L01/R00000000");
        let erofs = |what: &str, r: std::io::Result<()>| {
            let e = r.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
        };
        erofs(
            "open for write",
            fs::OpenOptions::new().write(true).open(&t).map(drop),
        );
        erofs(
            "create",
            fs::File::create(row.join("C00000007.png")).map(drop),
        );
        erofs("unlink", fs::remove_file(&t));
        erofs("mkdir", fs::create_dir(m.path("_alllayers/L01/R00000005")));
        erofs("rmdir", fs::remove_dir(&row));
        erofs("rename", fs::rename(&t, row.join("C00000009.png")));
        erofs(
            "symlink",
            std::os::unix::fs::symlink("/etc/passwd", row.join("C00000008.png")),
        );
        erofs(
            "chmod",
            fs::set_permissions(&t, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        );
        erofs("write conf.xml", fs::write(m.path("conf.xml"), b"x"));
    }
    assert_eq!(
        crate::support::tree_files(&cache),
        before,
        "ro changed nothing"
    );
    {
        let _m = Mounted::start(&cache, &mnt, &["-o", "ro,allow_other"]);
        let info = mount_options(&mnt);
        assert!(
            info.contains("allow_other") && info.contains("default_permissions"),
            "{info}"
        );
    }
    {
        let _m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        let info = mount_options(&mnt);
        assert!(!info.contains("allow_other"), "{info}");
    }
}
