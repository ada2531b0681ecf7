//! Compact V1 parsing: `V1Bundle::parse` of a `.bundle` + `.bundlx` pair, `tile_range`/`tile` of
//! every slot, `slots`, `dead_bytes`.
//!
//! The input is a compact description expanded into the pair (a `.bundlx` is 81 952 bytes):
//! - byte 0 = 0: u16 length L, then L bytes of `.bundlx`, and the rest is the `.bundle` as is
//!   (short or headerless files);
//! - byte 0 = n > 0: u8 cut (bytes dropped from the end of the `.bundlx`), a 60-byte `.bundle`
//!   header, n index entries of (u16 slot, 5-byte offset) over an empty `.bundlx`, then the
//!   `.bundle` records after the zero block.
//!
//! Properties: no panic; every checked range lies inside the `.bundle`, after its header, right
//! after a u32 size prefix equal to its length; `tile` returns exactly those bytes.
#![no_main]

use bundlefs::format::v1::{self, V1Bundle, DATA_START, HEADER_LEN, OFFSET_BYTES};
use bundlefs::format::{Slot, BUNDLE_DIM, BUNDLE_TILES};
use libfuzzer_sys::fuzz_target;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (a, b) = data.split_at(n);
    *data = b;
    a
}

fn expand(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let Some((&n, mut rest)) = input.split_first() else {
        return (Vec::new(), Vec::new());
    };
    if n == 0 {
        let l = take(&mut rest, 2);
        let l = if l.len() == 2 {
            u16::from_le_bytes([l[0], l[1]]) as usize
        } else {
            0
        };
        let x = take(&mut rest, l).to_vec();
        return (rest.to_vec(), x);
    }
    let cut = take(&mut rest, 1).first().copied().unwrap_or(0) as usize;
    let mut bundle = take(&mut rest, HEADER_LEN).to_vec();
    bundle.resize(DATA_START as usize, 0);
    let mut bundlx = v1::empty_bundlx();
    for _ in 0..n {
        let e = take(&mut rest, 7);
        if e.len() < 7 {
            break;
        }
        let s = usize::from(u16::from_le_bytes([e[0], e[1]])) % BUNDLE_TILES;
        let slot = Slot {
            row: s as u32 / BUNDLE_DIM,
            col: s as u32 % BUNDLE_DIM,
        };
        let at = v1::index_pos(slot);
        bundlx[at..at + OFFSET_BYTES].copy_from_slice(&e[2..7]);
    }
    bundlx.truncate(bundlx.len().saturating_sub(cut));
    bundle.extend_from_slice(rest);
    (bundle, bundlx)
}

fuzz_target!(|input: &[u8]| {
    let (bundle, bundlx) = expand(input);
    let Ok(b) = V1Bundle::parse(&bundle, &bundlx) else {
        return;
    };
    assert_eq!(b.len(), bundle.len() as u64);
    let _ = (b.is_empty(), b.dead_bytes());
    // `slots` lists every slot whose entry is not plainly empty; each of them is checked.
    for slot in b.slots() {
        let range = b.tile_range(slot);
        if let Ok(Some(r)) = &range {
            assert!(r.start >= HEADER_LEN + 4, "{slot:?}: {r:?} in the header");
            assert!(
                r.start < r.end && r.end <= bundle.len(),
                "{slot:?}: {r:?} past EOF"
            );
            let at = r.start - 4;
            let prefix = u32::from_le_bytes(bundle[at..at + 4].try_into().unwrap());
            assert_eq!(prefix as usize, r.len(), "{slot:?}: size prefix");
            assert_eq!(b.offset(slot) as usize, at);
        }
        match (range, b.tile(slot)) {
            (Ok(Some(r)), Ok(Some(t))) => assert_eq!(t, &bundle[r]),
            (Err(_), Err(_)) => {}
            (r, t) => panic!(
                "{slot:?}: tile_range {r:?} but tile {:?}",
                t.map(|t| t.map(<[u8]>::len))
            ),
        }
    }
});
