//! Which rows of a bundle changed: one digest per row of a bundle's index, compared between the
//! handle seen earlier and the file as it is now.

use std::hash::{Hash, Hasher};

use super::bundle::BundleHandle;
use crate::format::BUNDLE_DIM;

/// A digest of each of the 128 rows of a bundle's index (index entries as stored, so a tile
/// rewritten in place or moved shows), in bundle row order. 1 KiB per bundle instead of a copy
/// of its 128 KiB index: enough to tell which rows another writer changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDigests(Vec<u64>);

impl RowDigests {
    /// The digests of `h`'s index as mapped now.
    pub fn of(h: &BundleHandle) -> RowDigests {
        RowDigests::of_entries(&h.raw_entries())
    }

    /// The digests of a bundle index given as its raw entries in row-major order (128 × 128
    /// values; a shorter slice gives fewer rows).
    pub fn of_entries(entries: &[u64]) -> RowDigests {
        RowDigests(
            entries
                .chunks(BUNDLE_DIM as usize)
                .map(|row| {
                    let mut d = std::collections::hash_map::DefaultHasher::new();
                    row.hash(&mut d);
                    d.finish()
                })
                .collect(),
        )
    }

    /// Rows (0..128, relative to the bundle's first row) whose entries differ between `self`
    /// (before) and `after`; every row when the bundle is gone or unreadable (`None`).
    pub fn changed_rows<'a>(
        &'a self,
        after: Option<&'a RowDigests>,
    ) -> impl Iterator<Item = u32> + 'a {
        self.0.iter().enumerate().filter_map(move |(r, before)| {
            let same = after.is_some_and(|a| a.0.get(r) == Some(before));
            (!same).then_some(r as u32)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BUNDLE_TILES;

    #[test]
    fn only_the_rows_whose_entries_changed() {
        let mut e = vec![0u64; BUNDLE_TILES];
        let before = RowDigests::of_entries(&e);
        assert_eq!(before.changed_rows(Some(&before)).count(), 0);
        e[5 * 128 + 7] = (4 << 40) | 131140; // row 5, col 7
        e[127 * 128] = 1; // row 127, col 0
        let after = RowDigests::of_entries(&e);
        assert_eq!(
            before.changed_rows(Some(&after)).collect::<Vec<_>>(),
            [5, 127]
        );
        // Gone: every row.
        assert_eq!(before.changed_rows(None).count(), 128);
    }
}
