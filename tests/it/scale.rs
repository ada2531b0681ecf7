//! Jobs split among workers (`--shard I/N`): four `render --shard I/4` processes at once into one
//! cache store what one process stores and ask the (fake ArcGIS, counting) source for each
//! supertile once; a shard killed mid-run and run again completes its share without asking again
//! for supertiles whose tiles it had stored; export and delete shards cover the whole job; bad
//! shard specs and `--rate` are refused by name, and `--rate` spaces requests.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

use crate::render::{fake_map, parse_bbox, EXPORT_PATH};
use crate::support::http::{Response, TestServer};
use crate::support::{all_tiles, bin, run, run_ok, scratch_dir};

/// A fake ArcGIS map service drawing `fake_map` for any bbox after `delay`, recording each
/// export's bbox (rounded to metres) in order. Also the source of the shards in Ceph
/// (`objstore.rs`).
pub(crate) fn server(delay: Duration) -> (TestServer, Arc<Mutex<Vec<[i64; 4]>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a = asked.clone();
    let s = TestServer::start(move |req| {
        if req.path != EXPORT_PATH {
            return Response::status(404, "no service description here");
        }
        let (Some(bbox), Some(size)) = (
            req.params.get("bbox").and_then(|b| parse_bbox(b)),
            req.params.get("size"),
        ) else {
            return Response::status(400, "bbox and size needed");
        };
        let (w, h) = size.split_once(',').unwrap();
        std::thread::sleep(delay);
        a.lock()
            .unwrap()
            .push([0, 1, 2, 3].map(|i| bbox[i].round() as i64));
        Response::ok(
            "image/png",
            fake_map(w.parse().unwrap(), h.parse().unwrap(), &bbox),
        )
    });
    (s, asked)
}

/// A Web Mercator cache, levels 0-9, PNG.
pub(crate) fn cache(d: &Path, name: &str) -> PathBuf {
    let c = d.join(name);
    run_ok(
        Command::new(bin())
            .arg("create")
            .arg(&c)
            .args(["--levels", "0-9", "--format", "PNG"]),
    );
    c
}

/// Starts every command at once (shards of one job), waits for all, fails the test naming the
/// first that failed (its index and standard error), and returns their standard outputs.
pub(crate) fn run_at_once(cmds: Vec<Command>) -> Vec<String> {
    let children: Vec<Child> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut took = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "shard {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        took.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    took
}

/// `render` of levels 8-9 around the map's centre (where four bundles meet at both levels), in
/// supertiles of 4 × 4 tiles, kept, 2 at a time unless `extra` says `--jobs`; with `extra`. `c`
/// is a folder or an `s3://` URL.
pub(crate) fn render_cmd(c: impl AsRef<OsStr>, s: &TestServer, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("render")
        .arg(c)
        .arg("--source")
        .arg(format!(
            "arcgis:{}/arcgis/rest/services/Test/MapServer",
            s.url()
        ))
        .args(["--levels", "8-9", "--keep", "--supertile", "1024"])
        .args(["--extent", "-1200000,-1200000,1200000,1200000"])
        .args(extra);
    if !extra.contains(&"--jobs") {
        cmd.args(["--jobs", "2"]);
    }
    cmd
}

#[test]
fn four_render_shards_store_what_one_process_stores_asking_once_per_supertile() {
    let d = scratch_dir("shard-render");
    let (one_srv, one_asked) = server(Duration::ZERO);
    let whole = cache(&d, "whole");
    run_ok(&mut render_cmd(&whole, &one_srv, &[]));
    let want = all_tiles(&Cache::open(&whole).unwrap());
    // 16 × 16 tiles at level 8, 32 × 32 at level 9, each level over four bundles.
    assert_eq!(want.len(), 256 + 1024);
    let bundles: BTreeSet<_> = want.keys().map(|t| t.bundle()).collect();
    assert_eq!(bundles.len(), 8, "{bundles:?}");

    let (srv, asked) = server(Duration::from_millis(5));
    let shared = cache(&d, "shared");
    let took = run_at_once(
        (0..4)
            .map(|i| render_cmd(&shared, &srv, &["--shard", &format!("{i}/4")]))
            .collect(),
    );
    assert_eq!(all_tiles(&Cache::open(&shared).unwrap()), want);
    // Each supertile asked for once over the four shards, and the same ones one process asked.
    let mut a = asked.lock().unwrap().clone();
    let mut b = one_asked.lock().unwrap().clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a.len(), b.len(), "{took:?}");
    assert_eq!(a, b);
    assert_eq!(a.len(), 16 + 64);
    // Every shard had a share (8 bundles over 4 shards).
    assert!(
        took.iter().filter(|t| !t.contains("0 rendered")).count() >= 2,
        "{took:?}"
    );
}

/// A `render --shard 0/2` (of [`render_cmd`]) killed mid-run, to be run again
/// ([`KilledShard::rerun`]); the cache may be a folder or an `s3://` URL (`objstore.rs`).
pub(crate) struct KilledShard {
    srv: TestServer,
    asked: Arc<Mutex<Vec<[i64; 4]>>>,
    /// The share of shard 0 of 2: the tiles of its bundles, as one process stores them.
    pub share: BTreeMap<TileAddr, Vec<u8>>,
    /// The tiles stored when the first run was killed (read just before the kill).
    pub stored_at_kill: BTreeMap<TileAddr, Vec<u8>>,
}

impl KilledShard {
    /// Renders the whole job into a local cache in `d` (the reference and the share), then runs
    /// `render --shard 0/2 --jobs 1` into the empty cache `c` (of [`cache`]'s scheme) from a
    /// source answering after 40 ms, reads `c`'s tiles every 20 ms, and kills the process
    /// (SIGKILL) as soon as `kill_when(stored tiles, share)` holds; fails if it finishes first.
    pub(crate) fn start<C: AsRef<OsStr> + AsRef<Path>>(
        d: &Path,
        c: &C,
        kill_when: impl Fn(&BTreeMap<TileAddr, Vec<u8>>, &BTreeMap<TileAddr, Vec<u8>>) -> bool,
    ) -> KilledShard {
        let (one_srv, _) = server(Duration::ZERO);
        let whole = cache(d, "whole");
        run_ok(&mut render_cmd(&whole, &one_srv, &[]));
        let want = all_tiles(&Cache::open(&whole).unwrap());
        let shard = "0/2".parse::<bundlefs::cache::shard::Shard>().unwrap();
        let share: BTreeMap<TileAddr, Vec<u8>> = want
            .iter()
            .filter(|(t, _)| shard.takes(&t.bundle()))
            .map(|(t, b)| (*t, b.clone()))
            .collect();
        assert!(
            share.len() > 256 && share.len() < want.len(),
            "{}",
            share.len()
        );

        let (srv, asked) = server(Duration::from_millis(40));
        let path: &Path = c.as_ref();
        let mut child = render_cmd(c, &srv, &["--shard", "0/2", "--jobs", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let stored_at_kill = loop {
            let n = Cache::open(path).map(|c| all_tiles(&c)).unwrap_or_default();
            if kill_when(&n, &share) {
                child.kill().unwrap();
                child.wait().unwrap();
                break n;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "nothing stored");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before it was killed"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(stored_at_kill.len() < share.len());
        KilledShard {
            srv,
            asked,
            share,
            stored_at_kill,
        }
    }

    /// Runs the shard again (`--jobs 2`) to the end and checks that `c` then holds exactly the
    /// share, and that the rerun asked the source only for supertiles with a tile missing at the
    /// kill (and for some). Returns the bboxes the rerun asked for.
    pub(crate) fn rerun<C: AsRef<OsStr> + AsRef<Path>>(&self, c: &C) -> Vec<[i64; 4]> {
        let path: &Path = c.as_ref();
        let before = self.asked.lock().unwrap().len();
        run_ok(&mut render_cmd(c, &self.srv, &["--shard", "0/2"]));
        let got = all_tiles(&Cache::open(path).unwrap());
        assert!(
            got == self.share,
            "the share, complete, and nothing of the other shard: {} tiles, want {}",
            got.len(),
            self.share.len()
        );
        // The rerun asked only for supertiles with a tile missing at the kill: none of those
        // asked again is one whose 16 tiles were all stored.
        let again: Vec<[i64; 4]> = self.asked.lock().unwrap()[before..].to_vec();
        let scheme = Cache::open(path).unwrap().scheme().unwrap().clone();
        for bbox in &again {
            let res = (bbox[2] - bbox[0]) as f64 / 1024.0;
            let level = scheme
                .lods
                .iter()
                .find(|l| (l.resolution / res - 1.0).abs() < 1e-3)
                .unwrap()
                .level;
            let env = bundlefs::format::conf::Envelope {
                xmin: bbox[0] as f64 + 1.0,
                ymin: bbox[1] as f64 + 1.0,
                xmax: bbox[2] as f64 - 1.0,
                ymax: bbox[3] as f64 - 1.0,
            };
            let (rows, cols) = scheme.tile_range(level, &env).unwrap();
            let all_stored = rows
                .flat_map(|r| cols.clone().map(move |c| TileAddr::new(level, r, c)))
                .all(|t| self.stored_at_kill.contains_key(&t));
            assert!(!all_stored, "asked again for a stored supertile {bbox:?}");
        }
        assert!(!again.is_empty());
        again
    }
}

#[test]
fn a_killed_shard_run_again_completes_its_share_without_asking_for_stored_supertiles() {
    let d = scratch_dir("shard-kill");
    let c = cache(&d, "c");
    // Killed once it has stored a batch of tiles, before it is done.
    let k = KilledShard::start(&d, &c, |stored, _| !stored.is_empty());
    k.rerun(&c);
}

#[test]
fn export_and_delete_shards_cover_the_whole_job_and_bad_specs_are_refused() {
    let d = scratch_dir("shard-jobs");
    // Tiles of levels 8 and 9 around the map's centre, where four bundles meet at each level.
    let src = cache(&d, "src");
    let c = Cache::open(&src).unwrap();
    let tiles: Vec<(TileAddr, Vec<u8>)> = [(8u8, 120u32..136u32), (9, 248..264)]
        .into_iter()
        .flat_map(|(l, span)| {
            span.clone()
                .flat_map(move |r| span.clone().map(move |col| TileAddr::new(l, r, col)))
        })
        .map(|t| (t, tile_png(t)))
        .collect();
    let refs: Vec<(TileAddr, &[u8])> = tiles.iter().map(|(t, b)| (*t, &b[..])).collect();
    c.write_tiles(&refs).unwrap();
    drop(c);
    let want = all_tiles(&Cache::open(&src).unwrap());
    assert_eq!(want.len(), 2 * 256);
    let dest = d.join("dest");
    for i in 0..3 {
        run_ok(
            Command::new(bin())
                .arg("export")
                .arg(&src)
                .arg(&dest)
                .args(["--storage", "compact-v2", "--shard", &format!("{i}/3")]),
        );
    }
    assert_eq!(all_tiles(&Cache::open(&dest).unwrap()), want);
    // Two of three delete shards leave exactly the third's bundles.
    for i in [0, 2] {
        run_ok(Command::new(bin()).arg("delete").arg(&dest).args([
            "--all",
            "--shard",
            &format!("{i}/3"),
        ]));
    }
    let third = "1/3".parse::<bundlefs::cache::shard::Shard>().unwrap();
    let left = all_tiles(&Cache::open(&dest).unwrap());
    let want_left: BTreeMap<_, _> = want
        .into_iter()
        .filter(|(t, _)| third.takes(&t.bundle()))
        .collect();
    assert_eq!(left, want_left);
    for (spec, why) in [
        ("4/4", "the workers of 4 are 0 to 3"),
        ("1/0", "N must be 1 or more"),
        ("x/2", "is not a whole number"),
    ] {
        let o = run(Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(d.join("never"))
            .args(["--storage", "compact-v2", "--shard", spec]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{spec}: {err}");
    }
    for dest in ["x.tpkx", "x.pmtiles"] {
        let o = run(Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(d.join(dest))
            .args(["--shard", "0/2"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("written whole at the end"),
            "{err}"
        );
        assert!(!d.join(dest).exists(), "{dest}");
    }
}

/// A small PNG of one colour, different for each tile.
fn tile_png(t: TileAddr) -> Vec<u8> {
    let px = image::Rgba([(t.col % 256) as u8, (t.row % 256) as u8, t.level, 255]);
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_pixel(8, 8, px)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
fn rate_spaces_the_requests_to_the_source() {
    let d = scratch_dir("shard-rate");
    let (srv, asked) = server(Duration::ZERO);
    let c = cache(&d, "c");
    // 80 supertiles at 40 a second: at least 79 gaps of 25 ms.
    let t0 = Instant::now();
    run_ok(&mut render_cmd(&c, &srv, &["--rate", "40", "--jobs", "4"]));
    let took = t0.elapsed();
    assert_eq!(asked.lock().unwrap().len(), 80);
    assert!(took >= Duration::from_millis(79 * 25), "{took:?}");
    let o = run(&mut render_cmd(&c, &srv, &["--rate", "0", "--overwrite"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--rate 0"), "{err}");
}
