//! The `bundlefs` command line: one clap argument struct per command, used as parsed by the code
//! that runs it (`commands` for the cache commands, `mount`/`unmount` for the file system), and
//! one parser per kind of value (`format::values`) shared by every command.

mod commands;
mod generate;
mod log;
mod metrics;
mod mount;
mod output;
mod registry;
mod scheme;
mod serve;
mod source;
mod status;
mod unmount;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::format::conf::{Envelope, StorageFormat, TileFormat};
use crate::format::levels::LevelRange;
use crate::format::pixels::ImportMode;
use crate::format::values::{ByteSize, Rgb, Seconds, Share};
use crate::format::TileAddr;
use crate::jobs::engine::Target;

/// Mount and convert Esri ArcGIS compact tile caches (Compact V1/V2, exploded).
#[derive(Debug, Parser)]
#[command(name = "bundlefs", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Export targets, by bundlefs or ArcGIS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    #[value(name = "exploded", alias = "EXPLODED")]
    Exploded,
    #[value(name = "compact-v1", alias = "COMPACT", alias = "compact")]
    CompactV1,
    #[value(name = "compact-v2", alias = "COMPACT_V2", alias = "compactv2")]
    CompactV2,
    /// A `.tpkx` tile package (Compact V2 bundles in a stored zip).
    #[value(name = "tpkx", alias = "TPKX")]
    Tpkx,
    /// ArcGIS's TILE_PACKAGE: a `.tpkx` when DEST ends in `.tpkx`, else a `.tpk` (the Export Map
    /// Server Cache tool's default storage for a tile package is COMPACT, i.e. V1: a `.tpk`).
    #[value(name = "tile-package", alias = "TILE_PACKAGE")]
    TilePackage,
    /// A `.tpk` tile package (Compact V1 bundles in a stored zip, ArcGIS's older package).
    #[value(name = "tpk", alias = "TPK")]
    Tpk,
    /// A ready-to-serve folder: root.json, iteminfo.json, Compact V2 bundles under tile/.
    #[value(name = "ready-to-serve", alias = "READY_TO_SERVE_FORMAT")]
    ReadyToServe,
    /// An MBTiles file (SQLite; Web Mercator zoom levels only): also chosen by a DEST ending in
    /// `.mbtiles`.
    #[value(name = "mbtiles", alias = "MBTILES")]
    Mbtiles,
    /// An OGC GeoPackage with one tile table (SQLite; any tiling scheme): also chosen by a DEST
    /// ending in `.gpkg`.
    #[value(name = "geopackage", alias = "GEOPACKAGE", alias = "gpkg")]
    Geopackage,
    /// An XYZ folder: `z/x/y.ext`, rows from the top, and a `metadata.json` (Web Mercator zoom
    /// levels only).
    #[value(name = "xyz", alias = "XYZ")]
    Xyz,
    /// A TMS folder: `z/x/y.ext`, rows from the bottom, and a `metadata.json` (Web Mercator zoom
    /// levels only).
    #[value(name = "tms", alias = "TMS")]
    Tms,
    /// A PMTiles v3 file (written once, whole; Web Mercator zoom levels only): also chosen by a
    /// DEST ending in `.pmtiles`.
    #[value(name = "pmtiles", alias = "PMTILES")]
    Pmtiles,
}

/// What `export` writes: a job target, or one of the package kinds only the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTo {
    /// A cache folder or `.tpkx` ([`Target`]).
    Target(Target),
    /// A `.tpk` package ([`crate::jobs::package::write_tpk`]).
    Tpk,
    /// A ready-to-serve folder ([`crate::jobs::package::export_ready_to_serve`]).
    ReadyToServe,
    /// An MBTiles file ([`crate::jobs::export::export_mbtiles`]).
    Mbtiles,
    /// A GeoPackage ([`crate::jobs::export::export_geopackage`]).
    Geopackage,
    /// An XYZ (false) or TMS (true) folder ([`crate::jobs::export::export_xyz`]).
    Xyz(bool),
    /// A PMTiles file ([`crate::jobs::export::export_pmtiles`]).
    Pmtiles,
}

impl ExportTo {
    /// What `export --storage S DEST` writes: `S` (TILE_PACKAGE picks `.tpkx` or `.tpk` by DEST's
    /// name), or with no `S` the package kind DEST's name says.
    ///
    /// Errors: no `S` and DEST not named `.tpkx`/`.tpk`; a package `S` whose kind contradicts
    /// DEST's extension (`--storage tpkx` into `x.tpk`), and a folder storage into a name ending
    /// in `.tpkx`/`.tpk`: both would leave a file that says one thing and holds another.
    pub fn choose(storage: Option<StorageArg>, dest: &Path) -> anyhow::Result<ExportTo> {
        use crate::jobs::package::PackageKind;
        let named = PackageKind::of_name(dest);
        let kind_text = |k: PackageKind| k.extension();
        // One-file formats a DEST's extension names: (storage, what export writes, its name,
        // its extension).
        let files = [
            (StorageArg::Mbtiles, ExportTo::Mbtiles, "MBTiles", "mbtiles"),
            (
                StorageArg::Geopackage,
                ExportTo::Geopackage,
                "GeoPackage",
                "gpkg",
            ),
            (StorageArg::Pmtiles, ExportTo::Pmtiles, "PMTiles", "pmtiles"),
        ];
        let by_name = files.iter().find(|f| {
            dest.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case(f.3))
        });
        let by_storage = files.iter().find(|f| Some(f.0) == storage);
        match (storage, by_name, by_storage) {
            (None, Some(f), _) => return Ok(f.1),
            (Some(_), Some(f), Some(g)) if f.0 == g.0 => return Ok(f.1),
            (Some(_), None, Some(g)) => anyhow::bail!(
                "{}: --storage {} writes a {} file: name it NAME.{}",
                dest.display(),
                g.3.replace("gpkg", "geopackage"),
                g.2,
                g.3
            ),
            (Some(other), Some(f), _) => anyhow::bail!(
                "{}: the name says {} but --storage {} writes something else; rename DEST \
                 or use --storage {}",
                dest.display(),
                f.2,
                other
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                f.3.replace("gpkg", "geopackage")
            ),
            _ => {}
        }
        Ok(match (storage, named) {
            (None, Some(PackageKind::Tpkx)) => ExportTo::Target(Target::Tpkx),
            (None, Some(PackageKind::Tpk)) => ExportTo::Tpk,
            (None, None) => anyhow::bail!(
                "{}: say which storage to write (--storage exploded, compact-v1, compact-v2, \
                 ready-to-serve, tpkx, tpk, mbtiles, geopackage, pmtiles, xyz or tms); only a \
                 .tpkx, .tpk, .mbtiles, .gpkg or .pmtiles name, or a cache already there, says it \
                 alone",
                dest.display()
            ),
            (Some(StorageArg::TilePackage), Some(PackageKind::Tpkx)) => {
                ExportTo::Target(Target::Tpkx)
            }
            (Some(StorageArg::TilePackage), _) => ExportTo::Tpk,
            (Some(StorageArg::Tpkx), Some(PackageKind::Tpk))
            | (Some(StorageArg::Tpk), Some(PackageKind::Tpkx)) => anyhow::bail!(
                "{}: the name says {} but --storage {} writes the other package kind; \
                 rename DEST or change --storage",
                dest.display(),
                kind_text(named.unwrap()),
                if storage == Some(StorageArg::Tpkx) {
                    "tpkx"
                } else {
                    "tpk"
                }
            ),
            (Some(StorageArg::Tpkx), _) => ExportTo::Target(Target::Tpkx),
            (Some(StorageArg::Tpk), _) => ExportTo::Tpk,
            (Some(folder), Some(k)) => anyhow::bail!(
                "{}: the name says {} but --storage {} writes a folder; name the folder \
                 otherwise or use --storage {}",
                dest.display(),
                kind_text(k),
                folder
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                if k == PackageKind::Tpkx {
                    "tpkx"
                } else {
                    "tpk"
                }
            ),
            (Some(StorageArg::Exploded), None) => {
                ExportTo::Target(Target::Storage(StorageFormat::Exploded))
            }
            (Some(StorageArg::CompactV1), None) => {
                ExportTo::Target(Target::Storage(StorageFormat::CompactV1))
            }
            (Some(StorageArg::CompactV2), None) => {
                ExportTo::Target(Target::Storage(StorageFormat::CompactV2))
            }
            (Some(StorageArg::ReadyToServe), None) => ExportTo::ReadyToServe,
            (Some(StorageArg::Mbtiles), _) => ExportTo::Mbtiles,
            (Some(StorageArg::Geopackage), _) => ExportTo::Geopackage,
            (Some(StorageArg::Xyz), _) => ExportTo::Xyz(false),
            (Some(StorageArg::Tms), _) => ExportTo::Xyz(true),
            (Some(StorageArg::Pmtiles), _) => ExportTo::Pmtiles,
        })
    }
}

/// How tiles go into a destination that already holds some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Source over destination: transparent source pixels keep the destination's.
    #[value(name = "merge", alias = "MERGE")]
    Merge,
    /// Source tiles replace the destination's (within the area of interest).
    #[value(name = "overwrite", alias = "OVERWRITE")]
    Overwrite,
}

impl From<ModeArg> for ImportMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Merge => ImportMode::Merge,
            ModeArg::Overwrite => ImportMode::Overwrite,
        }
    }
}

/// Tile image formats (conf.xml CacheTileFormat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum FormatArg {
    Png,
    Png8,
    Png24,
    Png32,
    Jpeg,
    Mixed,
}

impl From<FormatArg> for TileFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Png => TileFormat::Png,
            FormatArg::Png8 => TileFormat::Png8,
            FormatArg::Png24 => TileFormat::Png24,
            FormatArg::Png32 => TileFormat::Png32,
            FormatArg::Jpeg => TileFormat::Jpeg,
            FormatArg::Mixed => TileFormat::Mixed,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a cache's tiling scheme, storage and per-level bundles, tiles, bytes and dead bytes.
    Info(InfoArgs),
    /// Check every bundle index entry (inside the file, sizes sane); exit 1 naming each bad one.
    Verify(VerifyArgs),
    /// Create an empty ArcGIS-layout Compact V2 cache: Web Mercator, a tiling scheme file, or a
    /// scheme built from the parameters of ArcGIS's Create Map Server Cache (--wkid/--wkt, …).
    Create(CreateArgs),
    /// Write a tiling scheme file (conf.xml form) from the parameters of ArcGIS's Generate Map
    /// Server Cache Tiling Scheme; `create --scheme FILE.xml` takes it back.
    Scheme(scheme::SchemeArgs),
    /// Export tiles of a cache (or .tpkx/.tpk) to a cache folder, a ready-to-serve folder, a .tpkx
    /// or a .tpk, in any storage format.
    Export(ExportArgs),
    /// Import tiles of a cache (or .tpkx/.tpk) into an existing cache with the same tiling scheme.
    Import(ImportArgs),
    /// Mount a cache as an exploded tree (read-only, or -o rw to write tiles back); foreground
    /// unless --daemon. Stop it with `bundlefs unmount MOUNTPOINT`.
    Mount(MountArgs),
    /// Unmount a bundlefs mount and wait until its daemon has flushed every written tile into the
    /// bundles and exited; exit non-zero with the reason if a flush failed.
    #[command(alias = "umount")]
    Unmount(UnmountArgs),
    /// How each bundlefs mount of the host is doing (or one): source, mode, pid, uptime, tiles
    /// served, the write buffer and its flushes, store requests, renders; exit 1 when a mount
    /// has failed flushes or its daemon is gone.
    Status(StatusArgs),
    /// Print a shell completion script: `bundlefs completions bash >
    /// /etc/bash_completion.d/bundlefs` (also zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write a man page per command into DIR (for packages: scripts/package.sh).
    #[command(hide = true)]
    Manpages(ManpagesArgs),
    /// Delete tiles by levels, --extent or --aoi (Manage Map Server Cache Tiles, "delete tiles");
    /// in bundles they become dead space that `bundlefs compact` reclaims.
    Delete(DeleteArgs),
    /// Rewrite Compact V2 bundles whose dead space (overwritten/deleted tiles) reaches a threshold.
    Compact(CompactArgs),
    /// Render tiles the cache lacks from a source: the renderable tiles of some levels (like
    /// seeding), or one tile with --tile.
    Render(RenderArgs),
    /// Write a small Compact V2 sample cache with labelled tiles drawn by bundlefs.
    Sample(SampleArgs),
    /// Serve caches' tiles over HTTP (ArcGIS REST, OGC WMTS 1.0.0, XYZ and TileJSON) without
    /// FUSE, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
}

/// Arguments of `bundlefs info`.
#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// Cache folder, its conf.xml, a .tpkx/.tpk tile package, or s3://BUCKET/PREFIX or
    /// az://CONTAINER/PREFIX.
    pub cache: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `bundlefs verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Cache folder, its conf.xml, a .tpkx/.tpk tile package, or s3://BUCKET/PREFIX or
    /// az://CONTAINER/PREFIX to check.
    pub cache: PathBuf,
    /// Also decode every tile image (slower; finds damaged PNG/JPEG data).
    #[arg(long)]
    pub decode: bool,
}

/// Arguments of `bundlefs create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Folder to create (it must not hold a cache yet).
    pub dir: PathBuf,
    /// Tiling scheme: `web-mercator`, or a conf.xml / tiling scheme file (from `bundlefs scheme`)
    /// whose tiling scheme to use. Not with --wkid/--wkt, which build one.
    #[arg(
        long,
        default_value = "web-mercator",
        value_name = "web-mercator|CONF_XML"
    )]
    pub scheme: String,
    /// Levels of --scheme to include, e.g. 0-19 [default: 0-19]; not with --wkid/--wkt.
    #[arg(long, value_name = "A-B", allow_hyphen_values = true)]
    pub levels: Option<LevelRange>,
    /// The tiling scheme parameters of ArcGIS's Create Map Server Cache.
    #[command(flatten)]
    pub tool: scheme::ToolSchemeArgs,
    /// Write ArcGIS's ready-to-serve layout (root.json, iteminfo.json, tile/) instead of
    /// conf.xml, conf.cdi and _alllayers/.
    #[arg(long)]
    pub ready_to_serve: bool,
}

/// Which tiles a job takes (export, import, delete): levels or scales, and an extent or an area.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Only these levels, e.g. 0-7, 5, 3- or -4 (default: all; export and import refuse levels
    /// the source lacks, delete has nothing to do there).
    #[arg(
        long,
        conflicts_with = "scales",
        value_name = "A-B",
        allow_hyphen_values = true
    )]
    pub levels: Option<LevelRange>,
    /// Only the levels at these map scales, e.g. 577790.554289,288895.277144.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "SCALE,...")]
    pub scales: Option<Vec<f64>>,
    /// Only tiles overlapping this box, in the cache's spatial reference: one argument
    /// XMIN,YMIN,XMAX,YMAX (negative numbers allowed, e.g. -180,-90,180,90).
    #[arg(long, allow_hyphen_values = true, value_name = "XMIN,YMIN,XMAX,YMAX")]
    pub extent: Option<Envelope>,
    /// The spatial reference --extent is in, as an EPSG code (e.g. 4326 for longitude/latitude
    /// degrees); default: the cache's own.
    #[arg(long, value_name = "EPSG", requires = "extent")]
    pub extent_crs: Option<u32>,
    /// Only this GeoJSON polygon/multipolygon (tiles with a pixel centre inside; export and import
    /// clip pixels outside), in the CRS its "crs" member names (WGS 84 longitude/latitude when
    /// none, as RFC 7946 says), carried into the cache's spatial reference; wins over --extent.
    #[arg(long, value_name = "FILE")]
    pub aoi: Option<PathBuf>,
}

/// What to take from SRC and how to write it (shared by export and import).
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Which tiles of SRC.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Merge into or overwrite tiles DEST already has.
    #[arg(long, value_enum, default_value = "merge")]
    pub mode: ModeArg,
    /// Colour of clipped-away pixels in JPEG tiles: RRGGBB, #RRGGBB or R,G,B (default white).
    #[arg(long, value_name = "COLOUR")]
    pub background: Option<Rgb>,
    /// Skip the final flush to disk (faster; for scratch copies).
    #[arg(long)]
    pub no_sync: bool,
    /// Serve the job's progress in the Prometheus text format on http://ADDR/metrics while it
    /// runs (e.g. 127.0.0.1:9464; names in doc/operations.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// When the source has no conf.xml (a bare exploded folder), trust the destination's tiling
    /// scheme instead of refusing; every tile's pixel size and format are still checked against it.
    #[arg(long)]
    pub scheme_of_dest: bool,
    /// Salvage a damaged source: leave out tiles (and bundles) that cannot be read, copy the rest,
    /// and list what was left out at the end (exit 1 when anything was).
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Worker I (from 0) of N: only the bundles of this share (a fixed function of each bundle,
    /// so workers never share one and a rerun takes the same share; doc/scale-out.md).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::cache::shard::Shard>,
}

/// Arguments of `bundlefs export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Source cache folder, conf.xml, .tpkx, .tpk, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX.
    pub src: PathBuf,
    /// Destination folder, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX (a .tpkx or .tpk file
    /// with --storage tpkx or tpk).
    pub dest: PathBuf,
    /// Target storage: exploded, compact-v1, compact-v2, ready-to-serve, tpkx, tpk, or ArcGIS's
    /// names EXPLODED, COMPACT, COMPACT_V2, READY_TO_SERVE_FORMAT, TILE_PACKAGE (a .tpkx when DEST
    /// ends in .tpkx, else a .tpk). May be left out when DEST ends in .tpkx or .tpk, or already
    /// holds a cache (its storage is kept).
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
    #[command(flatten)]
    pub job: JobArgs,
}

/// Arguments of `bundlefs import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Source cache folder, conf.xml, .tpkx, .tpk, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX.
    pub src: PathBuf,
    /// Existing destination cache folder (or .tpkx, .tpk, s3://BUCKET/PREFIX,
    /// az://CONTAINER/PREFIX).
    pub dest: PathBuf,
    #[command(flatten)]
    pub job: JobArgs,
}

/// Arguments of `bundlefs mount`; `--daemon` re-runs the program with these same arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// Cache folder (or its conf.xml, or a ready-to-serve folder or its root.json), or
    /// s3://BUCKET/PREFIX or az://CONTAINER/PREFIX.
    pub cache: PathBuf,
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Mount options, comma separated: ro (default), rw, allow_other, allow_root,
    /// default_permissions, nonempty (mount over a folder that holds files, hiding them); for a
    /// cache in an object store also endpoint=URL, region=R (s3:// only), timeout=SECONDS (one
    /// request with its retries); fstab words ignored.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Return once the mount is live and keep serving in the background (prints the daemon's
    /// pid).
    #[arg(long)]
    pub daemon: bool,
    /// Seconds the kernel may cache names and attributes.
    #[arg(long, default_value = "3600", value_name = "SECONDS")]
    pub ttl: Seconds,
    /// Session threads serving the kernel. A cache in an object store also gets 16 threads of
    /// its own for the requests that may wait on the store, so a slow store never holds these.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Seconds between checks for bundles changed by other writers.
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    pub recheck: Seconds,
    /// Append the log (RUST_LOG levels, no colour codes) to this file, reopened on SIGHUP. Without
    /// it a --daemon logs to syslog (/dev/log), a foreground mount to standard error.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Writable mounts (-o rw): memory for tiles waiting to be flushed into bundles, e.g. 256M,
    /// 1G (units k, M, G).
    #[arg(long, default_value = "256M", value_name = "SIZE")]
    pub write_buffer: ByteSize,
    /// Writable mounts: a tile written over a stored one replaces it (overwrite) or is drawn
    /// over it, its transparent pixels keeping the old tile's (merge).
    #[arg(long, default_value = "overwrite", value_name = "overwrite|merge")]
    pub import_mode: ImportMode,
    /// Writable mounts: seconds without writes to a bundle after which its buffered tiles are
    /// flushed (at once for a bundle holding 1/8 of --write-buffer, 1-16 MiB — half of it for
    /// a cache in an object store, where each flush rewrites the whole bundle — or holding a
    /// tile for 30 s).
    #[arg(long, default_value = "2", value_name = "SECONDS")]
    pub flush_idle: Seconds,
    /// Render tiles the bundles lack when opened: arcgis:URL, wms:URL, resample or label
    /// (see `bundlefs render --help` and doc/rendering.md).
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// Store rendered tiles in the bundles (through the write buffer).
    #[arg(long)]
    pub keep_rendered: bool,
    /// Seconds allowed for one request to the source.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub render_timeout: Seconds,
    /// Renders running at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub render_jobs: usize,
    /// HTTP proxy URL for the source, or "env" for HTTP_PROXY/HTTPS_PROXY/NO_PROXY (default: none).
    #[arg(long, value_name = "URL|env")]
    pub proxy: Option<String>,
    /// With --source: listings of these levels (e.g. 0-6) also show renderable tiles not
    /// stored yet (a level may hold at most 4,194,304 of them).
    #[arg(long, value_name = "A-B", allow_hyphen_values = true)]
    pub list_renderable: Option<LevelRange>,
    /// The tree shown: arcgis (`_alllayers/Lnn/Rxxxxxxxx/Cxxxxxxxx.ext`), or for a Web Mercator
    /// scheme numbered by zoom, xyz (`z/x/y.ext`, y from the top) or tms (y from the bottom),
    /// for web servers and z/x/y tools; with -o rw, files copied in take the layout's names.
    #[arg(long, value_name = "arcgis|xyz|tms", default_value = "arcgis")]
    pub layout: crate::fs::View,
    /// With --source arcgis: or wms:, pixels a side of the block of tiles drawn in one request
    /// and cut into tiles, the one holding a missed tile (whole tiles, at most 4096 px with
    /// margins); 0: one request per tile.
    #[arg(long, value_name = "PX", default_value_t = crate::render::supertile::MOUNT_PX)]
    pub supertile: u32,
    /// Pixels drawn around each supertile and cut away afterwards (labels near its edges).
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub supertile_buffer: u32,
    /// Caches in an object store, with -o rw: promise that this is the only mount or job writing
    /// the cache; bundles are then written unconditionally (needed on stores without conditional
    /// writes, such as Garage, where -o rw is otherwise refused).
    #[arg(long)]
    pub single_writer: bool,
    /// Caches in an object store: keep bundle indexes (128 KiB each) in this folder too, so a
    /// fresh mount reads them from disk instead of the store (entries keyed by object and ETag,
    /// checksummed; an entry older than --recheck is confirmed by a HEAD). Memory, with or
    /// without it: at most 256 indexes (128 KiB each: 32 MiB), recently read and read-ahead
    /// tiles (at most 16 MiB), 32 per-tile time sidecars (256 KiB each: 8 MiB) and 8 whole
    /// bundles for batch reads, besides --write-buffer.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With --cache-dir: bound of the folder in bytes (units k, M, G); the least recently
    /// confirmed entries are deleted beyond it.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub cache_size: ByteSize,
    /// Serve the mount's counters in the Prometheus text format on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464; names in doc/operations.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Arguments of `bundlefs unmount` (also `bundlefs umount`).
#[derive(Debug, Clone, clap::Args)]
pub struct UnmountArgs {
    /// Folder a bundlefs mount is on.
    pub mountpoint: PathBuf,
    /// Give up waiting for the daemon's flush after this many seconds (exit 1; the daemon goes
    /// on flushing). Default: wait as long as it takes.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<Seconds>,
}

/// Arguments of `bundlefs status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// A bundlefs mount point (default: every bundlefs mount).
    pub mountpoint: Option<PathBuf>,
    /// JSON instead of text: a list of {mountpoint, state, problem?, report?}.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `bundlefs completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Arguments of `bundlefs manpages`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManpagesArgs {
    /// Folder to write bundlefs.1 and bundlefs-COMMAND.1 into (created).
    pub dir: PathBuf,
}

/// Arguments of `bundlefs delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Cache folder (or its conf.xml), or s3://BUCKET/PREFIX or az://CONTAINER/PREFIX.
    pub cache: PathBuf,
    /// Which tiles.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Delete every tile of the cache (needed when no --levels, --scales, --extent or --aoi).
    #[arg(long, conflicts_with_all = ["levels", "scales", "extent", "aoi"])]
    pub all: bool,
    /// Worker I (from 0) of N: only the bundles of this share (a fixed function of each bundle,
    /// so workers never share one and a rerun takes the same share; doc/scale-out.md).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::cache::shard::Shard>,
}

/// Arguments of `bundlefs compact`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {
    /// Cache folder or s3://… / az://… (Compact V2 bundles are rewritten in place; other
    /// storages have no dead space).
    pub cache: PathBuf,
    /// Minimum dead share of a bundle to rewrite it, e.g. 20% or 0.2.
    #[arg(long, default_value = "20%", value_name = "SHARE")]
    pub min_dead: Share,
    /// Worker I (from 0) of N: only the bundles of this share (a fixed function of each bundle,
    /// so workers never share one and a rerun takes the same share; doc/scale-out.md).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::cache::shard::Shard>,
}

/// Arguments of `bundlefs render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Cache folder (or its conf.xml); it must have a conf.xml (or be a ready-to-serve folder with
    /// a root.json).
    pub cache: PathBuf,
    /// Where tiles come from: arcgis:URL, wms:URL (GetMap parameters in the query, LAYERS
    /// required; #axis=xy|yx to override the 1.3.0 axis rule), resample or label.
    #[arg(long, value_name = "SPEC")]
    pub source: String,
    /// Levels to render, e.g. 0-5 (not with --tile); levels the tiling scheme lacks are an error.
    #[arg(
        long,
        conflicts_with = "tile",
        value_name = "A-B",
        allow_hyphen_values = true
    )]
    pub levels: Option<LevelRange>,
    /// Only tiles touching this box, in the map units of conf.xml: one argument
    /// XMIN,YMIN,XMAX,YMAX (negative numbers allowed); default: the cache extent.
    #[arg(
        long,
        allow_hyphen_values = true,
        conflicts_with = "tile",
        value_name = "XMIN,YMIN,XMAX,YMAX"
    )]
    pub extent: Option<Envelope>,
    /// The spatial reference --extent is in, as an EPSG code (e.g. 4326); default: the cache's.
    #[arg(long, value_name = "EPSG", requires = "extent")]
    pub extent_crs: Option<u32>,
    /// Only tiles with a pixel centre inside this GeoJSON polygon/multipolygon (as export --aoi
    /// and delete --aoi take them), in the CRS its "crs" member names (WGS 84 when none); wins
    /// over --extent.
    #[arg(long, conflicts_with = "tile", value_name = "FILE")]
    pub aoi: Option<PathBuf>,
    /// One tile, as L/R/C (decimal) or Lnn/Rxxxxxxxx/Cxxxxxxxx (hex as in exploded caches).
    #[arg(long, value_name = "L/R/C")]
    pub tile: Option<TileAddr>,
    /// With --tile: write the tile's bytes to this file ("-" for standard output).
    #[arg(short = 'o', long, requires = "tile", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Store rendered tiles in the cache's bundles.
    #[arg(long)]
    pub keep: bool,
    /// Also render tiles the cache already holds (default: skip them).
    #[arg(long)]
    pub overwrite: bool,
    /// Renders at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Seconds allowed for one request to the source (more than 0).
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub timeout: Seconds,
    /// Further attempts after a timeout, HTTP 5xx/429 or dropped connection.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: u32,
    /// HTTP proxy URL, or "env" for HTTP_PROXY/HTTPS_PROXY/NO_PROXY (default: no proxy).
    #[arg(long, value_name = "URL|env")]
    pub proxy: Option<String>,
    /// Refuse to start a batch of more tiles than this.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_tiles: u64,
    /// With arcgis: or wms: sources, pixels a side of the block of tiles drawn in one request and
    /// cut into tiles (whole tiles, at most 4096 px with margins); 0: one request per tile. Default
    /// as ArcGIS: 2048 when conf.xml's Antialiasing is true, else 4096 (0 with --tile).
    #[arg(long, value_name = "PX")]
    pub supertile: Option<u32>,
    /// Pixels drawn around each supertile and cut away afterwards (labels near its edges).
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub supertile_buffer: u32,
    /// Serve the run's progress and the renderer's counters in the Prometheus text format on
    /// http://ADDR/metrics while it runs (e.g. 127.0.0.1:9464; names in doc/operations.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Worker I (from 0) of N: only the tiles of this share of bundles (with supertiles: the
    /// supertiles whose first tile is in one of them), not with --tile (doc/scale-out.md).
    #[arg(long, value_name = "I/N", conflicts_with = "tile")]
    pub shard: Option<crate::cache::shard::Shard>,
    /// At most N requests a second to an arcgis: or wms: source, spread evenly over the run (be
    /// kind to a map server); with N workers each takes its own cap.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
}

/// Arguments of `bundlefs sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// Folder to write the sample cache into (created).
    pub dir: PathBuf,
    /// Levels to fill, 0 to 10 (each level has 4^level tiles).
    #[arg(
        long,
        default_value = "0-4",
        value_name = "A-B",
        allow_hyphen_values = true
    )]
    pub levels: LevelRange,
    /// Tile image format (one of PNG…/JPEG; not MIXED).
    #[arg(long, value_enum, default_value = "PNG")]
    pub format: FormatArg,
}

/// Parses arguments, runs the command, maps errors to a message and exit code: 2 with the
/// error on one line; quietly 141 when standard output was closed by its reader.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .map(|a| {
            let a = a.to_string_lossy();
            a.rsplit('/').next().unwrap_or(&a).to_string()
        })
        .unwrap_or_default();
    let cmd = <Cli as clap::CommandFactory>::command();
    let argv = if invoked_as.starts_with("mount.") || mount::is_helper_call(&argv, &cmd) {
        mount::helper_args(&argv)
    } else {
        join_extent_values(argv)
    };
    let mount_cmd = cmd.find_subcommand("mount").expect("the mount subcommand");
    let cli = Cli::parse_from(mount::flag_words(argv, mount_cmd));
    // A mount daemon logs its flushes, conflicts and signals (info); other commands only warn.
    let (filter, ansi) = match &cli.command {
        Command::Mount(a) => (
            "warn,bundlefs=info,fuser::session=error",
            a.log_file.is_none(),
        ),
        Command::Serve(a) => ("warn,bundlefs=info", a.log_file.is_none()),
        _ => ("warn,fuser::session=error", true),
    };
    log::init(filter, ansi);
    let res = match cli.command {
        Command::Info(a) => commands::info(&a),
        Command::Verify(a) => commands::verify(&a),
        Command::Create(a) => commands::create(&a),
        Command::Scheme(a) => scheme::run(&a),
        Command::Export(a) => commands::export(&a),
        Command::Import(a) => commands::import(&a),
        Command::Mount(a) => mount::run(a),
        Command::Unmount(a) => unmount::run(&a),
        Command::Status(a) => status::run(a.mountpoint.as_deref(), a.json),
        Command::Completions(a) => generate::completions(a.shell),
        Command::Manpages(a) => generate::manpages(&a.dir),
        Command::Delete(a) => commands::delete(&a),
        Command::Compact(a) => commands::compact(&a),
        Command::Render(a) => commands::render(&a),
        Command::Sample(a) => commands::sample(&a),
        Command::Serve(a) => serve::run(&a),
    };
    match res {
        Ok(code) => code,
        Err(e) if output::is_closed(&e) => ExitCode::from(output::CLOSED_STATUS),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "bundlefs: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// Earlier versions took `--extent XMIN YMIN XMAX YMAX` as four arguments (export, import): those
/// four are joined into the one-argument form `XMIN,YMIN,XMAX,YMAX` before parsing. Only four
/// numbers in a row are joined, so a path after `--extent A,B,C,D` is never taken for a number.
fn join_extent_values(argv: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len());
    let mut i = 0;
    while i < argv.len() {
        out.push(argv[i].clone());
        let number = |a: &OsString| a.to_str().is_some_and(|s| s.trim().parse::<f64>().is_ok());
        if argv[i] == "--extent" && argv.len() > i + 4 && argv[i + 1..i + 5].iter().all(number) {
            let joined: Vec<&str> = argv[i + 1..i + 5]
                .iter()
                .filter_map(|a| a.to_str())
                .collect();
            out.push(joined.join(",").into());
            i += 5;
            continue;
        }
        i += 1;
    }
    out
}

/// An error and its causes on one line, each cause once: our errors already name their cause
/// ("PATH: No space left on device"), so a cause whose text is already there is not repeated.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    crate::jobs::package::shown(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_target_follows_storage_and_name() {
        let t = |s: Option<StorageArg>, d: &str| ExportTo::choose(s, Path::new(d));
        let tpkx = ExportTo::Target(Target::Tpkx);
        assert_eq!(t(None, "a.TPKX").unwrap(), tpkx);
        assert_eq!(t(None, "a.tpk").unwrap(), ExportTo::Tpk);
        // TILE_PACKAGE: ArcGIS's default storage for a package is COMPACT (V1), a .tpk.
        assert_eq!(t(Some(StorageArg::TilePackage), "a.tpkx").unwrap(), tpkx);
        assert_eq!(
            t(Some(StorageArg::TilePackage), "a.tpk").unwrap(),
            ExportTo::Tpk
        );
        assert_eq!(
            t(Some(StorageArg::TilePackage), "pkg").unwrap(),
            ExportTo::Tpk
        );
        assert_eq!(t(Some(StorageArg::Tpkx), "pkg").unwrap(), tpkx);
        let e = t(Some(StorageArg::Tpkx), "a.tpk").unwrap_err().to_string();
        assert!(
            e.contains("a.tpk: the name says tpk but --storage tpkx"),
            "{e}"
        );
        let e = t(Some(StorageArg::Tpk), "a.tpkx").unwrap_err().to_string();
        assert!(e.contains("--storage tpk writes"), "{e}");
        let e = t(Some(StorageArg::Exploded), "a.tpkx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--storage exploded writes a folder"), "{e}");
        assert!(t(None, "folder")
            .unwrap_err()
            .to_string()
            .contains("say which storage"));
        assert_eq!(
            t(Some(StorageArg::ReadyToServe), "rts").unwrap(),
            ExportTo::ReadyToServe
        );
        assert_eq!(t(None, "w.PMTiles").unwrap(), ExportTo::Pmtiles);
        assert_eq!(
            t(Some(StorageArg::Pmtiles), "w.pmtiles").unwrap(),
            ExportTo::Pmtiles
        );
        let e = t(Some(StorageArg::Pmtiles), "w").unwrap_err().to_string();
        assert!(e.contains("name it NAME.pmtiles"), "{e}");
        let e = t(Some(StorageArg::CompactV2), "w.pmtiles")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the name says PMTiles"), "{e}");
    }

    #[test]
    fn causes_already_named_are_not_repeated() {
        let io = crate::Error::io(
            "/c/L05/R0000C0000.bundle",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let e = anyhow::Error::new(io).context("flushing the write buffer at unmount");
        let t = error_text(&e);
        assert_eq!(t.matches("No space left on device").count(), 1, "{t}");
        assert!(t.starts_with("flushing the write buffer at unmount: /c/L05/R0000C0000.bundle: "));
        // A cause that adds something is kept.
        let e = anyhow::anyhow!("inner detail").context("outer");
        assert_eq!(error_text(&e), "outer: inner detail");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        Cli::try_parse_from(join_extent_values(argv))
    }

    fn job_extent(c: Cli) -> Envelope {
        match c.command {
            Command::Export(a) => a.job.select.extent.unwrap(),
            Command::Import(a) => a.job.select.extent.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extent_in_every_form_and_place() {
        let want = Envelope {
            xmin: -180.0,
            ymin: -90.0,
            xmax: 180.0,
            ymax: 90.0,
        };
        for argv in [
            &[
                "bundlefs",
                "export",
                "s",
                "d",
                "--storage",
                "exploded",
                "--extent",
                "-180,-90,180,90",
            ][..],
            &[
                "bundlefs",
                "export",
                "--extent",
                "-180,-90,180,90",
                "s",
                "d",
                "--storage",
                "exploded",
            ],
            &[
                "bundlefs",
                "export",
                "s",
                "d",
                "--storage",
                "exploded",
                "--extent=-180,-90,180,90",
            ],
            &[
                "bundlefs",
                "export",
                "s",
                "d",
                "--storage",
                "exploded",
                "--extent",
                "-180",
                "-90",
                "180",
                "90",
            ],
            &[
                "bundlefs", "import", "--extent", "-180", "-90", "180", "90", "s", "d",
            ],
            &[
                "bundlefs",
                "import",
                "s",
                "d",
                "--extent",
                "-180 -90 180 90",
            ],
        ] {
            let c = parse(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(job_extent(c), want, "{argv:?}");
        }
        let c = parse(&[
            "bundlefs",
            "render",
            "c",
            "--source",
            "label",
            "--levels",
            "0-2",
            "--extent",
            "-1,-2,3,4",
        ])
        .unwrap();
        let Command::Render(r) = c.command else {
            panic!()
        };
        assert_eq!(r.extent.map(|e| (e.xmin, e.ymax)), Some((-1.0, 4.0)));
        // Three numbers and a path: not joined, and refused naming the form wanted.
        let e = parse(&["bundlefs", "import", "s", "d", "--extent", "1,2,3"]).unwrap_err();
        assert!(e.to_string().contains("XMIN,YMIN,XMAX,YMAX"), "{e}");
    }

    #[test]
    fn values_parse_once_for_every_command() {
        let c = parse(&[
            "bundlefs",
            "render",
            "c",
            "--source",
            "label",
            "--tile",
            "L03/R00000002/C0000000a",
        ])
        .unwrap();
        let Command::Render(r) = c.command else {
            panic!()
        };
        assert_eq!(r.tile, Some(TileAddr::new(3, 2, 10)));
        let c = parse(&[
            "bundlefs",
            "mount",
            "c",
            "m",
            "--write-buffer",
            "64M",
            "--ttl",
            "0.5",
        ])
        .unwrap();
        let Command::Mount(m) = c.command else {
            panic!()
        };
        assert_eq!(m.write_buffer, ByteSize(64 << 20));
        assert_eq!(m.ttl.0, std::time::Duration::from_millis(500));
        assert!(parse(&["bundlefs", "mount", "c", "m", "--ttl", "-1"]).is_err());
        let e = parse(&[
            "bundlefs",
            "export",
            "s",
            "d",
            "--storage",
            "exploded",
            "--background",
            "zz",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("RRGGBB"), "{e}");
        let c = parse(&["bundlefs", "compact", "c", "--min-dead", "35%"]).unwrap();
        let Command::Compact(a) = c.command else {
            panic!()
        };
        assert_eq!(a.min_dead, Share(0.35));
        let c = parse(&["bundlefs", "umount", "/m"]).unwrap();
        assert!(matches!(c.command, Command::Unmount(_)));
    }

    /// Every argument of every command says what it takes.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "bundlefs {} {id}: no help",
                    sub.get_name()
                );
            }
        }
    }
}
