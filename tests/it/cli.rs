//! The command line as users and scripts meet it: output into a closed pipe, one extent form for
//! every command (and the older four-argument form), `--levels` a cache lacks, `--help` of every
//! argument, `bundlefs unmount` waiting for the daemon's flush (rsync, then verify at once) and
//! reporting a failed one, mount refusals (twice, non-empty), what a mount prints, a daemon's
//! plain-text log, and `--daemon` re-running its own arguments. Every mount is undone by a guard.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Instant;

use bundlefs::cache::Cache;
use bundlefs::format::TileAddr;

use crate::support::mount::{is_mounted, need, sh, Mounted};
use crate::support::{all_tiles, bin, run, run_ok};

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bundlefs-cli-{name}-"))
        .tempdir()
        .unwrap()
}

fn bundlefs() -> Command {
    Command::new(bin())
}

/// A labelled Web Mercator sample cache of `levels` in `dir/name`.
fn sample(dir: &Path, name: &str, levels: &str) -> PathBuf {
    let c = dir.join(name);
    run_ok(bundlefs().arg("sample").arg(&c).args(["--levels", levels]));
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs bundlefs with `args`, its standard output a pipe whose reader is already gone (so the
/// result does not depend on timing); returns the status and standard error.
fn into_closed_pipe(args: &[&std::ffi::OsStr]) -> (ExitStatus, String) {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let out = bundlefs()
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, stderr(&out))
}

/// Exit 0 or 128 + SIGPIPE, and nothing on standard error (no panic, no backtrace, no error line).
fn assert_quiet_end(what: &str, st: ExitStatus, err: &str) {
    assert!(
        matches!(st.code(), Some(0) | Some(141)),
        "{what}: status {st}, stderr: {err}"
    );
    assert!(err.trim().is_empty(), "{what}: stderr: {err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let d = tmp("pipe");
    let c = sample(d.path(), "s", "0-3");
    let dest = d.path().join("exported");
    let (c, dest) = (c.as_os_str(), dest.as_os_str());
    for args in [
        &["info".as_ref(), c][..],
        &["info".as_ref(), "--json".as_ref(), c],
        &["verify".as_ref(), c],
        &[
            "export".as_ref(),
            c,
            dest,
            "--storage".as_ref(),
            "exploded".as_ref(),
        ],
    ] {
        let (st, err) = into_closed_pipe(args);
        assert_quiet_end(&format!("{args:?}"), st, &err);
    }
    // The export itself was done; only its report had nowhere to go.
    let got = all_tiles(&Cache::open(Path::new(dest)).unwrap());
    assert_eq!(got.len(), 1 + 4 + 16 + 64);
    // And as a shell runs it, with a reader that reads a little, then goes.
    let (ok, out, err) = sh(&format!(
        "{} info --json {} | head -c 10; echo \" rc=${{PIPESTATUS[0]}}\"",
        bin(),
        Path::new(c).display()
    ));
    assert!(ok, "{err}");
    assert!(out.starts_with('{'), "{out}");
    assert!(
        out.ends_with(" rc=0\n") || out.ends_with(" rc=141\n"),
        "{out}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Tiles of the exploded cache at `dir`.
fn exploded_tiles(dir: &Path) -> BTreeMap<TileAddr, Vec<u8>> {
    all_tiles(&Cache::open(dir).unwrap())
}

#[test]
fn extent_takes_one_argument_with_negative_numbers_or_the_older_four() {
    let d = tmp("extent");
    let c = sample(d.path(), "s", "0-3");
    let all = exploded_tiles(&c);
    // The north-west quarter of the Web Mercator square.
    let (xmin, ymin, xmax, ymax) = ("-20037508.34", "0.5", "-0.5", "20037508.34");
    let one = format!("{xmin},{ymin},{xmax},{ymax}");
    let forms: Vec<Vec<String>> = vec![
        vec!["--extent".into(), one.clone()],
        vec![format!("--extent={one}")],
        vec![
            "--extent".into(),
            xmin.into(),
            ymin.into(),
            xmax.into(),
            ymax.into(),
        ],
        vec!["--extent".into(), format!("{xmin} {ymin} {xmax} {ymax}")],
    ];
    let mut seen = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        let dest = d.path().join(format!("e{i}"));
        // Options before the positional arguments: the extent must not swallow them.
        run_ok(
            bundlefs()
                .arg("export")
                .args(form)
                .arg(&c)
                .arg(&dest)
                .args(["--storage", "exploded"]),
        );
        seen.push(exploded_tiles(&dest));
    }
    let nw = &seen[0];
    assert!(
        !nw.is_empty() && nw.len() < all.len(),
        "{} of {}",
        nw.len(),
        all.len()
    );
    for t in nw.keys() {
        let side = 1u32 << t.level;
        assert!(
            t.row < side.div_ceil(2) && t.col < side.div_ceil(2),
            "{t} is outside the north-west quarter"
        );
    }
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.keys().collect::<Vec<_>>(),
            nw.keys().collect::<Vec<_>>(),
            "form {i}: {:?}",
            forms[i]
        );
    }
    // import and render read the same form.
    let dest = d.path().join("imported");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&dest)
            .args(["--levels", "0-3"]),
    );
    run_ok(
        bundlefs()
            .arg("import")
            .arg(&c)
            .arg(&dest)
            .args(["--extent", &one]),
    );
    assert_eq!(
        exploded_tiles(&dest).keys().collect::<Vec<_>>(),
        nw.keys().collect::<Vec<_>>()
    );
    let fresh = d.path().join("fresh");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&fresh)
            .args(["--levels", "0-3"]),
    );
    let out = run_ok(bundlefs().arg("render").arg(&fresh).args([
        "--source", "label", "--levels", "3", "--keep", "--extent", &one,
    ]));
    let rendered = exploded_tiles(&fresh);
    let nw3: Vec<_> = nw.keys().filter(|t| t.level == 3).collect();
    assert_eq!(rendered.keys().collect::<Vec<_>>(), nw3, "{out}");
    // A wrong extent is refused by name, in every command.
    for cmd in [vec!["export", "--storage", "exploded"], vec!["import"]] {
        let o = run(bundlefs()
            .arg(cmd[0])
            .arg(&c)
            .arg(d.path().join("x"))
            .args(&cmd[1..])
            .args(["--extent", "1,2,3"]));
        assert!(!o.status.success());
        assert!(stderr(&o).contains("XMIN,YMIN,XMAX,YMAX"), "{}", stderr(&o));
    }
}

#[test]
fn levels_the_cache_lacks_are_an_error_naming_the_levels_it_has() {
    let d = tmp("levels");
    let c = sample(d.path(), "s", "0-2");
    for (cmd, extra) in [
        ("export", &["--storage", "exploded"][..]),
        ("import", &[][..]),
    ] {
        let o = run(bundlefs()
            .arg(cmd)
            .arg(&c)
            .arg(d.path().join(format!("{cmd}-dest")))
            .args(extra)
            .args(["--levels", "5-7"]));
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("--levels 5-7") && err.contains("its levels are: 0-2"),
            "{cmd}: {err}"
        );
    }
    // A range that reaches past the cache still takes the levels it has.
    let dest = d.path().join("partly");
    run_ok(bundlefs().arg("export").arg(&c).arg(&dest).args([
        "--storage",
        "exploded",
        "--levels",
        "2-9",
    ]));
    assert!(exploded_tiles(&dest).keys().all(|t| t.level == 2));
    // render checks against the tiling scheme (its tiles need not exist yet).
    let fresh = d.path().join("fresh");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&fresh)
            .args(["--levels", "0-3"]),
    );
    let o = run(bundlefs()
        .arg("render")
        .arg(&fresh)
        .args(["--source", "label", "--levels", "9"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("its levels are: 0-3"), "{}", stderr(&o));
}

#[test]
fn help_of_every_argument_says_what_it_takes() {
    let commands = [
        "info",
        "verify",
        "create",
        "scheme",
        "export",
        "import",
        "mount",
        "unmount",
        "status",
        "completions",
        "compact",
        "delete",
        "render",
        "sample",
        "serve",
    ];
    // Every command `bundlefs --help` lists is checked (a new one must join the list above).
    let top = run_ok(bundlefs().arg("--help"));
    let listed: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(listed.len() >= commands.len(), "{top}");
    for c in &listed {
        assert!(
            commands.contains(c),
            "bundlefs {c} is not in this test's list"
        );
    }
    for c in commands {
        let help = run_ok(bundlefs().args([c, "-h"]));
        let mut entries = 0;
        let mut section = false;
        for line in help.lines() {
            if line == "Arguments:" || line == "Options:" {
                section = true;
                continue;
            }
            if !section || !line.starts_with("  ") {
                continue;
            }
            let t = line.trim();
            if t.starts_with('<') || t.starts_with('-') {
                entries += 1;
                // `  <CACHE>  Cache folder …`: the name, two spaces, then what it takes.
                assert!(
                    t.split_once("  ")
                        .is_some_and(|(_, h)| !h.trim().is_empty()),
                    "bundlefs {c}: {t:?} has no help"
                );
            }
        }
        assert!(entries >= 2, "bundlefs {c} -h:\n{help}");
    }
}

/// `bundlefs unmount MNT`, returning its output.
fn unmount(mnt: &Path) -> Output {
    run(Command::new("timeout")
        .arg("120")
        .arg(bin())
        .arg("unmount")
        .arg(mnt))
}

#[test]
fn unmount_returns_once_every_rsynced_tile_is_stored() {
    need("fusermount3");
    need("rsync");
    let d = tmp("unmount");
    let s = sample(d.path(), "s", "0-4");
    let src = d.path().join("exploded");
    run_ok(
        bundlefs()
            .arg("export")
            .arg(&s)
            .arg(&src)
            .args(["--storage", "exploded"]),
    );
    let want = exploded_tiles(&src);
    assert_eq!(want.len(), 341);
    let cache = d.path().join("cache");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-4"]),
    );
    let mnt = d.path().join("mnt");
    // Flushes only at unmount: every tile is still in the daemon's buffer when rsync is done.
    let mut m = Mounted::start(&cache, &mnt, &["-o", "rw", "--flush-idle", "600"]);
    let (ok, out, err) = sh(&format!(
        "rsync -a {}/_alllayers/ {}/_alllayers/",
        src.display(),
        mnt.display()
    ));
    assert!(ok, "rsync: {out}{err}");
    let started = Instant::now();
    let o = unmount(&mnt);
    assert!(o.status.success(), "unmount: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("every tile stored"), "{}", stdout(&o));
    // Right after it: the daemon is gone and every tile is in the bundles.
    assert!(!is_mounted(&mnt));
    let child = m.child.as_mut().unwrap();
    let st = child
        .try_wait()
        .unwrap()
        .expect("unmount returned before the daemon exited");
    assert!(st.success(), "daemon: {st}");
    let verified = run_ok(bundlefs().arg("verify").arg(&cache));
    assert!(
        verified.contains("341 tiles checked; 0 problem(s)"),
        "{verified}"
    );
    assert_eq!(exploded_tiles(&cache), want);
    eprintln!("unmount took {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn unmount_fails_naming_why_when_the_daemon_cannot_store_its_tiles() {
    need("fusermount3");
    let d = tmp("unmount-fail");
    // A 3 MB file system cannot hold the ~5 MB of tiles of levels 0-5.
    let s = sample(d.path(), "s", "0-5");
    let src = d.path().join("exploded");
    run_ok(
        bundlefs()
            .arg("export")
            .arg(&s)
            .arg(&src)
            .args(["--storage", "exploded"]),
    );
    let small = d.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let (ok, _, err) = sh(&format!(
        "mount -t tmpfs -o size=3M,mode=0755 tmpfs {} || sudo -n mount -t tmpfs -o size=3M,mode=0755 tmpfs {}",
        small.display(),
        small.display()
    ));
    assert!(
        ok,
        "mounting a small tmpfs needs root or passwordless sudo: {err}"
    );
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _small = Umount(small.clone());
    let cache = small.join("cache");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-5"]),
    );
    let mnt = d.path().join("mnt");
    let _m = Mounted::start(
        &cache,
        &mnt,
        &["-o", "rw", "--flush-idle", "600", "--write-buffer", "64M"],
    );
    // Into the buffer (no fsync): accepted, to be stored at unmount.
    let (ok, _, err) = sh(&format!(
        "cp -r {}/_alllayers/. {}/_alllayers/",
        src.display(),
        mnt.display()
    ));
    assert!(ok, "cp into the buffer: {err}");
    let o = unmount(&mnt);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}{err}", stdout(&o));
    assert!(
        err.contains("failed") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn unmount_after_the_daemon_was_killed_says_tiles_may_be_lost() {
    need("fusermount3");
    let d = tmp("unmount-killed");
    let c = sample(d.path(), "s", "0-1");
    let mnt = d.path().join("mnt");
    let mut m = Mounted::start(&c, &mnt, &["-o", "rw"]);
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let o = unmount(&mnt);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("killed?"), "{}", stderr(&o));
    assert!(!is_mounted(&mnt), "the dead mount is cleared");
    // Nothing mounted there any more.
    let o = unmount(&mnt);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not mounted"), "{}", stderr(&o));
}

/// A mount still in use for a moment (rsync's children leaving it) is waited for; one that stays
/// busy ends `unmount` with exit 1, the mount left as it is and what to do said.
#[test]
fn unmount_waits_for_a_busy_mount_then_says_what_holds_it() {
    need("fusermount3");
    let d = tmp("unmount-busy");
    let c = sample(d.path(), "s", "0-1");
    let mnt = d.path().join("mnt");
    let mut m = Mounted::start(&c, &mnt, &["-o", "rw"]);
    // Busy for 2 s: a process whose working folder is in the mount.
    let mut holder = Command::new("sleep")
        .arg("2")
        .current_dir(mnt.join("_alllayers"))
        .spawn()
        .unwrap();
    let o = unmount(&mnt);
    let _ = holder.wait();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!is_mounted(&mnt));
    if let Some(mut c) = m.child.take() {
        let _ = c.wait();
    }
    // Busy for longer than unmount waits: exit 1, still mounted, the advice given.
    let mut m = Mounted::start(&c, &mnt, &["-o", "rw"]);
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(mnt.join("_alllayers"))
        .spawn()
        .unwrap();
    let o = unmount(&mnt);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("busy") && stderr(&o).contains("fuser -vm"),
        "{}",
        stderr(&o)
    );
    assert!(is_mounted(&mnt), "the busy mount stays");
    let o = unmount(&mnt);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    if let Some(mut c) = m.child.take() {
        let _ = c.wait();
    }
}

/// A killed read-only daemon held nothing to store: its cleanup says so and succeeds, with no
/// warning about lost tiles.
#[test]
fn unmount_after_a_read_only_daemon_was_killed_says_nothing_was_lost() {
    need("fusermount3");
    let d = tmp("unmount-killed-ro");
    let c = sample(d.path(), "s", "0-1");
    let mnt = d.path().join("mnt");
    let mut m = Mounted::start(&c, &mnt, &[]);
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let o = unmount(&mnt);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(said.contains("no tile was lost"), "{said}");
    assert!(!said.contains("may be lost"), "{said}");
    assert!(!is_mounted(&mnt));
}

/// The natural whole-cache copy: `rsync -a EXPLODED_CACHE/ MNT/` sends conf.xml and conf.cdi too;
/// copies equal to the mount's are accepted, so rsync exits 0 and every tile is stored.
#[test]
fn whole_cache_rsync_into_a_mount_exits_zero() {
    need("fusermount3");
    need("rsync");
    let d = tmp("rsync-whole");
    let s = sample(d.path(), "s", "0-2");
    let src = d.path().join("exploded");
    run_ok(
        bundlefs()
            .arg("export")
            .arg(&s)
            .arg(&src)
            .args(["--storage", "exploded"]),
    );
    let want = exploded_tiles(&src);
    let cache = d.path().join("cache");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&cache)
            .args(["--levels", "0-2"]),
    );
    // The empty cache's conf.xml as the mount shows it equals the export's.
    let mnt = d.path().join("mnt");
    let _m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
    let shown = fs::read(mnt.join("conf.xml")).unwrap();
    let theirs = fs::read(src.join("conf.xml")).unwrap();
    assert_eq!(shown, theirs, "the same scheme document on both sides");
    let (ok, out, err) = sh(&format!("rsync -a {}/ {}/", src.display(), mnt.display()));
    assert!(ok, "rsync: {out}{err}");
    // cp and tar --overwrite write conf.xml in place: an equal copy is accepted there too.
    let (ok, out, err) = sh(&format!("cp -a {}/. {}/", src.display(), mnt.display()));
    assert!(ok, "cp -a: {out}{err}");
    let (ok, out, err) = sh(&format!(
        "tar -C {} -cf - . | tar -C {} --overwrite -xf -",
        src.display(),
        mnt.display()
    ));
    assert!(ok, "tar --overwrite: {out}{err}");
    // Plain tar unlinks a file before writing it anew: conf.xml cannot be removed, so it fails
    // loudly, naming it.
    let (ok, _, err) = sh(&format!(
        "tar -C {} -cf - ./conf.xml | tar -C {} -xf -",
        src.display(),
        mnt.display()
    ));
    assert!(!ok && err.contains("conf.xml"), "plain tar: {err}");
    let o = unmount(&mnt);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(exploded_tiles(&cache), want);
    // A conf.xml that differs is refused (EPERM), the mount's stays.
    let _m = Mounted::start(&cache, &mnt, &["-o", "rw"]);
    let mut other = theirs.clone();
    other.extend_from_slice(b"\n<!-- edited -->\n");
    let edited = d.path().join("edited");
    fs::create_dir_all(&edited).unwrap();
    fs::write(edited.join("conf.xml"), &other).unwrap();
    let (ok, _, err) = sh(&format!(
        "rsync -a {}/ {}/",
        edited.display(),
        mnt.display()
    ));
    assert!(!ok && err.contains("conf.xml"), "{err}");
    assert_eq!(fs::read(mnt.join("conf.xml")).unwrap(), shown);
}

/// Whether process `pid` still runs (a daemon whose starter exited is reaped by init, maybe
/// late: a zombie has ended).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// `--daemon`'s report: what is mounted where, `pid: N`, how to stop it.
fn daemon_pid(out: &str) -> u32 {
    out.lines()
        .find_map(|l| l.strip_prefix("pid: "))
        .unwrap_or_else(|| panic!("no pid line in {out:?}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn mount_refuses_a_taken_or_nonempty_folder_and_says_how_to_stop() {
    need("fusermount3");
    let d = tmp("refusals");
    let c = sample(d.path(), "s", "0-1");
    let mnt = d.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let log = d.path().join("daemon.log");
    let out = run_ok(
        bundlefs()
            .env("RUST_LOG", "info")
            .args(["mount", "--daemon", "--log-file"])
            .arg(&log)
            .arg(&c)
            .arg(&mnt),
    );
    let _guard = Mounted {
        child: None,
        mnt: mnt.clone(),
    };
    assert!(
        out.contains(&format!(
            "mounted {} on {} (read-only)",
            c.display(),
            mnt.display()
        )) && out.contains(&format!("stop with: bundlefs unmount {}", mnt.display())),
        "{out}"
    );
    let pid = daemon_pid(&out);
    assert!(running(pid));
    // A second mount on the same folder: refused, nothing stacked.
    let o = run(bundlefs().args(["mount", "--daemon"]).arg(&c).arg(&mnt));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already a bundlefs mount"),
        "{}",
        stderr(&o)
    );
    let want = fs::canonicalize(&mnt).unwrap();
    let stacked = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == want.to_str())
        .count();
    assert_eq!(stacked, 1);
    let o = unmount(&mnt);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !running(pid),
        "unmount returned before daemon pid {pid} exited"
    );
    // The log file is plain text: no colour escape codes.
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("mounted"), "{text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");

    // A folder holding files: refused, unless -o nonempty (and then they come back after).
    let full = d.path().join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("keep.txt"), b"mine").unwrap();
    let o = run(bundlefs().args(["mount", "--daemon"]).arg(&c).arg(&full));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("not empty") && err.contains("-o nonempty"),
        "{err}"
    );
    assert!(!is_mounted(&full));
    let out = run_ok(
        bundlefs()
            .args(["mount", "--daemon", "-o", "nonempty"])
            .arg(&c)
            .arg(&full),
    );
    let _guard2 = Mounted {
        child: None,
        mnt: full.clone(),
    };
    assert!(out.contains("pid: "), "{out}");
    assert!(full.join("conf.xml").is_file() && !full.join("keep.txt").exists());
    assert!(unmount(&full).status.success());
    assert_eq!(fs::read(full.join("keep.txt")).unwrap(), b"mine");

    // In the foreground: the same report, the pid being the command's own.
    let fg = d.path().join("fg");
    fs::create_dir_all(&fg).unwrap();
    let mut child = bundlefs()
        .arg("mount")
        .arg(&c)
        .arg(&fg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard3 = Mounted {
        child: None,
        mnt: fg.clone(),
    };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    let text = first.join("\n");
    assert!(
        text.contains(&format!("on {} (read-only)", fg.display())),
        "{text}"
    );
    assert_eq!(daemon_pid(&text), child.id());
    assert!(
        text.contains(&format!("bundlefs unmount {}", fg.display())),
        "{text}"
    );
    assert!(unmount(&fg).status.success());
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
}

#[test]
fn daemon_reruns_its_own_arguments_with_paths_made_absolute() {
    need("fusermount3");
    let d = tmp("rerun");
    sample(d.path(), "s", "0-1");
    fs::create_dir_all(d.path().join("m")).unwrap();
    let args = [
        "mount",
        "s",
        "m",
        "--daemon",
        "-o",
        "rw",
        "--flush-idle",
        "0.3",
        "--write-buffer",
        "8M",
        "--ttl",
        "7",
    ];
    // Relative paths, from the folder holding them.
    let out = run_ok(bundlefs().current_dir(d.path()).args(args));
    let mnt = d.path().join("m");
    let _guard = Mounted {
        child: None,
        mnt: mnt.clone(),
    };
    let pid = daemon_pid(&out);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        argv[1..],
        args,
        "the daemon runs with the command's own arguments"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    // Every option is in force: -o rw takes a tile, which unmount then finds stored.
    let tile = fs::read(mnt.join("_alllayers/L01/R00000000/C00000000.png")).unwrap();
    let dest = mnt.join("_alllayers/L01/R00000001/C00000001.png");
    fs::write(&dest, &tile).unwrap();
    let o = unmount(&mnt);
    assert!(o.status.success(), "{}", stderr(&o));
    let stored = exploded_tiles(&d.path().join("s"));
    assert_eq!(stored.get(&TileAddr::new(1, 1, 1)), Some(&tile));
}

#[test]
fn every_level_range_form_is_taken_including_up_to_n() {
    // `-4` ("up to 4") starts with a hyphen: it must be read as a value, not as an option.
    let d = tmp("level-forms");
    let src = sample(d.path(), "s", "0-2");
    for (form, want) in [("-1", 5usize), ("1-", 20), ("2", 16), ("0-1", 5)] {
        let out = d.path().join(format!("out{form}"));
        run_ok(bundlefs().arg("export").arg(&src).arg(&out).args([
            "--storage",
            "compact-v2",
            "--levels",
            form,
        ]));
        assert_eq!(
            all_tiles(&Cache::open(&out).unwrap()).len(),
            want,
            "--levels {form}"
        );
    }
    let c = d.path().join("created");
    run_ok(bundlefs().arg("create").arg(&c).args(["--levels", "-3"]));
    let info = run_ok(bundlefs().arg("info").arg(&c));
    assert!(info.contains("LODs:     4 (levels 0-3)"), "{info}");
}

/// `export` without `--storage` into a folder that already holds a cache writes in that cache's
/// storage (here exploded, where the source is Compact V2); with no cache there it still asks.
#[test]
fn export_without_storage_into_an_existing_cache_keeps_its_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = crate::support::sample_cache(tmp.path(), "0-2");
    let dest = tmp.path().join("dest");
    crate::support::bundlefs_export(&src, &dest, "exploded");
    let tile = dest.join("_alllayers/L02/R00000001/C00000002.png");
    fs::remove_file(&tile).unwrap();
    let out = run_ok(Command::new(bin()).arg("export").arg(&src).arg(&dest));
    assert!(out.contains("(exploded)"), "{out}");
    assert!(tile.is_file(), "the tile came back as an exploded file");
    assert!(!dest.join("_alllayers/L02/R0000C0000.bundle").exists());
    assert_eq!(
        all_tiles(&Cache::open(&dest).unwrap()),
        all_tiles(&Cache::open(&src).unwrap())
    );

    let out = run(Command::new(bin())
        .arg("export")
        .arg(&src)
        .arg(tmp.path().join("new")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("say which storage to write"),
        "{err}"
    );
}

/// The README's main-job lines, run as a user pastes them (the binary first on PATH), twice in a
/// row: the second run must work as the first did.
#[test]
fn the_readme_main_job_runs_twice() {
    need("fusermount3");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split("## The two commands")
        .nth(1)
        .expect("README: ## The two commands");
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("README: the main job's sh block");
    assert!(
        block.contains("bundlefs sample") && block.contains("bundlefs unmount"),
        "{block}"
    );
    let dir = Path::new(bin()).parent().unwrap().canonicalize().unwrap();
    for round in 1..=2 {
        let (ok, out, err) = sh(&format!(
            "export PATH={}:$PATH; set -e\n{block}",
            dir.display()
        ));
        assert!(ok, "round {round}: {out}{err}");
        assert!(
            out.contains("C00000000.png") || out.contains("_alllayers"),
            "round {round}: {out}"
        );
    }
}

/// From a new user's trial: exports leave no `.lck` files; `info` of an empty cache lists its
/// scales and counts tile bytes as `delete` does; a storage refusal reads "a cache in exploded
/// storage", not "a exploded cache"; a package export's time is the whole run's.
#[test]
fn small_things_from_the_trial() {
    let d = tmp("trial");
    let s = sample(d.path(), "s", "0-2");
    for st in ["compact-v2", "compact-v1", "ready-to-serve", "exploded"] {
        let out = d.path().join(format!("e-{st}"));
        run_ok(
            bundlefs()
                .arg("export")
                .arg(&s)
                .arg(&out)
                .args(["--storage", st]),
        );
        let (_, lck, _) = sh(&format!("find {} -name '*.lck'", out.display()));
        assert!(lck.trim().is_empty(), "{st}: lock files left: {lck}");
    }
    // info of an empty cache: a row per LOD.
    let empty = d.path().join("empty");
    run_ok(
        bundlefs()
            .arg("create")
            .arg(&empty)
            .args(["--levels", "0-3"]),
    );
    let info = run_ok(bundlefs().arg("info").arg(&empty));
    for l in 0..=3 {
        assert!(
            info.lines()
                .any(|x| x.split_whitespace().next() == Some(&l.to_string()) && x.contains(".")),
            "no row for level {l}:\n{info}"
        );
    }
    // Tile bytes of info equal what delete reports removing.
    let info = run_ok(bundlefs().arg("info").arg(&s));
    let row2: Vec<&str> = info
        .lines()
        .find(|x| x.split_whitespace().next() == Some("2"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(info.contains("tile bytes"), "{info}");
    let tile_bytes = row2[5];
    let del = run_ok(bundlefs().arg("delete").arg(&s).args(["--levels", "2"]));
    assert!(
        del.contains(&format!("{tile_bytes} bytes")),
        "info says {tile_bytes}; delete: {del}"
    );
    // Wording of the storage refusal.
    let o = run(bundlefs()
        .arg("export")
        .arg(&s)
        .arg(d.path().join("e-exploded"))
        .args(["--storage", "compact-v2"]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("a cache in exploded storage"), "{err}");
    assert!(!err.contains("a exploded"), "{err}");
}

/// The command synopses in README.md and doc/commands.md (`### \`bundlefs CMD …\`` headings) name
/// exactly the long options `bundlefs CMD --help` has: kept in step with clap, not by hand.
#[test]
fn readme_synopses_match_the_help() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut drift = Vec::new();
    for doc in ["README.md", "doc/commands.md"] {
        let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
        let mut seen = 0;
        for line in text.lines() {
            let Some(syn) = line
                .strip_prefix("### `bundlefs ")
                .and_then(|l| l.split('`').next())
            else {
                continue;
            };
            let cmd = syn.split_whitespace().next().unwrap();
            let help = run_ok(bundlefs().arg(cmd).arg("--help"));
            let flags = |s: &str| -> std::collections::BTreeSet<String> {
                s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(str::to_string)
                    .collect()
            };
            // The options of --help: the first long name on each option line (not the words of
            // their descriptions).
            let options: String = help
                .lines()
                .filter(|l| l.trim_start().starts_with('-'))
                .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
                .collect::<Vec<_>>()
                .join(" ");
            let (documented, real) = (flags(syn), flags(&options));
            let real: std::collections::BTreeSet<String> = real
                .into_iter()
                .filter(|f| f != "--help" && f != "--version")
                .collect();
            let missing: Vec<_> = real.difference(&documented).collect();
            let unknown: Vec<_> = documented.difference(&real).collect();
            if !(missing.is_empty() && unknown.is_empty()) {
                drift.push(format!(
                    "{doc}: `bundlefs {cmd}`: --help has but the synopsis lacks {missing:?}; the \
                     synopsis names but --help lacks {unknown:?}"
                ));
            }
            seen += 1;
        }
        assert!(seen >= 8, "{doc}: only {seen} synopses found");
    }
    assert!(drift.is_empty(), "synopses drifted:\n{}", drift.join("\n"));
}
