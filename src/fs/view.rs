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

    /// The y of row `row` of level `level` (XYZ: the row; TMS: counted from the bottom); None
    /// outside the zoom's 2^level rows in TMS.
    pub fn y_of_row(self, level: u8, row: u32) -> Option<u32> {
        match self {
            View::Tms => crate::format::mbtiles::flip_row(level, row),
            _ => Some(row),
        }
    }
}

impl TreeFs {
    /// Shows the tree in `view` instead of ArcGIS's layout. Errors: an XYZ or TMS view of a
    /// scheme that is not Web Mercator zoom levels (by name, with the reason), or of a cache
    /// without conf.xml; a writable tree (the XYZ and TMS views are read-only).
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
            if self.writable {
                return Err(Error::invalid(format!(
                    "{}: --layout {} is read-only for now: mount without -o rw (or with the \
                     ArcGIS layout to write)",
                    self.cache.root().display(),
                    if view == View::Xyz { "xyz" } else { "tms" }
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

    /// Columns of a level that hold a tile (XYZ and TMS views: the column folders listed).
    pub(crate) fn level_cols(&self, level: u8) -> Result<BTreeSet<u32>> {
        let mut cols = BTreeSet::new();
        for row in self.rows(level)? {
            cols.extend(self.row_tiles(level, row)?.into_iter().map(|(c, _)| c));
        }
        Ok(cols)
    }

    /// The tile files of column `col` of `level` (XYZ and TMS views), sorted by name.
    pub(crate) fn col_entries(&self, level: u8, col: u32) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for row in self.rows(level)? {
            if !self.row_tiles(level, row)?.iter().any(|(c, _)| *c == col) {
                continue;
            }
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
    }
}
