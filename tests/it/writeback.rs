//! Write-back through real kernel mounts (`bundlefs mount -o rw`): cp -r and rsync -a into an
//! empty cache, read back byte-identical, rsync's second pass sends nothing, MapProxy and GDAL read
//! the bundles afterwards; OVERWRITE and MERGE; refused tiles lose nothing; kill -9 in the middle
//! of an rsync loses no fsync'd tile and leaves every bundle valid. Every mount is undone by a
//! guard, also on failure.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::mount::{is_mounted, need, sh, within, Mounted};
use crate::support::{bin, run_ok, tree_files};
use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;
use bundlefs::jobs::verify::verify;
use image::{ImageFormat, Rgba, RgbaImage};

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bundlefs-wb-{name}-"))
        .tempdir()
        .unwrap()
}

/// An empty cache made by `bundlefs create`.
fn create(dir: &Path, args: &[&str]) -> PathBuf {
    let c = dir.join("cache");
    run_ok(Command::new(bin()).arg("create").arg(&c).args(args));
    c
}

/// MapProxy-seeded caches (levels 0-4, 341 PNG tiles): v2/ and MapProxy's arcgis export, built once.
fn mapproxy_fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::support::mount::seed_mapproxy_fixture("wb-mp", 4))
}

fn rsync_transferred(src: &Path, dst: &Path) -> usize {
    rsync_stats(src, dst, "")
}

/// `rsync -a --stats EXTRA SRC/ DST/`: the number of regular files it transferred (or would).
fn rsync_stats(src: &Path, dst: &Path, extra: &str) -> usize {
    let (ok, out, err) = sh(&format!(
        "rsync -a --stats {extra} {}/ {}/",
        src.display(),
        dst.display()
    ));
    assert!(ok, "rsync failed:\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Number of regular files transferred:"))
        .unwrap_or_else(|| panic!("no stats in rsync output:\n{out}"));
    line.rsplit(':')
        .next()
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap()
}

/// Writes a file and fsyncs it, so a refused tile's error reaches us (close errors are lost by
/// `fs::write`).
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn png(img: &RgbaImage) -> Vec<u8> {
    let mut b = std::io::Cursor::new(Vec::new());
    img.write_to(&mut b, ImageFormat::Png).unwrap();
    b.into_inner()
}

fn decode(bytes: &[u8]) -> RgbaImage {
    image::load_from_memory(bytes).unwrap().to_rgba8()
}

#[test]
fn cp_and_rsync_into_an_empty_cache_then_mapproxy_reads_it() {
    need("rsync");
    let fx = mapproxy_fixture();
    let src = fx.join("arcgis"); // Lnn/Rxxxxxxxx/Cxxxxxxxx.png, MapProxy's own exploded export
    let want = tree_files(&src);
    assert_eq!(want.len(), 341);
    let d = tmp("cp-rsync");
    let cache = create(d.path(), &["--levels", "0-4"]);
    let mnt = d.path().join("mnt");
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        let all = m.path("_alllayers");
        // cp -r of levels 0-2 (plain names), then rsync -a of everything (temporary names, renames).
        let (ok, out, err) = sh(&format!(
            "cp -r {s}/L00 {s}/L01 {s}/L02 {a}/",
            s = src.display(),
            a = all.display()
        ));
        assert!(ok, "cp -r into the mount failed:\n{out}{err}");
        let sent = rsync_transferred(&src, &all);
        assert!(sent >= 256, "levels 3-4 are new: {sent} files sent");
        assert_eq!(tree_files(&all), want, "tree read back through the mount");
        // rsync's quick check (size + mtime) finds nothing to send the second time.
        assert_eq!(rsync_transferred(&src, &all), 0, "second rsync -a");
        // Same inode on a fresh lookup after the renames.
        let p = all.join("L04/R00000003/C00000007.png");
        let ino = fs::metadata(&p).unwrap().ino();
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
    }
    assert!(!is_mounted(&mnt));
    // The bundles hold the tiles: bundlefs, a read-only remount with per-tile times, MapProxy.
    let c = Cache::open(&cache).unwrap();
    let report = verify(&c, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for (rel, bytes) in &want {
        let parts: Vec<&str> = rel.split('/').collect();
        let t = TileAddr::new(
            parts[0][1..].parse().unwrap(),
            u32::from_str_radix(&parts[1][1..], 16).unwrap(),
            u32::from_str_radix(&parts[2][1..9], 16).unwrap(),
        );
        assert_eq!(&c.tile(t).unwrap().unwrap()[..], &bytes[..], "{rel}");
    }
    {
        let m = Mounted::start(&cache, &mnt, &[]);
        // Read-only: --dry-run, or rsync would try to set folder times.
        assert_eq!(
            rsync_stats(&src, &m.path("_alllayers"), "--dry-run"),
            0,
            "times survive the remount"
        );
    }
    let back = d.path().join("mapproxy-back");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mapproxy-fixture.sh");
    let (ok, out, err) = sh(&format!(
        "bash {script} --export-from compact-v2 {}/_alllayers {} 4 png",
        cache.display(),
        back.display()
    ));
    assert!(ok, "MapProxy could not read the bundles:\n{out}{err}");
    assert_eq!(
        tree_files(&back),
        want,
        "MapProxy's export of what we wrote"
    );
}

#[test]
fn gdal_reads_tiles_written_through_the_mount_like_the_original() {
    need("rsync");
    need("gdalinfo");
    let orig = crate::support::esri_sample_cache(); // ArcGIS-written, JPEG, levels 0-2 hold tiles
    let d = tmp("gdal");
    let ex = d.path().join("exploded");
    crate::support::bundlefs_export(&orig, &ex, "exploded");
    let conf = orig.join("conf.xml");
    let cache = create(
        d.path(),
        &[
            "--scheme",
            conf.to_str().unwrap(),
            "--levels",
            "0-19",
            "--format",
            "JPEG",
        ],
    );
    let mnt = d.path().join("mnt");
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        rsync_transferred(&ex.join("_alllayers"), &m.path("_alllayers"));
        // A PNG is not a tile of this JPEG cache, whatever its name says.
        let bad = m.path("_alllayers/L00/R00000000/C00000000.png");
        let e = write_synced(&bad, &png(&RgbaImage::new(256, 256))).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EINVAL),
            "PNG in a JPEG cache: {e}"
        );
    }
    let sums = |c: &Path| -> Vec<String> {
        (0..=2)
            .map(|level| {
                let oo = format!("OVERVIEW_LEVEL={}", 18 - level); // 19 overviews: level 0 is the last
                let out = run_ok(
                    Command::new("gdalinfo")
                        .args(["-checksum", "-oo", &oo])
                        .arg(c.join("conf.xml")),
                );
                let s: Vec<String> = out
                    .lines()
                    .filter(|l| l.contains("Checksum="))
                    .map(|l| l.trim().to_string())
                    .collect();
                assert!(!s.is_empty(), "{out}");
                s.join(" ")
            })
            .collect()
    };
    let want = sums(&orig);
    assert!(want.iter().all(|s| !s.contains("Checksum=0 ")), "{want:?}");
    assert_eq!(sums(&cache), want, "GDAL checksums per level");
}

/// A 256 px sample cache (levels 0-2, PNG) to write over.
fn sample(dir: &Path) -> PathBuf {
    crate::support::sample_cache(dir, "0-2")
}

#[test]
fn overwrite_and_merge() {
    let d = tmp("modes");
    let cache = sample(d.path());
    let t = TileAddr::new(2, 1, 2);
    let rel = "_alllayers/L02/R00000001/C00000002.png";
    let old = decode(&Cache::open(&cache).unwrap().tile(t).unwrap().unwrap());
    // A new tile: left half transparent, right half opaque red.
    let mut new = RgbaImage::from_pixel(256, 256, Rgba([0, 0, 0, 0]));
    for y in 0..256 {
        for x in 128..256 {
            new.put_pixel(x, y, Rgba([255, 0, 0, 255]));
        }
    }
    let new_png = png(&new);
    let mnt = d.path().join("mnt");

    // MERGE: transparent pixels keep the stored tile's.
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw", "--import-mode", "merge"]);
        fs::write(m.path(rel), &new_png).unwrap();
        let got = decode(&fs::read(m.path(rel)).unwrap());
        assert_eq!(got.get_pixel(10, 10), old.get_pixel(10, 10));
        assert_eq!(got.get_pixel(60, 200), old.get_pixel(60, 200));
        assert_eq!(got.get_pixel(200, 10), &Rgba([255, 0, 0, 255]));
        // A tile with no stored tile under it is stored as written.
        let fresh = "_alllayers/L02/R00000003/C00000000.png";
        fs::remove_file(m.path(fresh)).unwrap();
        fs::write(m.path(fresh), &new_png).unwrap();
        assert_eq!(fs::read(m.path(fresh)).unwrap(), new_png);
    }
    let c = Cache::open(&cache).unwrap();
    let merged = decode(&c.tile(t).unwrap().unwrap());
    for (x, y) in [(0, 0), (127, 255), (64, 128)] {
        assert_eq!(merged.get_pixel(x, y), old.get_pixel(x, y), "({x},{y})");
    }
    for (x, y) in [(128, 0), (255, 255)] {
        assert_eq!(merged.get_pixel(x, y), &Rgba([255, 0, 0, 255]), "({x},{y})");
    }

    // OVERWRITE (the default): what is written is what is read back, byte for byte.
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        fs::write(m.path(rel), &new_png).unwrap();
        assert_eq!(fs::read(m.path(rel)).unwrap(), new_png);
    }
    assert_eq!(
        &Cache::open(&cache).unwrap().tile(t).unwrap().unwrap()[..],
        &new_png[..]
    );
}

#[test]
fn refused_tiles_change_nothing_and_ro_refuses_writes() {
    let d = tmp("refuse");
    let cache = sample(d.path());
    let before = crate::support::all_tiles(&Cache::open(&cache).unwrap());
    let mnt = d.path().join("mnt");
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        let row = m.path("_alllayers/L02/R00000001");
        let existing = row.join("C00000002.png");
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::new(256, 256))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let cases: Vec<(PathBuf, Vec<u8>, i32, &str)> = vec![
            (
                existing.clone(),
                jpeg.clone(),
                libc::EINVAL,
                "JPEG bytes named .png",
            ),
            (
                existing.clone(),
                b"not an image".to_vec(),
                libc::EINVAL,
                "text",
            ),
            (
                existing.clone(),
                png(&RgbaImage::new(8, 8)),
                libc::EINVAL,
                "8x8 PNG in a 256 px cache",
            ),
            (
                row.join("C00000003.jpg"),
                jpeg,
                libc::EINVAL,
                "JPEG in a PNG cache",
            ),
            (
                row.join("notes.txt"),
                b"x".to_vec(),
                libc::EPERM,
                "not a tile name",
            ),
        ];
        for (path, bytes, errno, what) in cases {
            // The tile is checked at fsync/close: the error reaches the writer.
            let r = within(20, move || write_synced(&path, &bytes));
            let e = r.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(errno), "{what}: {e}");
        }
        assert_eq!(
            fs::read(&existing).unwrap(),
            before[&TileAddr::new(2, 1, 2)],
            "a refused write leaves the stored tile"
        );
        // mkdir of a level outside the scheme is refused; one inside works.
        assert!(fs::create_dir(m.path("_alllayers/L25")).is_err());
        fs::create_dir(m.path("_alllayers/L02/R00000009")).unwrap();
        assert!(m.path("_alllayers/L02/R00000009").is_dir());
        fs::remove_dir(m.path("_alllayers/L02/R00000009")).unwrap();
        assert!(!m.path("_alllayers/L02/R00000009").exists());
    }
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        crate::support::all_tiles(&c),
        before,
        "nothing stored changed"
    );
    assert!(verify(&c, true).unwrap().problems.is_empty());
    // Read-only (the default): every write is EROFS.
    {
        let m = Mounted::start(&cache, &mnt, &[]);
        let p = m.path("_alllayers/L02/R00000001/C00000002.png");
        let e = fs::OpenOptions::new().write(true).open(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = fs::remove_file(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
}

/// A PNG that is `base` with a tEXt chunk naming `t`: every tile distinct, cheap to make.
fn unique_png(base: &[u8], t: TileAddr) -> Vec<u8> {
    let text = format!("bundlefs\0{}/{}/{}", t.level, t.row, t.col);
    let mut chunk = Vec::new();
    chunk.extend_from_slice(&(text.len() as u32).to_be_bytes());
    let mut body = b"tEXt".to_vec();
    body.extend_from_slice(text.as_bytes());
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    let mut out = base[..33].to_vec(); // signature + IHDR
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&base[33..]);
    out
}

#[test]
fn kill_9_during_rsync_loses_no_fsynced_tile() {
    need("rsync");
    let d = tmp("kill");
    let cache = create(d.path(), &["--levels", "0-7"]);
    // 21,845 distinct valid tiles (levels 0-7) in an exploded source tree.
    let base = png(&RgbaImage::from_pixel(256, 256, Rgba([30, 90, 150, 255])));
    let src = d.path().join("src");
    let mut tiles: BTreeMap<TileAddr, Vec<u8>> = BTreeMap::new();
    for level in 0..=7u8 {
        for row in 0..(1u32 << level) {
            let dir = src.join(format!("L{level:02}/R{row:08x}"));
            fs::create_dir_all(&dir).unwrap();
            for col in 0..(1u32 << level) {
                let t = TileAddr::new(level, row, col);
                let b = unique_png(&base, t);
                fs::write(dir.join(format!("C{col:08x}.png")), &b).unwrap();
                tiles.insert(t, b);
            }
        }
    }
    image::load_from_memory(&tiles[&TileAddr::new(7, 5, 9)]).expect("tEXt PNG decodes");
    let mnt = d.path().join("mnt");
    let mut synced = Vec::new();
    {
        // A small buffer so bundles are flushed (and the kill can land in a flush) during rsync.
        let mut m = Mounted::start(
            &cache,
            &mnt,
            &["-o", "rw", "--write-buffer", "2M", "--flush-idle", "0.2"],
        );
        // Tiles written and fsync'd one by one before the rsync: each acknowledged by fsync.
        for col in 0..64u32 {
            let t = TileAddr::new(6, 7, col);
            let dir = m.path("_alllayers/L06/R00000007");
            fs::create_dir_all(&dir).unwrap();
            let mut f = fs::File::create(dir.join(format!("C{col:08x}.png"))).unwrap();
            f.write_all(&tiles[&t]).unwrap();
            f.sync_all().unwrap();
            synced.push(t);
        }
        let mut rsync = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.path("_alllayers").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill the daemon once a good part of the tiles went through.
        let start = Instant::now();
        loop {
            let n = fs::read_dir(cache.join("_alllayers/L07"))
                .map(|r| r.count())
                .unwrap_or(0);
            if n >= 2 || start.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let child = m.child.as_mut().unwrap();
        // SIGKILL.
        child.kill().unwrap();
        // Abort the dead daemon's connection (root), as an administrator would: a daemon thread
        // caught in a kernel invalidation waiting for a folder lock that rsync's pending request
        // holds cannot exit, and rsync and the daemon would then wait for each other forever.
        let _ = Command::new("umount").arg("-f").arg(&mnt).status();
        child.wait().unwrap();
        let _ = rsync.wait();
        // Drop unmounts the dead mount.
    }
    assert!(!is_mounted(&mnt));
    let c = Cache::open(&cache).unwrap();
    let report = verify(&c, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stored = crate::support::all_tiles(&c);
    for t in &synced {
        assert_eq!(stored.get(t), Some(&tiles[t]), "fsync'd tile {t} lost");
    }
    // Whatever else is stored is exactly what was sent: no torn or misplaced tile.
    for (t, b) in &stored {
        assert_eq!(Some(b), tiles.get(t), "tile {t}");
    }
    assert!(
        stored.len() > synced.len() && stored.len() < tiles.len(),
        "the kill should land mid-transfer: {} of {} stored",
        stored.len(),
        tiles.len()
    );
}

/// Write-behind: a bundle holding a chunk of tiles (here 1 MiB: an eighth of an 8M buffer, at
/// least 1 MiB) reaches the disk while the mount stays up, with no fsync, no idle time (the idle
/// flush is an hour away) and the buffer far from full; what stays below the chunk waits.
#[test]
fn a_bundle_holding_a_chunk_is_flushed_while_writing_goes_on() {
    let d = tmp("behind");
    let cache = create(d.path(), &["--levels", "0-9"]);
    let mnt = d.path().join("mnt");
    let m = Mounted::start(
        &cache,
        &mnt,
        &["-o", "rw", "--write-buffer", "8M", "--flush-idle", "3600"],
    );
    let base = png(&RgbaImage::from_fn(256, 256, |x, y| {
        Rgba([(x * 7 + y) as u8, (y * 13) as u8, (x ^ y) as u8, 255])
    }));
    // Noise makes each tile big enough: pad with a private ancillary chunk.
    let big = |t: TileAddr| {
        let mut b = unique_png(&base, t);
        let pad = vec![0x55u8; 40_000];
        let mut chunk = (pad.len() as u32).to_be_bytes().to_vec();
        let mut body = b"prVt".to_vec();
        body.extend_from_slice(&pad);
        chunk.extend_from_slice(&body);
        chunk.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        let iend = b.len() - 12;
        b.splice(iend..iend, chunk);
        b
    };
    // One tile in another bundle: below the chunk, it must stay in the buffer.
    let lone = TileAddr::new(9, 300, 300);
    let dir = m.path("_alllayers/L09/R0000012c");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("C0000012c.png"), big(lone)).unwrap();
    // ~1.2 MiB into bundle L09 R0000C0000, tile by tile.
    let mut written = BTreeMap::new();
    for col in 0..30u32 {
        let t = TileAddr::new(9, 1, col);
        let dir = m.path("_alllayers/L09/R00000001");
        fs::create_dir_all(&dir).unwrap();
        let b = big(t);
        image::load_from_memory(&b).expect("padded PNG decodes");
        fs::write(dir.join(format!("C{col:08x}.png")), &b).unwrap();
        written.insert(t, b);
    }
    let bundle = cache.join("_alllayers/L09/R0000C0000.bundle");
    // Bytes of the written tiles found in the bundle on disk; a stored tile must be what was
    // written (tiles written after the chunk was flushed may still wait: only the chunk counts).
    let stored_bytes = || {
        let Ok(c) = Cache::open(&cache) else {
            return 0;
        };
        let mut n = 0;
        for (t, b) in &written {
            if let Some(s) = c.tile(*t).unwrap() {
                assert_eq!(&s[..], &b[..], "tile {t}");
                n += b.len();
            }
        }
        n
    };
    let start = Instant::now();
    let mut landed = stored_bytes();
    while landed < 1 << 20 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        landed = stored_bytes();
    }
    assert!(
        landed >= 1 << 20,
        "a chunk's worth of tiles should be in {} while mounted; {landed} bytes are",
        bundle.display()
    );
    let c = Cache::open(&cache).unwrap();
    assert!(
        c.tile(lone).unwrap().is_none(),
        "a bundle below the chunk waits for idle time, fsync or unmount"
    );
    assert!(is_mounted(&mnt));
    drop(m);
    let c = Cache::open(&cache).unwrap();
    assert!(c.tile(lone).unwrap().is_some(), "flushed at unmount");
}

/// `touch -d` of a stored tile through a writable mount of a local folder (GNU touch opens the
/// file and sets its times through the handle) keeps the time after a remount, and only that
/// tile's; a second stored tile keeps its own.
#[test]
fn touch_through_a_writable_mount_keeps_the_time_after_a_remount() {
    need("touch");
    let d = tmp("touch");
    let cache = sample(d.path());
    let rel = "_alllayers/L02/R00000001/C00000002.png";
    let other = "_alllayers/L02/R00000001/C00000003.png";
    let mnt = d.path().join("mnt");
    let before_other;
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
        before_other = fs::metadata(m.path(other)).unwrap().mtime();
        run_ok(
            Command::new("touch")
                .args(["-d", "2001-02-03 04:05:06 UTC"])
                .arg(m.path(rel)),
        );
        assert_eq!(fs::metadata(m.path(rel)).unwrap().mtime(), 981_173_106);
    }
    let m = Mounted::start(&cache, &mnt, &[]);
    assert_eq!(
        fs::metadata(m.path(rel)).unwrap().mtime(),
        981_173_106,
        "the touched time was lost at unmount"
    );
    assert_eq!(fs::metadata(m.path(other)).unwrap().mtime(), before_other);
}
