//! bundlefs as a service: fstab lines through mount(8) and fuse3's `mount.fuse3`, systemd's
//! readiness protocol on a socket standing in for systemd, signals (SIGHUP reopens the log,
//! SIGTERM stores every buffered tile), syslog by default, `bundlefs status` and `/metrics`
//! (parsed by the Prometheus client library's own parser).

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

use crate::support::mount::{is_mounted, need, sh, Mounted, OnPath, Unmount};
use crate::support::{bin, run, run_ok, sample_cache, scratch_dir};

fn png(v: u8) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(256, 256, image::Rgba([v, 60, 90, 255]));
    let mut b = std::io::Cursor::new(Vec::new());
    img.write_to(&mut b, image::ImageFormat::Png).unwrap();
    b.into_inner()
}

/// `bundlefs status MNT --json`: (exit code, the parsed list).
fn status(mnt: &Path) -> (i32, serde_json::Value) {
    let o = run(Command::new(bin()).arg("status").arg(mnt).arg("--json"));
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

/// Waits until `f` holds (10 s at most).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "waited 10 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the daemon serving `mnt`, from `status`.
fn daemon_pid(mnt: &Path) -> u32 {
    let (_, v) = status(mnt);
    v[0]["report"]["pid"].as_u64().expect("a pid") as u32
}

fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn an_fstab_line_mounts_with_flags_as_words_and_umount_stores_the_tiles() {
    need("fusermount3");
    need("mount.fuse3");
    need("findmnt");
    let _on_path = OnPath::new();
    let d = scratch_dir("fstab");
    let cache = sample_cache(&d, "0-2");
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let log = d.join("daemon.log");
    let fstab = d.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a comment\n{} {} fuse.bundlefs rw,noauto,nofail,_netdev,users,x-systemd.automount,write_buffer=64M,log_file={},flush_idle=1 0 0\n",
            cache.display(),
            mnt.display(),
            log.display()
        ),
    )
    .unwrap();
    let _guard = Unmount(mnt.clone());
    let (ok, out, err) = sh(&format!("mount -T {} {}", fstab.display(), mnt.display()));
    assert!(ok, "mount -T: {out}{err}");
    let (ok, out, _) = sh(&format!(
        "findmnt -n -t fuse.bundlefs -o TARGET {}",
        mnt.display()
    ));
    assert!(ok && out.trim() == mnt.to_str().unwrap(), "findmnt: {out}");
    // The words became flags: the buffer's budget and the log file.
    let (code, v) = status(&mnt);
    assert_eq!(code, 0, "{v}");
    let r = &v[0]["report"];
    assert_eq!(r["mode"], "read-write");
    assert_eq!(r["counters"]["buffer"]["budget_bytes"], 64 << 20);
    assert_eq!(r["log"], log.to_str().unwrap());
    let pid = daemon_pid(&mnt);
    // A tile copied in, then a plain umount(8): the daemon stores it and exits.
    let tile = png(7);
    fs::write(mnt.join("_alllayers/L02/R00000001/C00000002.png"), &tile).unwrap();
    let (ok, out, err) = sh(&format!("umount {}", mnt.display()));
    assert!(ok, "umount: {out}{err}");
    until("the daemon to exit after umount", || gone(pid));
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        c.tile(TileAddr::new(2, 1, 2)).unwrap().as_deref(),
        Some(&tile[..])
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("flushed 1 tile"), "{text}");
    assert!(
        !text.contains("WARN"),
        "a clean unmount warns of nothing:\n{text}"
    );

    // An unknown word is refused by name, through mount(8) too; nothing is mounted.
    let (ok, out, err) = sh(&format!(
        "mount -t fuse.bundlefs {} {} -o ro,bogus_word=1",
        cache.display(),
        mnt.display()
    ));
    assert!(
        !ok && format!("{out}{err}").contains("bogus_word=1"),
        "{out}{err}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn systemd_readiness_and_sigterm_store_every_buffered_tile() {
    need("fusermount3");
    let d = scratch_dir("notify");
    let cache = sample_cache(&d, "0-2");
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _guard = Unmount(mnt.clone());
    // Foreground, as a Type=notify unit runs it; a long idle time keeps the tile buffered.
    let mut child = Command::new(bin())
        .args(["mount", "-o", "rw", "--flush-idle", "3600"])
        .arg(&cache)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(is_mounted(&mnt), "READY=1 only once the mount is live");
    let tile = png(9);
    fs::write(mnt.join("_alllayers/L02/R00000003/C00000001.png"), &tile).unwrap();
    let (_, v) = status(&mnt);
    assert_eq!(
        v[0]["report"]["counters"]["buffer"]["waiting_tiles"], 1,
        "{v}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!is_mounted(&mnt));
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        c.tile(TileAddr::new(2, 3, 1)).unwrap().as_deref(),
        Some(&tile[..])
    );
}

#[test]
fn sighup_reopens_a_moved_log_file_and_keeps_the_mount() {
    need("fusermount3");
    let d = scratch_dir("sighup");
    let cache = sample_cache(&d, "0-2");
    let mnt = d.join("mnt");
    let log = d.join("b.log");
    fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let out = run_ok(
        Command::new(bin())
            .args(["mount", "--daemon", "-o", "rw"])
            .arg(&cache)
            .arg(&mnt)
            .arg("--log-file")
            .arg(&log),
    );
    assert!(out.contains(&format!("log: {}", log.display())), "{out}");
    let pid = daemon_pid(&mnt);
    fs::rename(&log, d.join("b.log.1")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    until("the log to be reopened", || log.exists());
    assert!(is_mounted(&mnt), "SIGHUP keeps the mount");
    fs::write(mnt.join("_alllayers/L01/R00000000/C00000001.png"), png(3)).unwrap();
    let o = run(Command::new(bin()).arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{o:?}");
    let new = fs::read_to_string(&log).unwrap();
    let old = fs::read_to_string(d.join("b.log.1")).unwrap();
    assert!(old.contains("mounted") && !old.contains("flushed"), "{old}");
    assert!(
        new.contains("SIGHUP: log reopened") && new.contains("flushed 1 tile"),
        "{new}"
    );
}

#[test]
fn a_daemon_without_a_log_file_logs_to_syslog() {
    need("fusermount3");
    let d = scratch_dir("syslog");
    let cache = sample_cache(&d, "0-1");
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let sock_path = d.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _guard = Unmount(mnt.clone());
    let out = run_ok(
        Command::new(bin())
            .args(["mount", "--daemon"])
            .arg(&cache)
            .arg(&mnt)
            .env("BUNDLEFS_SYSLOG_SOCKET", &sock_path),
    );
    assert!(out.contains("log: syslog ("), "{out}");
    let mut buf = [0u8; 8192];
    let n = sock.recv(&mut buf).expect("a syslog datagram");
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    // RFC 3164: <PRI> with facility daemon (3) and severity info (6): 3*8+6 = 30.
    assert!(line.starts_with("<30>"), "{line}");
    assert!(
        line.contains("bundlefs[") && line.contains("mounted"),
        "{line}"
    );
    run_ok(Command::new(bin()).arg("unmount").arg(&mnt));
}

#[test]
fn status_and_metrics_read_the_same_counters() {
    need("fusermount3");
    let d = scratch_dir("status");
    let cache = sample_cache(&d, "0-2");
    let mnt = d.join("mnt");
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let m = Mounted::start(
        &cache,
        &mnt,
        &["-o", "rw", "--flush-idle", "3600", "--metrics", &addr],
    );
    // Before a flush: one tile waiting, one served.
    fs::read(m.path("_alllayers/L01/R00000000/C00000000.png")).unwrap();
    fs::write(m.path("_alllayers/L02/R00000000/C00000000.png"), png(1)).unwrap();
    // cp reports the refusal at close (std's fs::write would not look).
    fs::write(d.join("bad.png"), b"not a tile").unwrap();
    let (ok, _, err) = sh(&format!(
        "cp {} {}",
        d.join("bad.png").display(),
        m.path("_alllayers/L02/R00000000/C00000001.png").display()
    ));
    assert!(!ok, "a refused tile fails cp: {err}");
    let (code, v) = status(&mnt);
    assert_eq!(code, 0, "{v}");
    let c = &v[0]["report"]["counters"];
    assert_eq!(c["tree"]["tiles_written"], 1, "{v}");
    assert_eq!(c["tree"]["writes_refused"], 1, "{v}");
    assert_eq!(c["buffer"]["waiting_tiles"], 1, "{v}");
    assert_eq!(c["buffer"]["flushes"], 0, "{v}");
    // fsync of the tile flushes its bundle.
    let f = fs::File::options()
        .write(true)
        .open(m.path("_alllayers/L02/R00000000/C00000000.png"))
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (_, v) = status(&mnt);
    let c = &v[0]["report"]["counters"];
    assert_eq!(c["buffer"]["waiting_tiles"], 0, "{v}");
    assert_eq!(c["buffer"]["flushes"], 1, "{v}");
    // The same numbers on /metrics, read by the Prometheus client library's parser.
    let py = format!(
        r#"
import urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://{addr}/metrics").read().decode()
for f in text_string_to_metric_families(text):
    for s in f.samples:
        print(s.name, s.labels["mountpoint"], int(s.value))
"#
    );
    let (ok, out, err) = sh(&format!("python3 -c '{py}'"));
    assert!(ok, "{out}{err}");
    let get = |name: &str| {
        out.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{out}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(get("bundlefs_flushes_total"), 1);
    assert_eq!(get("bundlefs_tiles_written_total"), 1);
    assert_eq!(get("bundlefs_writes_refused_total"), 1);
    assert_eq!(get("bundlefs_buffer_tiles"), 0);
    assert!(out.contains(&format!(" {} ", mnt.display())), "{out}");
    // Text form of every mount, then the errors: a folder that is no mount, a metrics address
    // in use.
    let o = run(Command::new(bin()).arg("status"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("{}: serving", mnt.display())),
        "{text}"
    );
    let o = run(Command::new(bin()).arg("status").arg(&d));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a mount point"));
    let o = run(Command::new(bin()).arg("status").arg("/proc"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a bundlefs mount (a proc mount"));
    let mnt2 = d.join("mnt2");
    fs::create_dir_all(&mnt2).unwrap();
    let o = run(Command::new(bin())
        .args(["mount", "--daemon"])
        .arg(&cache)
        .arg(&mnt2)
        .args(["--metrics", &addr]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("--metrics {addr}: cannot listen")),
        "{err}"
    );
    assert!(!is_mounted(&mnt2));
    drop(m);
}

/// Removes the installed package on drop.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "bundlefs"]).output();
    }
}

/// The .deb `scripts/package.sh` built (test.sh builds it before the tests): `dpkg -i` installs
/// the binary, man pages, completions, unit and example; `man bundlefs-mount` shows the mount's
/// page; bash completes `bundlefs mo` to `mount`; an fstab mount runs the installed binary.
#[test]
fn the_debian_package_installs_a_working_bundlefs() {
    need("dpkg");
    need("man");
    let debs: Vec<PathBuf> = fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/target/debian"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        debs.len(),
        1,
        "want one .deb in target/debian (run scripts/package.sh, as scripts/test.sh does): {debs:?}"
    );
    let _helper = crate::support::mount::MOUNT_HELPER
        .write()
        .unwrap_or_else(|e| e.into_inner());
    let (ok, out, err) = sh(&format!("dpkg -i {}", debs[0].display()));
    assert!(ok, "dpkg -i: {out}{err}");
    let _installed = Installed;
    let (ok, out, _) = sh("dpkg -L bundlefs");
    assert!(ok);
    for f in [
        "/usr/bin/bundlefs",
        "/usr/share/man/man1/bundlefs-mount.1.gz",
        "/usr/share/man/man1/bundlefs-status.1.gz",
        "/usr/share/bash-completion/completions/bundlefs",
        "/usr/share/zsh/vendor-completions/_bundlefs",
        "/usr/share/fish/vendor_completions.d/bundlefs.fish",
        "/lib/systemd/system/bundlefs@.service",
        "/lib/systemd/system/bundlefs-serve@.service",
        "/usr/share/doc/bundlefs/fstab.example",
    ] {
        assert!(
            out.lines().any(|l| l == f),
            "{f} not in the package:\n{out}"
        );
    }
    let size = fs::metadata("/usr/bin/bundlefs").unwrap().len();
    eprintln!("installed binary: {size} bytes");
    assert!(
        size < 40 << 20,
        "the release binary is {size} bytes: debug info left in?"
    );
    let (ok, page, err) = sh("MANPAGER=cat MANWIDTH=100 man bundlefs-mount 2>&1");
    assert!(
        ok && page.contains("--write-buffer") && page.contains("--metrics"),
        "{page}{err}"
    );
    let (ok, words, err) = sh("source /usr/share/bash-completion/completions/bundlefs; \
         COMP_WORDS=(bundlefs mo); COMP_CWORD=1; COMP_LINE='bundlefs mo'; COMP_POINT=11; \
         _bundlefs bundlefs mo bundlefs; echo \"${COMPREPLY[@]}\"");
    assert!(
        ok && words.split_whitespace().any(|w| w == "mount"),
        "{words}{err}"
    );
    // An fstab mount with the installed binary (mount.fuse3 finds /usr/bin/bundlefs).
    assert!(!Path::new("/usr/local/sbin/bundlefs").exists());
    let d = scratch_dir("deb");
    let cache = sample_cache(&d, "0-1");
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let fstab = d.join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.bundlefs ro,nofail 0 0\n",
            cache.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let _guard = Unmount(mnt.clone());
    let (ok, out, err) = sh(&format!("mount -T {} {}", fstab.display(), mnt.display()));
    assert!(ok, "mount -T: {out}{err}");
    let (_, v) = status(&mnt);
    let pid = v[0]["report"]["pid"].as_u64().unwrap();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        Path::new("/usr/bin/bundlefs"),
        "the daemon runs the installed binary"
    );
    assert!(fs::read(mnt.join("_alllayers/L01/R00000000/C00000000.png")).is_ok());
    let (ok, out, err) = sh(&format!("/usr/bin/bundlefs unmount {}", mnt.display()));
    assert!(ok, "unmount: {out}{err}");
}

/// `render --metrics` serves the run's progress and the renderer's counters while it runs: a
/// scrape in the middle of a slow source (a test WMS answering in 300 ms) is parsed by the
/// Prometheus client's parser and shows tiles done and source calls.
#[test]
fn a_render_job_can_be_watched_on_metrics() {
    use crate::support::http::{Response, TestServer};
    let tile = png(5);
    let server = TestServer::start(move |req| {
        std::thread::sleep(Duration::from_millis(300));
        match req.param("REQUEST") {
            Some(r) if r.eq_ignore_ascii_case("GetMap") => Response::ok("image/png", tile.clone()),
            _ => Response::status(404, "no capabilities here"),
        }
    });
    let d = scratch_dir("jobmetrics");
    let cache = d.join("c");
    run_ok(
        Command::new(bin())
            .args(["create", "--levels", "0-3"])
            .arg(&cache),
    );
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut job = Command::new(bin())
        .arg("render")
        .arg(&cache)
        .args(["--source", &format!("wms:{}/wms?LAYERS=x", server.url())])
        .args([
            "--levels",
            "0-2",
            "--supertile",
            "0",
            "--jobs",
            "1",
            "--metrics",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let py = format!(
        r#"
import urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://{addr}/metrics").read().decode()
for f in text_string_to_metric_families(text):
    for s in f.samples:
        print(s.name, s.labels["job"], int(s.value))
"#
    );
    let (ok, out, err) = sh(&format!("python3 -c '{py}'"));
    let st = job.wait().unwrap();
    assert!(ok, "{out}{err}");
    assert!(st.success(), "{st}");
    let get = |name: &str| -> u64 {
        out.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in\n{out}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let done = get("bundlefs_job_tiles_done_total");
    assert!(
        (1..21).contains(&done),
        "mid-run: {done} of 21 tiles\n{out}"
    );
    assert!(get("bundlefs_render_source_calls_total") >= 1, "{out}");
    assert!(out.lines().all(|l| l.contains(" render ")), "{out}");
}

/// A daemon killed with SIGKILL: `status` says its mount is dead (naming the pid and how to clear
/// it) and exits 1.
#[test]
fn status_says_when_a_daemon_is_dead() {
    need("fusermount3");
    let d = scratch_dir("dead");
    let cache = sample_cache(&d, "0-1");
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    run_ok(
        Command::new(bin())
            .args(["mount", "--daemon"])
            .arg(&cache)
            .arg(&mnt),
    );
    let pid = daemon_pid(&mnt);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until("the daemon to die", || gone(pid));
    let (code, v) = status(&mnt);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v[0]["state"], "dead", "{v}");
    let problem = v[0]["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!("pid {pid}")) && problem.contains("fusermount3 -u"),
        "{problem}"
    );
}
