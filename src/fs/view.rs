//! How the tree names what it shows ([`View`]): ArcGIS's exploded layout
//! (`_alllayers/Lnn/Rrrrrrrrr/Ccccccccc.ext`, the default), or an XYZ or TMS layout
//! (`{z}/{x}/{y}.ext`: level folders named by the zoom, column folders by x, tile files by y from
//! the top or, TMS, from the bottom; `format::xyz`), for a Web Mercator tiling scheme whose levels
//! are zoom levels (`mount --layout xyz|tms`). In the XYZ and TMS views the tree's row nodes
//! ([`Node::Row`]) stand for column folders (their `row` field holds the column), so inode numbers
//! stay as the ArcGIS view has them.

use std::collections::BTreeSet;

use super::inode::Node;
use super::{DirEntry, TreeFs};
use crate::error::{Error, Result};
use crate::format::{exploded, xyz, TileAddr};

/// The layout a mount shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// ArcGIS's exploded cache (`Lnn/Rrrrrrrrr/Ccccccccc.ext`).
    #[default]
    ArcGis,
    /// `z/x/y.ext`, y from the top.
    Xyz,
    /// `z/x/y.ext`, y from the bottom.
    Tms,
}

impl std::str::FromStr for View {
    type Err = String;
    /// `arcgis`, `xyz` or `tms`; anything else is refused by name.
    fn from_str(s: &str) -> std::result::Result<View, String> {
        match s.to_ascii_lowercase().as_str() {
            "arcgis" | "exploded" => Ok(View::ArcGis),
            "xyz" => Ok(View::Xyz),
            "tms" => Ok(View::Tms),
            other => Err(format!(
                "layout {other:?}: bundlefs shows arcgis (Lnn/Rxxxxxxxx/Cxxxxxxxx), xyz or tms \
                 (z/x/y)"
            )),
        }
    }
}

impl View {
    /// The layout's name as `--layout` takes it: `arcgis`, `xyz` or `tms`.
    pub fn name(self) -> &'static str {
        match self {
            View::ArcGis => "arcgis",
            View::Xyz => "xyz",
            View::Tms => "tms",
        }
    }

    /// The name of level `l`'s folder.
    pub fn level_name(self, l: u8) -> String {
        match self {
            View::ArcGis => exploded::level_dir(l),
            View::Xyz | View::Tms => l.to_string(),
        }
    }

    /// The level a folder name stands for (only its one spelling).
    pub fn parse_level(self, name: &str) -> Option<u8> {
        match self {
            View::ArcGis => exploded::parse_level_dir(name)
                .ok()
                .filter(|l| exploded::level_dir(*l) == name),
            View::Xyz | View::Tms => xyz::parse_number(name)
                .and_then(|z| u8::try_from(z).ok())
                .filter(|z| z.to_string() == name),
        }
    }

    /// The name of the folder tiles sit in directly: a row folder `Rrrrrrrrr` (ArcGIS; `key` is
    /// the row) or a column folder `x` (XYZ and TMS; `key` is the column).
    pub fn folder_name(self, key: u32) -> String {
        match self {
            View::ArcGis => exploded::row_dir(key),
            View::Xyz | View::Tms => key.to_string(),
        }
    }

    /// The key ([`View::folder_name`]) a folder name in level `level` stands for (only its one
    /// spelling; XYZ and TMS: a column of the zoom's 2^level).
    pub fn parse_folder(self, level: u8, name: &str) -> Option<u32> {
        match self {
            View::ArcGis => exploded::parse_row_dir(name)
                .ok()
                .filter(|r| exploded::row_dir(*r) == name),
            View::Xyz | View::Tms => xyz::parse_number(name)
                .filter(|x| x.to_string() == name && *x < (1u32 << level.min(31))),
        }
    }

    /// How the view's folders and tile files are named, for messages.
    pub fn names(self) -> ViewNames {
        match self {
            View::ArcGis => ViewNames {
                level: "a level folder name (Lnn)",
                folder: "row folders (Rxxxxxxxx)",
                tile: "a tile name (Cxxxxxxxx.png or .jpg)",
            },
            View::Xyz | View::Tms => ViewNames {
                level: "a zoom folder name (z, a level of the scheme)",
                folder: "column folders (z/x)",
                tile: "a tile name (y.png or .jpg)",
            },
        }
    }

    /// The y of row `row` of level `level` (XYZ: the row; TMS: counted from the bottom); None
    /// outside the zoom's 2^level rows in TMS.
    pub fn y_of_row(self, level: u8, row: u32) -> Option<u32> {
        match self {
            View::Tms => crate::format::mbtiles::flip_row(level, row),
            _ => Some(row),
        }
    }
}

/// Names of a view's parts, for messages ([`View::names`]).
#[derive(Debug, Clone, Copy)]
pub struct ViewNames {
    /// What a level folder is called.
    pub level: &'static str,
    /// The folders tiles sit in.
    pub folder: &'static str,
    /// What a tile file is called.
    pub tile: &'static str,
}

impl TreeFs {
    /// Shows the tree in `view` instead of ArcGIS's layout. Errors: an XYZ or TMS view of a
    /// scheme that is not Web Mercator zoom levels (by name, with the reason), or of a cache
    /// without conf.xml. A writable tree takes writes in the view's names (`z/x/y.ext`).
    pub fn with_view(mut self, view: View) -> Result<TreeFs> {
        if view != View::ArcGis {
            let what = if view == View::Xyz {
                "an XYZ layout"
            } else {
                "a TMS layout"
            };
            let Some(s) = self.cache.scheme() else {
                return Err(Error::invalid(format!(
                    "{}: has no conf.xml, so its levels cannot be taken as zoom levels for {what}",
                    self.cache.root().display()
                )));
            };
            if let Some(why) = crate::format::mbtiles::web_mercator_refusal(s, what) {
                return Err(Error::invalid(format!(
                    "{}: {why}; mount it with the ArcGIS layout",
                    self.cache.root().display()
                )));
            }
        }
        self.view = view;
        Ok(self)
    }

    /// The layout shown.
    pub fn view(&self) -> View {
        self.view
    }

    /// The name of tile `t`'s file with extension `ext` in the view, and the node of its
    /// folder.
    pub(crate) fn tile_entry(&self, t: TileAddr, ext: &str) -> (Node, String) {
        match self.view {
            View::ArcGis => (
                Node::Row {
                    level: t.level,
                    row: t.row,
                },
                exploded::col_file(t.col, ext),
            ),
            View::Xyz | View::Tms => (
                Node::Row {
                    level: t.level,
                    row: t.col,
                },
                format!("{}.{ext}", self.view.y_of_row(t.level, t.row).unwrap_or(0)),
            ),
        }
    }

    /// The tile a file `name` in column folder `col` of `level` names (XYZ and TMS views), with
    /// the extension as written.
    pub(crate) fn parse_xyz_tile<'a>(
        &self,
        level: u8,
        col: u32,
        name: &'a str,
    ) -> Option<(TileAddr, &'a str)> {
        let (stem, ext) = name.rsplit_once('.')?;
        let y = xyz::parse_number(stem).filter(|y| y.to_string() == stem)?;
        let row = match self.view {
            View::Tms => crate::format::mbtiles::flip_row(level, y)?,
            _ => y,
        };
        (row < (1u32 << level.min(31))).then_some((TileAddr::new(level, row, col), ext))
    }

    /// The tile a file `name` in folder (level, `key`) names ([`View::folder_name`]), with the
    /// kind its extension says, when `name` is that tile's one spelling in the view.
    pub(crate) fn tile_file_name(
        &self,
        level: u8,
        key: u32,
        name: &str,
    ) -> Option<(TileAddr, crate::format::sniff::ImageKind)> {
        let (t, ext) = self.tile_named(level, key, name)?;
        let kind = crate::format::sniff::ImageKind::from_ext(ext)?;
        (self.tile_entry(t, kind.ext()).1 == name).then_some((t, kind))
    }

    /// Columns of a level that hold a tile, or were made by mkdir (XYZ and TMS views: the
    /// column folders listed). A walk of the level's rows.
    pub(crate) fn level_cols(&self, level: u8) -> Result<BTreeSet<u32>> {
        let mut cols = BTreeSet::new();
        for row in self.rows(level)? {
            cols.extend(self.row_tiles(level, row)?.into_iter().map(|(c, _)| c));
        }
        if self.writer.is_some() {
            cols.extend(self.w.lock().unwrap().created_rows(level));
        }
        Ok(cols)
    }

    /// Tiles of column `col` of `level`: (row, size in bytes), ascending by row, waiting
    /// changes applied (the indexes of the column's bundles only).
    pub(crate) fn col_tiles(&self, level: u8, col: u32) -> Result<Vec<(u32, u64)>> {
        let stored = self.cache.col_tiles(level, col)?;
        Ok(match &self.writer {
            Some(w) => crate::cache::buffer::with_pending(stored, w.col(level, col)),
            None => stored,
        })
    }

    /// Whether column folder `col` of `level` is there in a writable XYZ or TMS view: it holds
    /// tiles, or files being written, or was made by mkdir (a read-only view shows every
    /// column of the zoom's grid; a writable one cannot, since the kernel answers mkdir of a
    /// name it finds with EEXIST, and `cp -r` makes each column folder of a level it made).
    pub(crate) fn col_exists(&self, level: u8, col: u32) -> Result<bool> {
        if !self.writable || self.writer.is_none() {
            return Ok(true);
        }
        if self.w.lock().unwrap().row_in_use(level, col) || self.renderable_dir(level, None) {
            return Ok(true);
        }
        Ok(!self.col_tiles(level, col)?.is_empty())
    }

    /// The tile files of column `col` of `level` (XYZ and TMS views), sorted by name.
    pub(crate) fn col_entries(&self, level: u8, col: u32) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for (row, _) in self.col_tiles(level, col)? {
            let t = TileAddr::new(level, row, col);
            match self.tile(t) {
                Ok(Some(b)) => {
                    let (_, name) = self.tile_entry(t, self.cache.kind_of(&b).ext());
                    out.push(DirEntry {
                        name,
                        attr: self.tile_attr(t, &b),
                    });
                }
                Ok(None) => {}
                Err(_) => {
                    let (_, name) = self.tile_entry(t, self.cache.default_kind().ext());
                    let mut e = self.unsized_entry(t);
                    e.name = name;
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!("XYZ".parse::<View>(), Ok(View::Xyz));
        assert!("quadkey".parse::<View>().unwrap_err().contains("quadkey"));
        assert_eq!(View::Xyz.level_name(3), "3");
        assert_eq!(View::Xyz.parse_level("03"), None);
        assert_eq!(View::Tms.parse_level("12"), Some(12));
        assert_eq!(View::ArcGis.parse_level("L03"), Some(3));
        assert_eq!(View::Tms.y_of_row(2, 0), Some(3));
        assert_eq!(View::Xyz.y_of_row(2, 0), Some(0));
        for v in [View::ArcGis, View::Xyz, View::Tms] {
            assert_eq!(v.name().parse::<View>(), Ok(v));
        }
    }
}
