//! The storage contract: the same tests run against every [`Storage`] of the seam (the model is
//! MapProxy's shared cache test base and rclone's vfstest, and `object_store`'s one conformance
//! suite): the three local storages (exploded, Compact V1, Compact V2 folders) and the three
//! object-store layouts (Compact V2, exploded, Compact V1) over `object_store`'s in-memory store,
//! whose conditional PUTs are the real compare-and-swap paths. A storage that only reads says so
//! ([`Storage::read_only`]): each test then checks that writes are refused and change nothing.
//! A new storage adds one `contract_suite!` line; anything storage-specific is tested in its own
//! file. The Ceph test group (`tests/it/objstore.rs`) runs the same tests ([`TESTS`]) over the
//! three object layouts against a real store (Ceph RGW), which is why this module is public
//! (hidden from the docs).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::compact::CompactStore;
use super::exploded::ExplodedStore;
use super::object::exploded::ExplodedObjects;
use super::object::v1::V1Objects;
use super::object::{Connection, RetryPolicy, V2Objects};
use super::{GroupView, Place, Storage};
use crate::cache::{CacheOptions, TileBytes};
use crate::format::conf::StorageFormat;
use crate::format::sniff::ImageKind;
use crate::format::{BundleId, Slot, TileAddr};

/// A fresh storage of one kind, with what keeps it alive (a temporary folder, an in-memory
/// store) as the guard.
pub type Maker = fn() -> (Box<dyn std::any::Any>, Box<dyn Storage>);

fn place(d: &tempfile::TempDir) -> Place {
    let tiles_dir = d.path().join("_alllayers");
    std::fs::create_dir_all(&tiles_dir).unwrap();
    Place {
        root: d.path().to_path_buf(),
        tiles_dir,
    }
}

/// An exploded folder storage in a temporary folder.
pub fn exploded() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let s = ExplodedStore::new(place(&d), ImageKind::Png, false);
    (Box::new(d), Box::new(s))
}

fn compact(format: StorageFormat) -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let opts = CacheOptions {
        recheck: Duration::ZERO,
        durable: false,
        ..CacheOptions::default()
    };
    let s = CompactStore::new(place(&d), format, opts);
    (Box::new(d), Box::new(s))
}

/// A Compact V1 folder storage in a temporary folder.
pub fn compact_v1() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    compact(StorageFormat::CompactV1)
}

/// A Compact V2 folder storage in a temporary folder.
pub fn compact_v2() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    compact(StorageFormat::CompactV2)
}

/// A cache at `s3://bucket/contract` in `mem` (object_store's in-memory store), read every time
/// (no recheck interval), with fast retries for the racing-writer test: the connection each object
/// layout goes over.
fn object_conn(mem: &Arc<object_store::memory::InMemory>) -> Arc<Connection> {
    let url = crate::cache::url::ObjectUrl::parse("s3://bucket/contract")
        .unwrap()
        .unwrap();
    let opts = CacheOptions {
        recheck: Duration::ZERO,
        ..CacheOptions::default()
    };
    Arc::new(
        Connection::new(url, mem.clone(), "_alllayers", opts).with_retry(RetryPolicy {
            attempts: 200,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }),
    )
}

/// An MBTiles file in a temporary folder.
pub fn mbtiles() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("contract.mbtiles");
    super::mbtiles::create(&f, &[("name", "contract".into()), ("format", "png".into())]).unwrap();
    let s = super::mbtiles::open(&f, false).unwrap();
    (Box::new(d), Box::new(s))
}

/// An XYZ folder (`z/x/y.ext`, rows from the top) in a temporary folder.
pub fn xyz() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let p = Place {
        root: d.path().to_path_buf(),
        tiles_dir: d.path().to_path_buf(),
    };
    let s = ExplodedStore::with_layout(p, super::exploded::FileLayout::Xyz, ImageKind::Png, false);
    (Box::new(d), Box::new(s))
}

/// A TMS folder (`z/x/y.ext`, rows from the bottom) in a temporary folder.
pub fn tms() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let p = Place {
        root: d.path().to_path_buf(),
        tiles_dir: d.path().to_path_buf(),
    };
    let s = ExplodedStore::with_layout(p, super::exploded::FileLayout::Tms, ImageKind::Png, false);
    (Box::new(d), Box::new(s))
}

/// A GeoPackage tile table (Web Mercator, levels 0-20) in a temporary folder.
pub fn geopackage() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("contract.gpkg");
    let scheme =
        crate::format::conf::TileScheme::web_mercator(20, crate::format::conf::TileFormat::Png);
    let world = crate::format::extent::scheme_extent(&scheme);
    super::geopackage::create(&f, "contract", &scheme, &world, &world).unwrap();
    let t = super::geopackage::describe(&f).unwrap();
    let s = super::geopackage::open(&f, &t, false).unwrap();
    (Box::new(d), Box::new(s))
}

/// An empty PMTiles file (read only) in a temporary folder.
pub fn pmtiles() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("contract.pmtiles");
    let new = super::pmtiles::NewFile {
        tile_type: crate::format::pmtiles::TileType::Png,
        bounds: [-180.0, -85.0, 180.0, 85.0],
        metadata: serde_json::Map::new(),
    };
    super::pmtiles::Builder::create(&f, new, false)
        .unwrap()
        .finish()
        .unwrap();
    let s = super::pmtiles::PmtilesStore::open(&f).unwrap();
    (Box::new(d), Box::new(s))
}

/// The Compact V2 object layout over a fresh in-memory store.
pub fn object_v2() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let mem = Arc::new(object_store::memory::InMemory::new());
    let s = V2Objects::new(object_conn(&mem));
    (Box::new(mem), Box::new(s))
}

/// The exploded object layout over a fresh in-memory store.
pub fn object_exploded() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let mem = Arc::new(object_store::memory::InMemory::new());
    let s = ExplodedObjects::new(object_conn(&mem), ImageKind::Png);
    (Box::new(mem), Box::new(s))
}

/// The read-only Compact V1 object layout over a fresh in-memory store.
pub fn object_v1() -> (Box<dyn std::any::Any>, Box<dyn Storage>) {
    let mem = Arc::new(object_store::memory::InMemory::new());
    let s = V1Objects::new(object_conn(&mem));
    (Box::new(mem), Box::new(s))
}

/// For a storage that only reads: a write, an update and a delete are each refused, and nothing
/// is stored. True when the storage is such (the test then has nothing more to check).
fn refuses_writes_if_read_only(s: &dyn Storage) -> bool {
    if !s.read_only() {
        return false;
    }
    let t = TileAddr::new(4, 2, 3);
    let e = s
        .write_group(t.bundle(), &[(t.slot(), &bytes("t"), None)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only") || e.contains("read only"), "{e}");
    assert!(s
        .update_group(t.bundle(), &mut |_: &dyn GroupView| Ok(vec![(
            t.slot(),
            TileBytes::owned(bytes("u"))
        )]))
        .is_err());
    assert!(s.delete_group(t.bundle(), &[t.slot()]).is_err());
    assert_eq!(get(s, t), None, "a refused write stored something");
    true
}

/// A tile payload the stores keep as given (they store bytes; pixels are checked above them).
fn bytes(tag: &str) -> Vec<u8> {
    format!("tile {tag} ").repeat(7).into_bytes()
}

fn get(s: &dyn Storage, t: TileAddr) -> Option<Vec<u8>> {
    s.tile(t).unwrap().map(|b| b.to_vec())
}

/// Tiles written to two bundles of a level read back, list by level, row and column, group by
/// bundle, and count in the level statistics.
pub fn put_get_list(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    // Level 8: its 256 columns hold two bundles in a row, inside the Web Mercator world (the
    // only one an MBTiles file has).
    let a = TileAddr::new(8, 5, 6);
    let b = TileAddr::new(8, 5, 130); // another bundle of the same row
    let c = TileAddr::new(8, 7, 6);
    assert_eq!(get(&*s, a), None);
    for t in [a, b, c] {
        s.write_group(t.bundle(), &[(t.slot(), &bytes(&t.to_string()), None)])
            .unwrap();
    }
    for t in [a, b, c] {
        assert_eq!(get(&*s, t), Some(bytes(&t.to_string())), "{t}");
    }
    assert_eq!(s.levels().unwrap(), vec![8]);
    assert_eq!(s.rows(8).unwrap(), BTreeSet::from([5, 7]));
    let cols: Vec<u32> = s.cols(8, 5).unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(cols, vec![6, 130]);
    let size = s.cols(8, 5).unwrap()[0].1;
    assert_eq!(size, bytes(&a.to_string()).len() as u64);
    let groups = s.groups(8).unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let mut all = Vec::new();
    for g in &groups {
        all.extend(
            s.read_group(g)
                .unwrap()
                .into_iter()
                .map(|(t, b)| (t, b.to_vec())),
        );
    }
    all.sort();
    let mut want: Vec<_> = [a, b, c]
        .iter()
        .map(|t| (*t, bytes(&t.to_string())))
        .collect();
    want.sort();
    assert_eq!(all, want);
    let st = s.level_stats(8).unwrap();
    assert_eq!((st.bundles, st.tiles), (2, 3));
    assert_eq!(
        st.tile_bytes,
        want.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
}

/// The last of several writes of a tile (in one call or in two) is the one stored.
pub fn last_write_wins(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let t = TileAddr::new(2, 1, 1);
    let (one, two, three) = (bytes("one"), bytes("two"), bytes("three"));
    s.write_group(
        t.bundle(),
        &[(t.slot(), &one, None), (t.slot(), &two, None)],
    )
    .unwrap();
    assert_eq!(get(&*s, t), Some(two));
    s.write_group(t.bundle(), &[(t.slot(), &three, None)])
        .unwrap();
    assert_eq!(get(&*s, t), Some(three));
    assert_eq!(s.level_stats(2).unwrap().tiles, 1);
}

/// A deleted tile is gone; the others of its bundle stay.
pub fn delete(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let (a, b) = (TileAddr::new(1, 0, 0), TileAddr::new(1, 0, 1));
    let id = a.bundle();
    s.write_group(
        id,
        &[(a.slot(), &bytes("a"), None), (b.slot(), &bytes("b"), None)],
    )
    .unwrap();
    s.delete_group(id, &[a.slot()]).unwrap();
    assert_eq!(get(&*s, a), None);
    assert_eq!(get(&*s, b), Some(bytes("b")));
    // Deleting what is not there is not an error.
    s.delete_group(id, &[a.slot()]).unwrap();
    s.delete_group(TileAddr::new(9, 0, 0).bundle(), &[Slot { row: 0, col: 0 }])
        .unwrap();
    assert_eq!(s.cols(1, 0).unwrap().len(), 1);
}

/// An empty tile and one of 2^24 bytes or more (the V2 index size field) are refused.
pub fn refuses_empty_and_oversized_tiles(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let t = TileAddr::new(0, 0, 0);
    let e = s
        .write_group(t.bundle(), &[(t.slot(), b"", None)])
        .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let big = vec![1u8; crate::format::MAX_TILE_SIZE + 1];
    assert!(s
        .write_group(t.bundle(), &[(t.slot(), &big, None)])
        .is_err());
    assert_eq!(get(&*s, t), None, "a refused write stored something");
}

/// A tile written with a time shows that time; one written without shows a time of its own.
pub fn tile_times(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let t = TileAddr::new(4, 2, 3);
    let when = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    s.write_group(t.bundle(), &[(t.slot(), &bytes("t"), Some(when))])
        .unwrap();
    let got = s.tile(t).unwrap().unwrap();
    assert_eq!(s.tile_mtime(t, &got), Some(when));
    let later = when + Duration::from_secs(60);
    assert!(s.set_tile_time(t, later).unwrap());
    let got = s.tile(t).unwrap().unwrap();
    assert_eq!(s.tile_mtime(t, &got), Some(later));
    assert!(!s.set_tile_time(TileAddr::new(4, 2, 4), later).unwrap());
    // A tile without a recorded time still has one (its bundle's or its file's).
    let u = TileAddr::new(4, 2, 5);
    s.write_group(u.bundle(), &[(u.slot(), &bytes("u"), None)])
        .unwrap();
    let got = s.tile(u).unwrap().unwrap();
    let m = s.tile_mtime(u, &got).expect("a time");
    assert!(m > SystemTime::now() - Duration::from_secs(600));
}

/// A tile's time moves only when that tile changes: writing, updating (an import) and deleting
/// other tiles of its bundle, and compacting the bundle, leave it as it was shown, whether it had
/// a recorded time or not.
pub fn untouched_tiles_keep_their_times(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let (a, b, c) = (
        TileAddr::new(4, 2, 3),
        TileAddr::new(4, 2, 4),
        TileAddr::new(4, 3, 3),
    );
    let when = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    s.write_group(
        a.bundle(),
        &[
            (a.slot(), &bytes("a"), Some(when)),
            (b.slot(), &bytes("b"), None),
            (c.slot(), &bytes("c"), None),
        ],
    )
    .unwrap();
    let shown = |t: TileAddr| {
        let got = s.tile(t).unwrap().unwrap();
        s.tile_mtime(t, &got).unwrap()
    };
    let (b0, c0) = (shown(b), shown(c));
    let pause = || std::thread::sleep(Duration::from_millis(20));
    pause();
    // Another write of `a` (with a time, as a mount flushes).
    let later = when + Duration::from_secs(60);
    s.write_group(a.bundle(), &[(a.slot(), &bytes("a2"), Some(later))])
        .unwrap();
    assert_eq!(
        (shown(a), shown(b), shown(c)),
        (later, b0, c0),
        "after a write"
    );
    pause();
    // An update without times (an import) of `b`: `b` moves, `a` and `c` stay.
    s.update_group(b.bundle(), &mut |_: &dyn GroupView| {
        Ok(vec![(b.slot(), TileBytes::owned(bytes("b2")))])
    })
    .unwrap();
    assert_eq!((shown(a), shown(c)), (later, c0), "after an update");
    let b1 = shown(b);
    pause();
    // Deleting `c` leaves `a` and `b`.
    s.delete_group(c.bundle(), &[c.slot()]).unwrap();
    assert_eq!((shown(a), shown(b)), (later, b1), "after a delete");
    pause();
    // Compaction rewrites the bundle; the times stay.
    s.compact_bundle(a.bundle(), 0.0).unwrap();
    assert_eq!((shown(a), shown(b)), (later, b1), "after compaction");
}

/// An update function sees the stored tiles of its bundle and what it returns is stored.
pub fn update_sees_what_is_stored(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let t = TileAddr::new(5, 9, 9);
    let id = t.bundle();
    let mut calls = 0;
    s.update_group(id, &mut |view: &dyn GroupView| {
        calls += 1;
        assert_eq!(view.tile(t.slot())?.map(|b| b.to_vec()), None);
        Ok(vec![(t.slot(), TileBytes::owned(bytes("first")))])
    })
    .unwrap();
    assert_eq!(calls, 1);
    s.update_group(id, &mut |view: &dyn GroupView| {
        assert!(view.exists());
        let old = view.tile(t.slot())?.expect("stored").to_vec();
        assert_eq!(old, bytes("first"));
        Ok(vec![(
            t.slot(),
            TileBytes::owned([old, b"+".to_vec()].concat()),
        )])
    })
    .unwrap();
    assert_eq!(get(&*s, t), Some([bytes("first"), b"+".to_vec()].concat()));
    // Writing nothing changes nothing.
    let st = s
        .update_group(id, &mut |_: &dyn GroupView| Ok(vec![]))
        .unwrap();
    assert_eq!(st.tiles, 0);
}

/// Read-modify-write from several threads on one bundle: no update is lost (a lock or a
/// compare-and-swap keeps each update whole).
pub fn concurrent_updates_lose_nothing(make: Maker) {
    let (_d, s) = make();
    if refuses_writes_if_read_only(&*s) {
        return;
    }
    let s: Arc<dyn Storage> = Arc::from(s);
    let t = TileAddr::new(6, 0, 0);
    let id: BundleId = t.bundle();
    let (threads, rounds) = (4, 25);
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    s.update_group(id, &mut |view: &dyn GroupView| {
                        let n: u64 = match view.tile(t.slot())? {
                            Some(b) => std::str::from_utf8(&b).unwrap().trim().parse().unwrap(),
                            None => 0,
                        };
                        Ok(vec![(
                            t.slot(),
                            TileBytes::owned(format!("{:>8}", n + 1).into_bytes()),
                        )])
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let n: u64 = std::str::from_utf8(&get(&*s, t).unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, threads * rounds);
}

/// One contract test: run against the storages `Maker` makes.
pub type Test = fn(Maker);

/// Every contract test by name, for suites run outside this crate's unit tests (the Ceph test
/// group runs them over the object layouts against a real store: `tests/it/objstore.rs`).
pub const TESTS: &[(&str, Test)] = &[
    ("put_get_list", put_get_list),
    ("last_write_wins", last_write_wins),
    ("delete", delete),
    (
        "refuses_empty_and_oversized_tiles",
        refuses_empty_and_oversized_tiles,
    ),
    ("tile_times", tile_times),
    (
        "untouched_tiles_keep_their_times",
        untouched_tiles_keep_their_times,
    ),
    ("update_sees_what_is_stored", update_sees_what_is_stored),
    (
        "concurrent_updates_lose_nothing",
        concurrent_updates_lose_nothing,
    ),
];

/// Runs every contract test against one storage maker, as a module of tests named after it.
#[cfg(test)]
macro_rules! contract_suite {
    ($name:ident, $make:path) => {
        mod $name {
            #[test]
            fn put_get_list() {
                super::put_get_list($make)
            }
            #[test]
            fn last_write_wins() {
                super::last_write_wins($make)
            }
            #[test]
            fn delete() {
                super::delete($make)
            }
            #[test]
            fn refuses_empty_and_oversized_tiles() {
                super::refuses_empty_and_oversized_tiles($make)
            }
            #[test]
            fn tile_times() {
                super::tile_times($make)
            }
            #[test]
            fn untouched_tiles_keep_their_times() {
                super::untouched_tiles_keep_their_times($make)
            }
            #[test]
            fn update_sees_what_is_stored() {
                super::update_sees_what_is_stored($make)
            }
            #[test]
            fn concurrent_updates_lose_nothing() {
                super::concurrent_updates_lose_nothing($make)
            }
        }
    };
}

#[cfg(test)]
contract_suite!(exploded_store, super::exploded);
#[cfg(test)]
contract_suite!(compact_v1_store, super::compact_v1);
#[cfg(test)]
contract_suite!(compact_v2_store, super::compact_v2);
#[cfg(test)]
contract_suite!(object_v2_layout, super::object_v2);
#[cfg(test)]
contract_suite!(object_exploded_layout, super::object_exploded);
#[cfg(test)]
contract_suite!(object_v1_layout, super::object_v1);
#[cfg(test)]
contract_suite!(mbtiles_file, super::mbtiles);
#[cfg(test)]
contract_suite!(geopackage_file, super::geopackage);
#[cfg(test)]
contract_suite!(xyz_folder, super::xyz);
#[cfg(test)]
contract_suite!(tms_folder, super::tms);
#[cfg(test)]
contract_suite!(pmtiles_file, super::pmtiles);
