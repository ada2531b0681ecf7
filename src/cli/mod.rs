//! The `bundlefs` command line: argument parsing (clap) and thin calls into the library.

mod commands;
pub mod mount;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::format::conf::{StorageFormat, TileFormat};
use crate::format::levels::LevelRange;
use crate::format::pixels::ImportMode;
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
    #[value(name = "tpkx", alias = "TILE_PACKAGE", alias = "TPKX")]
    Tpkx,
}

impl From<StorageArg> for Target {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Exploded => Target::Storage(StorageFormat::Exploded),
            StorageArg::CompactV1 => Target::Storage(StorageFormat::CompactV1),
            StorageArg::CompactV2 => Target::Storage(StorageFormat::CompactV2),
            StorageArg::Tpkx => Target::Tpkx,
        }
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

/// What to take from SRC and how to write it (shared by export and import).
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Only these levels, e.g. 0-7 (default: all).
    #[arg(long, conflicts_with = "scales")]
    pub levels: Option<LevelRange>,
    /// Only the levels at these map scales, e.g. 577790.554289,288895.277144.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub scales: Option<Vec<f64>>,
    /// Only tiles intersecting xmin,ymin,xmax,ymax (in SRC's spatial reference).
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 4,
        allow_negative_numbers = true,
        value_name = "XMIN,YMIN,XMAX,YMAX"
    )]
    pub extent: Option<Vec<f64>>,
    /// The spatial reference --extent is in, as an EPSG code (e.g. 4326 for longitude/latitude
    /// degrees); default: SRC's own.
    #[arg(long, value_name = "EPSG", requires = "extent")]
    pub extent_crs: Option<u32>,
    /// Clip to this GeoJSON polygon/multipolygon, in the CRS its "crs" member names (WGS 84
    /// longitude/latitude when none, as RFC 7946 says); carried into SRC's spatial reference;
    /// wins over --extent.
    #[arg(long, value_name = "FILE")]
    pub aoi: Option<PathBuf>,
    /// Merge into or overwrite tiles DEST already has.
    #[arg(long, value_enum, default_value = "merge")]
    pub mode: ModeArg,
    /// Colour of clipped-away pixels in JPEG tiles: RRGGBB, #RRGGBB or R,G,B (default white).
    #[arg(long, value_name = "COLOUR")]
    pub background: Option<String>,
    /// Skip the final flush to disk (faster; for scratch copies).
    #[arg(long)]
    pub no_sync: bool,
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
    Info {
        /// Cache folder (or its conf.xml).
        cache: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every bundle index entry (inside the file, sizes sane); exit 1 naming each bad one.
    Verify {
        cache: PathBuf,
        /// Also decode every tile image.
        #[arg(long)]
        decode: bool,
    },
    /// Create an empty ArcGIS-layout Compact V2 cache.
    Create {
        /// Folder to create.
        dir: PathBuf,
        /// `web-mercator` or a conf.xml file whose tiling scheme to use.
        #[arg(long, default_value = "web-mercator")]
        scheme: String,
        /// Levels to include, e.g. 0-19.
        #[arg(long, default_value = "0-19")]
        levels: LevelRange,
        /// Tile image format.
        #[arg(long, value_enum, default_value = "PNG")]
        format: FormatArg,
    },
    /// Export tiles of a cache (or .tpkx/.tpk) to a cache folder or a .tpkx, in any storage format.
    Export {
        /// Source cache folder, conf.xml, .tpkx or .tpk.
        src: PathBuf,
        /// Destination folder (a .tpkx file with --storage tpkx).
        dest: PathBuf,
        /// Target storage: exploded, compact-v1, compact-v2, tpkx (ArcGIS names EXPLODED, COMPACT,
        /// COMPACT_V2, TILE_PACKAGE).
        #[arg(long, value_enum)]
        storage: StorageArg,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Import tiles of a cache (or .tpkx/.tpk) into an existing cache with the same tiling scheme.
    Import {
        /// Source cache folder, conf.xml, .tpkx or .tpk.
        src: PathBuf,
        /// Existing destination cache folder (or .tpkx).
        dest: PathBuf,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Mount a cache as an exploded tree (read-only, or -o rw to write tiles back); foreground
    /// unless --daemon.
    Mount {
        /// Cache folder (or its conf.xml).
        cache: PathBuf,
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Mount options, comma separated: ro (default), rw, allow_other, allow_root, default_permissions (fstab words ignored).
        #[arg(short = 'o', value_name = "OPTS")]
        options: Vec<String>,
        /// Return once the mount is live and keep serving in the background (prints the daemon's pid).
        #[arg(long)]
        daemon: bool,
        /// Seconds the kernel may cache names and attributes.
        #[arg(long, default_value_t = 3600.0)]
        ttl: f64,
        /// Session threads serving the kernel.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Seconds between checks for bundles changed by other writers.
        #[arg(long, default_value_t = 1.0)]
        recheck: f64,
        /// With --daemon: append the daemon's log (RUST_LOG levels) to this file.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Writable mounts (-o rw): memory for tiles waiting to be flushed into bundles.
        #[arg(long, default_value = "256M", value_parser = mount::parse_size)]
        write_buffer: usize,
        /// Writable mounts: a tile written over a stored one replaces it (overwrite) or is drawn
        /// over it, its transparent pixels keeping the old tile's (merge).
        #[arg(long, default_value = "overwrite")]
        import_mode: crate::cache::commit::ImportMode,
        /// Writable mounts: seconds without writes to a bundle after which its buffered tiles are
        /// flushed (at once for a bundle holding 1/8 of --write-buffer, 1-16 MiB, or holding a
        /// tile for 30 s).
        #[arg(long, default_value_t = 2.0)]
        flush_idle: f64,
        /// Render tiles the bundles lack when opened: arcgis:URL, wms:URL, resample or label
        /// (see `bundlefs render --help` and README "Rendering").
        #[arg(long)]
        source: Option<String>,
        /// Store rendered tiles in the bundles (through the write buffer).
        #[arg(long)]
        keep_rendered: bool,
        /// Seconds allowed for one request to the source.
        #[arg(long, default_value_t = 30.0)]
        render_timeout: f64,
        /// Renders running at once.
        #[arg(long, default_value_t = 4)]
        render_jobs: usize,
        /// HTTP proxy URL for the source, or "env" for HTTP_PROXY/HTTPS_PROXY/NO_PROXY (default: none).
        #[arg(long)]
        proxy: Option<String>,
        /// With --source: listings of these levels (e.g. 0-6) also show renderable tiles not
        /// stored yet (a level may hold at most 4,194,304 of them).
        #[arg(long)]
        list_renderable: Option<LevelRange>,
        /// With --source arcgis: or wms:, pixels a side of the block of tiles drawn in one request
        /// and cut into tiles, the one holding a missed tile (whole tiles, at most 4096 px with
        /// margins); 0: one request per tile.
        #[arg(long, value_name = "PX", default_value_t = crate::render::supertile::MOUNT_PX)]
        supertile: u32,
        /// Pixels drawn around each supertile and cut away afterwards (labels near its edges).
        #[arg(long, value_name = "PX", default_value_t = 0)]
        supertile_buffer: u32,
    },
    /// Rewrite Compact V2 bundles whose dead space (overwritten/deleted tiles) reaches a threshold.
    Compact {
        cache: PathBuf,
        /// Minimum dead share of a bundle to rewrite it, e.g. 20% or 0.2.
        #[arg(long, default_value = "20%")]
        min_dead: String,
    },
    /// Render tiles the cache lacks from a source: the renderable tiles of some levels (like
    /// seeding), or one tile with --tile.
    Render(RenderArgs),
    /// Write a small Compact V2 sample cache with labelled tiles drawn by bundlefs.
    Sample {
        dir: PathBuf,
        /// Levels to fill (each level has 4^level tiles).
        #[arg(long, default_value = "0-4")]
        levels: LevelRange,
        #[arg(long, value_enum, default_value = "PNG")]
        format: FormatArg,
    },
}

/// Parses arguments, runs the command, maps errors to a message and exit code.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let cli = if invoked_as.starts_with("mount.") {
        Cli::parse_from(mount::helper_args(&argv))
    } else {
        Cli::parse()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser::session=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bundlefs: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
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
    out
}

/// Arguments of `bundlefs render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Cache folder (or its conf.xml); it must have a conf.xml.
    pub cache: PathBuf,
    /// Where tiles come from: arcgis:URL, wms:URL (GetMap parameters in the query, LAYERS
    /// required; #axis=xy|yx to override the 1.3.0 axis rule), resample or label.
    #[arg(long)]
    pub source: String,
    /// Levels to render, e.g. 0-5 (not with --tile).
    #[arg(long, conflicts_with = "tile")]
    pub levels: Option<LevelRange>,
    /// Only tiles touching XMIN,YMIN,XMAX,YMAX (map units of conf.xml); default: the cache extent.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "tile")]
    pub extent: Option<String>,
    /// The spatial reference --extent is in, as an EPSG code (e.g. 4326); default: the cache's.
    #[arg(long, value_name = "EPSG", requires = "extent")]
    pub extent_crs: Option<u32>,
    /// One tile, as L/R/C (decimal) or Lnn/Rxxxxxxxx/Cxxxxxxxx (hex as in exploded caches).
    #[arg(long)]
    pub tile: Option<String>,
    /// With --tile: write the tile's bytes to this file ("-" for standard output).
    #[arg(short = 'o', long, requires = "tile")]
    pub output: Option<PathBuf>,
    /// Store rendered tiles in the cache's bundles.
    #[arg(long)]
    pub keep: bool,
    /// Also render tiles the cache already holds (default: skip them).
    #[arg(long)]
    pub overwrite: bool,
    /// Renders at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Seconds allowed for one request to the source.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Further attempts after a timeout, HTTP 5xx/429 or dropped connection.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// HTTP proxy URL, or "env" for HTTP_PROXY/HTTPS_PROXY/NO_PROXY (default: no proxy).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Refuse to start a batch of more tiles than this.
    #[arg(long, default_value_t = 100_000)]
    pub max_tiles: u64,
    /// With arcgis: or wms: sources, pixels a side of the block of tiles drawn in one request and
    /// cut into tiles (whole tiles, at most 4096 px with margins); 0: one request per tile. Default
    /// as ArcGIS: 2048 when conf.xml's Antialiasing is true, else 4096 (0 with --tile).
    #[arg(long, value_name = "PX")]
    pub supertile: Option<u32>,
    /// Pixels drawn around each supertile and cut away afterwards (labels near its edges).
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub supertile_buffer: u32,
}

#[cfg(test)]
mod tests {
    use super::error_text;

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
}
