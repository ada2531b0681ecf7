//! Load through a real writable mount: 8 reader threads and 2 writer threads on the same bundles
//! for 60 s (BUNDLEFS_LOAD_SECS to change it); writers replace tiles as rsync does (temporary
//! name, then rename). Every tile carries a checksum of its own bytes (a
//! PNG tEXt chunk), so a reader notices any torn, mixed or misplaced tile. Zero errors and zero
//! bad reads are required; the rates are printed (run with --nocapture to see them). The mount is
//! undone by a guard, also on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::mount::{need, Mounted};
use crate::support::{bin, run_ok};
use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;
use bundlefs::jobs::verify::verify;
use image::{ImageFormat, Rgba, RgbaImage};

const KEY: &str = "bundlefs-load";

/// A 256 px PNG of one colour per generation, with a tEXt chunk `KEY\0L/R/C/GEN/SUM` where SUM is
/// the CRC-32 of "L/R/C/GEN" followed by every byte of the file outside that chunk.
fn tile_png(bases: &[Vec<u8>], t: TileAddr, gen: u64) -> Vec<u8> {
    let base = &bases[(gen % bases.len() as u64) as usize];
    let label = format!("{}/{}/{}/{gen}", t.level, t.row, t.col);
    let mut h = crc32fast::Hasher::new();
    h.update(label.as_bytes());
    h.update(base);
    let text = format!("{KEY}\0{label}/{:08x}", h.finalize());
    crate::support::png_with_text(base, &text)
}

/// Checks a tile read back: its label names `t` and its checksum matches. Returns its generation.
fn check(bytes: &[u8], t: TileAddr) -> Result<u64, String> {
    if bytes.len() < 45 {
        return Err(format!("{t}: {} bytes", bytes.len()));
    }
    let len = u32::from_be_bytes(bytes[33..37].try_into().unwrap()) as usize;
    if &bytes[37..41] != b"tEXt" || bytes.len() < 45 + len {
        return Err(format!("{t}: no tEXt chunk after IHDR"));
    }
    let text = std::str::from_utf8(&bytes[41..41 + len]).map_err(|_| format!("{t}: text"))?;
    let rest = text
        .strip_prefix(KEY)
        .and_then(|r| r.strip_prefix('\0'))
        .ok_or_else(|| format!("{t}: keyword"))?;
    let (label, sum) = rest
        .rsplit_once('/')
        .ok_or_else(|| format!("{t}: {rest}"))?;
    let mut h = crc32fast::Hasher::new();
    h.update(label.as_bytes());
    h.update(&bytes[..33]);
    h.update(&bytes[45 + len..]);
    if format!("{:08x}", h.finalize()) != sum {
        return Err(format!(
            "{t}: checksum mismatch (torn or mixed tile) for {label}, {} bytes",
            bytes.len()
        ));
    }
    let want = format!("{}/{}/{}/", t.level, t.row, t.col);
    let gen = label
        .strip_prefix(&want)
        .ok_or_else(|| format!("{t}: holds the tile {label}"))?;
    gen.parse().map_err(|_| format!("{t}: generation {gen}"))
}

fn tile_path(mnt: &Path, t: TileAddr) -> PathBuf {
    mnt.join(format!(
        "_alllayers/L{:02}/R{:08x}/C{:08x}.png",
        t.level, t.row, t.col
    ))
}

/// A small xorshift, so threads pick tiles without a shared lock.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn eight_readers_two_writers_same_bundles() {
    need("fusermount3");
    let secs: u64 = std::env::var("BUNDLEFS_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let d = tempfile::Builder::new()
        .prefix("bundlefs-load-")
        .tempdir()
        .unwrap();
    let cache = d.path().join("cache");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-4"]),
    );
    let bases: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            let img = RgbaImage::from_pixel(256, 256, Rgba([i * 30, 255 - i * 30, 90, 255]));
            let mut b = std::io::Cursor::new(Vec::new());
            img.write_to(&mut b, ImageFormat::Png).unwrap();
            b.into_inner()
        })
        .collect();
    // Level 4 (one bundle of 256 tiles) and level 3 (64 tiles): all stored before the mount.
    let tiles: Vec<TileAddr> = [(4u8, 16u32), (3, 8)]
        .iter()
        .flat_map(|&(l, n)| (0..n * n).map(move |i| TileAddr::new(l, i / n, i % n)))
        .collect();
    {
        let c = Cache::open(&cache).unwrap();
        let first: Vec<(TileAddr, Vec<u8>)> = tiles
            .iter()
            .map(|t| (*t, tile_png(&bases, *t, 0)))
            .collect();
        let refs: Vec<(TileAddr, &[u8])> = first.iter().map(|(t, b)| (*t, &b[..])).collect();
        c.write_tiles(&refs).unwrap();
    }
    // A small buffer flushed often: tiles reach the bundles while readers read those bundles.
    let m = Mounted::start(
        &cache,
        &d.path().join("mnt"),
        &["-o", "rw", "--write-buffer", "1M", "--flush-idle", "0.05"],
    );
    let mnt = m.mnt.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, writes, newer) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..2u64 {
        let (mnt, tiles, bases, stop, writes, errors) = (
            mnt.clone(),
            tiles.clone(),
            bases.clone(),
            stop.clone(),
            writes.clone(),
            errors.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e3779b97f4a7c15 ^ (w + 1));
            let mut gen = w + 1;
            while !stop.load(Ordering::Relaxed) {
                let t = tiles[rng.next(tiles.len())];
                let bytes = tile_png(&bases, t, gen);
                gen += 2;
                // As rsync does: a temporary name in the row, then rename over the tile (a
                // write in place with O_TRUNC lets any reader see the file short, by POSIX).
                // Every 16th one is fsync'd before the rename.
                let dst = tile_path(&mnt, t);
                let tmp = dst.with_file_name(format!(".w{w}-{gen}.tmp"));
                let r = fs::File::create(&tmp)
                    .and_then(|mut f| {
                        std::io::Write::write_all(&mut f, &bytes)?;
                        if gen % 32 == 1 {
                            f.sync_all()?;
                        }
                        Ok(())
                    })
                    .and_then(|()| fs::rename(&tmp, &dst));
                match r {
                    Ok(()) => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(format!("write {t}: {e}")),
                }
            }
        }));
    }
    for r in 0..8u64 {
        let (mnt, tiles, stop, reads, newer, errors) = (
            mnt.clone(),
            tiles.clone(),
            stop.clone(),
            reads.clone(),
            newer.clone(),
            errors.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng(0x2545f4914f6cdd1d ^ (r + 7));
            while !stop.load(Ordering::Relaxed) {
                let t = tiles[rng.next(tiles.len())];
                match fs::read(tile_path(&mnt, t)) {
                    Ok(b) => match check(&b, t) {
                        Ok(gen) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                            if gen > 0 {
                                newer.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    },
                    Err(e) => errors.lock().unwrap().push(format!("read {t}: {e}")),
                }
            }
        }));
    }
    // Stop early on the first errors, so a failure shows at once.
    while started.elapsed() < Duration::from_secs(secs) && errors.lock().unwrap().len() < 10 {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    drop(m);
    let errors = errors.lock().unwrap().clone();
    let (reads, writes, newer) = (
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
        newer.load(Ordering::Relaxed),
    );
    println!(
        "load: {took:.1} s, 8 readers {reads} reads ({:.0}/s, {newer} of rewritten tiles), \
         2 writers {writes} writes ({:.0}/s), {} errors",
        reads as f64 / took,
        writes as f64 / took,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(reads > 0 && writes > 0);
    assert!(newer > 0, "readers never saw a rewritten tile");
    // Afterwards: bundles valid, every tile whole and where it belongs.
    let c = Cache::open(&cache).unwrap();
    let report = verify(&c, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for t in &tiles {
        let b = c.tile(*t).unwrap().unwrap();
        check(&b, *t).unwrap();
    }
}
