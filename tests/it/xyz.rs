//! XYZ and TMS folders (`z/x/y.ext`): round trips byte for byte with the row order of each, read
//! by MapProxy (a `type: file` cache, `directory_layout: tms`), a TMS tree written by gdal2tiles
//! imported tile for tile, and schemes they cannot hold refused by name.

use std::process::Command;

use bundlefs::cache::{Cache, StorageKind};
use bundlefs::format::TileAddr;

use crate::support::mount::{need, sh};
use crate::support::{all_tiles, bin, esri_sample_cache, run, run_ok, scratch_dir, tree_files};

#[test]
fn xyz_and_tms_folders_round_trip_with_their_row_orders() {
    let d = scratch_dir("xyz-rt");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    let xyz = d.join("xyz");
    let out = run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&xyz)
            .args(["--storage", "xyz"]),
    );
    assert!(out.contains("(xyz)"), "{out}");
    // Each tile at z/x/y.jpg, y from the top; nothing else but metadata.json.
    let files = tree_files(&xyz);
    assert_eq!(files.len(), want.len() + 1, "{:?}", files.keys());
    for (t, b) in &want {
        let k = format!("{}/{}/{}.jpg", t.level, t.col, t.row);
        assert_eq!(files.get(&k), Some(b), "{k}");
    }
    // Nothing but the zoom folders and metadata.json at the root (no empty Lnn folders).
    let mut root: Vec<String> = std::fs::read_dir(&xyz)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["0", "1", "2", "metadata.json"]);
    let meta: serde_json::Value = serde_json::from_slice(&files["metadata.json"]).unwrap();
    assert_eq!(meta["scheme"], "xyz");
    assert_eq!(
        (meta["minzoom"].as_str(), meta["maxzoom"].as_str()),
        (Some("0"), Some("2"))
    );
    assert_eq!(meta["format"], "jpg");
    // XYZ → TMS: y from the bottom, then back to Compact V2: the source's tiles.
    let tms = d.join("tms");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&xyz)
            .arg(&tms)
            .args(["--storage", "tms"]),
    );
    let files = tree_files(&tms);
    for (t, b) in &want {
        let y = (1u32 << t.level) - 1 - t.row;
        let k = format!("{}/{}/{y}.jpg", t.level, t.col);
        assert_eq!(files.get(&k), Some(b), "{k}");
    }
    let c = Cache::open(&tms).unwrap();
    assert_eq!(c.kind(), StorageKind::Tms);
    let back = d.join("back");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&tms)
            .arg(&back)
            .args(["--storage", "compact-v2"]),
    );
    assert_eq!(all_tiles(&Cache::open(&back).unwrap()), want);
    let info = run_ok(Command::new(bin()).arg("info").arg(&xyz));
    assert!(
        info.contains("(XYZ folder)") && info.contains("storage:  xyz"),
        "{info}"
    );
    let v = run_ok(Command::new(bin()).args(["verify", "--decode"]).arg(&tms));
    assert!(
        v.contains("21 tiles checked and decoded; 0 problem(s)"),
        "{v}"
    );
    // An import into the XYZ folder merges into it (export without --storage keeps its kind).
    let part = d.join("part");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&part)
            .args(["--storage", "xyz", "--levels", "0-1"]),
    );
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&part)
            .args(["--levels", "2"]),
    );
    assert_eq!(all_tiles(&Cache::open(&part).unwrap()), want);
}

/// MapProxy reads the XYZ folder bundlefs wrote from its own cache as a `type: file` cache with
/// `directory_layout: tms` on GLOBAL_WEBMERCATOR, whose rows count from the top as XYZ's do.
#[test]
fn mapproxy_reads_a_bundlefs_xyz_folder() {
    crate::support::mapproxy::reads_what_bundlefs_wrote(
        "xyz-mapproxy",
        &crate::support::mapproxy::Reader {
            dest: "xyz",
            export_args: &["--storage", "xyz"],
            cache_yaml: "      type: file\n      directory_layout: tms\n      directory: {path}",
            origin_sw: false,
        },
    );
}

/// gdal2tiles (Debian's gdal-bin with python3-gdal) cuts a GeoTIFF of the sample cache's level 2
/// into a TMS tree (its default: rows from the bottom, with `tilemapresource.xml`); bundlefs reads
/// it as a TMS folder and imports each tile at its flipped row with gdal2tiles' bytes.
#[test]
fn a_tms_tree_written_by_gdal2tiles_imports_tile_for_tile() {
    need("gdal2tiles.py");
    let d = scratch_dir("xyz-gdal2tiles");
    let src = esri_sample_cache();
    let tif = d.join("l2.tif");
    let tiles = d.join("g2t");
    let (ok, out, err) = sh(&format!(
        "gdal_translate -q -of GTiff -oo OVERVIEW_LEVEL=16 {} {} && \
         /usr/bin/python3 /usr/bin/gdal2tiles.py -q -z 0-2 -w none {} {}",
        src.join("conf.xml").display(),
        tif.display(),
        tif.display(),
        tiles.display()
    ));
    assert!(ok, "gdal2tiles: {out}{err}");
    assert!(tiles.join("tilemapresource.xml").is_file());
    let files: Vec<(String, Vec<u8>)> = tree_files(&tiles)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".png"))
        .collect();
    assert!(files.len() >= 16, "{}", files.len());
    let g = Cache::open(&tiles).unwrap();
    assert_eq!(g.kind(), StorageKind::Tms);
    let c = d.join("cache");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&tiles)
            .arg(&c)
            .args(["--storage", "compact-v2"]),
    );
    let got = all_tiles(&Cache::open(&c).unwrap());
    assert_eq!(got.len(), files.len());
    for (k, b) in &files {
        let v: Vec<u32> = k
            .trim_end_matches(".png")
            .split('/')
            .map(|n| n.parse().unwrap())
            .collect();
        let t = TileAddr::new(v[0] as u8, (1u32 << v[0]) - 1 - v[2], v[1]);
        assert_eq!(got.get(&t), Some(b), "{k} as {t}");
    }
}

#[test]
fn what_xyz_cannot_hold_is_refused_by_name() {
    let d = scratch_dir("xyz-refuse");
    // A national grid (EPSG:2056, Swiss LV95): not Web Mercator.
    let c = crate::support::lv95_cache(&d);
    let o = run(Command::new(bin())
        .arg("export")
        .arg(&c)
        .arg(d.join("x"))
        .args(["--storage", "xyz"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("an XYZ folder holds Web Mercator (EPSG:3857) tiles only")
            && err.contains("NAME.gpkg"),
        "{err}"
    );
    assert!(!d.join("x").exists(), "nothing written");
    // A metadata.json that says a row order bundlefs does not know.
    let bad = d.join("bad");
    std::fs::create_dir_all(bad.join("0/0")).unwrap();
    std::fs::write(bad.join("metadata.json"), br#"{"scheme": "quadkey"}"#).unwrap();
    let o = run(Command::new(bin()).arg("info").arg(&bad));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("metadata.json") && err.contains("quadkey"),
        "{err}"
    );
}

/// nginx, started on 127.0.0.1 with `root` the given folder; stopped (SIGTERM, then waited for)
/// when dropped, also when a test fails.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(root: &std::path::Path, dir: &std::path::Path) -> Nginx {
        need("nginx");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "user root;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/tmp;\n\
                 server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
                d = dir.display(),
                root = root.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .args(["-e", &dir.join("error.log").display().to_string()])
            .arg("-c")
            .arg(&conf)
            .spawn()
            .unwrap();
        let n = Nginx { child, port };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed().as_secs() < 20, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        n
    }

    /// GET `path`: the status code and the body.
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..at]).into_owned();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, all[at + 4..].to_vec())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// `mount --layout xyz` shows a Compact V2 cache as `z/x/y.jpg` (listings and reads), `--layout
/// tms` with y from the bottom, and nginx serves the XYZ mount as a static site: every tile equal
/// to the bundle's bytes, a missing one 404. A national grid is refused by name.
#[test]
fn a_mount_with_the_xyz_layout_is_a_static_tile_site_for_nginx() {
    need("fusermount3");
    let d = scratch_dir("xyz-mount");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    {
        let m = crate::support::mount::Mounted::start(&src, &d.join("mnt"), &["--layout", "xyz"]);
        let mut names: Vec<String> = std::fs::read_dir(m.path(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["0", "1", "2"], "only the zoom folders");
        let files = tree_files(&m.path(""));
        assert_eq!(files.len(), want.len(), "{:?}", files.keys());
        for (t, b) in &want {
            let k = format!("{}/{}/{}.jpg", t.level, t.col, t.row);
            assert_eq!(files.get(&k), Some(b), "{k}");
        }
        let nginx = Nginx::start(&m.path(""), &d);
        for (t, b) in &want {
            let (code, body) = nginx.get(&format!("/{}/{}/{}.jpg", t.level, t.col, t.row));
            assert_eq!((code, &body), (200, b), "{t}");
        }
        assert_eq!(nginx.get("/2/1/9.jpg").0, 404);
        assert_eq!(nginx.get("/conf.xml").0, 404);
    }
    {
        let m = crate::support::mount::Mounted::start(&src, &d.join("mnt2"), &["-o", "layout=tms"]);
        let files = tree_files(&m.path(""));
        for (t, b) in &want {
            let y = (1u32 << t.level) - 1 - t.row;
            let k = format!("{}/{}/{y}.jpg", t.level, t.col);
            assert_eq!(files.get(&k), Some(b), "{k}");
        }
    }
    // A national grid cannot be shown as zoom levels.
    let c = crate::support::lv95_cache(&d);
    std::fs::create_dir_all(d.join("mnt3")).unwrap();
    let o = run(Command::new(bin())
        .arg("mount")
        .arg(&c)
        .arg(d.join("mnt3"))
        .args(["--layout", "xyz"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("an XYZ layout holds Web Mercator"),
        "{err}"
    );
}

/// A writable XYZ view takes `rsync` of a z/x/y tree (temporaries renamed onto `x/y.jpg`,
/// times set) and a TMS view `cp -r` of a TMS tree: the caches then hold the source's tiles
/// byte for byte. ArcGIS names are refused in those folders.
#[test]
fn writable_xyz_and_tms_mounts_store_trees_copied_into_them() {
    need("rsync");
    let d = scratch_dir("xyz-rw");
    let src = esri_sample_cache();
    let want = all_tiles(&Cache::open(&src).unwrap());
    for (storage, copy) in [
        ("xyz", "rsync -rt --exclude metadata.json"),
        ("tms", "cp -r"),
    ] {
        let tree = d.join(format!("tree-{storage}"));
        run_ok(
            Command::new(bin())
                .arg("export")
                .arg(&src)
                .arg(&tree)
                .args(["--storage", storage]),
        );
        std::fs::remove_file(tree.join("metadata.json")).ok();
        let dst = d.join(format!("dst-{storage}"));
        run_ok(
            Command::new(bin())
                .arg("create")
                .arg(&dst)
                .arg("--scheme")
                .arg(src.join("conf.xml"))
                .args(["--levels", "0-2"]),
        );
        {
            let m = crate::support::mount::Mounted::start(
                &dst,
                &d.join(format!("mnt-{storage}")),
                &["--layout", storage, "-o", "rw"],
            );
            let (ok, _, err) = sh(&format!(
                "{copy} {}/. {}/",
                tree.display(),
                m.path("").display()
            ));
            assert!(ok, "{copy}: {err}");
            // Shown at once, in the view's names.
            let files = tree_files(&m.path(""));
            assert_eq!(files.len(), want.len(), "{:?}", files.keys());
            let status = run_ok(Command::new(bin()).arg("status").arg(m.path("")));
            assert!(
                status.contains(&format!("(read-write, {storage} layout)")),
                "{status}"
            );
            if storage == "xyz" {
                // The times were kept: a second rsync finds nothing to send.
                let (ok, out, err) = sh(&format!(
                    "{copy} --stats {}/. {}/",
                    tree.display(),
                    m.path("").display()
                ));
                assert!(ok, "{err}");
                assert!(
                    out.contains("Number of regular files transferred: 0"),
                    "{out}"
                );
            }
            let (ok, _, err) = sh(&format!(
                "cp {}/0/0/0.jpg {}",
                tree.display(),
                m.path("0/0/C00000000.jpg").display()
            ));
            assert!(!ok && err.contains("Operation not permitted"), "{err}");
            // rm -r of a column folder: its tiles go, and so does the folder (exit 0).
            let (ok, _, err) = sh(&format!("rm -r {}", m.path("2/3").display()));
            assert!(ok, "rm -r 2/3: {err}");
            assert!(!m.path("2/3").exists());
        }
        let got = all_tiles(&Cache::open(&dst).unwrap());
        let kept: Vec<_> = want
            .iter()
            .filter(|(t, _)| (t.level, t.col) != (2, 3))
            .collect();
        assert_eq!(got.len(), kept.len(), "{storage}");
        for (t, b) in kept {
            assert_eq!(got.get(t), Some(b), "{storage} {t}");
        }
    }
}

/// rsync -a of a z/x/y tree over the tiles of an MBTiles file mounted as a writable XYZ view:
/// the tiles show rsync's times at once (while they wait in the write buffer, whatever the
/// file's time table still says), so a second rsync sends nothing.
#[test]
fn an_rsync_into_a_writable_view_of_an_mbtiles_file_keeps_its_times() {
    need("rsync");
    let d = scratch_dir("xyz-rw-mbtiles");
    let src = esri_sample_cache();
    let tree = d.join("tree");
    run_ok(
        Command::new(bin())
            .arg("export")
            .arg(&src)
            .arg(&tree)
            .args(["--storage", "xyz"]),
    );
    std::fs::remove_file(tree.join("metadata.json")).unwrap();
    let (ok, _, err) = sh(&format!(
        "find {} -type f -exec touch -d '2020-01-01 00:00:00' {{}} +",
        tree.display()
    ));
    assert!(ok, "{err}");
    let f = d.join("s.mbtiles");
    run_ok(Command::new(bin()).arg("export").arg(&src).arg(&f));
    let m =
        crate::support::mount::Mounted::start(&f, &d.join("mnt"), &["--layout", "xyz", "-o", "rw"]);
    // The kernel has the tile's time before the copy.
    let before = std::fs::metadata(m.path("1/0/0.jpg")).unwrap();
    assert_ne!(
        before.modified().unwrap(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800)
    );
    let rsync = |extra: &str| {
        let (ok, out, err) = sh(&format!(
            "rsync -a {extra} {}/ {}/",
            tree.display(),
            m.path("").display()
        ));
        assert!(ok, "{err}");
        out
    };
    rsync("");
    let again = rsync("-n -i");
    assert!(
        !again.lines().any(|l| l.starts_with(">f")),
        "a second rsync would send tiles again:\n{again}"
    );
    let t = std::fs::metadata(m.path("1/0/0.jpg"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        t,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800)
    );
}
