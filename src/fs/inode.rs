//! Stable inode numbers for the exploded tree, derived from what a node is (level, row, col), so
//! repeated walks, `find -inum` and rsync see the same numbers across lookups and remounts.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::format::TileAddr;

/// A node of the exploded tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The mount's root (the cache folder).
    Root,
    /// `conf.xml` (shown with StorageFormat exploded).
    ConfXml,
    /// `conf.cdi`.
    ConfCdi,
    /// `_alllayers` (ArcGIS layout only; in MapProxy layout the levels sit in the root).
    AllLayers,
    /// A level folder `Lnn`.
    Level(u8),
    /// A row folder `Rxxxxxxxx` of a level.
    Row {
        /// The level.
        level: u8,
        /// The row (0 at the top).
        row: u32,
    },
    /// A tile file `Cxxxxxxxx.png|jpg`.
    Tile(TileAddr),
    /// A file being written under a name that is not a tile (rsync's `.Cxxxxxxxx.png.XXXXXX`).
    Temp(u64),
}

/// The root's inode number (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = 1;
const CONF_XML_INO: u64 = 2;
const CONF_CDI_INO: u64 = 3;
const ALLLAYERS_INO: u64 = 4;
const LEVEL_BASE: u64 = 0x100;
const TAG_SHIFT: u32 = 62;
const TAG_ROW: u64 = 1;
const TAG_TILE: u64 = 2;
const TAG_DYNAMIC: u64 = 3;
const TILE_BITS: u32 = 28;
/// Temporary files: dynamic inodes with this bit set.
const TEMP_BIT: u64 = 1 << 61;

/// Maps nodes to inode numbers and back. Tiles whose row/col don't fit 28 bits or level 6 bits
/// (beyond level 27 of a power-of-two scheme) get numbers from a table, stable for the mount.
#[derive(Default)]
pub struct Inodes {
    dynamic: Mutex<(HashMap<TileAddr, u64>, HashMap<u64, TileAddr>)>,
}

impl Inodes {
    /// The inode number of a node (never 0; the same for the same node).
    pub fn ino(&self, n: Node) -> u64 {
        match n {
            Node::Root => ROOT_INO,
            Node::ConfXml => CONF_XML_INO,
            Node::ConfCdi => CONF_CDI_INO,
            Node::AllLayers => ALLLAYERS_INO,
            Node::Level(l) => LEVEL_BASE + u64::from(l),
            Node::Row { level, row } => {
                (TAG_ROW << TAG_SHIFT) | (u64::from(level) << 32) | u64::from(row)
            }
            Node::Temp(id) => (TAG_DYNAMIC << TAG_SHIFT) | TEMP_BIT | (id & (TEMP_BIT - 1)),
            Node::Tile(t) => {
                if t.level < 64 && t.row < (1 << TILE_BITS) && t.col < (1 << TILE_BITS) {
                    (TAG_TILE << TAG_SHIFT)
                        | (u64::from(t.level) << (2 * TILE_BITS))
                        | (u64::from(t.row) << TILE_BITS)
                        | u64::from(t.col)
                } else {
                    let mut d = self.dynamic.lock().unwrap();
                    if let Some(i) = d.0.get(&t) {
                        return *i;
                    }
                    let i = (TAG_DYNAMIC << TAG_SHIFT) | (d.0.len() as u64 + 1);
                    d.0.insert(t, i);
                    d.1.insert(i, t);
                    i
                }
            }
        }
    }

    /// The node of an inode number; `None` for a number no node has (or a dynamic number not
    /// given out by this table).
    pub fn node(&self, ino: u64) -> Option<Node> {
        let mask = (1u64 << TILE_BITS) - 1;
        Some(match ino >> TAG_SHIFT {
            0 => match ino {
                ROOT_INO => Node::Root,
                CONF_XML_INO => Node::ConfXml,
                CONF_CDI_INO => Node::ConfCdi,
                ALLLAYERS_INO => Node::AllLayers,
                i if (LEVEL_BASE..LEVEL_BASE + 256).contains(&i) => {
                    Node::Level((i - LEVEL_BASE) as u8)
                }
                _ => return None,
            },
            TAG_ROW => {
                let level = (ino >> 32) & 0x3fff_ffff;
                if level > 255 {
                    return None;
                }
                Node::Row {
                    level: level as u8,
                    row: ino as u32,
                }
            }
            TAG_TILE => Node::Tile(TileAddr::new(
                ((ino >> (2 * TILE_BITS)) & 0x3f) as u8,
                ((ino >> TILE_BITS) & mask) as u32,
                (ino & mask) as u32,
            )),
            _ if ino & TEMP_BIT != 0 => Node::Temp(ino & (TEMP_BIT - 1)),
            _ => Node::Tile(*self.dynamic.lock().unwrap().1.get(&ino)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(level in 0u8..=255, row in any::<u32>(), col in any::<u32>()) {
            let i = Inodes::default();
            for n in [Node::Level(level), Node::Row { level, row }, Node::Tile(TileAddr::new(level, row, col))] {
                let ino = i.ino(n);
                prop_assert!(ino >= 1);
                prop_assert_eq!(i.node(ino), Some(n));
                prop_assert_eq!(i.ino(n), ino);
            }
        }
    }

    #[test]
    fn distinct_and_fixed() {
        let i = Inodes::default();
        assert_eq!(i.ino(Node::Root), 1);
        assert_ne!(
            i.ino(Node::Tile(TileAddr::new(1, 0, 1))),
            i.ino(Node::Tile(TileAddr::new(1, 1, 0)))
        );
        assert_eq!(i.node(0), None);
        assert_eq!(i.node(999), None);
    }
}
