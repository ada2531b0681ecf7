//! Faults through real mounts: the cache's file system filling up while tiles are flushed (a small
//! tmpfs), and a render source that hangs or answers garbage. The writer sees the error, nothing
//! stored is corrupted, no reader waits past the timeout. (kill -9 at random points of a large
//! rsync: scripts/kill-test.sh, and one round in tests/writeback.rs.) Every mount is undone by a
//! guard, also on failure; test servers listen on 127.0.0.1 and stop by themselves.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::http::{Response, TestServer};
use crate::support::mount::{need, within, Mounted};
use crate::support::{bin, run_ok};
use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;
use bundlefs::jobs::verify::verify;

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bundlefs-faults-{name}-"))
        .tempdir()
        .unwrap()
}

/// A tmpfs of `size` mounted on `dir` (root, or sudo without a password), unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        let root = rustix::process::geteuid().is_root();
        let mut cmd = if root {
            Command::new("mount")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "mount"]);
            c
        };
        let out = cmd
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs needs root or passwordless sudo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let root = rustix::process::geteuid().is_root();
        let mut cmd = if root {
            Command::new("umount")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "umount"]);
            c
        };
        let _ = cmd.arg("-l").arg(&self.0).status();
    }
}

/// Writes, fsyncs and closes a file: Ok only if the tile was accepted and made durable.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[test]
fn a_full_file_system_fails_the_writer_and_corrupts_nothing() {
    need("fusermount3");
    let d = tmp("enospc");
    // Source tiles: 1,365 distinct labelled 256 px PNGs (levels 0-5, ~5 MB) outside the small fs.
    let sample = d.path().join("sample");
    run_ok(
        Command::new(bin())
            .arg("sample")
            .arg(&sample)
            .args(["--levels", "0-5"]),
    );
    let src = crate::support::all_tiles(&Cache::open(&sample).unwrap());
    let small = SmallFs::mount(&d.path().join("small"), "3M");
    let cache = small.0.join("cache");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-5"]),
    );
    let mnt = d.path().join("mnt");
    let mut synced: Vec<TileAddr> = Vec::new();
    let mut failure = None;
    {
        let m = Mounted::start(&cache, &mnt, &["-o", "rw", "--write-buffer", "64M"]);
        for (t, bytes) in &src {
            let dir = m.path(&format!("_alllayers/L{:02}/R{:08x}", t.level, t.row));
            let p = dir.join(format!("C{:08x}.png", t.col));
            let bytes = bytes.clone();
            let r = within(60, move || {
                fs::create_dir_all(&dir)?;
                write_synced(&p, &bytes)
            });
            match r {
                Ok(()) => synced.push(*t),
                Err(e) => {
                    failure = Some((*t, e));
                    break;
                }
            }
        }
        // Unmounting flushes what it can; the rest cannot fit.
    }
    let (t, e) = failure.expect("5 MB of tiles cannot fit in a 3 MB file system");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "the writer of {t} sees ENOSPC: {e}"
    );
    assert!(synced.len() > 100, "only {} tiles fit", synced.len());
    let c = Cache::open(&cache).unwrap();
    let report = verify(&c, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stored = crate::support::all_tiles(&c);
    for t in &synced {
        assert_eq!(stored.get(t), Some(&src[t]), "fsync'd tile {t} lost");
    }
    for (t, b) in &stored {
        assert_eq!(b, &src[t], "stored tile {t} differs from what was written");
    }
    // The CLI's verify agrees.
    run_ok(Command::new(bin()).arg("verify").arg(&cache));
}

/// An empty Web Mercator cache rendering from an ArcGIS MapServer at `url`, mounted with a 1 s
/// render timeout.
fn mount_with_source(d: &Path, url: &str) -> Mounted {
    mount_with_source_opts(d, url, &["--render-timeout", "1"])
}

/// The same with other mount options.
fn mount_with_source_opts(d: &Path, url: &str, opts: &[&str]) -> Mounted {
    let cache = d.join("cache");
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-3"]),
    );
    let spec = format!("arcgis:{url}/arcgis/rest/services/Test/MapServer");
    let mut args = vec!["--source", &spec];
    args.extend_from_slice(opts);
    Mounted::start(&cache, &d.join("mnt"), &args)
}

/// Reads tiles of level 2 from 4 threads at once; each result with the time it took.
fn read_four(mnt: &Path) -> Vec<(std::io::Result<Vec<u8>>, Duration)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u32)
            .map(|col| {
                let p = mnt.join(format!("_alllayers/L02/R00000001/C{col:08x}.png"));
                s.spawn(move || {
                    let start = Instant::now();
                    (fs::read(p), start.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A source that answers after 8 s (bounded, so its threads end by themselves): far past the
/// render timeouts of these tests.
fn hanging_server() -> TestServer {
    TestServer::start(|_| {
        std::thread::sleep(Duration::from_secs(8));
        Response::status(500, "late")
    })
}

#[test]
fn a_hanging_source_does_not_hang_readers_past_the_timeout() {
    need("fusermount3");
    let d = tmp("hang");
    let server = hanging_server();
    let m = mount_with_source(d.path(), &server.url());
    let mnt = m.mnt.clone();
    let readers = std::thread::spawn(move || read_four(&mnt));
    // While the four renders hang, what needs no source is still served at once.
    std::thread::sleep(Duration::from_millis(300));
    let conf = m.path("conf.xml");
    let (conf_read, took) = within(60, move || {
        let start = Instant::now();
        (fs::read(conf), start.elapsed())
    });
    assert!(conf_read.is_ok_and(|b| !b.is_empty()));
    assert!(took < Duration::from_secs(1), "conf.xml took {took:?}");
    let results = within(60, move || readers.join().unwrap());
    for (r, took) in results {
        let e = r.expect_err("a tile from a hanging source");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        // 3 attempts of 1 s, pauses of 0.25 + 0.5 s: under 4 s; slack for a loaded machine.
        assert!(took < Duration::from_secs(7), "a reader waited {took:?}");
    }
    assert!(server.requests() >= 1);
    // The mount still serves what needs no source.
    assert!(m.path("conf.xml").is_file());
}

/// Lookups that render run on threads of their own: with ONE session thread and more hanging
/// renders than render threads, the mount still answers everything else at once.
#[test]
fn hanging_renders_never_hold_the_session_thread() {
    need("fusermount3");
    let d = tmp("hang1");
    let server = hanging_server();
    let m = mount_with_source_opts(
        d.path(),
        &server.url(),
        &["--render-timeout", "3", "--threads", "1"],
    );
    // 12 readers of distinct missing tiles: more than the 10 render-lookup threads (4 jobs).
    let mnt = m.mnt.clone();
    let readers = std::thread::spawn(move || {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..12u32)
                .map(|i| {
                    let p = mnt.join(format!("_alllayers/L03/R{:08x}/C{:08x}.png", i / 8, i % 8));
                    s.spawn(move || fs::read(p))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let root = m.mnt.clone();
    // Names the kernel has never seen, so each lookup must reach the daemon: a name no render can
    // answer (JPEG in a PNG cache), a level outside the scheme, and conf.cdi.
    let (jpg, level, cdi, took) = within(60, move || {
        let start = Instant::now();
        let jpg = fs::metadata(root.join("_alllayers/L03/R00000007/C00000007.jpg"));
        let level = fs::metadata(root.join("_alllayers/L09"));
        let cdi = fs::metadata(root.join("conf.cdi"));
        (jpg, level, cdi, start.elapsed())
    });
    assert_eq!(jpg.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(level.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert!(cdi.is_ok());
    assert!(
        took < Duration::from_secs(1),
        "lookups that need no source took {took:?} behind hanging renders"
    );
    for r in within(120, move || readers.join().unwrap()) {
        let e = r.expect_err("a tile from a hanging source");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }
}

#[test]
fn a_source_answering_garbage_gives_eio_quickly() {
    need("fusermount3");
    let d = tmp("garbage");
    let server = TestServer::start(|_| Response::ok("image/png", b"\x89PNG garbage".to_vec()));
    let m = mount_with_source(d.path(), &server.url());
    let mnt = m.mnt.clone();
    let results = within(60, move || read_four(&mnt));
    for (r, took) in results {
        let e = r.expect_err("a tile from a garbage source");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert!(took < Duration::from_secs(5), "a reader waited {took:?}");
    }
    assert!(server.requests() >= 1);
    // Nothing was stored in the cache.
    let c = Cache::open(m.mnt.parent().unwrap().join("cache")).unwrap();
    assert!(crate::support::all_tiles(&c).is_empty());
}
